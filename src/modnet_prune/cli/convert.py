"""`modnet-prune convert`: official or plain checkpoint -> our .safetensors format."""
from __future__ import annotations

from rich.console import Console

from ..model.io import load, save

from ..files import check_outputs, sha256_file
from .common import print_json


def register(sub) -> None:
    p = sub.add_parser("convert", help="convert an official/plain checkpoint to .safetensors")
    p.add_argument("--checkpoint", required=True, help="input .ckpt/.pth/.safetensors")
    p.add_argument("--out", required=True, help="output .safetensors file")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    check_outputs([args.checkpoint], files=[args.out])
    model = load(args.checkpoint)
    digest = sha256_file(args.checkpoint)
    save(model, args.out, source=args.checkpoint, source_sha256=digest)
    summary = {
        "out": str(args.out),
        "params": sum(p.numel() for p in model.parameters()),
        "source_sha256": digest,
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
