"""How long pruning MODNet takes: channel analysis alone, `prune(target_macs=0.5)` at
512x512 end to end, and the `modnet-prune prune` command in a fresh process.

    python benchmarks/prune_speed.py --out benchmarks/prune_speed.md

`prune` includes everything: fx tracing and channel analysis, the conv/linear MAC count
at 512x512 (one real forward pass), l1 importance, the greedy MAC allocation, surgery and
the rebuild into a `MODNet` from its new `Arch`. The CLI time adds Python start-up, the
torch import, reading and writing the checkpoint. Random weights: timing does not depend
on the values. The goal in issue 4 is under 5 s on the 2-core CPU.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch starts its thread pool

import torch  # noqa: E402

import modnet_prune as mp  # noqa: E402
from modnet_prune.files import write_atomic  # noqa: E402
from modnet_prune.prune import model_graph, prune  # noqa: E402


def _timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def _cli_seconds(checkpoint: Path, out: Path, size: int) -> float:
    cmd = [sys.executable, "-m", "modnet_prune", "prune", "--checkpoint", str(checkpoint),
           "--out", str(out), "--target-macs", "0.5", "--size", str(size), "--json",
           "--overwrite"]  # timed once per round, into the same file
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def _startup_seconds() -> float:
    """A fresh interpreter importing the CLI (torch and every subcommand's imports)."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import modnet_prune.cli"], check=True)
    return time.perf_counter() - start


def measure(repeat: int, size: int) -> dict:
    torch.manual_seed(0)
    model = mp.MODNet().eval()
    rows = {"analysis": [], "prune(target_macs=0.5)": [], "modnet-prune prune (fresh process)": [],
            "  of which: start-up, `import modnet_prune.cli`": []}
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = Path(tmp) / "modnet.safetensors"
        mp.save(model, checkpoint)
        for _ in range(repeat):  # interleaved, so a busy spell slows every row alike
            rows["analysis"].append(_timed(lambda: model_graph(model))[0])
            seconds, result = _timed(lambda: prune(model, target_macs=0.5, size=(size, size)))
            rows["prune(target_macs=0.5)"].append(seconds)
            rows["modnet-prune prune (fresh process)"].append(
                _cli_seconds(checkpoint, Path(tmp) / "out.safetensors", size))
            rows["  of which: start-up, `import modnet_prune.cli`"].append(_startup_seconds())
    return {"rows": rows, "result": result}


def report(measured: dict, args) -> str:
    result = measured["result"]
    lines = [
        f"# Pruning speed: MODNet at {args.size}x{args.size}", "",
        f"`python benchmarks/prune_speed.py --repeat {args.repeat} --size {args.size}"
        f" --out {args.out}`, {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC.", "",
        f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), "
        f"{platform.processor() or platform.machine()}"
        f" ({os.cpu_count()} logical CPUs), load average {os.getloadavg()[0]:.2f} at the end.", "",
        "| step | median | min | max |", "|---|---:|---:|---:|",
    ]
    for name, times in measured["rows"].items():
        lines.append(f"| {name} | {statistics.median(times):.2f} s | {min(times):.2f} s "
                     f"| {max(times):.2f} s |")
    lines += ["", f"Result: inference MACs {result.macs_before / 1e6:,.0f} M -> "
              f"{result.macs_after / 1e6:,.0f} M ({result.macs_after / result.macs_before:.3f}), "
              f"params {result.params_before:,} -> {result.params_after:,}.", "",
              "The fresh-process row is dominated by start-up: the CLI imports every "
              "subcommand (torch, matplotlib, onnx, ...) before parsing arguments."]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--out", help="write the Markdown report here (default: print)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    text = report(measure(args.repeat, args.size), args)
    if args.out:
        write_atomic(Path(args.out), lambda tmp: Path(tmp).write_text(text))
    print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
