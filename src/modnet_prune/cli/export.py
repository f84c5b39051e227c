"""`modnet-prune export`: any loadable checkpoint -> matte-only ONNX, checked against PyTorch."""
from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console

from ..errors import UserError
from ..deploy.onnx_export import DEFAULT_OPSET, GRAPHS, PARITY_TOL, export_onnx
from ..model.inputs import parse_size
from ..model.io import load
from ..files import check_outputs, sha256_file
from .common import add_in_out, add_json, print_json


def register(sub) -> None:
    p = sub.add_parser("export", help="export a checkpoint to ONNX (matte-only graph)")
    add_in_out(p, ".onnx")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET, help="ONNX opset (default 17)")
    p.add_argument("--static", metavar="HxW", help="fix the input to 1x3xHxW (default: dynamic "
                   "batch, height and width)")
    p.add_argument("--fp16", action="store_true",
                   help="store weights in float16 (half the file; I/O and compute stay float32)")
    p.add_argument("--graph", choices=GRAPHS, default="fused",
                   help="fused (default): the same matte in fewer passes (each IBNorm's "
                        "BatchNorm folded into its conv, one split instead of slice + concat); "
                        "plain: the training module's graph, for comparison")
    p.add_argument("--check", action=argparse.BooleanOptionalAction, default=True,
                   help=f"compare ONNX Runtime with PyTorch in float64, fail above {PARITY_TOL:g} "
                        "(default on)")
    add_json(p)
    p.set_defaults(func=run)


def run(args) -> int:
    if Path(args.out).suffix.lower() != ".onnx":
        raise UserError(f"{args.out}: the output name must end in .onnx")
    check_outputs([args.checkpoint], files=[args.out], overwrite=args.overwrite)
    static_hw = parse_size(args.static, "--static") if args.static else None
    model = load(args.checkpoint)
    source = {"source": Path(args.checkpoint).name, "source_sha256": sha256_file(args.checkpoint)}
    report = export_onnx(model, args.out, opset=args.opset, static_hw=static_hw, fp16=args.fp16,
                         check=args.check, metadata=source, graph=args.graph)
    if args.json:
        print_json(report.as_dict())
        return 0
    console = Console(soft_wrap=True)  # one line per fact, whatever the terminal width
    console.print(f"wrote [bold]{args.out}[/]  {report.file_bytes / 2**20:.1f} MiB  opset {report.opset}"
                  f"  {report.nodes} nodes ({report.graph} graph)  {report.precision}")
    console.print(f"params {report.params:,}  MACs {report.macs:,} at {report.macs_input}")
    for check in report.parity:
        shape = "x".join(map(str, check["shape"]))
        console.print(f"check {shape}: max |onnx - torch float64| {check['max_abs']:.2e} "
                      f"(limit {PARITY_TOL:g})")
    if report.fp16_max_abs is not None:
        console.print(f"fp16 vs fp32 torch: max |diff| {report.fp16_max_abs:.2e}, "
                      f"mean {report.fp16_mean_abs:.2e}")
    if not args.check:
        console.print("not checked against PyTorch (--no-check)")
    return 0
