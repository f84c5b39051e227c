"""Is the latency model's held-out error the model's or the clock's? Re-time the held-out
random prunes of a cached latency model (`modnet-prune profile`) in fresh sessions and set
the model's error against how far the re-timings move from the profile's own timing.

    PYTHONPATH=src python benchmarks/latency_retime.py --precision int8 --sessions 3

Each session builds new ONNX Runtime sessions of the unpruned official MODNet and the
held-out prunes (exported once, as the profile exported them), shuffles their order and
times them interleaved (`--repeat` rounds); each prune's latency is its fastest round over
the reference's (`fastest_ratio`, the profile's own measure), times the profile's reference
milliseconds. A prune the model misses in every session is the model's error; one whose
re-timings scatter as widely as the model's miss is the clock's.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch starts its thread pool

import numpy as np  # noqa: E402
import torch  # noqa: E402

from modnet_prune.errors import UserError  # noqa: E402
from modnet_prune.measure.benchmark import fastest_ratio, interleaved_times  # noqa: E402
from modnet_prune.measure.latency import (cache_path, export_for, latency_model,  # noqa: E402
                                          target_for)
from modnet_prune.deploy.runtime import OnnxRuntime  # noqa: E402
from modnet_prune.model import Arch, MODNet  # noqa: E402
from modnet_prune.prune import prune  # noqa: E402
from modnet_prune.prune.latency import features, layer_shapes  # noqa: E402


def held_out_rows(target) -> tuple[object, list[dict], float]:
    """(latency model, its held-out measurement rows, the profile's reference ms)."""
    model, measured_now = latency_model(target)
    if measured_now:
        print("(no cached model: measured one now)", file=sys.stderr)
    rows = json.loads(cache_path(target).read_text())["measurements"]
    return model, [r for r in rows if r["held_out"]], rows[0]["ms"]


def retime(target, plans: list[dict], sessions: int, repeat: int, seed: int) -> np.ndarray:
    """(sessions, prunes) fastest-round ratios of each prune over the unpruned model."""
    reference = MODNet(Arch()).eval()
    x = np.random.default_rng(0).uniform(-1, 1, (1, 3, *target.size)).astype(np.float32)
    rng = np.random.default_rng(seed)
    ratios = np.zeros((sessions, len(plans)))
    with tempfile.TemporaryDirectory(prefix="modnet-prune-retime-") as tmp:
        paths = [Path(tmp) / f"m{i}.onnx" for i in range(len(plans) + 1)]
        export_for(target, reference, paths[0])
        for plan, path in zip(plans, paths[1:]):
            export_for(target, prune(reference, plan=plan, size=64).model, path)
        for s in range(sessions):
            order = rng.permutation(len(plans))
            runtimes = [OnnxRuntime(p, threads=target.threads, providers=["CPUExecutionProvider"])
                        for p in [paths[0], *(paths[1 + i] for i in order)]]
            times = interleaved_times(runtimes, x, repeat, warmup=2, progress=False)
            for slot, i in enumerate(order):
                ratios[s, i] = fastest_ratio(times[1 + slot], times[0])
            print(f"session {s + 1}/{sessions} done", file=sys.stderr)
    return ratios


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--precision", default="int8", choices=["fp32", "int8"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--sessions", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = ap.parse_args(argv)
    if args.sessions < 1 or args.repeat < 1:
        print("error: --sessions and --repeat must be at least 1", file=sys.stderr)
        return 2
    try:
        target = target_for(precision=args.precision, threads=args.threads, size=args.size)
        model, rows, ref_ms = held_out_rows(target)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    reference = MODNet(Arch()).eval()
    x = torch.zeros(1, 3, *target.size)
    predicted = [model.predict(features(layer_shapes(
        prune(reference, plan=r["plan"], size=64).model, x, inference=True))) / ref_ms
        for r in rows]
    profiled = [r["ms"] / ref_ms for r in rows]
    ratios = retime(target, [r["plan"] for r in rows], args.sessions, args.repeat, args.seed)
    out = []
    for i, (p, m) in enumerate(zip(predicted, profiled)):
        again = ratios[:, i]
        med = float(np.median(again))
        out.append({"prune": i, "profiled": m, "retimed": again.tolist(), "predicted": p,
                    "error_vs_profiled": p / m - 1, "error_vs_retimed_median": p / med - 1,
                    "retimed_spread": float(again.max() / again.min() - 1)})
    if args.json:
        print(json.dumps({"target": target.label(), "rows": out}, indent=1))
        return 0
    print(f"{target.label()}: {args.sessions} sessions x {args.repeat} rounds; fractions of "
          f"the unpruned model")
    print("| prune | profiled | re-timed (each session) | predicted | error vs profiled | "
          "error vs re-timed median |")
    print("|---:|---:|---|---:|---:|---:|")
    for r in out:
        again = " ".join(f"{v:.3f}" for v in r["retimed"])
        print(f"| {r['prune']} | {r['profiled']:.3f} | {again} | {r['predicted']:.3f} | "
              f"{r['error_vs_profiled']:+.1%} | {r['error_vs_retimed_median']:+.1%} |")
    for key in ("error_vs_profiled", "error_vs_retimed_median"):
        errs = np.abs([r[key] for r in out])
        print(f"{key}: mean |{errs.mean():.1%}|, max |{errs.max():.1%}|, "
              f"{int((errs <= 0.10).sum())} of {len(errs)} within 10 %")
    return 0


if __name__ == "__main__":
    sys.exit(main())
