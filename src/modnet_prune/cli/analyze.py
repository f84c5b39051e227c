"""`modnet-prune analyze`: exact params, MACs per part and per layer, model bytes."""
from __future__ import annotations

from functools import partial

from ..model import MODNet
from ..model.io import load
from ..prune import describe_groups
from ..model.inputs import parse_size
from ..measure.costs import model_costs
from ..report.render import render_costs
from .common import add_input_size, add_json, print_result
from .prune import print_groups


def register(sub) -> None:
    p = sub.add_parser("analyze", help="params, MACs per part and per layer, size of a model")
    p.add_argument("--checkpoint", help="model file (default: the official architecture)")
    add_input_size(p)
    p.add_argument("--top", type=int, default=20, help="layers shown in the table (0 = all)")
    add_json(p, "the full analysis")
    p.add_argument("--groups", action="store_true",
                   help="list the channel groups (members, width, MACs saved per channel)")
    p.set_defaults(func=run)


def run(args) -> int:
    size = parse_size(args.size)  # refuse a bad size before loading anything
    model = load(args.checkpoint) if args.checkpoint else MODNet()
    if args.groups:
        groups = describe_groups(model, size)
        print_result(groups, args.json, print_groups)
        return 0
    report = model_costs(model, size, path=args.checkpoint)
    print_result(report, args.json, partial(render_costs, top=args.top))
    return 0
