"""Latency of models side by side: interleaved timed runs in one process, same input.

Models run round-robin (A B A B ...), so a neighbour's burst of load or a frequency
change hits every model alike; ratios are taken per round and their median reported,
which is far more stable on a shared machine than a ratio of separately measured means.

Peak RSS is a per-process number, so it cannot be split between models sharing a
process. Each model's peak is therefore measured in a fresh child process that
loads it alone and runs it twice at the same size and thread count; the peak of a child
that only imports the runtime is reported beside it (`env.rss_baseline_mb`).
"""
from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from importlib import import_module

import numpy as np
import torch
from tqdm import tqdm

from ..files import package_version
from ..errors import UserError
from ..deploy.cpu import int8_capability
from ..deploy.runtime import ONNX_RUNTIMES, open_runtime
from ..model.inputs import Size, parse_size

Infer = Callable[[np.ndarray], object]


def interleaved_times(fns: Sequence[Infer], x: np.ndarray, repeat: int, warmup: int,
                      progress: bool | None = None) -> list[list[float]]:
    """Milliseconds of `repeat` calls of each fn on `x`, round-robin, after `warmup` rounds."""
    _check_counts(repeat, warmup)
    times: list[list[float]] = [[] for _ in fns]
    # progress None: a bar on a terminal only, silence in pipes and tests
    disable = None if progress is None else not progress
    for step in tqdm(range(warmup + repeat), desc="benchmark", unit="round", disable=disable):
        for fn, record in zip(fns, times):
            start = time.perf_counter()
            fn(x)
            elapsed = time.perf_counter() - start
            if step >= warmup:
                record.append(elapsed * 1e3)
    return times


def _check_counts(repeat: int, warmup: int, threads: int = 1) -> None:
    if repeat < 1 or warmup < 0 or threads < 1:
        raise UserError(f"need repeat >= 1, warmup >= 0 and threads >= 1 "
                        f"(got {repeat}, {warmup} and {threads})")


def latency_stats(times_ms: Sequence[float], batch: int = 1) -> dict:
    t = np.asarray(times_ms, dtype=np.float64)
    median = float(np.median(t))
    return {"median_ms": median, "p90_ms": float(np.percentile(t, 90)), "min_ms": float(t.min()),
            "mean_ms": float(t.mean()), "throughput": batch * 1e3 / median}


def pair_ratio(a_ms: Sequence[float], b_ms: Sequence[float]) -> float:
    """Median over rounds of a_i / b_i (below 1: A is faster)."""
    return float(np.median(np.asarray(a_ms) / np.asarray(b_ms)))


def fastest_ratio(a_ms: Sequence[float], b_ms: Sequence[float]) -> float:
    """Fastest round of A over fastest round of B. Another process can only slow a round
    down, so on a shared machine the fastest rounds are the least disturbed: measured on one
    (20 interleaved rounds of 9 models, split in halves), this ratio moved 2.3 % between the
    halves where the median per-round ratio moved 6.2 %. The latency model is fitted to it."""
    return float(np.min(a_ms) / np.min(b_ms))


def _proc_line(path: str, prefix: str) -> str | None:
    """The first line of a /proc file that starts with `prefix` (None: no such file or line)."""
    try:
        with open(path) as f:
            return next((line for line in f if line.startswith(prefix)), None)
    except OSError:
        return None


def cpu_model() -> str:
    line = _proc_line("/proc/cpuinfo", "model name")
    return line.split(":", 1)[1].strip() if line else platform.processor() or platform.machine()


def busy_warning(threads: int) -> str | None:
    """A warning when the 1-minute load average exceeds the thread count we time with."""
    load = os.getloadavg()[0]
    if load > threads:
        return (f"load average {load:.2f} is above the {threads} benchmark thread(s): the machine "
                "is busy, absolute times are noisy; trust the interleaved ratio more")
    return None


class OtherCpuUse:
    """How many CPUs other processes (and the hypervisor's other guests: steal time) kept
    busy on average between entering and leaving: the machine's busy CPU time from
    /proc/stat less this process's own, over the wall time. Unlike the load average it
    does not lag (a job paused a minute ago still weighs on the 1-minute average).
    `cpus` stays None where /proc/stat is missing (not Linux)."""

    def __enter__(self) -> "OtherCpuUse":
        self.cpus: float | None = None
        self._start = _busy_and_own_seconds()
        return self

    def __exit__(self, *exc) -> None:
        end = _busy_and_own_seconds()
        if self._start is not None and end is not None:
            (busy0, own0, wall0), (busy1, own1, wall1) = self._start, end
            self.cpus = max(busy1 - busy0 - (own1 - own0), 0.0) / max(wall1 - wall0, 1e-9)


