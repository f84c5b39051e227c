"""Measuring a deployment target's latency model (`modnet-prune profile`) and the measured
latency of a prune beside its prediction.

A profile (`time_random_prunes`, then `fit_latency_model`) times random-width prunes of
the official MODNet (random weights: latency depends on the widths only) in the target's
runtime, each chunk interleaved with the unpruned model in one process, so a busy
machine slows all alike. Models are exported as `modnet-prune export` writes them
(dynamic shapes; the target's graph, fused by default), quantized for an int8 target, and
run on the CPU: ONNX Runtime's CPU provider or OpenVINO's CPU plugin, as `benchmark
--runtime` runs them. The runtimes fuse and schedule differently, so a cut that pays in one
may not in the other (benchmarks/int8.md): each has its own model. Each prune's
milliseconds are its fastest round over the unpruned model's fastest round
(`benchmark.fastest_ratio`: the rounds least disturbed by other processes) times the
unpruned model's fastest round. The per-layer cost model of `prune.latency` is fitted to
the first `samples` prunes and its error measured on `held_out` further ones, beside the
error of "latency is proportional to MACs". (Reported speed-ups elsewhere, `benchmark` and
the pipeline, are medians of per-round ratios; the model and `prune --target-latency`'s
check use the fastest rounds.)

Models are cached per target under $XDG_CACHE_HOME/modnet-prune/latency (default
~/.cache/modnet-prune/latency), one JSON file each, rebuilt on request.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from ..deploy.onnx_export import GRAPH_REVISION, GRAPHS, export_onnx
from ..deploy.quantize import quantize_graph
from ..deploy.runtime import OPENVINO_MISSING, OnnxRuntime, OpenVinoRuntime, Runtime
from ..errors import UserError
from ..files import package_version, write_json
from ..model import Arch, MODNet
from ..prune import PruneResult, model_graph, prune
from ..prune.allocate import Widths
from ..prune.latency import LatencyModel, Target, features, layer_shapes
from .benchmark import OtherCpuUse, cpu_model, fastest_ratio, interleaved_times

PROFILED_RUNTIMES = ("onnxruntime", "openvino")
PRECISIONS = ("fp32", "int8")
CHUNK = 8  # prunes timed per interleaved session with the unpruned model
# Random prunes fitted and held out, timed rounds each. 60 fitted: int8 (whose graph changes
# structure with the widths) missed +-10 % on 3 of 10 held-out prunes fitted on 30, on 2 of
# 20 fitted on 60 (benchmarks/latency_vs_macs.md); fp32 3 min, int8 5 min on 2 cores.
DEFAULT_SAMPLES, DEFAULT_HELD_OUT, DEFAULT_REPEAT = 60, 10, 8


def target_for(runtime: str = "onnxruntime", precision: str = "fp32", threads: int = 2,
               size: int = 512, graph: str = "fused") -> Target:
    """The target this machine offers for these settings (its CPU, the installed runtime)."""
    if runtime not in PROFILED_RUNTIMES:
        raise UserError(f"runtime {runtime!r}: latency models exist for "
                        f"{', '.join(PROFILED_RUNTIMES)}")
    if precision not in PRECISIONS:
        raise UserError(f"precision {precision!r}: latency models exist for {', '.join(PRECISIONS)}")
    if threads < 1:
        raise UserError(f"threads {threads}: must be at least 1")
    if size < 32 or size % 32:
        raise UserError(f"size {size}: must be a positive multiple of 32")
    if graph not in GRAPHS:
        raise UserError(f"graph {graph!r}: choose from {', '.join(GRAPHS)}")
    version = package_version(runtime)
    if version is None and runtime == "openvino":  # before any cache lookup or pruning
        raise UserError(OPENVINO_MISSING)
    return Target(runtime, version or "unknown", precision, threads,
                  (size, size), cpu_model(), graph, GRAPH_REVISION)


def cache_path(target: Target) -> Path:
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    cpu = re.sub(r"[^A-Za-z0-9]+", "-", target.cpu).strip("-")[:40]
    digest = hashlib.sha256(repr(sorted(asdict(target).items())).encode()).hexdigest()[:10]
    name = (f"{target.runtime}-{target.version}-{target.precision}-t{target.threads}-"
            f"{target.size[0]}x{target.size[1]}-{cpu}-{digest}.json")
    return root / "modnet-prune" / "latency" / name


def latency_model(target: Target, rebuild: bool = False, progress: bool = True,
                  **options) -> tuple[LatencyModel, bool]:
    """The cached model of `target`, or a new one measured now (and cached with its raw
    measurements); the flag says whether it was measured now. `options` go to `time_random_prunes`."""
    path = cache_path(target)
    if path.is_file() and not rebuild:
        try:
            model = LatencyModel.from_dict(json.loads(path.read_text()))
        except (ValueError, KeyError, TypeError, UserError):
            model = None  # another format or a damaged file: measure again
        if model is not None and model.target == target:
            _warn_if_busy(model, path)
            return model, False
    _check_counts(**options)  # before the message that measuring starts
    if progress:
        tqdm.write(f"measuring the latency model of {target.label()} (minutes; cached in "
                   f"{path.parent})", file=sys.stderr)
    with OtherCpuUse() as others:
        rows = time_random_prunes(target, progress=progress, **options)
    model = fit_latency_model(target, rows)
    if others.cpus is not None:
        model.load = {"other_cpus": others.cpus, "cpus": os.cpu_count() or 1}
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, {**model.to_dict(), "measurements": rows})
    _warn_if_busy(model, path)
    return model, True


def busy_while_measured(model: LatencyModel) -> str | None:
    """Why `model` may be off, if other work ran while it was measured: on average more
    CPUs busy with other processes than its timing threads left free (a quarter of a CPU
    of slack). Measured beside a training job on 2 cores, the unpruned model's fastest
    round was 2.4x slower than on the quiet machine and the held-out error rose from 5.9 %
    to 8.3 % mean, 10 % to 23 % max (benchmarks/latency_vs_macs.md, 2026-12-07)."""
    others, cpus = model.load.get("other_cpus"), model.load.get("cpus", 1)
    threads = model.target.threads
    if others is None or others <= max(cpus - threads, 0) + 0.25:
        return None
    return (f"measured while other processes kept {others:.1f} of {cpus} "
            f"CPUs busy, beside its {threads} timing thread(s): its predictions may be off by "
            "tens of percent")


def _warn_if_busy(model: LatencyModel, path: Path) -> None:
    reason = busy_while_measured(model)
    if reason:
        tqdm.write(f"warning: latency model {path.name}: {reason}; measure it again on a quiet "
                   "machine (modnet-prune profile --rebuild, with the same target options)",
                   file=sys.stderr)


def random_plans(count: int, seed: int, round_to: int = 8) -> list[dict[str, dict]]:
    """`count` plans for the official MODNet: each top-level part (backbone, each branch)
    draws a level in [0.05, 1], each group keeps about that share of its width (log-normal
    jitter), rounded to an allowed width, so prunes range from lightly to very thin and
    from even to lopsided."""
    graph = model_graph(MODNet(Arch()).eval())
    widths, rng = Widths(round_to), np.random.default_rng(seed)
    plans = []
    for _ in range(count):
        level: dict[str, float] = {}
        plan = {}
        for g in graph.prunable:
            part = g.name.split(".")[0]
            share = level.setdefault(part, rng.uniform(0.05, 1.0)) * rng.lognormal(0, 0.4)
            keep = widths.nearest(g, min(1.0, share) * g.width)
            if keep < g.width:
                plan[g.name] = {"keep": keep}
        plans.append(plan)
    return plans


def _check_counts(samples: int = DEFAULT_SAMPLES, held_out: int = DEFAULT_HELD_OUT,
                  repeat: int = DEFAULT_REPEAT, **_) -> None:
    if samples < 16 or held_out < 1 or repeat < 1:
        raise UserError("profile needs samples >= 16, held_out >= 1 and repeat >= 1")


def time_random_prunes(target: Target, samples: int = DEFAULT_SAMPLES,
                       held_out: int = DEFAULT_HELD_OUT, repeat: int = DEFAULT_REPEAT,
                       seed: int = 0, progress: bool = True) -> list[dict]:
    """Time the unpruned official MODNet and `samples + held_out` random prunes of it on
    `target`: rows {"plan", "ms", "held_out"}, the unpruned model first (plan {})."""
    _check_counts(samples, held_out, repeat)
    reference = MODNet(Arch()).eval()
    plans = random_plans(samples + held_out, seed)
    models = [reference] + [prune(reference, plan=plan, size=64).model
                            for plan in tqdm(plans, desc="profile: prune", unit="model",
                                             disable=not progress)]
    with tempfile.TemporaryDirectory(prefix="modnet-prune-profile-") as tmp:
        ms = time_against_reference(models, target, Path(tmp), repeat, progress)
    return [{"plan": plan, "ms": t, "held_out": i > samples}
            for i, (plan, t) in enumerate(zip([{}, *plans], ms))]


def fit_latency_model(target: Target, rows: Sequence[dict]) -> LatencyModel:
    """The latency model fitted to the rows not held out, with its error on the others."""
    reference = MODNet(Arch()).eval()
    x = torch.zeros(1, 3, *target.size)
    xs, macs = [], []
    for row in rows:
        model = prune(reference, plan=row["plan"], size=64).model if row["plan"] else reference
        shapes = layer_shapes(model, x, inference=True)
        xs.append(features(shapes))
        macs.append(sum(s.macs for s in shapes.values()))
    train = [i for i, row in enumerate(rows) if not row["held_out"]]
    test = [i for i, row in enumerate(rows) if row["held_out"]]
    model = LatencyModel.fit(target, [xs[i] for i in train], [rows[i]["ms"] for i in train])
    model.error = _held_out_error(model, [xs[i] for i in test], [rows[i]["ms"] for i in test],
                                  [macs[i] / macs[0] for i in test], rows[0]["ms"])
    return model


def time_against_reference(models: Sequence[nn.Module], target: Target, folder: Path,
                           repeat: int, progress: bool = True) -> list[float]:
    """Milliseconds of models[0] (the reference) and of every other model: each chunk of
    CHUNK models runs interleaved with the reference; a model's time is its fastest round
    over the reference's fastest round in that chunk (`fastest_ratio`), times the
    reference's fastest round over all chunks."""
    reference, others = models[0], list(models[1:])
    ref_path = folder / "reference.onnx"
    export_for(target, reference, ref_path)
    input_ = np.random.default_rng(0).uniform(-1, 1, (1, 3, *target.size)).astype(np.float32)
    ratios, ref_times = [], []
    chunks = [others[i:i + CHUNK] for i in range(0, len(others), CHUNK)]
    for index, chunk in enumerate(tqdm(chunks, desc="profile: time", unit="chunk",
                                       disable=not progress)):
        paths = []
        for j, model in enumerate(chunk):
            paths.append(folder / f"chunk{index}-{j}.onnx")
            export_for(target, model, paths[-1])
        runtimes = [_session(p, target) for p in [ref_path, *paths]]
        times = interleaved_times(runtimes, input_, repeat, warmup=1, progress=False)
        ref_times += times[0]
        ratios += [fastest_ratio(t, times[0]) for t in times[1:]]
        for p in paths:
            p.unlink()
    ref_ms = float(np.min(ref_times))
    return [ref_ms] + [r * ref_ms for r in ratios]


