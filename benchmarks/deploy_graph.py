"""Today's ONNX graph vs the fused inference graph, in ONNX Runtime and OpenVINO, side by side.

    python benchmarks/deploy_graph.py [--fractions 0.25] [--threads 1 2] [--repeat 5]

For the shipped teacher and one-shot `prune(target_macs=f)` students (latency depends on
widths only, so no fine-tuning), each model is exported twice (`--graph plain` and
`--graph fused`, fp32) and the two files run under both runtimes, all four interleaved in one
process per thread count; speed-ups are medians of per-round ratios to plain/ORT. Each row
also gives max |matte - PyTorch| at the benchmark size, so every speed comes with its
exactness. Then ONNX Runtime's profiler gives the share of kernel time per op type, plain
vs fused, at 2 threads. Prints Markdown; --json writes the raw numbers too.
"""
from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch starts its thread pool

import numpy as np  # noqa: E402
import torch  # noqa: E402

from modnet_prune.deploy.onnx_export import export_onnx  # noqa: E402
from modnet_prune.deploy.runtime import TorchRuntime, open_runtime  # noqa: E402
from modnet_prune.files import write_json  # noqa: E402
from modnet_prune.model.io import load  # noqa: E402
from modnet_prune.prune import prune  # noqa: E402
from modnet_prune.measure.benchmark import benchmark_many, cpu_model  # noqa: E402
from ort_profile import kernel_times, op_shares  # noqa: E402  (beside this script)

TEACHER = Path(__file__).resolve().parent.parent / "models" / "modnet-synthetic.safetensors"
RUNS = (("plain", "onnxruntime"), ("fused", "onnxruntime"), ("plain", "openvino"),
        ("fused", "openvino"))


def export_models(fractions: list[float], folder: Path) -> list[dict]:
    teacher = load(TEACHER).float().eval()
    models = [("teacher", teacher)]
    models += [(f"prune to {f:.2f}", prune(teacher, target_macs=f).model) for f in fractions]
    rows = []
    for i, (name, model) in enumerate(models):
        files = {g: export_onnx(model, folder / f"m{i}-{g}.onnx", graph=g) for g in ("plain", "fused")}
        rows.append({"name": name, "model": model, "macs": files["fused"].macs,
                     "nodes": {g: r.nodes for g, r in files.items()},
                     "files": {g: r.out for g, r in files.items()}})
    return rows


def deviation(row: dict, size: int) -> dict[str, float]:
    """max |matte - PyTorch| of each (graph, runtime) at size x size, one noise input."""
    x = np.random.default_rng(0).uniform(-1, 1, (1, 3, size, size)).astype(np.float32)
    expected = TorchRuntime(row["model"], device="cpu")(x)
    return {f"{g}/{r}": float(np.abs(open_runtime(row["files"][g], r)(x) - expected).max())
            for g, r in RUNS}


def latency(row: dict, size: int, threads: int, repeat: int) -> dict[str, dict]:
    paths = [row["files"]["plain"], row["files"]["fused"]]  # each under both runtimes
    result = benchmark_many(paths, runtimes=["onnxruntime", "openvino"], size=size,
                            threads=threads, repeat=repeat, warmup=1, rss=False)
    by_key = {(m["path"], m["runtime"]): m for m in result["models"]}
    runs = [by_key[(row["files"][g], r)] for g, r in RUNS]
    return {f"{g}/{r}": {"median_ms": m["median_ms"], "speedup": 1 / m["ratio"],
                         "load_avg": result["env"]["load_avg"][0]}
            for (g, r), m in zip(RUNS, runs)}


def markdown(rows: list[dict], threads: list[int], size: int) -> str:
    lines = [f"Latency at {size}x{size}, batch 1, fp32; speed-up = median per-round ratio to "
             "plain/onnxruntime in the same interleaved run.", "",
             "| model | MACs | threads | " + " | ".join(f"{g}/{r}" for g, r in RUNS) + " |",
             "|---|---|---|" + "---|" * len(RUNS)]
    for row in rows:
        for t in threads:
            cells = [f"{row['latency'][t][k]['median_ms']:.0f} ms (x{row['latency'][t][k]['speedup']:.2f})"
                     for k in (f"{g}/{r}" for g, r in RUNS)]
            lines.append(f"| {row['name']} | {row['macs'] / 1e9:.2f} G | {t} | " + " | ".join(cells) + " |")
    lines += ["", f"max |matte - PyTorch| at {size}x{size}:", "",
              "| model | " + " | ".join(f"{g}/{r}" for g, r in RUNS) + " |", "|---|" + "---|" * len(RUNS)]
    for row in rows:
        lines.append(f"| {row['name']} | " + " | ".join(f"{row['deviation'][f'{g}/{r}']:.1e}"
                                                        for g, r in RUNS) + " |")
    lines += ["", "ONNX Runtime kernel time per op type (2 threads), plain -> fused:", ""]
    for row in rows:
        plain, fused = row["shares"]["plain"], row["shares"]["fused"]
        ops = sorted(set(plain) | set(fused), key=lambda op: -max(plain.get(op, 0), fused.get(op, 0)))
        cells = [f"{op} {100 * plain.get(op, 0):.1f} -> {100 * fused.get(op, 0):.1f}"
                 for op in ops if max(plain.get(op, 0), fused.get(op, 0)) >= 0.005]
        lines.append(f"- {row['name']} (nodes {row['nodes']['plain']} -> {row['nodes']['fused']}): "
                     + ", ".join(cells))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fractions", type=float, nargs="*", default=[0.25])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", help="also write the raw numbers here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = export_models(args.fractions, Path(tmp))
        for row in rows:
            row["deviation"] = deviation(row, args.size)
            row["latency"] = {t: latency(row, args.size, t, args.repeat) for t in args.threads}
            row["shares"] = {g: op_shares(kernel_times(row["files"][g], args.size, 2))
                             for g in ("plain", "fused")}
    print(markdown(rows, args.threads, args.size))
    print(f"\n{cpu_model()}, {os.cpu_count()} logical CPUs, load average during the runs: "
          + ", ".join(f"{row['name']}@{t}: {row['latency'][t]['plain/onnxruntime']['load_avg']:.1f}"
                      for row in rows for t in args.threads))
    if args.json:
        write_json(args.json, [{k: v for k, v in row.items() if k not in ("model", "files")}
                               for row in rows])


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
