"""Model card numbers for a trained teacher: learning curve (figure + table) from a run folder.

    python benchmarks/teacher_card.py /root/teacher/run --figure models/modnet-synthetic-128-curve.png
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def read_log(run: Path) -> tuple[list[dict], list[dict]]:
    rows = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines() if line]
    return [r for r in rows if r["kind"] == "train"], [r for r in rows if r["kind"] == "eval"]


def plot(train: list[dict], evals: list[dict], batch: int, out: Path) -> None:
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
    ax1.plot([r["step"] * batch for r in train], [r["loss"] for r in train], lw=1)
    ax1.set(xlabel="training samples", ylabel="loss (official objective)", yscale="log",
            title="training loss")
    ax2.plot([r["step"] * batch for r in evals], [r["mad"] for r in evals], "o-")
    ax2.set(xlabel="training samples", ylabel="MAD (whole image, mean)",
            title="held-out MAD")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_formatter(lambda value, _: f"{value / 1000:.0f}k")
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("run", type=Path)
    parser.add_argument("--figure", type=Path, required=True)
    args = parser.parse_args()
    config = json.loads((args.run / "config.json").read_text())
    train, evals = read_log(args.run)
    plot(train, evals, config["batch_size"], args.figure)
    print("| step | samples | MSE | MAD | SAD/1000 | Grad/1000 | Conn/1000 |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for r in evals:
        print(f"| {r['step']} | {r['step'] * config['batch_size']:,} | {r['mse']:.5f} | "
              f"{r['mad']:.5f} | {r['sad']:.4f} | {r['grad']:.4f} | {r['conn']:.4f} |")


if __name__ == "__main__":
    main()
