"""Seconds per distillation step at one size, with glibc's default malloc or with
`modnet_prune.memory.keep_freed_memory` (mmap off, freed memory kept), and the process's
user/system CPU time and peak RSS: the measurement behind `benchmarks/malloc.md`.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/malloc_step.py --size 512 --steps 14 [--keep]

Run it with and without `--keep`, one after the other (the setting is process-wide). The
step is the expensive part of fine-tuning: a bf16-autocast teacher forward, a forward and
backward of its 50 %-MACs prune, AdamW, on one fixed batch of 16.
"""
from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import torch

import modnet_prune as mp
from modnet_prune.memory import keep_freed_memory
from modnet_prune.prune import prune

TEACHER = Path(__file__).resolve().parent.parent / "models" / "modnet-synthetic.safetensors"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--steps", type=int, default=14)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--keep", action="store_true", help="call keep_freed_memory() first")
    args = p.parse_args()
    if args.keep and not keep_freed_memory():
        sys.exit("malloc_step: --keep needs glibc")
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    teacher = mp.load(TEACHER).eval()
    student = prune(mp.load(TEACHER), target_macs=0.5).model.train()
    opt = torch.optim.AdamW(student.parameters(), 1e-4)
    x = torch.rand(16, 3, args.size, args.size)
    for step in range(args.steps):
        start = time.perf_counter()
        with torch.autocast("cpu", torch.bfloat16):
            with torch.no_grad():
                target = teacher(x)
            loss = (student(x).float() - target.float()).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
        print(f"step {step}: {time.perf_counter() - start:.2f} s, peak RSS {rss} MB", flush=True)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(f"user {usage.ru_utime:.1f} s, system {usage.ru_stime:.1f} s")


if __name__ == "__main__":
    main()
