"""Where an ONNX file's time goes in ONNX Runtime: kernel time per op type and per node.

    python benchmarks/ort_profile.py MODEL.onnx [--size 512] [--threads 2] [--runs 6] [--top 25]

Runs ORT's profiler on one random input (after one untimed run; spinning off, as
`benchmark` runs under OMP_WAIT_POLICY=PASSIVE) and prints the share of kernel time per op
type, then the costliest nodes of the graph ORT actually ran (after its QDQ fusions and
layout changes) with their output types and shapes: e.g. whether a Resize between a
DequantizeLinear and a QuantizeLinear ran on floats. Shares are steadier than absolute
times on a busy machine; pause other jobs anyway.
"""
from __future__ import annotations

import argparse
import collections
import json
import tempfile
from pathlib import Path

import numpy as np


def kernel_times(path: str, size: int, threads: int, runs: int = 2) -> list[dict]:
    """One row per node that ran: op type, node name, output types/shapes, mean ms per run."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.enable_profiling, options.intra_op_num_threads = True, threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.profile_file_prefix = str(Path(tempfile.gettempdir()) / "ort_profile")
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).uniform(-1, 1, (1, 3, size, size)).astype(np.float32)
    name = session.get_inputs()[0].name
    for _ in range(runs + 1):
        session.run(None, {name: x})
    trace = Path(session.end_profiling())
    events = json.loads(trace.read_text())
    trace.unlink()
    # the profile's first run is the untimed one: drop each node's first event
    seen, micros, shapes, ops = set(), collections.Counter(), {}, {}
    for e in events:
        if e.get("cat") != "Node" or not e["name"].endswith("_kernel_time"):
            continue
        node = e["name"][: -len("_kernel_time")]
        if node not in seen:
            seen.add(node)
            continue
        micros[node] += e["dur"]
        ops[node] = e["args"]["op_name"]
        shapes[node] = e["args"].get("output_type_shape", [])
    return [{"op": ops[n], "node": n, "outputs": shapes[n], "ms": t / runs / 1000}
            for n, t in micros.most_common()]


def op_shares(rows: list[dict]) -> dict[str, float]:
    """Share of kernel time per op type, largest first."""
    total = collections.Counter()
    for row in rows:
        total[row["op"]] += row["ms"]
    all_time = sum(total.values())
    return {op: t / all_time for op, t in total.most_common()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=6)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    rows = kernel_times(args.model, args.size, args.threads, args.runs)
    total = sum(r["ms"] for r in rows)
    counts = collections.Counter(r["op"] for r in rows)
    print(f"{args.model}: {total:.1f} ms of kernel time per run ({args.size}x{args.size}, "
          f"{args.threads} threads, {args.runs} runs)\n")
    print("| op type | share | ms | nodes |\n|---|---:|---:|---:|")
    for op, share in op_shares(rows).items():
        if share >= 0.001:
            print(f"| {op} | {100 * share:.1f} % | {share * total:.2f} | {counts[op]} |")
    print("\n| node | op type | ms | outputs |\n|---|---|---:|---|")
    for row in rows[: args.top]:
        outputs = ", ".join(f"{t} {s}" for out in row["outputs"] for t, s in out.items())
        print(f"| {row['node']} | {row['op']} | {row['ms']:.2f} | {outputs} |")


if __name__ == "__main__":
    main()
