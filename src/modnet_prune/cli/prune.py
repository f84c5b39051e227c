"""`modnet-prune prune`: structured pruning of a MODNet checkpoint into a smaller one."""
from __future__ import annotations

from pathlib import Path

import torch
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ..checks import AT_LEAST_ONE, KEEP_FRACTION
from ..errors import UserError
from ..files import check_outputs, sha256_file
from ..model.io import load, save, stored_dtype, train_sizes
from ..prune import CRITERIA, prune, reconstruct
from .common import add_in_out, print_result
from .profile import add_target_args, target_of


def register(sub) -> None:
    p = sub.add_parser("prune", help="remove channels: a physically smaller, exact model")
    add_in_out(p, ".safetensors")
    how = p.add_mutually_exclusive_group(required=True)
    how.add_argument("--ratio", type=float, help="remove this fraction of channels")
    how.add_argument("--target-macs", type=float, metavar="F",
                     help="keep at most this fraction of the inference MACs at --size")
    how.add_argument("--target-latency", type=float, metavar="F",
                     help="aim at this fraction of the teacher's latency on the target "
                          "(--runtime, --precision, --threads at --size; see `profile`): "
                          "pruned by the prediction, measured, corrected (--corrections)")
    how.add_argument("--plan", metavar="FILE",
                     help="YAML/JSON: layer -> {keep: N}, {ratio: r}, {threshold: t} or "
                          "{follow: LAYER}")
    p.add_argument("--allocation", choices=("uniform", "global"), default="uniform",
                   help="with --ratio: per group (uniform) or one ranking of all channels")
    p.add_argument("--criterion", choices=CRITERIA, default="l1", help="channel importance")
    p.add_argument("--data", metavar="SPEC",
                   help="images for --criterion taylor (dataset spec, e.g. synthetic:8@128)")
    p.add_argument("--reconstruct", metavar="SPEC",
                   help="after the cut, refit the layers that lost inputs to the input "
                        "model's outputs on these images at --size (dataset spec, e.g. a "
                        "photo folder or synthetic:16@512)")
    p.add_argument("--reconstruct-count", type=int, default=16, metavar="N",
                   help="with --reconstruct: images used (default 16)")
    p.add_argument("--round-to", type=int, default=8, help="kept widths are multiples of N")
    p.add_argument("--min-channels", type=int, default=1, help="never keep fewer channels")
    add_target_args(p)
    p.add_argument("--repeat", type=int, default=15,
                   help="with --target-latency: timed rounds of the measured latency")
    p.add_argument("--corrections", type=int, default=1,
                   help="with --target-latency: re-prunes at most N times when the measured "
                        "latency misses the target and the prediction by more than 3%% "
                        "(0: trust the prediction; default 1)")
    p.add_argument("--verify", action="store_true", help="check the surgery is exact")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..data import spec_paths
    if args.target_latency is not None:  # before a latency model is measured (minutes)
        from ..measure.latency import check_corrections
        KEEP_FRACTION.check(args.target_latency, "target latency")
        check_corrections(args.corrections, args.repeat)
    data = _data(args.data, args.criterion) if args.data else None
    calibration = [*spec_paths(args.data), *spec_paths(args.reconstruct)]
    check_outputs([args.checkpoint, args.plan, *calibration], files=[args.out],
                  overwrite=args.overwrite)
    images = _images(args.reconstruct, args.reconstruct_count, args.size)
    out = Path(args.out)
    model, metadata = load(args.checkpoint, with_metadata=True)
    options = dict(allocation=args.allocation, criterion=args.criterion, round_to=args.round_to,
                   min_channels=args.min_channels, size=(args.size, args.size), data=data,
                   verify=args.verify)
    if args.target_latency is not None:
        from ..measure.latency import latency_model, prune_to_measured_latency
        latency, _ = latency_model(target_of(args), progress=not args.json)
        result = prune_to_measured_latency(model, args.target_latency, latency,
                                           corrections=args.corrections, repeat=args.repeat,
                                           progress=not args.json, **options)
    else:
        result = prune(model, ratio=args.ratio, target_macs=args.target_macs, plan=args.plan,
                       **options)
    if images is not None:
        reconstruct(model, result, images, batches=len(images), progress=not args.json)
    digest = sha256_file(args.checkpoint)
    # Removing channels changes no value: an fp16-stored input stays fp16, losslessly (the
    # weights `reconstruct` refits are stored at that precision too, as the user chose it).
    save(result.model, out, dtype=stored_dtype(args.checkpoint), prune=result.to_dict(),
         source=str(args.checkpoint), source_sha256=digest,
         train_sizes=train_sizes(metadata))  # the weights kept are the input's
    summary = _summary(args, out, result)
    print_result(summary, args.json, _print)
    return 0


def _data(spec: str, criterion: str):
    if criterion != "taylor":
        raise UserError("--data is only used by --criterion taylor")
    from ..data import open_dataset
    return open_dataset(spec, size=128, train=False)


