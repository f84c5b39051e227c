"""Helpers shared by subcommands: the options that mean the same in several commands (one
home for each flag's type, default and usual help), and --json versus rich output."""
from __future__ import annotations

import json
import sys

from rich.console import Console

# The thread count of a measurement: every CPU we may use unless told otherwise.
ALL_CPUS_THREADS_HELP = "intra-op threads (default: all CPUs this process may use)"


def add_in_out(p, out_kind: str) -> None:
    """--checkpoint (the model read) and --out (the `out_kind` file written), both required."""
    p.add_argument("--checkpoint", required=True, help="input .ckpt/.pth/.safetensors")
    p.add_argument("--out", required=True, help=f"output {out_kind} file")
    add_overwrite(p, "--out")


def add_overwrite(p, what: str) -> None:
    """--overwrite: the one way an output file that exists gets replaced."""
    p.add_argument("--overwrite", action="store_true", help=f"replace {what} if it exists")


def add_run_folder(p) -> None:
    """--out and --resume of a resumable run (train, finetune, compress, pipeline)."""
    p.add_argument("--out", required=True, help="run folder (created; never overwritten)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")


def add_input_size(p) -> None:
    """--size as `parse_size` reads it: N or HxW."""
    p.add_argument("--size", default="512", help="input size, N or HxW, multiples of 32 (default 512)")


def add_runtime(p, help: str | None = None) -> None:
    from ..deploy.runtime import RUNTIMES  # torch and numpy: only for the commands that run models

    p.add_argument("--runtime", choices=RUNTIMES, default="auto", help=help)


def add_threads(p, help: str = ALL_CPUS_THREADS_HELP) -> None:
    """--threads: None unless given; `deploy.runtime.check_threads` refuses < 1."""
    p.add_argument("--threads", type=int, default=None, help=help)


def add_json(p, what: str = "the summary") -> None:
    p.add_argument("--json", action="store_true", help=f"print {what} as JSON")


def print_json(obj) -> None:
    json.dump(obj, sys.stdout, indent=2)
    sys.stdout.write("\n")


def print_result(result, as_json: bool, render) -> None:
    """`result` as JSON (--json), or as `render(result, console)` draws it."""
    if as_json:
        print_json(result)
    else:
        render(result, Console())
