"""`modnet-prune convert`: official or plain checkpoint -> our .safetensors format."""
from __future__ import annotations

from rich.console import Console

from ..errors import UserError
from ..files import check_outputs, sha256_file
from ..model.io import load, save, stored_dtype, train_sizes
from .common import add_in_out, add_json, print_json


def register(sub) -> None:
    p = sub.add_parser("convert", help="convert an official/plain checkpoint to .safetensors")
    add_in_out(p, ".safetensors")
    p.add_argument("--train-sizes", metavar="S[,S...]",
                   help="record the square input sizes the weights were trained at (metadata "
                        "train_sizes, which `evaluate` checks); default: the input's, if any")
    add_json(p)
    p.set_defaults(func=run)


def run(args) -> int:
    check_outputs([args.checkpoint], files=[args.out], overwrite=args.overwrite)
    out = args.out
    sizes = _sizes(args.train_sizes) if args.train_sizes else None
    model, metadata = load(args.checkpoint, with_metadata=True)
    digest = sha256_file(args.checkpoint)
    # converting changes no value: a half-precision input stays half, losslessly
    save(model, out, dtype=stored_dtype(args.checkpoint), source=args.checkpoint,
         source_sha256=digest, train_sizes=sizes or train_sizes(metadata))
    summary = {
        "out": str(args.out),
        "params": sum(p.numel() for p in model.parameters()),
        "source_sha256": digest,
        "train_sizes": sizes or train_sizes(metadata),
        "widths_changed": {k: list(v) for k, v in model.arch.diff().items()},
    }
    if args.json:
        print_json(summary)
        return 0
    console = Console()
    console.print(f"wrote [bold]{args.out}[/]  params {summary['params']:,}  source sha256 {digest[:16]}…")
    changed = summary["widths_changed"]
    console.print(f"widths changed vs official: {len(changed) or 'none'}")
    for name, (official, ours) in changed.items():
        console.print(f"  {name}: {official} -> {ours}")
    return 0


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(s) for s in text.split(",")]
    except ValueError:
        sizes = []
    if not sizes or any(s < 32 or s % 32 for s in sizes):
        raise UserError(f"--train-sizes {text}: give positive multiples of 32, e.g. 128,256,512")
    return sorted(set(sizes))