def _images(spec: str | None, count: int, size: int) -> list[torch.Tensor] | None:
    """The reconstruction images, in pairs: the first `count` of `spec` at `size`."""
    if spec is None:
        return None
    AT_LEAST_ONE.check(count, "--reconstruct-count")
    from ..data import open_dataset
    dataset = open_dataset(spec, size=size, train=False)
    if len(dataset) < count:
        raise UserError(f"--reconstruct-count {count}: {spec} has only {len(dataset)} images")
    images = [dataset[i]["image"] for i in range(count)]
    return [torch.stack(images[i:i + 2]) for i in range(0, count, 2)]


def _summary(args, out: Path, result) -> dict:
    return {
        "checkpoint": str(args.checkpoint), "out": str(out), **result.to_dict(),
        "file_bytes": {"before": Path(args.checkpoint).stat().st_size,
                       "after": out.stat().st_size},
        "widths": {name: list(w) for name, w in result.widths.items()},
    }


def _print(summary: dict, console: Console) -> None:
    table = Table(title=f"{summary['checkpoint']} -> {summary['out']}")
    for column in ("", "before", "after", "after/before"):
        table.add_column(column, justify="right" if column else "left")
    size = "x".join(map(str, summary["size"]))
    for label, key, unit, scale in (("params", "params", "M", 1e6),
                                    (f"MACs at {size}", "macs", "G", 1e9),
                                    ("file", "file_bytes", "MB", 1e6)):
        before, after = summary[key]["before"], summary[key]["after"]
        table.add_row(label, f"{before / scale:.3f} {unit}", f"{after / scale:.3f} {unit}",
                      f"{after / before:.3f}")
    if "latency" in summary:
        latency = summary["latency"]
        t = latency["target"]
        where = f"{t['runtime']} {t['precision']} {t['threads']} thr"
        predicted = latency["predicted_ms"]
        table.add_row(f"latency {where}, predicted", f"{predicted['before']:.1f} ms",
                      f"{predicted['after']:.1f} ms",
                      f"{predicted['after'] / predicted['before']:.3f}")
        if "measured_ms" in latency:
            measured = latency["measured_ms"]
            table.add_row(f"latency {where}, measured", f"{measured['before']:.1f} ms",
                          f"{measured['after']:.1f} ms", f"{latency['measured_fraction']:.3f}")
    console.print(table)
    tries = summary.get("latency", {}).get("tries", [])
    if len(tries) > 1:
        console.print("latency goal corrected by measurement: " + "; ".join(
            f"goal {t['goal']:.3f} -> " + (f"measured {t['measured_fraction']:.3f}"
                                           if "skipped" not in t else f"skipped ({t['skipped']})")
            for t in tries) + " (the closest is kept)")
    print_widths(summary["widths"], console)
    if summary["max_abs_diff"] is not None:
        console.print(f"exactness check passed: max |delta| {summary['max_abs_diff']:.2e}")
    if "reconstruction" in summary:
        print_reconstruction(summary["reconstruction"], console)


def print_reconstruction(report: dict, console: Console) -> None:
    table = Table(title=f"reconstruction on {report['batches']} batches: relative error of "
                        "each refitted layer against the input model's output")
    for column in ("layer", "inputs", "samples", "pruned", "refitted"):
        table.add_column(column, justify="left" if column == "layer" else "right")
    for f in report["fitted"]:
        table.add_row(f["layer"], str(f["features"]), f"{f['samples']:,}",
                      f"{f['error_before']:.4f}", f"{f['error_after']:.4f}")
    for layer, why in report["skipped"].items():
        table.add_row(layer, "-", "-", "skipped", escape(why), style="dim")
    console.print(table)


def print_widths(widths: dict[str, list[int]], console: Console) -> None:
    table = Table(title="channel groups (kept / width)")
    table.add_column("group (first producer)")
    table.add_column("width", justify="right")
    table.add_column("kept", justify="right")
    for name, (before, after) in widths.items():
        style = None if after < before else "dim"
        table.add_row(name, str(before), str(after), style=style)
    console.print(table)


def print_groups(groups: list[dict], console: Console) -> None:
    """The `analyze --groups` table: who reads each group, at which input channels."""
    table = Table(title=f"channel groups: {sum(g['prunable'] for g in groups)} prunable "
                        f"of {len(groups)} (members in --json)")
    table.add_column("group (first producer)", overflow="fold")
    table.add_column("width", justify="right")
    table.add_column("MACs/channel", justify="right")
    table.add_column(escape("read by [input channels] / why not prunable"), overflow="fold")
    for g in groups:
        if g["prunable"]:
            table.add_row(g["name"], str(g["width"]), f"{g['macs_per_channel']:,}",
                          escape(_readers(g)))
        else:
            table.add_row(g["name"], str(g["width"]), "-", escape("; ".join(g["blockers"])),
                          style="dim")
    console.print(table)


def _readers(group: dict) -> str:
    """Layers reading the group; a depthwise conv reading its own group is left out."""
    own = {m["module"] for m in group["members"] if m["role"] == "out"}
    parts = []
    for m in group["members"]:
        if m["role"] == "in" and m["module"] not in own:
            span = m["span"]
            where = "" if span == [0, m["size"]] else f"[{span[0]}:{span[1]}]" if span else "[…]"
            parts.append(m["module"] + where)
    return "\n".join(parts)
