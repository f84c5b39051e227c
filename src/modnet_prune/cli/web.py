"""`modnet-prune web`: a static page that mattes with the given ONNX files in the browser."""
from __future__ import annotations

import dataclasses

from rich.console import Console
from rich.table import Table

from ..deploy.web import build_site
from ..files import check_outputs
from .common import add_json, print_json


def register(sub) -> None:
    p = sub.add_parser("web", help="write a web page that mattes with ONNX files in the browser")
    p.add_argument("--models", nargs="+", required=True, metavar="ONNX",
                   help=".onnx files from `modnet-prune export`; the first is the speed reference")
    p.add_argument("--out", required=True, help="site folder (new, or a site written before)")
    add_json(p)
    p.set_defaults(func=run)


def run(args) -> int:
    check_outputs(args.models, folders=[args.out])
    report = build_site(args.models, args.out)
    if args.json:
        print_json(dataclasses.asdict(report))
        return 0
    table = Table("model", "file", "MB")
    for model in report.models:
        table.add_row(model["name"], model["file"], f"{model['bytes'] / 1e6:.2f}")
    console = Console(soft_wrap=True)
    console.print(table)
    console.print(f"wrote [bold]{report.out}[/] ({report.bytes / 1e6:.1f} MB, onnxruntime-web "
                  f"{report.onnxruntime_web}); open it with `modnet-prune serve {report.out}`")
    return 0
