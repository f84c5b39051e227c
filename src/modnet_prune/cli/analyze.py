"""`modnet-prune analyze`: exact params, MACs per part and per layer, model bytes."""
from __future__ import annotations

from rich.console import Console

from ..model import MODNet
from ..model.io import load
from ..prune import describe_groups
from ..model.inputs import parse_size
from ..measure.costs import model_costs
from ..report.render import render_costs
from .common import print_json
from .prune import print_groups


def register(sub) -> None:
    p = sub.add_parser("analyze", help="params, MACs per part and per layer, size of a model")
    p.add_argument("--checkpoint", help="model file (default: the official architecture)")
    p.add_argument("--size", default="512", help="input size, N or HxW, multiples of 32 (default 512)")
    p.add_argument("--top", type=int, default=20, help="layers shown in the table (0 = all)")
    p.add_argument("--json", action="store_true", help="print the full analysis as JSON")
    p.add_argument("--groups", action="store_true",
                   help="list the channel groups (members, width, MACs saved per channel)")
    p.set_defaults(func=run)


def run(args) -> int:
    size = parse_size(args.size)  # refuse a bad size before loading anything
    model = load(args.checkpoint) if args.checkpoint else MODNet()
    if args.groups:
        groups = describe_groups(model, size)
        print_json(groups) if args.json else print_groups(groups, Console())
        return 0
    report = model_costs(model, size, path=args.checkpoint)
    if args.json:
        print_json(report)
    else:
        render_costs(report, Console(), top=args.top)
    return 0
