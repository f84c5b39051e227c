"""How many calibration images minmax needs: held-out MAD of int8 files calibrated on
different counts of different image sets, against the fp32 file's, in one run.

    python benchmarks/int8_calibration.py t.onnx [--counts 16 24 32 48] [--sets 3] \
        [--eval synthetic:200@512+seed10000000] [--json]

`t.onnx` is an fp32 `export`. For every calibration set s (images from seed 20,000,000 +
s * 1,000,000, disjoint from each other, from training and from --eval) and every count N,
`quantize_model` runs exactly as `modnet-prune quantize --calibration SET --count N` does
(defaults otherwise: minmax, budget, 8 check images after the N), then the int8 file is
scored on --eval at the deployment size beside the fp32 file. One teacher, one CPU: the
spread over sets is what a user's own calibration folder may see.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from modnet_prune.deploy.quantize import DEFAULT_HOLDOUT, DEFAULT_SIZE, quantize_model  # noqa: E402
from modnet_prune.deploy.runtime import OnnxRuntime  # noqa: E402
from modnet_prune.metrics import evaluate  # noqa: E402


def calibration_spec(set_index: int, images: int, size: int) -> str:
    return f"synthetic:{images}@{size}+seed{20_000_000 + 1_000_000 * set_index}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--counts", type=int, nargs="+", default=[16, 24, 32, 48])
    parser.add_argument("--sets", type=int, default=3)
    parser.add_argument("--eval", default=f"synthetic:200@{DEFAULT_SIZE}+seed10000000")
    parser.add_argument("--size", type=int, default=DEFAULT_SIZE)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    fp32_mad = evaluate(OnnxRuntime(args.model), args.eval, size=args.size)["mad"]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for s in range(args.sets):
            spec = calibration_spec(s, max(args.counts) + DEFAULT_HOLDOUT, args.size)
            for count in args.counts:
                out = Path(tmp) / f"s{s}-n{count}.int8.onnx"
                report = quantize_model(args.model, spec, out, count=count, size=args.size)
                mad = evaluate(OnnxRuntime(str(out)), args.eval, size=args.size)["mad"]
                rows.append({"set": s, "count": count, "mad": mad, "ratio": mad / fp32_mad,
                             "delta_mean": report.delta_mean, "kept_float": len(report.kept_float),
                             "seconds": report.seconds})
                print(f"set {s} count {count}: MAD {mad:.6f} ({mad / fp32_mad:.3f}x fp32), "
                      f"delta {report.delta_mean:.2e}, {len(report.kept_float)} kept float, "
                      f"{report.seconds:.1f} s", flush=True)
    if args.json:
        print(json.dumps({"fp32_mad": fp32_mad, "rows": rows}, indent=1))
        return
    print(f"\nfp32 held-out MAD {fp32_mad:.6f} ({args.eval} at {args.size}²)\n")
    print("| `--count` | " + " | ".join(f"set {s}" for s in range(args.sets))
          + " | worst | mean | quantize |")
    print("|---:|" + "---:|" * (args.sets + 3))
    for count in args.counts:
        mine = [r for r in rows if r["count"] == count]
        ratios = [r["ratio"] for r in mine]
        print(f"| {count} | " + " | ".join(f"{x:.3f}×" for x in ratios)
              + f" | {max(ratios):.3f}× | {statistics.mean(ratios):.3f}× | "
              f"{statistics.mean(r['seconds'] for r in mine):.1f} s |")


if __name__ == "__main__":
    main()
