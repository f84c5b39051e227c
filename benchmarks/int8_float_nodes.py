"""int8 with some nodes kept float: how fast, and how far from fp32, side by side.

    python benchmarks/int8_float_nodes.py t.onnx --keep "" --keep "/f0/image_conv/Conv" \
        [--calibration synthetic:24@512+seed20000000] [--count 16] [--threads 2] [--repeat 25]

`t.onnx` is an fp32 `export`. Each `--keep` is one int8 variant: the comma-separated nodes
left float ("" = every quantizable node int8, as `quantize` starts). Every variant is
calibrated like `quantize` (the first --count images of --calibration at the deployment
size, preprocessed as `matte` does), scored by mean |int8 - fp32| alpha on the next 8
images, and timed interleaved with the fp32 file in one run (ONNX Runtime, batch 1).
"""
from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402

from modnet_prune.data import open_source  # noqa: E402
from modnet_prune.deploy.matting import Matter  # noqa: E402
from modnet_prune.deploy.quantize import quantize_graph  # noqa: E402
from modnet_prune.deploy.runtime import OnnxRuntime  # noqa: E402
from modnet_prune.measure.benchmark import benchmark_many  # noqa: E402

HOLDOUT = 8


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--keep", action="append", required=True)
    parser.add_argument("--calibration", default="synthetic:24@512+seed20000000")
    parser.add_argument("--count", type=int, default=16)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=25)
    args = parser.parse_args()
    fp32 = Path(args.model).read_bytes()
    reference = OnnxRuntime(fp32, threads=args.threads)
    matter, source = Matter(reference, ref=args.size), open_source(args.calibration, size=args.size)
    images = [matter.network_input(source.sample(i).image) for i in range(args.count + HOLDOUT)]
    calibration, heldout = images[:args.count], images[args.count:]
    expected = [reference(x) for x in heldout]
    with tempfile.TemporaryDirectory() as tmp:
        paths, deltas = [args.model], {}
        for index, keep in enumerate(args.keep):
            path = Path(tmp) / f"variant{index}.onnx"
            path.write_bytes(quantize_graph(fp32, calibration, kept_float=[n for n in keep.split(",") if n]))
            int8 = OnnxRuntime(str(path), threads=args.threads)
            deltas[str(path)] = float(np.mean([np.abs(int8(x) - e).mean() for x, e in zip(heldout, expected)]))
            paths.append(str(path))
        result = benchmark_many(paths, threads=args.threads, size=args.size, repeat=args.repeat,
                                progress=False)
    print("| kept float | mean abs(int8 - fp32) alpha | median ms | speed-up vs fp32 (median pair) |")
    print("|---|---:|---:|---:|")
    for name, row in zip(["(fp32)", *args.keep], result["models"]):
        delta = f"{deltas[row['path']]:.2e}" if row["path"] in deltas else "–"
        print(f"| {name or '(none)'} | {delta} | {row['median_ms']:.1f} | ×{1 / row['ratio']:.3f} |")
    print(f"\nload average {result['env']['load_avg'][0]:.2f}; {args.size}x{args.size}, "
          f"{args.threads} threads, {args.repeat} interleaved rounds")


if __name__ == "__main__":
    main()
