"""Command-line interface: parses arguments and calls the library, nothing more.

Each subcommand lives in its own module, `cli/<name>.py`, with `register(subparsers)`,
which adds its parser and sets `func(args) -> int`. Only the module of the command being
run is imported, so `modnet-prune prune` does not pay for matplotlib, onnx or PyAV.
Errors a user can cause become one line on stderr (`--debug`: the traceback, with the
library's underlying cause chained), warnings one line each. SIGTERM stops a command like
Ctrl-C, so atomic writes remove their temp files on the way out. The commands that train
keep freed memory for reuse (`memory.keep_freed_memory`).
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import signal
import sys
import threading
import warnings

from .. import __version__
from ..errors import UserError
from ..memory import keep_freed_memory

COMMANDS = ("convert", "analyze", "prune", "profile", "benchmark", "synth", "evaluate", "train",
            "finetune", "compress", "export", "quantize", "matte", "web", "serve", "pipeline")
# the commands that train: their steps reuse freed memory instead of faulting it in again
TRAINING = ("train", "finetune", "compress", "pipeline")


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


def _one_line(error: UserError) -> str:
    """The error's message. Re-raised from a DataLoader worker it carries the worker's
    traceback ("Caught UserError in DataLoader worker ... Original Traceback ..."), whose
    last line is the message itself."""
    text = str(error).strip()
    if "\nOriginal Traceback" in text:
        text = text.splitlines()[-1].split(": ", 1)[-1]
    return text


def _interrupt(_signum, _frame):
    raise KeyboardInterrupt


@contextlib.contextmanager
def _command_context(command: str):
    """Warnings as one line each; SIGTERM raised as KeyboardInterrupt (main thread only)."""
    def one_line(message, category, filename, lineno, file=None, line=None):
        print(f"modnet-prune {command}: warning: {message}", file=sys.stderr)

    with warnings.catch_warnings():
        warnings.showwarning = one_line
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = signal.signal(signal.SIGTERM, _interrupt)
        try:
            yield
        finally:
            signal.signal(signal.SIGTERM, previous)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(_command_in(argv)).parse_args(argv)
    if args.command in TRAINING:
        keep_freed_memory()
    try:
        with _command_context(args.command):
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
        message = _one_line(e) if isinstance(e, UserError) else f"{e.filename or ''}: {e.strerror or e}"
        print(f"modnet-prune {args.command}: error: {message}", file=sys.stderr)
        return 2