def _busy_and_own_seconds() -> tuple[float, float, float] | None:
    """(all CPUs' busy seconds since boot, this process's CPU seconds, a wall clock)."""
    line = _proc_line("/proc/stat", "cpu ")
    if line is None:
        return None
    # user nice system idle iowait irq softirq steal ...: all but idle and iowait are busy
    ticks = [int(v) for v in line.split()[1:9]]
    busy = (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")
    own = resource.getrusage(resource.RUSAGE_SELF)
    return busy, own.ru_utime + own.ru_stime, time.monotonic()


def default_threads() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _peak_rss_mb_self() -> float:
    """Peak RSS of this process image. Linux's VmHWM starts afresh at exec; ru_maxrss does not
    (it keeps the parent's peak across fork + exec), so it is only the fallback elsewhere."""
    line = _proc_line("/proc/self/status", "VmHWM:")
    if line:
        return int(line.split()[1]) / 2**10  # kB
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes on macOS, KiB else


def rss_probe(argv: Sequence[str]) -> None:
    """Child-process entry: load one model (or none: baseline), run it twice, print peak RSS."""
    path, runtime, h, w, threads = argv[0], argv[1], int(argv[2]), int(argv[3]), int(argv[4])
    torch.set_num_threads(threads)
    if path:
        rt = open_runtime(path, runtime, threads=threads)
        x = np.zeros((1, 3, h, w), dtype=np.float32)
        rt(x)
        rt(x)
    else:  # the baseline includes the import of every runtime the benchmark uses
        for name in runtime.split(","):
            if name in ONNX_RUNTIMES:
                import_module(name)
    print(json.dumps({"peak_rss_mb": _peak_rss_mb_self()}))


def peak_rss_mb(path: str, runtime: str, size: Size, threads: int) -> float:
    """Peak RSS of a fresh process that runs `path` alone (path "" = imports only)."""
    code = "import sys; from modnet_prune.measure.benchmark import rss_probe; rss_probe(sys.argv[1:])"
    args = [path, runtime, str(size[0]), str(size[1]), str(threads)]
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise UserError(f"peak-RSS probe for {path or 'baseline'} failed: {last}")
    return json.loads(done.stdout.strip().splitlines()[-1])["peak_rss_mb"]


def environment(threads: int, size: Size, repeat: int, warmup: int) -> dict:
    warning = busy_warning(threads)
    return {"threads": threads, "torch": torch.__version__,
            "onnxruntime": package_version("onnxruntime"), "openvino": package_version("openvino"),
            "cpu": cpu_model(), "cpu_count": os.cpu_count(), "load_avg": list(os.getloadavg()),
            "int8": int8_capability().as_dict(),
            "python": platform.python_version(), "platform": platform.platform(),
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"), "size": list(size), "batch": 1,
            "repeat": repeat, "warmup": warmup, "order": "interleaved round-robin",
            "warnings": [warning] if warning else []}


def benchmark_many(paths: Sequence[str], runtime: str = "auto", size: int | str | Size = 512,
                   threads: int | None = None, repeat: int = 20, warmup: int = 3,
                   rss: bool = True, progress: bool | None = None,
                   runtimes: Sequence[str] | None = None) -> dict:
    """Time several models interleaved. Returns {"models": [...], "env": {...}}; each model
    has latency stats, `peak_rss_mb` and `ratio` (median per-round ratio to the first).

    With `runtimes` (e.g. ["onnxruntime", "openvino"]) every path runs under each of them,
    all in the same rounds (path-major order), and the result adds `fastest`: for each path,
    the runtime with the lowest median.
    """
    size = parse_size(size)
    threads = default_threads() if threads is None else threads
    _check_counts(repeat, warmup, threads)
    env = environment(threads, size, repeat, warmup)  # load average before we add to it
    torch.set_num_threads(threads)
    runs = [(p, r) for p in paths for r in (runtimes or [runtime])]
    opened = [open_runtime(p, r, threads=threads) for p, r in runs]
    x = np.random.default_rng(0).uniform(-1, 1, (1, 3, *size)).astype(np.float32)
    times = interleaved_times(opened, x, repeat, warmup, progress)
    models = [{"path": str(p), "runtime": rt.name, "runtime_info": rt.describe(),
               **latency_stats(t), "ratio": pair_ratio(t, times[0]),
               "peak_rss_mb": peak_rss_mb(str(p), rt.name, size, threads) if rss else None,
               "times_ms": t}
              for (p, _), rt, t in zip(runs, opened, times)]
    if rss:
        used = sorted({rt.name for rt in opened})
        env["rss_baseline_mb"] = peak_rss_mb("", ",".join(used), size, threads)
        env["peak_rss"] = ("peak_rss_mb: a fresh process that loads the model alone and runs it "
                           "twice; rss_baseline_mb: one that only imports the runtime(s)")
    result = {"models": models, "env": env}
    if runtimes and len(runtimes) > 1:
        result["fastest"] = fastest_runtimes(models)
    return result


def fastest_runtimes(models: Sequence[dict]) -> dict[str, str]:
    """{path: the runtime with the lowest median latency for it}."""
    best: dict[str, dict] = {}
    for m in models:
        if m["path"] not in best or m["median_ms"] < best[m["path"]]["median_ms"]:
            best[m["path"]] = m
    return {path: m["runtime"] for path, m in best.items()}


def benchmark(a: str, b: str | None = None, **options) -> dict:
    """`{"a": stats, "b": stats, "ratio": A/B, "env": ...}` (no "b"/"ratio" without `b`)."""
    result = benchmark_many([a] if b is None else [a, b], **options)
    sides = [{k: v for k, v in m.items() if k != "ratio"} for m in result["models"]]
    out = {"a": sides[0]}
    if b is not None:
        out["b"] = sides[1]
        out["ratio"] = pair_ratio(sides[0]["times_ms"], sides[1]["times_ms"])
    out["env"] = result["env"]
    return out