def export_for(target: Target, model: nn.Module, path: Path) -> None:
    """`model` as the target runs it: exported with the target's graph, and for int8
    quantized as `modnet-prune quantize` starts (every quantizable node int8, the float-only
    ops float; the ranges come from one random image: latency does not depend on them)."""
    export_onnx(model, path, check=False, graph=target.graph)
    if target.precision == "int8":
        calibration = np.random.default_rng(0).uniform(-1, 1, (1, 3, 64, 64)).astype(np.float32)
        path.write_bytes(quantize_graph(path.read_bytes(), [calibration]))


def _session(path: Path, target: Target) -> Runtime:
    """The file as `modnet-prune export` writes it (dynamic shapes) in the target's runtime,
    on the CPU: ONNX Runtime's CPU provider even where a GPU provider exists."""
    if target.runtime == "openvino":
        return OpenVinoRuntime(path, threads=target.threads)
    return OnnxRuntime(path, threads=target.threads, providers=["CPUExecutionProvider"])


def _held_out_error(model: LatencyModel, xs, measured, macs_fractions, reference_ms) -> dict:
    """Relative errors of `model`, and of latency proportional to MACs, on held-out prunes."""
    predicted = [model.predict(x) for x in xs]
    rel = np.array([p / m - 1 for p, m in zip(predicted, measured)])
    rel_macs = np.array([reference_ms * f / m - 1 for f, m in zip(macs_fractions, measured)])
    return {"held_out": len(xs), "reference_ms": reference_ms,
            "mean_abs": float(np.abs(rel).mean()), "max_abs": float(np.abs(rel).max()),
            "macs_proportional_mean_abs": float(np.abs(rel_macs).mean()),
            "macs_proportional_max_abs": float(np.abs(rel_macs).max()),
            "rows": [{"macs_fraction": f, "measured_ms": t, "predicted_ms": p,
                      "relative_error": float(e)}
                     for f, t, p, e in zip(macs_fractions, measured, predicted, rel)]}


