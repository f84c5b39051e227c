"""Helpers shared by subcommands: output of tables/JSON and checkpoint arguments."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from ..errors import UserError


def print_json(obj) -> None:
    json.dump(obj, sys.stdout, indent=2)
    sys.stdout.write("\n")


def output_path(path: str, overwrite_inputs: tuple[str, ...] = ()) -> Path:
    """Validate an output file path: its folder exists, and it is not one of the inputs."""
    out = Path(path)
    if not out.parent.is_dir():
        raise UserError(f"{out.parent}: output folder does not exist")
    for src in overwrite_inputs:
        if src and Path(src).exists() and out.exists() and out.samefile(src):
            raise UserError(f"{out}: refusing to overwrite the input file")
    return out
