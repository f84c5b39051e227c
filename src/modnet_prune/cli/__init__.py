"""Command-line interface: parses arguments and calls the library, nothing more.

Each subcommand lives in its own module with `register(subparsers)`, which adds its
parser and sets `func(args) -> int`. Errors a user can cause become one line on stderr.
"""
from __future__ import annotations

import argparse
import sys

from .. import __version__
from ..errors import UserError
from . import (analyze, benchmark, compress, convert, evaluate, export, finetune, matte,
               pipeline, prune, synth, train)

COMMANDS = (convert, analyze, prune, benchmark, synth, evaluate, train, finetune, export, matte,
            compress, pipeline)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="modnet-prune",
        description="Prune, distil, measure and deploy MODNet portrait-matting models.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in COMMANDS:
        command.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("modnet-prune: interrupted", file=sys.stderr)
        return 130
    except (UserError, OSError) as e:
        if args.debug:
            raise
        message = str(e) if isinstance(e, UserError) else f"{e.filename or ''}: {e.strerror or e}"
        print(f"modnet-prune {args.command}: error: {message}", file=sys.stderr)
        return 2