def measured_latency(teacher: nn.Module, students: Sequence[nn.Module], target: Target,
                     repeat: int = 15, progress: bool = True) -> dict:
    """Measured milliseconds of `teacher` and `students` on `target`, interleaved in one
    process: {"teacher_ms", "students_ms": [...], "fractions": [student / teacher, ...]},
    each the fastest round, as the latency model is measured (`fastest_ratio`)."""
    with tempfile.TemporaryDirectory(prefix="modnet-prune-latency-") as tmp:
        paths = [Path(tmp) / f"model{i}.onnx" for i in range(len(students) + 1)]
        for model, path in zip([teacher, *students], paths):
            export_for(target, model, path)
        runtimes = [_session(p, target) for p in paths]
        x = np.random.default_rng(0).uniform(-1, 1, (1, 3, *target.size)).astype(np.float32)
        times = interleaved_times(runtimes, x, repeat, warmup=2, progress=progress)
    return {"teacher_ms": float(np.min(times[0])),
            "students_ms": [float(np.min(t)) for t in times[1:]],
            "fractions": [fastest_ratio(t, times[0]) for t in times[1:]]}



LANDING = 0.03  # relative: a prune measured this close to the request (or its prediction) is kept


def check_corrections(corrections: int, repeat: int) -> None:
    """Refuse bad `prune_to_measured_latency` counts (callers check before any work)."""
    if corrections < 0 or repeat < 1:
        raise UserError(f"corrections {corrections} / repeat {repeat}: need corrections >= 0 "
                        f"and repeat >= 1")


