"""The fused inference graph vs today's plain one, in fp32 and int8 (QDQ), side by side.

    PYTHONPATH=src python benchmarks/graph_int8.py [--repeat 30] [--threads 1 2] [--size 512]
                                                   [--fractions 0.25]

The shipped teacher and its one-shot `prune(target_macs=f)` students (latency depends on the
widths only) are exported with `--graph plain` and `--graph fused`; each file is also quantized by
`deploy.quantize.quantize_graph` (every quantizable node int8, as `quantize` starts from; the
ranges come from one random image: they change neither the graph nor its speed). All eight
files run interleaved in one ONNX Runtime process per thread count (512x512 unless --size);
the fused graph's speed-up is given by the fastest rounds and by the median of per-round
ratios, and so is each fused file's against the fp32 teacher in either graph. Prints one
JSON row per (model, precision, threads).
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch starts its thread pool

import numpy as np  # noqa: E402

from modnet_prune.deploy.onnx_export import export_onnx  # noqa: E402
from modnet_prune.deploy.quantize import quantize_graph  # noqa: E402
from modnet_prune.deploy.runtime import OnnxRuntime  # noqa: E402
from modnet_prune.measure.benchmark import fastest_ratio, interleaved_times, pair_ratio  # noqa: E402
from modnet_prune.model.io import load  # noqa: E402
from modnet_prune.prune import prune  # noqa: E402

TEACHER = Path(__file__).resolve().parent.parent / "models" / "modnet-synthetic.safetensors"


def export_all(folder: Path, fractions: list[float]) -> dict[tuple[str, str, str], Path]:
    """(model, graph, precision) -> ONNX file."""
    teacher = load(TEACHER).float().eval()
    models = {"teacher": teacher, **{f"{f:.0%} student": prune(teacher, target_macs=f).model
                                     for f in fractions}}
    calibration = [np.random.default_rng(1).uniform(-1, 1, (1, 3, 128, 128)).astype(np.float32)]
    files = {}
    for i, (name, model) in enumerate(models.items()):
        for graph in ("plain", "fused"):
            fp32 = folder / f"m{i}-{graph}.onnx"
            export_onnx(model, fp32, check=False, graph=graph)
            int8 = folder / f"m{i}-{graph}-int8.onnx"
            int8.write_bytes(quantize_graph(fp32.read_bytes(), calibration))
            files[(name, graph, "fp32")], files[(name, graph, "int8")] = fp32, int8
    return files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.25],
                        help="MACs fractions of the one-shot students")
    args = parser.parse_args()
    x = np.random.default_rng(0).uniform(-1, 1, (1, 3, args.size, args.size)).astype(np.float32)
    with tempfile.TemporaryDirectory(prefix="graph-int8-") as tmp:
        files = export_all(Path(tmp), args.fractions)
        for threads in args.threads:
            keys = list(files)
            runtimes = [OnnxRuntime(files[k], threads=threads) for k in keys]
            times = dict(zip(keys, interleaved_times(runtimes, x, args.repeat, warmup=3,
                                                     progress=False)))
            for name, precision in sorted({(k[0], k[2]) for k in keys}):
                plain, fused = times[(name, "plain", precision)], times[(name, "fused", precision)]
                teacher = {graph: times[("teacher", graph, "fp32")] for graph in ("plain", "fused")}
                print(json.dumps({
                    "model": name, "precision": precision, "threads": threads, "size": args.size,
                    "plain_fastest_ms": min(plain), "fused_fastest_ms": min(fused),
                    "plain_median_ms": float(np.median(plain)),
                    "fused_median_ms": float(np.median(fused)),
                    "speedup_fastest": fastest_ratio(plain, fused),
                    "speedup_median_pair": pair_ratio(plain, fused),
                    **{f"fused_vs_teacher_fp32_{graph}_{how}": ratio(t, fused)
                       for graph, t in teacher.items()
                       for how, ratio in (("fastest", fastest_ratio), ("median_pair", pair_ratio))}}),
                      flush=True)


if __name__ == "__main__":
    main()
