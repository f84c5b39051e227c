"""Training throughput (samples/s) of the teacher and of a 50%-MACs student, on CPU.

Each configuration runs the real `modnet_prune.train.fit` loop (DataLoader workers
generating synthetic portraits, official losses, SGD step, logging) in a temporary run
folder; samples/s comes from its log rows, skipping the first (warm-up) window. The
configurations are interleaved over several rounds so that a busy machine slows all
alike; ratios are medians of per-round ratios.

    python benchmarks/train_speed.py --out benchmarks/train_speed.md

Configurations: `teacher` (official architecture, supervised training), `student`
(50% of the teacher's inference MACs, supervised), `student+kd` (the student fine-tuned
with distillation: a teacher forward per step and the lr8x/hr2x feature adapters), and
the data loader alone (to show that data generation does not stall training); each model
configuration in every `--precision` (fp32, and bf16: forwards under bfloat16 autocast,
which is only worth it on CPUs with bf16 units, AVX512-BF16 or AMX; the report says
whether this one has them).
The student is `prune(MODNet(), target_macs=0.5)` when `modnet_prune.prune` is available,
otherwise every width of the official model scaled by one factor to 50% MACs (printed).
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch starts its thread pool

import torch  # noqa: E402

import modnet_prune as mp  # noqa: E402
from modnet_prune.data import open_dataset  # noqa: E402
from modnet_prune.files import write_atomic  # noqa: E402
from modnet_prune.train import Context, TrainConfig, fit  # noqa: E402
from modnet_prune.train.loader import Batches  # noqa: E402
from modnet_prune.train.loop import has_bf16_units  # noqa: E402
from modnet_prune.graph.cost import inference_macs  # noqa: E402
from modnet_prune.train.rundir import RunDir  # noqa: E402

KD = {"matte": 1.0, "detail": 1.0, "semantic": 10.0, "lr8x": 1.0, "hr2x": 1.0}


def scaled_arch(factor: float) -> mp.Arch:
    official = mp.Arch()
    s = lambda w: max(1, round(w * factor))  # noqa: E731
    return mp.Arch(stem=s(official.stem), stages=tuple(map(s, official.stages)),
                   expansion=tuple(map(s, official.expansion)), last=s(official.last),
                   se_hidden=s(official.se_hidden),
                   heads={k: s(w) for k, w in official.heads.items()})


def half_macs_student(size: int = 512) -> tuple[mp.MODNet, str]:
    teacher_macs = inference_macs(mp.MODNet().eval(), size)
    try:
        from modnet_prune.prune import prune
    except ImportError:
        lo, hi = 0.3, 1.0
        for _ in range(20):  # bisection on one global width factor
            mid = (lo + hi) / 2
            frac = inference_macs(mp.MODNet(scaled_arch(mid)).eval(), size) / teacher_macs
            lo, hi = (mid, hi) if frac < 0.5 else (lo, mid)
        model = mp.MODNet(scaled_arch(hi))
        how = f"hand-narrowed: every width x {hi:.3f}"
    else:
        model = prune(mp.MODNet().eval(), target_macs=0.5).model
        how = "prune(MODNet(), target_macs=0.5), default criterion and allocation"
    frac = inference_macs(model.eval(), size) / teacher_macs
    return model, f"{how}; {frac:.1%} of the teacher's inference MACs at {size}x{size}"


def measure(name: str, precision: str, student_arch: mp.Arch, args, data,
            folder: Path) -> list[float]:
    """samples/s of each logged window after the first, for one run of `name`."""
    model = mp.MODNet() if name == "teacher" else mp.MODNet(student_arch)
    teacher = mp.MODNet().eval() if name == "student+kd" else None
    cfg = TrainConfig(size=args.size, batch_size=args.batch_size, steps=args.steps,
                      workers=args.workers, log_every=args.steps // 3,
                      checkpoint_every=10**9, schedule="constant", lr=0.001,
                      distill=KD if teacher is not None else {}, precision=precision)
    out = folder / f"{name}-{precision}-{time.monotonic_ns()}"
    fit(model.train(), data, cfg, out, teacher=teacher, progress=False)
    rows = [r for r in RunDir(out).rows() if r["kind"] == "train"]
    return [r["samples_per_s"] for r in rows[1:]]  # first window includes warm-up


def measure_data(args, data) -> list[float]:
    """samples/s of the loader alone (same workers/prefetch as training): the rate the
    model would be starved at; it must be well above the training rates."""
    batches = Batches(data, args.batch_size, Context(), seed=0, workers=args.workers)
    stream = batches.from_step(0)
    next(stream)  # worker start-up
    start = time.perf_counter()
    for _ in range(args.steps):
        next(stream)
    return [args.steps * args.batch_size / (time.perf_counter() - start)]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--steps", type=int, default=12, help="steps per measured run")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--precision", default="fp32,bf16",
                   help="comma-separated training precisions to compare (fp32, bf16)")
    p.add_argument("--out", help="write the markdown report here")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    student, how = half_macs_student()
    data = open_dataset(f"synthetic:256@{args.size}", size=args.size, train=True)
    precisions = args.precision.split(",")
    runs = [(name, precision) for precision in precisions
            for name in ("teacher", "student", "student+kd")] + [("data loader alone", None)]
    load_start = os.getloadavg()[0]
    results = {run: [] for run in runs}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.rounds):
            for name, precision in runs:
                results[name, precision].append(
                    measure_data(args, data) if precision is None
                    else measure(name, precision, student.arch, args, data, Path(tmp)))
    report = render(args, how, results, load_start)
    print(report)
    if args.out:
        write_atomic(Path(args.out), lambda t: Path(t).write_text(report))
    return 0


def render(args, how: str, results: dict, load_start: float) -> str:
    per_round = {run: [statistics.median(r) for r in rs] for run, rs in results.items()}
    baseline = next(run for run in per_round if run[0] == "teacher")  # the first precision
    teacher = per_round[baseline]
    bf16 = "yes" if has_bf16_units(torch.device("cpu")) else "no"
    lines = [f"# Training throughput at {args.size}x{args.size}", "",
             f"`python benchmarks/train_speed.py {' '.join(sys.argv[1:])}`, "
             f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC.", "",
             f"Batch {args.batch_size}, {args.threads} torch thread(s), {args.workers} data "
             f"worker(s), {args.rounds} interleaved rounds of {args.steps} steps; "
             f"torch {torch.__version__}, {platform.processor() or platform.machine()} "
             f"({os.cpu_count()} logical CPUs; bf16 units: {bf16}), load average "
             f"{load_start:.2f} at start.", "",
             f"Student: {how}.", "",
             f"| configuration | precision | samples/s (median) | vs teacher {baseline[1]} |",
             "|---|---|---:|---:|"]
    for (name, precision), values in per_round.items():
        ratio = statistics.median(v / t for v, t in zip(values, teacher))
        lines.append(f"| {name} | {precision or '–'} | {statistics.median(values):.2f} | "
                     f"{ratio:.2f}x |")
    lines += ["", "Samples/s counts training samples through forward, loss, backward and the "
              "optimizer step (and the teacher's forward for `student+kd`), with data loading "
              "overlapped; `data loader alone` is the synthetic-data pipeline by itself (it "
              "competes for the same cores during training). bf16 runs the forward passes "
              "(student and teacher) under bfloat16 autocast; weights, optimizer, losses "
              "and evaluation stay fp32."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