def prune_to_measured_latency(model: nn.Module, fraction: float, latency: LatencyModel,
                              corrections: int = 1, repeat: int = 15, progress: bool = True,
                              **options) -> PruneResult:
    """`prune(model, target_latency=fraction, latency=latency, **options)`, measured on the
    target beside its prediction. A latency model fitted to random prunes can be off by some
    per cent for the one the allocation picks, so when the measured fraction misses
    `fraction` by more than LANDING, and the prediction by more than LANDING too (else the miss
    is the widths' granularity), the goal is corrected by the measured / predicted ratio
    and the model pruned again from scratch (at most `corrections` times; NetAdapt's
    measure-and-adjust, one measurement per try). The result is the try measured closest to
    `fraction`; `result.latency` records `requested` (= fraction) and every try, including a
    corrected goal that could not be pruned to (its `skipped` says why), and the `goal` the
    result was pruned to."""
    check_corrections(corrections, repeat)
    goal, tries, best = fraction, [], None
    for attempt in range(corrections + 1):
        if attempt:
            goal = fraction * tries[-1]["predicted_fraction"] / tries[-1]["measured_fraction"]
            if not 0 < goal <= 1:
                tries.append({"goal": goal, "skipped": "outside (0, 1]"})
                break
        try:
            result = prune(model, target_latency=goal, latency=latency, **options)
        except UserError as e:
            if not attempt:
                raise
            tries.append({"goal": goal, "skipped": str(e)})
            break
        measured = measured_latency(model, [result.model], latency.target, repeat, progress)
        predicted = result.latency["predicted_ms"]
        result.latency["measured_ms"] = {"before": measured["teacher_ms"],
                                         "after": measured["students_ms"][0]}
        result.latency["measured_fraction"] = measured["fractions"][0]
        result.latency["goal"] = goal
        tries.append({"goal": goal, "predicted_fraction": predicted["after"] / predicted["before"],
                      "measured_fraction": measured["fractions"][0]})
        if best is None or abs(measured["fractions"][0] - fraction) < abs(
                best.latency["measured_fraction"] - fraction):
            best = result
        landed = abs(tries[-1]["measured_fraction"] / fraction - 1) <= LANDING
        # measured as predicted: the miss is the widths' granularity, a new goal changes nothing
        as_predicted = abs(tries[-1]["measured_fraction"] / tries[-1]["predicted_fraction"]
                           - 1) <= LANDING
        if landed or as_predicted:
            break
    best.latency.update(requested=fraction, tries=tries)
    return best
