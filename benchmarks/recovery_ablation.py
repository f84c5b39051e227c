"""Recovery ablation (issue 19): what each distillation piece is worth at one budget.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/recovery_ablation.py --out /root/abl --seeds 0 1

One-shot 25 %-MACs L1 prune of the shipped teacher (round_to 8), BN re-estimated on 8
batches, then 200 steps of 16 at 128² (AdamW 1e-3 cosine, bf16, ground truth on) with one
distillation setting per row; every row starts from the same pruned file and sees the same
batches for a seed. The last rows spend the same 200 steps in 2 or 4 prune -> re-estimate ->
distil rounds (`compress`, cubic schedule, a cosine per round) instead of one cut; H and I
spend their first 50 steps distilling the teacher into itself under a group lasso
(`finetune --group-lasso W`), cut that, and fine-tune as B for the other 150; J is G with
one cosine spread over the 4 rounds (`compress --round-lr decay`). Held-out:
200 synthetic portraits at 128² (seeds from 10,000,000), whole image. Each run is the `modnet-prune` command it prints; finished runs are skipped,
so the command resumes, and run again it only prints the table.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TEACHER = ROOT / "models" / "modnet-synthetic.safetensors"
CLI = [sys.executable, "-m", "modnet_prune"]
EVAL = ["--data", "synthetic:200@128+seed10000000", "--size", "128", "--json"]
STEPS = 200
TRAINING = ["--recalibrate-bn", "8", "--data", "synthetic:100000@128+seed0", "--size", "128",
            "--batch-size", "16", "--workers", "1", "--optimizer", "adamw",
            "--lr", "0.001", "--weight-decay", "0", "--schedule", "cosine", "--warmup", "3",
            "--min-lr", "0.00001", "--precision", "bf16", "--threads", "2", "--no-progress"]
MORE_TAPS = ["--kd-lr16x", "1", "--kd-hr4x", "1", "--kd-f2x", "1"]
PRUNE = ["--target-macs", "0.25", "--criterion", "l1", "--round-to", "8"]


def _finetune(*options: str, steps: int = STEPS):
    return lambda pruned, _run, _seed: (["finetune", "--student", str(pruned), "--teacher",
                                         str(TEACHER), *TRAINING, "--steps", str(steps), *options],
                                        "last.safetensors")


def _compress(rounds: int, *options: str):
    return lambda _pruned, _run, _seed: (["compress", "--checkpoint", str(TEACHER), *PRUNE,
                                          "--iterations", str(rounds), "--finetune-steps",
                                          str(STEPS // rounds), "--schedule-prune", "cubic",
                                          *TRAINING, *options], "model.safetensors")


def _sparse_first(weight: float, phase: int):
    """`phase` of the STEPS distilling the teacher into itself under a group lasso, then
    the same cut as every other row and B's fine-tune for the rest of the steps."""
    def make(_pruned, run: Path, seed: int):
        sparse, pruned = run.with_name(run.name + "-phase"), run.with_name(run.name + "-p25.safetensors")
        if not pruned.exists():
            if not (sparse / "last.safetensors").exists():
                _call(["finetune", "--student", str(TEACHER), "--teacher", str(TEACHER),
                       *TRAINING, "--steps", str(phase), "--group-lasso", str(weight),
                       "--seed", str(seed), "--out", str(sparse)])
            _call(["prune", "--checkpoint", str(sparse / "last.safetensors"), *PRUNE,
                   "--out", str(pruned)])
        return _finetune(steps=STEPS - phase)(pruned, run, seed)
    return make


def _call(arguments: list[str]) -> None:
    print("modnet-prune", " ".join(arguments), flush=True)
    subprocess.run([*CLI, *arguments], check=True, stdout=subprocess.DEVNULL)


VARIANTS = {  # name: (what it does, pruned file -> (modnet-prune arguments, model file))
    "A_outputs": ("outputs only (matte, detail, semantic)", _finetune("--kd-lr8x", "0", "--kd-hr2x", "0")),
    "B_today": ("outputs + lr8x, hr2x by MSE (today's recipes)", _finetune()),
    "C_five_mse": ("outputs + 5 taps by MSE", _finetune(*MORE_TAPS)),
    "D_two_cwd": ("outputs + lr8x, hr2x by CWD", _finetune("--feature-loss", "cwd")),
    "E_five_cwd": ("outputs + 5 taps by CWD", _finetune("--feature-loss", "cwd", *MORE_TAPS)),
    "F_rounds2": ("B in 2 rounds of 100 steps", _compress(2)),
    "G_rounds4": ("B in 4 rounds of 50 steps", _compress(4)),
    "H_lasso10": ("group lasso 10 for 50 steps before the cut, then B for 150", _sparse_first(10, 50)),
    "I_lasso40": ("group lasso 40 for 50 steps before the cut, then B for 150", _sparse_first(40, 50)),
    "J_rounds4_decay": ("G with one cosine over the 4 rounds", _compress(4, "--round-lr", "decay")),
}


def _evaluate(model: Path, out: Path) -> dict:
    if not out.exists():
        text = subprocess.run([*CLI, "evaluate", "--checkpoint", str(model), *EVAL],
                              check=True, capture_output=True, text=True).stdout
        out.write_text(text)
    return json.loads(out.read_text())


def _run(name: str, seed: int, pruned: Path, folder: Path) -> tuple[dict, float | None]:
    run = folder / f"{name}-s{seed}"
    timing = folder / f"{name}-s{seed}.seconds"
    start = time.perf_counter()
    arguments, model = VARIANTS[name][1](pruned, run, seed)  # may run a phase before the cut
    if not (run.with_suffix(".json")).exists():
        _call([*arguments, "--seed", str(seed), "--out", str(run)])
        timing.write_text(f"{time.perf_counter() - start:.1f}\n")
    seconds = float(timing.read_text()) if timing.exists() else None
    return _evaluate(run / model, run.with_suffix(".json")), seconds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    pruned = args.out / "p25.safetensors"
    if not pruned.exists():
        _call(["prune", "--checkpoint", str(TEACHER), *PRUNE, "--out", str(pruned)])
    teacher = _evaluate(TEACHER, args.out / "teacher.json")
    before = _evaluate(pruned, args.out / "pruned.json")
    print(f"\nteacher MAD {teacher['mad']:.5f}, Grad {teacher['grad']:.4f}; pruned, before "
          f"fine-tuning: MAD {before['mad']:.4f}, Grad {before['grad']:.3f}\n")
    print("| distillation | MAD per seed | mean MAD (× teacher) | mean Grad (× teacher) "
          "| s per sample |")
    print("|---|---|---:|---:|---:|")
    for name, (what, _options) in VARIANTS.items():
        runs = [_run(name, seed, pruned, args.out) for seed in args.seeds]
        mads = [r["mad"] for r, _ in runs]
        grads = [r["grad"] for r, _ in runs]
        times = [t for _, t in runs if t is not None]
        per_sample = f"{statistics.mean(times) / (STEPS * 16):.4f}" if times else "–"
        mad, grad = statistics.mean(mads), statistics.mean(grads)
        print(f"| {name[0]}: {what} | {', '.join(f'{m:.5f}' for m in mads)} | {mad:.5f} "
              f"({mad / teacher['mad']:.2f}) | {grad:.4f} ({grad / teacher['grad']:.2f}) "
              f"| {per_sample} |")


if __name__ == "__main__":
    main()
