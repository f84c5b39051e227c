"""int8 weight settings on x86 without VNNI, and one interleaved speed table.

    python benchmarks/int8_no_vnni.py quantize t.onnx [--calibration SPEC] [--out-dir DIR]
    python benchmarks/int8_no_vnni.py time t_plain.onnx t.onnx t.int8.onnx ... [--repeat 30]

`quantize` writes the two files `modnet-prune quantize` does not write on such a CPU, from
the same fp32 file and calibration images (budget 1: whatever comes out): `s8.int8.onnx`,
8-bit int8 weights as on a VNNI CPU (u8 x s8, whose 16-bit pair sums saturate without
VNNI), and `u8u8.int8.onnx`, uint8 weights (u8 x u8: no saturation). It prints each one's
mean |int8 - fp32| alpha on the held-out check images. Score them with `modnet-prune
evaluate` beside the file `quantize` writes (7-bit weights).

`time` runs every file under ONNX Runtime and OpenVINO in the same rounds and prints the
median over rounds of the first file's ORT time over each (file, runtime)'s: all ratios
from one run (benchmarks/int8.md, "On a CPU without VNNI").
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path
from unittest import mock

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before a runtime starts its threads

from modnet_prune.deploy import quantize as q  # noqa: E402
from modnet_prune.measure.benchmark import benchmark_many, pair_ratio  # noqa: E402

FULL_RANGE = q.Int8Capability(arch="x86_64", vnni=True, dot_product=False, reduce_range=False)
NO_VNNI_8_BIT = q.Int8Capability(arch="x86_64", vnni=False, dot_product=False, reduce_range=False)


def quantize_variants(model: str, calibration: str, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    s8 = q.quantize_model(model, calibration, out_dir / "s8.int8.onnx", budget=1.0,
                          capability=FULL_RANGE, threads=2)
    with mock.patch.object(q._Quantizer, "weight_type", "QUInt8"):  # not a library option
        u8 = q.quantize_model(model, calibration, out_dir / "u8u8.int8.onnx", budget=1.0,
                              capability=NO_VNNI_8_BIT, threads=2)
    for name, r in (("s8.int8.onnx", s8), ("u8u8.int8.onnx", u8)):
        print(f"{name}: mean |int8 - fp32| {r.delta_mean:.3g} (p99 {r.delta_p99:.3g}), "
              f"fp32 noise floor {r.noise_floor:.3g}, {r.seconds:.0f} s")


def time_all(paths: list[str], repeat: int) -> None:
    result = benchmark_many(paths, size=512, threads=2, repeat=repeat, warmup=3, rss=False,
                            runtimes=["onnxruntime", "openvino"])
    base = result["models"][0]["times_ms"]
    print(f"| file | runtime | median ms | x vs {paths[0]} (ORT) |\n|---|---|---:|---:|")
    for m in result["models"]:
        print(f"| {m['path']} | {m['runtime']} | {m['median_ms']:.1f} | "
              f"x{pair_ratio(base, m['times_ms']):.2f} |")
    print(f"\n{result['env']['cpu']}, int8: {result['env']['int8']['description']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    quant = sub.add_parser("quantize")
    quant.add_argument("model")
    quant.add_argument("--calibration", default="synthetic:40@512+seed20000000")
    quant.add_argument("--out-dir", type=Path, default=Path("."))
    timing = sub.add_parser("time")
    timing.add_argument("paths", nargs="+")
    timing.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args()
    if args.command == "quantize":
        quantize_variants(args.model, args.calibration, args.out_dir)
    else:
        time_all(args.paths, args.repeat)


if __name__ == "__main__":
    main()
