"""`modnet-prune evaluate`: matting errors of a checkpoint or .onnx file on a dataset."""
from __future__ import annotations

import csv
import sys
import warnings
from pathlib import Path

from rich.console import Console
from rich.table import Table

from ..data import open_source, spec_paths
from ..data.datasets import is_synthetic
from ..errors import UserError
from ..deploy.runtime import open_runtime
from ..metrics import METRICS, SCALING, evaluate
from ..model.inputs import check_size
from ..model.shipped import synthetic_teacher_note, trained_on_synthetic
from ..files import check_outputs, write_atomic
from ..model.io import untrained_size_warning
from .common import add_json, add_overwrite, add_runtime, add_threads, print_json


def register(sub) -> None:
    p = sub.add_parser("evaluate", help="SAD/MSE/MAD/Grad/Conn of a model on a dataset, "
                                        "or its agreement with another model")
    p.add_argument("--checkpoint", required=True, help=".safetensors, official .ckpt, or .onnx")
    p.add_argument("--reference", metavar="MODEL",
                   help="score agreement with this model's mattes instead of ground truth "
                        "(adds IoU at 0.5 and the boundary |delta alpha|); works on unlabeled data")
    data = p.add_mutually_exclusive_group(required=True)
    data.add_argument("--data", help="synthetic:N@S[+seedK], a dataset folder, "
                                     "images=DIR,alphas=DIR[,trimaps=DIR], or unlabeled photos/"
                                     "videos with --reference")
    data.add_argument("--image-dir", help="folder of images (with --alpha-dir)")
    p.add_argument("--alpha-dir", help="folder of ground-truth mattes, paired by file stem")
    p.add_argument("--trimap-dir", help="optional trimaps (0/128/255) for unknown-region scores")
    p.add_argument("--size", type=int, help="run every image at SIZE x SIZE instead of the "
                                            "MODNet protocol (synthetic data: default its size)")
    add_runtime(p)
    add_threads(p, help="CPU threads for the runtime")
    p.add_argument("--device", help="torch device (default: cuda if available)")
    p.add_argument("--save-predictions", metavar="DIR", help="write each predicted matte as PNG")
    p.add_argument("--csv", metavar="FILE", help="write per-image errors as CSV")
    add_overwrite(p, "--csv")
    add_json(p)
    p.set_defaults(func=run)


def _spec(args) -> str:
    if args.data:
        if args.alpha_dir or args.trimap_dir:
            raise UserError("--alpha-dir/--trimap-dir go with --image-dir, not --data")
        return args.data
    if not args.alpha_dir:
        raise UserError("--image-dir needs --alpha-dir")
    spec = f"images={args.image_dir},alphas={args.alpha_dir}"
    return spec + (f",trimaps={args.trimap_dir}" if args.trimap_dir else "")


def run(args) -> int:
    if args.size is not None:
        check_size(args.size, "--size")
    spec = _spec(args)
    check_outputs([args.checkpoint, args.reference, *spec_paths(spec)], files=[args.csv],
                  folders=[args.save_predictions], overwrite=args.overwrite)
    with warnings.catch_warnings(record=True) as caught:  # unpaired files: one line each
        warnings.simplefilter("always")
        source = open_source(spec, size=args.size, train=False)
    for warning in caught:
        print(f"modnet-prune evaluate: warning: {warning.message}", file=sys.stderr)
    untrained = untrained_size_warning(args.checkpoint,
                                       args.size or getattr(source, "native_size", None))
    if untrained:
        print(f"modnet-prune evaluate: warning: {untrained}", file=sys.stderr)
    if not is_synthetic(spec):
        for path in filter(trained_on_synthetic, filter(None, (args.checkpoint, args.reference))):
            print(f"modnet-prune evaluate: {synthetic_teacher_note(path)}", file=sys.stderr)
    save_dir = Path(args.save_predictions) if args.save_predictions else None
    if save_dir:
        save_dir.mkdir(parents=True, exist_ok=True)
    runtime = open_runtime(args.checkpoint, runtime=args.runtime, threads=args.threads,
                           device=args.device)
    reference = (open_runtime(args.reference, threads=args.threads, device=args.device)
                 if args.reference else None)  # its own runtime, by file type
    result = evaluate(runtime, source, size=args.size, save_predictions=save_dir,
                      progress=not args.json, reference=reference)
    rows = result.pop("per_image")
    if args.csv:
        write_atomic(args.csv, lambda tmp: _write_csv(tmp, rows))
    result.update(checkpoint=str(args.checkpoint), runtime=runtime.describe())
    if reference is not None:
        result["reference"] = str(args.reference)
    if args.json:
        print_json(result)
    else:
        _print_table(result, args.csv, save_dir)
    return 0


def _write_csv(path: str, rows: list[dict]) -> None:
    fields = list(dict.fromkeys(k for row in rows for k in row))
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


def _print_table(result: dict, csv_path, save_dir) -> None:
    console = Console()
    unknown = result.get("unknown")
    against = ("ground-truth size" if result["reference"] == "ground truth"
               else f"image size, against the mattes of {result['reference']}")
    console.print(f"{result['checkpoint']} ({result['runtime']['runtime']}) on {result['dataset']}; "
                  f"input {result['input']}; errors at {against}, "
                  f"means over {result['count']} images")
    table = Table()
    table.add_column("metric")
    table.add_column("scaling")
    table.add_column("whole image", justify="right")
    if unknown:
        table.add_column(f"unknown (trimap=128, {unknown['count']} images)", justify="right")
    for m in METRICS:
        cells = [f"{result[m]:.6f}"] + ([f"{unknown[m]:.6f}"] if unknown else [])
        table.add_row(m.upper(), SCALING[m], *cells)
    if "iou" in result:
        table.add_row("IoU", "mask >= 0.5, mean", f"{result['iou']:.4f}")
        table.add_row("boundary", "mean |delta| where 0.05 <= ref <= 0.95", f"{result['boundary']:.6f}")
    console.print(table)
    for what, path in (("per-image CSV", csv_path), ("predictions", save_dir)):
        if path:
            console.print(f"{what}: {path}")
