"""How latency follows MACs as MODNet is pruned: one-shot MACs-targeted prunes of a checkpoint,
timed side by side with it at one and at several threads; and latency-targeted prunes beside
MACs-targeted ones of equal predicted latency.

    python benchmarks/latency_vs_macs.py --out benchmarks/latency_vs_macs.md

Each fraction is a one-shot `prune(target_macs=f)` (L1, round_to 8) of the checkpoint (by
default the shipped teacher), exported to ONNX; latency does not depend on the weights, only
on the widths, so no fine-tuning is needed. Each `--latency-targets` value F is a one-shot
`prune(target_latency=F)` with the cached latency model of ONNX Runtime fp32 at the first
`--threads` count and 512x512 (`modnet-prune profile` builds it), paired with the
MACs-targeted prune whose predicted latency is the same (its MACs target found by bisection). For every thread count, the checkpoint and all
students run interleaved in one ONNX Runtime process (and, with `--torch`, in PyTorch) and
each speed-up is the median of per-round ratios. Run it on a quiet machine: the ratios are
robust to a steady load, not to a burst that hits one thread count only.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch starts its thread pool

import torch  # noqa: E402

from modnet_prune.errors import UserError  # noqa: E402
from modnet_prune.deploy.onnx_export import export_onnx  # noqa: E402
from modnet_prune.graph.cost import count_params  # noqa: E402
from modnet_prune.model.io import load, save  # noqa: E402
from modnet_prune.files import write_atomic
from modnet_prune.prune import prune  # noqa: E402
from modnet_prune.measure.benchmark import benchmark_many, cpu_model  # noqa: E402
from modnet_prune.measure.latency import latency_model, target_for  # noqa: E402

TEACHER = Path(__file__).resolve().parent.parent / "models" / "modnet-synthetic.safetensors"


def students(checkpoint: Path, fractions: list[float], latency_targets: list[float],
             min_channels: int, threads: int, folder: Path) -> list[dict]:
    """One-shot prunes of `checkpoint`, saved as safetensors and ONNX in `folder`."""
    teacher = load(checkpoint).float().eval()
    exported = export_onnx(teacher, folder / "checkpoint.onnx")
    latency = latency_model(target_for(threads=threads))[0] if latency_targets else None
    rows = [{"name": "checkpoint", "macs": exported.macs,
             "params": count_params(teacher), "safetensors": str(checkpoint),
             "onnx": exported.out, "predicted": 1.0}]

    def add(name: str, stem: str, result) -> None:
        save(result.model, folder / f"{stem}.safetensors")
        export_onnx(result.model, folder / f"{stem}.onnx")
        predicted = result.latency["predicted_ms"] if result.latency else None
        rows.append({"name": name, "macs": result.macs_after, "params": result.params_after,
                     "safetensors": str(folder / f"{stem}.safetensors"),
                     "onnx": str(folder / f"{stem}.onnx"),
                     "predicted": predicted and predicted["after"] / predicted["before"]})

    for f in fractions:
        add(f"prune to {f:.2f} of the MACs", f"macs-{f:.2f}",
            prune(teacher, target_macs=f, min_channels=min_channels, latency=latency))
    for f in latency_targets:
        by_latency = prune(teacher, target_latency=f, min_channels=min_channels, latency=latency)
        add(f"prune to {f:.2f} of the latency", f"latency-{f:.2f}", by_latency)
        add(f"MACs-targeted, same predicted latency as {f:.2f}", f"same-{f:.2f}",
            same_predicted_latency(teacher, by_latency, min_channels, latency))
    return rows


def same_predicted_latency(teacher, by_latency, min_channels: int, latency, steps: int = 8):
    """The MACs-targeted prune whose predicted latency is closest to `by_latency`'s without
    being above it (bisection on the MACs target)."""
    goal = by_latency.latency["predicted_ms"]["after"]
    low, high, best = 0.02, 1.0, None
    for _ in range(steps):
        middle = (low + high) / 2
        try:
            result = prune(teacher, target_macs=middle, min_channels=min_channels, latency=latency)
        except UserError:  # below the smallest reachable MACs
            low = middle
            continue
        if result.latency["predicted_ms"]["after"] <= goal:
            low, best = middle, result
        else:
            high = middle
    if best is None:
        raise UserError(f"no MACs target reaches {goal:.1f} predicted ms")
    return best


def measure(rows: list[dict], runtimes: list[str], threads: list[int], repeat: int) -> dict:
    """{runtime: {threads: [speed-up of each row over the first]}} plus median milliseconds."""
    speedup, median_ms, env = {}, {}, None
    for runtime in runtimes:
        key = "onnx" if runtime == "onnxruntime" else "safetensors"
        for t in threads:
            result = benchmark_many([r[key] for r in rows], runtime=runtime, size=512, threads=t,
                                    repeat=repeat, warmup=3, rss=False)
            speedup.setdefault(runtime, {})[t] = [1 / m["ratio"] for m in result["models"]]
            median_ms.setdefault(runtime, {})[t] = [m["median_ms"] for m in result["models"]]
            env = env or result["env"]
    return {"speedup": speedup, "median_ms": median_ms, "env": env}


def report(rows: list[dict], measured: dict, args) -> str:
    runs = [(rt, t) for rt in measured["speedup"] for t in measured["speedup"][rt]]
    label = {"onnxruntime": "ORT", "torch": "PyTorch"}
    env = measured["env"]
    lines = [
        "# Latency vs MACs: one-shot prunes of MODNet at 512x512", "",
        f"`{args.command}`, {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC.", "",
        f"{cpu_model()} ({os.cpu_count()} logical CPUs), torch {env['torch']}, onnxruntime "
        f"{env['onnxruntime']}; batch 1, {args.repeat} interleaved rounds per thread count, "
        f"median per-round speed-up over the checkpoint ({Path(args.checkpoint).name}); "
        f"min_channels {args.min_channels}; load average {os.getloadavg()[0]:.2f} at the end.", "",
        "Latency here is a property of each architecture (its pruned widths): these one-shot "
        "prunes are not fine-tuned, so no accuracy is paired with it.", "",
        "| model | MACs | params | predicted speed-up | " + " | ".join(
            f"{label[rt]} {t} thr: ms / speed-up" for rt, t in runs) + " |",
        "|---|---:|---:|---:|" + "---:|" * len(runs),
    ]
    for i, r in enumerate(rows):
        cells = [f"{measured['median_ms'][rt][t][i]:.1f} / {measured['speedup'][rt][t][i]:.2f}×"
                 for rt, t in runs]
        predicted = f"{1 / r['predicted']:.2f}×" if r["predicted"] else "–"
        lines.append(f"| {r['name']} | {r['macs'] / 1e9:.2f} G ({r['macs'] / rows[0]['macs']:.3f}) "
                     f"| {r['params']:,} | {predicted} | " + " | ".join(cells) + " |")
    if args.latency_targets:
        lines += pairs(rows, measured, args)
    return "\n".join(lines) + "\n"


def pairs(rows: list[dict], measured: dict, args) -> list[str]:
    """Each latency-targeted prune beside the MACs-targeted one of equal predicted latency."""
    t = args.threads[0]
    speedup = measured["speedup"]["onnxruntime"][t]
    lines = ["", f"Latency-targeted vs MACs-targeted at equal predicted latency (ORT, {t} thr):",
             "", "| target latency | predicted | measured | MACs | params "
             "| MACs-targeted: measured | MACs | params |", "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    first = len(rows) - 2 * len(args.latency_targets)
    for k, f in enumerate(args.latency_targets):
        i, j = first + 2 * k, first + 2 * k + 1
        a, b = rows[i], rows[j]
        lines.append(f"| {f:.2f} (×{1 / f:.2f}) | ×{1 / a['predicted']:.2f} | ×{speedup[i]:.2f} "
                     f"| {a['macs'] / rows[0]['macs']:.3f} | {a['params']:,} | ×{speedup[j]:.2f} "
                     f"| {b['macs'] / rows[0]['macs']:.3f} | {b['params']:,} |")
    return lines


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", default=str(TEACHER))
    p.add_argument("--fractions", type=float, nargs="*", default=[0.5, 0.35, 0.25, 0.2, 0.18, 0.15])
    p.add_argument("--latency-targets", type=float, nargs="*", default=[],
                   help="also prune to these fractions of the predicted latency (first --threads)")
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--min-channels", type=int, default=1)
    p.add_argument("--repeat", type=int, default=15)
    p.add_argument("--torch", action="store_true", help="time PyTorch too (slower)")
    p.add_argument("--out", help="write the Markdown table here (default: print only)")
    p.add_argument("--json", action="store_true", help="print JSON instead of the table")
    args = p.parse_args()
    args.command = "python benchmarks/latency_vs_macs.py " + " ".join(sys.argv[1:])
    try:
        with tempfile.TemporaryDirectory() as tmp:
            rows = students(Path(args.checkpoint), args.fractions, args.latency_targets,
                            args.min_channels, args.threads[0], Path(tmp))
            runtimes = ["onnxruntime"] + (["torch"] if args.torch else [])
            measured = measure(rows, runtimes, args.threads, args.repeat)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    text = report(rows, measured, args)
    if args.out:
        write_atomic(Path(args.out), lambda tmp: Path(tmp).write_text(text))
    if args.json:
        keep = ("name", "macs", "params", "predicted")
        print(json.dumps({"models": [{k: r[k] for k in keep} for r in rows], **measured}, indent=1))
    else:
        print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
