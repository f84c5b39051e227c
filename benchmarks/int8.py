"""int8 vs fp32 in ONNX Runtime: latency (interleaved, 1 and 2 threads), held-out MAD at two
sizes, and where the time goes (ORT profiling, share by op type). Writes nothing but stdout.

    python benchmarks/int8.py [--teacher models/modnet-synthetic.safetensors] [--repeat 10]

The student is a one-shot prune of the teacher to 50 % of its inference MACs (>= 16
channels per group, as ours-50) with BatchNorm re-estimated, without fine-tuning: its
accuracy is not ours-50's, its graph and cost are. Both models are quantized as the pipeline
does (default settings, calibration on 16 synthetic portraits at 128x128 from seeds no
other set uses, the budget checked on the next 8); a model refused for its budget is
quantized again without one, so that its speed can still be measured, and says so.
"""
from __future__ import annotations

import argparse
import collections
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

import modnet_prune as mp
from modnet_prune.data import open_dataset, open_source
from modnet_prune.deploy.onnx_export import export_onnx
from modnet_prune.deploy.quantize import BudgetError, quantize_model
from modnet_prune.deploy.runtime import OnnxRuntime
from modnet_prune.metrics import evaluate
from modnet_prune.prune import prune
from modnet_prune.measure.benchmark import benchmark_many, environment
from modnet_prune.train import recalibrate_bn

CALIBRATION = "synthetic:24@128+seed20000000"
COUNT = 16  # the calibration count int8.md's tables were measured with (the default until 2026-12-05)
HELD_OUT = {128: "synthetic:100@128+seed10000000", 512: "synthetic:20@512+seed10000000"}


def profile(path: Path, threads: int, size: int, runs: int = 3) -> dict[str, float]:
    """Share of ORT's kernel time per op type (after ORT's own fusions), over `runs` runs."""
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.enable_profiling = threads, True
    options.profile_file_prefix = str(path.with_suffix(""))
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).uniform(-1, 1, (1, 3, size, size)).astype(np.float32)
    for _ in range(runs):
        session.run(None, {"image": x})
    events = json.loads(Path(session.end_profiling()).read_text())
    totals: collections.Counter = collections.Counter()
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            totals[e["args"]["op_name"]] += e["dur"]
    whole = sum(totals.values())
    return {op: t / whole for op, t in totals.most_common()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", default="models/modnet-synthetic.safetensors")
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--size", type=int, default=512, help="latency and profiling size")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="int8-bench-"))
    teacher = mp.load(args.teacher)
    student = prune(teacher, target_macs=0.5, min_channels=16, round_to=8,
                    size=(512, 512)).model
    train = open_dataset("synthetic:64@128+seed0", size=128, train=True)
    recalibrate_bn(student, train, batches=4, batch_size=16, seed=0)
    student.eval()
    files, notes = {}, []
    for name, model in (("teacher", teacher), ("student", student)):
        export_onnx(model, folder / f"{name}.onnx")
        files[name] = folder / f"{name}.onnx"
        int8 = folder / f"{name}.int8.onnx"
        start = time.perf_counter()
        try:
            report = quantize_model(files[name], CALIBRATION, int8, count=COUNT, size=128)
        except BudgetError as e:
            notes.append(f"{name}: refused in {time.perf_counter() - start:.1f} s: {e}")
            report = quantize_model(files[name], CALIBRATION, int8, count=COUNT, size=128,
                                    budget=1.0)
        files[f"{name} int8"] = int8
        notes.append(f"{name}: quantized in {time.perf_counter() - start:.1f} s, int8 vs fp32 "
                     f"mean |Δα| {report.delta_mean:.2e} (p99 {report.delta_p99:.2e}) at 128 "
                     f"(budget {report.budget:g}), kept float: {report.float_ops} + "
                     f"{len(report.kept_float)} nodes")
    wide = quantize_model(files["teacher"], CALIBRATION.replace("@128", "@512"),
                          folder / "teacher.int8-512.onnx", count=COUNT, size=512, budget=1.0)
    notes.append(f"teacher calibrated and checked at 512 instead: mean |Δα| "
                 f"{wide.delta_mean:.2e} (p99 {wide.delta_p99:.2e})")

    print("## held-out MAD (whole image)\n")
    print("| model | " + " | ".join(f"MAD at {s}² ({HELD_OUT[s]})" for s in HELD_OUT) + " |")
    print("|---|" + "---:|" * len(HELD_OUT))
    for name, path in files.items():
        runtime = OnnxRuntime(path, threads=2)
        mads = [evaluate(runtime, open_source(spec), size=size)["mad"] for size, spec in HELD_OUT.items()]
        print(f"| {name} | " + " | ".join(f"{m:.5f}" for m in mads) + " |")

    names, paths = list(files), [str(p) for p in files.values()]
    print(f"\n## latency at {args.size}², ONNX Runtime, interleaved, {args.repeat} rounds\n")
    print("| threads | " + " | ".join(f"{n} (ms)" for n in names) + " | "
          + " | ".join(f"{n} speed-up" for n in names[1:]) + " |")
    print("|---|" + "---:|" * (2 * len(names) - 1))
    for threads in (1, 2):
        result = benchmark_many(paths, runtime="onnxruntime", size=args.size, threads=threads,
                                repeat=args.repeat, warmup=2, rss=False, progress=False)
        ms = [m["median_ms"] for m in result["models"]]
        speedups = [1 / m["ratio"] for m in result["models"][1:]]
        print(f"| {threads} | " + " | ".join(f"{v:.1f}" for v in ms) + " | "
              + " | ".join(f"{v:.2f}×" for v in speedups) + " |")
        load = result["env"]["load_avg"][0]
    print(f"\n(speed-ups: median of per-round teacher fp32 / model ratios; load average "
          f"{load:.1f} on {environment(2, (args.size,) * 2, 1, 0)['cpu_count']} CPUs)")

    print(f"\n## where the time goes (2 threads, {args.size}², share of kernel time)\n")
    shares = {name: profile(path, 2, args.size) for name, path in files.items()}
    ops = sorted({op for s in shares.values() for op in s},
                 key=lambda op: -max(s.get(op, 0) for s in shares.values()))
    print("| op type | " + " | ".join(names) + " |")
    print("|---|" + "---:|" * len(names))
    for op in ops:
        if max(s.get(op, 0) for s in shares.values()) >= 0.005:
            print(f"| {op} | " + " | ".join(f"{100 * shares[n].get(op, 0):.1f} %" for n in names) + " |")
    print()
    for line in notes:
        print(f"- {line}")
    env = environment(2, (args.size, args.size), args.repeat, 2)
    print(f"- CPU: {env['cpu']}; int8: {env['int8']['description']}; onnxruntime "
          f"{env['onnxruntime']}", file=sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
