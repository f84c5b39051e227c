"""Seconds per distillation step at one size, with glibc's default malloc or with
`modnet_prune.memory.keep_freed_memory` (mmap off, freed memory kept), and the process's
user/system CPU time and peak RSS: the measurement behind `benchmarks/malloc.md`.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/malloc_step.py --size 512 --steps 14 [--keep]
    OMP_WAIT_POLICY=PASSIVE python benchmarks/malloc_step.py --size 512 --steps 12 --keep \
        --workers 2 [--inherit]

Run it with and without `--keep`, one after the other (the setting is process-wide). The
step is the expensive part of fine-tuning: a bf16-autocast teacher forward, a forward and
backward of its 50 %-MACs prune, AdamW, on one fixed batch of 16. With `--workers N` the
first 3 steps warm the heap as an earlier round would, then the training loader starts its
N forked workers (synthetic portraits at --size) and the other steps take its batches; each
line then shows the proportional set size (PSS) of the trainer and its workers together.
`--inherit` skips the workers' `release_inherited_memory`, to show what it prevents.
"""
from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import torch

import modnet_prune as mp
from modnet_prune.data.datasets import open_dataset
from modnet_prune.memory import keep_freed_memory
from modnet_prune.prune import prune
from modnet_prune.train import loader
from modnet_prune.train.distributed import Context

TEACHER = Path(__file__).resolve().parent.parent / "models" / "modnet-synthetic.safetensors"


def _pss_mb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) // 1024
    return 0


def _tree_pss_mb() -> int:
    """PSS of this process and its children: shared pages counted once in the sum."""
    me = Path("/proc/self").resolve().name
    children = Path(f"/proc/{me}/task/{me}/children").read_text().split()
    return sum(_pss_mb(int(pid)) for pid in [me, *children])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--steps", type=int, default=14)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--keep", action="store_true", help="call keep_freed_memory() first")
    p.add_argument("--workers", type=int, default=0,
                   help="after 3 steps, take batches from the training loader's N workers")
    p.add_argument("--inherit", action="store_true",
                   help="workers keep the trainer's free heap pages (the bug the release fixes)")
    args = p.parse_args()
    if args.keep and not keep_freed_memory():
        sys.exit("malloc_step: --keep needs glibc")
    if args.inherit:
        loader.release_inherited_memory = lambda: None
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    teacher = mp.load(TEACHER).eval()
    student = prune(mp.load(TEACHER), target_macs=0.5).model.train()
    opt = torch.optim.AdamW(student.parameters(), 1e-4)
    x = torch.rand(16, 3, args.size, args.size)
    batches = None
    for step in range(args.steps):
        if args.workers and step == 3:
            data = open_dataset(f"synthetic:1000@{args.size}", size=args.size, train=True)
            batches = loader.Batches(data, 16, Context(), seed=0, workers=args.workers).from_step(0)
        if batches is not None:
            x = next(batches)["image"]
        start = time.perf_counter()
        with torch.autocast("cpu", torch.bfloat16):
            with torch.no_grad():
                target = teacher(x)
            loss = (student(x).float() - target.float()).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
        pss = f", PSS {_tree_pss_mb():,} MB with workers" if batches is not None else ""
        print(f"step {step}: {time.perf_counter() - start:.2f} s, peak RSS {rss} MB{pss}",
              flush=True)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(f"user {usage.ru_utime:.1f} s, system {usage.ru_stime:.1f} s")


if __name__ == "__main__":
    main()
