"""Params, MACs, file size and latency of several MODNet checkpoints, each vs the first.

The comparison the origin write-up made by hand (see docs/origin.md), in one run: exact costs
from `modnet_prune.measure.model_costs`, latency from all models timed interleaved in this one
process (ratios are medians of per-round ratios, so a busy machine slows all alike).

    python benchmarks/compare_checkpoints.py A.safetensors B.ckpt [C ...] --out cmp.md
    python benchmarks/compare_checkpoints.py --demo --out benchmarks/compare_checkpoints.md

`--demo` compares the official architecture with a hand-narrowed one like the write-up's
V2 (last conv 1280 -> 640, SE hidden 320 -> 160, hr_channels 32 -> 24), both with random
weights saved by `modnet_prune.save` in a temporary folder. This is a benchmark, not a
test: absolute times depend on the machine and its load.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch starts its thread pool

import modnet_prune as mp  # noqa: E402
from modnet_prune.errors import UserError  # noqa: E402
from modnet_prune.files import write_atomic  # noqa: E402
from modnet_prune.measure import model_costs  # noqa: E402
from modnet_prune.measure.benchmark import benchmark_many  # noqa: E402


def narrowed_arch() -> mp.Arch:
    """The write-up's V2 widths: half the last backbone conv and SE, hr_channels 24."""
    official = mp.Arch()
    heads = {k: w if k == "lr_branch.conv_lr16x" else w * 3 // 4 for k, w in official.heads.items()}
    return mp.Arch(last=640, se_hidden=160, heads=heads)


def demo_checkpoints(folder: Path) -> list[Path]:
    official, narrowed = folder / "official.safetensors", folder / "narrowed.safetensors"
    mp.save(mp.MODNet(), official)
    mp.save(mp.MODNet(narrowed_arch()), narrowed)
    return [official, narrowed]


def _cell(value: str, ratio: float, first: bool) -> str:
    return value if first else f"{value} ({ratio:.2f}x)"


DEMO_NOTES = [
    "`official.safetensors`: the official architecture; `narrowed.safetensors`: last backbone "
    "conv 1280 -> 640 (with the SE block and `conv_lr16x` input), SE hidden 320 -> 160, "
    "hr_channels 32 -> 24 (every head width but `conv_lr16x` x 3/4). Random weights: "
    "cost and speed do not depend on the values.",
    "For scale, the write-up's V2 (these cuts plus layer-by-layer pruning) reached 1.76 M "
    "params, 8,977 M training-graph MACs and 7,213 KB (docs/origin.md).",
]


def markdown(paths: list[Path], analyses: list[dict], timing: dict, command: str,
             notes: list[str] = ()) -> str:
    env = timing["env"]
    h, w = env["size"]
    lines = [
        f"# Checkpoint comparison at {h}x{w}",
        "",
        f"`{command}`, {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC.",
        "",
        f"Batch 1, {env['threads']} thread(s), {env['repeat']} interleaved timed rounds after "
        f"{env['warmup']} warm-up; torch {env['torch']}, onnxruntime {env['onnxruntime']}, "
        f"{env['cpu']} ({env['cpu_count']} logical CPUs), load average "
        f"{env['load_avg'][0]:.2f} at start. MACs: conv + linear, batch 1. "
        "Ratios in parentheses are vs the first row; the latency ratio is the median of "
        "per-round ratios.",
        "",
        "| model | params | MACs, training graph | MACs, inference | file size | "
        "latency, median | p90 |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    first_a = analyses[0]
    for i, (path, a, t) in enumerate(zip(paths, analyses, timing["models"])):
        first = i == 0
        cells = [
            f"`{path.name}`",
            _cell(f"{a['params']:,}", a["params"] / first_a["params"], first),
            _cell(f"{a['macs_train'] / 1e6:,.0f} M", a["macs_train"] / first_a["macs_train"], first),
            _cell(f"{a['macs'] / 1e6:,.0f} M", a["macs"] / first_a["macs"], first),
            _cell(f"{a['file_bytes'] / 1024:,.0f} KB", a["file_bytes"] / first_a["file_bytes"], first),
            _cell(f"{t['median_ms']:.1f} ms", t["ratio"], first),
            f"{t['p90_ms']:.1f} ms",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [f"\n{note}" for note in notes]
    lines.append(f"\nLatency and cost are properties of each architecture at {h}x{w}; no "
                 "accuracy is measured here (`modnet-prune evaluate --size` at the same size pairs one).")
    lines += [f"\n> warning: {warning}" for warning in env["warnings"]]
    return "\n".join(lines) + "\n"


def compare(paths: list[Path], size: str, threads: int | None, repeat: int,
            warmup: int) -> tuple[list[dict], dict]:
    analyses = [model_costs(mp.load(path), size, path=path) for path in paths]
    timing = benchmark_many([str(p) for p in paths], runtime="torch", size=size, threads=threads,
                            repeat=repeat, warmup=warmup, rss=False)
    return analyses, timing


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoints", nargs="*", type=Path,
                   help="model files; the first is the reference")
    p.add_argument("--demo", action="store_true",
                   help="official vs a hand-narrowed Arch (random weights)")
    p.add_argument("--size", default="512")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--repeat", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--out", type=Path, help="also write the markdown table to this file")
    args = p.parse_args(argv)
    if bool(args.checkpoints) == args.demo:
        p.error("give checkpoints or --demo (one of the two)")
    given = sys.argv[1:] if argv is None else argv
    command = "python benchmarks/compare_checkpoints.py " + " ".join(given)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            paths = demo_checkpoints(Path(tmp)) if args.demo else args.checkpoints
            analyses, timing = compare(paths, args.size, args.threads, args.repeat, args.warmup)
    except UserError as e:
        print(f"compare_checkpoints: error: {e}", file=sys.stderr)
        return 2
    text = markdown(paths, analyses, timing, command, DEMO_NOTES if args.demo else [])
    print(text, end="")
    if args.out:
        write_atomic(args.out, lambda tmp: Path(tmp).write_text(text))
    return 0


if __name__ == "__main__":
    sys.exit(main())
