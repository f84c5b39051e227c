"""`modnet-prune quantize`: an int8 ONNX (static QDQ) that stays within a fidelity budget."""
from __future__ import annotations

from rich.console import Console

from ..deploy.quantize import (DEFAULT_BUDGET, DEFAULT_COUNT, DEFAULT_HOLDOUT, DEFAULT_METHOD,
                               DEFAULT_SIZE, METHODS, quantize_model)
from ..data import spec_paths
from ..files import check_outputs
from .common import add_json, add_overwrite, add_threads, print_json


def register(sub) -> None:
    p = sub.add_parser("quantize", help="post-training int8 quantization with a fidelity budget")
    p.add_argument("--checkpoint", required=True,
                   help="model: .safetensors, official .ckpt, or an fp32 .onnx from `export`")
    p.add_argument("--calibration", required=True, metavar="DATA",
                   help="images to calibrate on: any --data spec, or a plain folder of images")
    p.add_argument("--out", required=True, help="output .onnx file")
    add_overwrite(p, "--out")
    p.add_argument("--count", type=int, default=DEFAULT_COUNT,
                   help=f"calibration images, the first of DATA (default {DEFAULT_COUNT})")
    p.add_argument("--holdout", type=int, default=DEFAULT_HOLDOUT,
                   help="the next images of DATA, for the int8 vs fp32 check "
                        f"(default {DEFAULT_HOLDOUT})")
    p.add_argument("--method", choices=METHODS, default=DEFAULT_METHOD,
                   help=f"activation calibration (default {DEFAULT_METHOD})")
    p.add_argument("--budget", type=float, default=DEFAULT_BUDGET,
                   help="largest mean |int8 - fp32| alpha allowed on the held-out images "
                        f"(default {DEFAULT_BUDGET:g}: half a level of an 8-bit matte)")
    p.add_argument("--size", type=int, default=DEFAULT_SIZE, metavar="REF",
                   help="deployment size: the inference protocol's reference, as `matte --size` "
                        f"(default {DEFAULT_SIZE})")
    add_threads(p, help="ONNX Runtime threads")
    add_json(p, "the report")
    p.set_defaults(func=run)


def run(args) -> int:
    check_outputs([args.checkpoint, *spec_paths(args.calibration)], files=[args.out],
                  overwrite=args.overwrite)
    out = args.out
    report = quantize_model(args.checkpoint, args.calibration, out, count=args.count,
                            holdout=args.holdout, method=args.method, budget=args.budget,
                            size=args.size, threads=args.threads, progress=not args.json)
    if args.json:
        print_json(report.as_dict())
        return 0
    console = Console(soft_wrap=True)
    console.print(f"wrote [bold]{out}[/]  {report.file_bytes / 2**20:.1f} MiB "
                  f"(fp32 {report.fp32_bytes / 2**20:.1f} MiB)  int8 QDQ, {report.method}, "
                  f"{report.count} calibration images at {report.size}")
    console.print(f"int8 vs fp32 on {report.holdout} held-out images: mean |delta alpha| "
                  f"{report.delta_mean:.2e} (budget {report.budget:g}), p99 {report.delta_p99:.2e}; "
                  f"fp32 noise floor {report.noise_floor:.2e} (1 grey level of input noise)")
    console.print(f"kept float: {', '.join(report.float_ops)} (no int8 CPU kernel)"
                  + (f"; {len(report.summed_taps)} nodes summing upsampled taps"
                     if report.summed_taps else "")
                  + (f"; {len(report.kept_float)} sensitive nodes: {', '.join(report.kept_float)}"
                     if report.kept_float else ""))
    console.print(f"CPU: {report.capability['description']}; calibration "
                  f"{report.calibration} sha256 {report.calibration_sha256[:16]}…; "
                  f"{report.seconds:.1f} s")
    return 0
