"""`modnet-prune synth`: write synthetic portraits as a PPM-100-style folder."""
from __future__ import annotations

from rich.console import Console

from ..data import write_synthetic_folder
from .common import add_json, print_json


def register(sub) -> None:
    p = sub.add_parser("synth", help="write synthetic portrait mattes (image/ + matte/ PNGs)")
    p.add_argument("--out", required=True, help="output folder (created; resumable)")
    p.add_argument("--count", type=int, required=True, help="number of samples")
    p.add_argument("--size", type=int, default=512, help="side of the square samples (default 512)")
    p.add_argument("--seed", type=int, default=0, help="first seed; sample i uses seed+i (default 0)")
    add_json(p)
    p.set_defaults(func=run)


def run(args) -> int:
    summary = write_synthetic_folder(args.out, args.count, args.size, args.seed,
                                     progress=not args.json)
    if args.json:
        print_json(summary)
        return 0
    per = summary["seconds"] / summary["written"] * 1000 if summary["written"] else 0.0
    Console().print(
        f"{summary['out']}: wrote {summary['written']}, kept {summary['skipped']} already there "
        f"({args.size}x{args.size}, seeds {args.seed}..{args.seed + args.count - 1}; "
        f"{per:.0f} ms per written sample). Use it as --data {summary['out']}")
    return 0
