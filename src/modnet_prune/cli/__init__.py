"""Command-line interface: parses arguments and calls the library, nothing more.

Each subcommand lives in its own module, `cli/<name>.py`, with `register(subparsers)`,
which adds its parser and sets `func(args) -> int`. Only the module of the command being
run is imported, so `modnet-prune prune` does not pay for matplotlib, onnx or PyAV.
Errors a user can cause become one line on stderr.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys

from .. import __version__
from ..errors import UserError

COMMANDS = ("convert", "analyze", "prune", "benchmark", "synth", "evaluate", "train",
            "finetune", "compress", "export", "quantize", "matte", "web", "serve", "pipeline")


def _command_in(argv: list[str]) -> str | None:
    """The subcommand named in argv (global options take no values)."""
    return next((a for a in argv if not a.startswith("-")), None)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser for `command` alone, or for every command (for --help and typos)."""
    parser = argparse.ArgumentParser(
        prog="modnet-prune",
        description="Prune, distil, measure and deploy MODNet portrait-matting models.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in [command] if command in COMMANDS else COMMANDS:
        importlib.import_module(f"{__name__}.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(_command_in(argv)).parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("modnet-prune: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `modnet-prune analyze --json | head`: the reader left
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except (UserError, OSError) as e:
        if args.debug:
            raise
        message = str(e) if isinstance(e, UserError) else f"{e.filename or ''}: {e.strerror or e}"
        print(f"modnet-prune {args.command}: error: {message}", file=sys.stderr)
        return 2
