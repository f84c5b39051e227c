"""Iterative compression: prune a little, re-estimate BN, fine-tune with distillation from
the original model, repeat until the MACs target (the origin write-up's wish: small steps),
or the predicted-latency target when `compress` is given a latency model. Each iteration
prunes with `prune_step`, the same step as the pipeline's one-shot pruning.

DIR layout (resumable: finished iterations are skipped, an unfinished one resumes from
its own last checkpoint, a pruned-but-untrained student is reused, not re-pruned):
  config.json                 compression + fine-tuning settings
  iter-K/                     iteration K: a prune step's folder (`prune_step`: pruned and
                              BN re-estimated student), then its fine-tuning run folder
                              (log.jsonl, last.*, best.*)
  iter-K/done.json            costs and metrics once iteration K is finished
  model.safetensors           the final student; summary.json: one row per iteration
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.utils.data import Dataset

from ..checks import AT_LEAST_ONE, COUNT
from ..errors import UserError
from ..graph.cost import count_params, inference_macs
from ..metrics import evaluate
from ..model.inputs import check_size
from ..model.io import load, save
from ..files import write_json
from .distributed import Context, barrier
from .loop import TrainConfig, fit, held_out_size, labeled
from .prune_step import StepFiles, StepOptions, prune_step
from .rundir import LAST, RunDir, RunLock
from .schedule import PRUNE_SCHEDULES, lr_at, macs_targets

if TYPE_CHECKING:
    from ..prune.latency import LatencyModel


@dataclass
class CompressConfig:
    target_macs: float | None = None     # fraction of the teacher's inference MACs to keep
    iterations: int = 4
    schedule: str = "cubic"         # how the MACs (or latency) shrink over the iterations
    criterion: str = "l1"           # as `modnet_prune.prune.prune`
    round_to: int = 8
    min_channels: int = 1
    cost_size: int = 512            # input size at which MACs are counted (ratios are size-free)
    target_latency: float | None = None  # or: fraction of its predicted latency to keep
    # The fine-tunes' learning rate: "restart" runs the fine-tuning schedule afresh in every
    # round; "decay" spreads one cosine over all rounds (warm-up in the first only).
    round_lr: str = "restart"
    reconstruct_batches: int = 0    # training batches to refit each cut's readers on (0: none)

    @property
    def target(self) -> float:
        return self.target_macs if self.target_latency is None else self.target_latency

    def validate(self) -> None:
        if (self.target_macs is None) == (self.target_latency is None):
            raise UserError("compress: give exactly one of target_macs, target_latency")
        macs_targets(self.target, self.iterations, self.schedule)  # raises UserError
        if self.schedule not in PRUNE_SCHEDULES:
            raise UserError(f"--schedule-prune must be one of {', '.join(PRUNE_SCHEDULES)}")
        if self.round_lr not in ROUND_LR:
            raise UserError(f"--round-lr must be one of {', '.join(ROUND_LR)}")
        AT_LEAST_ONE.check(self.round_to, "--round-to")
        AT_LEAST_ONE.check(self.min_channels, "--min-channels")
        check_size(self.cost_size, "--cost-size")
        COUNT.check(self.reconstruct_batches, "--reconstruct-batches")

    def check_reachable(self, teacher: nn.Module) -> None:
        """Refuse a target below the smallest model the width rules allow, before round 1
        (not after hours of training the earlier rounds)."""
        from ..prune.api import smallest_fraction  # train/ sits above prune/ in the data flow
        if self.target_macs is None:
            return  # a latency target: prune() refuses an unreachable one before any scoring
        floor = smallest_fraction(teacher, self.round_to, self.min_channels, self.cost_size)
        if self.target_macs < floor:
            raise UserError(
                f"--target-macs {self.target_macs:g} asks to keep {self.target_macs:.1%} of the "
                f"model's inference MACs, but the smallest model that --round-to "
                f"{self.round_to} and --min-channels {self.min_channels} allow keeps "
                f"{floor:.1%}; ask for at least {floor:.3f}, or lower those two")


ROUND_LR = ("restart", "decay")
MODEL = "model.safetensors"
ITERATION_PREFIX = "iter-"  # of iteration K's folder, and of the pipeline's names of its models


@dataclass(frozen=True)
class IterationFiles(StepFiles):
    """Where iteration K of a compression keeps its files (the layout above has one home:
    here; readers of a compression folder ask `iteration_files`)."""

    @property
    def name(self) -> str:
        return self.folder.name

    @property
    def trained(self) -> Path:
        return self.folder / LAST

    @property
    def done(self) -> Path:
        return self.folder / "done.json"


def iteration_files(out: str | Path, index: int) -> IterationFiles:
    return IterationFiles(Path(out) / f"{ITERATION_PREFIX}{index}")


@dataclass
class CompressResult:
    model: nn.Module
    rows: list[dict]                # one per finished iteration
    stopped: bool
    teacher: dict | None            # macs, params, mad of the original (when finished)
    out: Path
    files: list[IterationFiles]     # of the finished iterations, in order
    model_path: Path | None         # the final student (None when stopped)


def cost(model: nn.Module, cc: CompressConfig, latency: LatencyModel | None) -> float:
    """What the targets are fractions of: inference MACs at cc.cost_size, or, with a
    latency model, the predicted milliseconds on its target."""
    if latency is None:
        return inference_macs(model, cc.cost_size)
    device = next(model.parameters()).device
    return latency.predict_model(model, torch.zeros(1, 3, *latency.target.size, device=device))


def compress(teacher: nn.Module, train_set: Dataset, cc: CompressConfig, tc: TrainConfig,
             out: str | Path, *, eval_set: Dataset | None = None, resume: bool = False,
             ctx: Context | None = None, info: dict | None = None, progress: bool = True,
             latency: LatencyModel | None = None) -> CompressResult:
    """Prune `teacher` to cc.target_macs of its MACs (or cc.target_latency of its latency
    predicted by `latency`) in cc.iterations steps, each followed by `tc` (its `steps` per
    iteration) of fine-tuning with distillation from `teacher`."""
    ctx, out = ctx or Context(), Path(out)
    cc.validate()
    if (cc.target_latency is None) != (latency is None):
        raise UserError("compress: target_latency and a latency model go together")
    tc = tc.for_data(labeled(train_set))
    tc.validate(has_teacher=True)
    if cc.round_lr == "decay" and tc.schedule != "cosine":
        raise UserError(f"--round-lr decay spreads one cosine over the rounds: it needs "
                        f"--schedule cosine, not {tc.schedule}")
    cc.check_reachable(teacher.eval())
    with RunLock(out) if ctx.is_main else contextlib.nullcontext():  # rank 0 alone writes
        return _compress(teacher, train_set, cc, tc, out, eval_set, resume, ctx, info, progress,
                         latency)


def _compress(teacher, train_set, cc: CompressConfig, tc: TrainConfig, out: Path, eval_set,
              resume: bool, ctx: Context, info: dict | None, progress: bool,
              latency: LatencyModel | None) -> CompressResult:
    if ctx.is_main:
        RunDir(out).start({"compress": dataclasses.asdict(cc), "finetune": dataclasses.asdict(tc),
                           **(info or {}), "world_size": ctx.world_size}, resume,
                          defaults={"compress": dataclasses.asdict(CompressConfig()),
                                    "finetune": dataclasses.asdict(TrainConfig())})
    barrier(ctx)
    teacher = teacher.eval()
    original = cost(teacher, cc, latency)
    teacher_macs = inference_macs(teacher, cc.cost_size)
    targets = macs_targets(cc.target, cc.iterations, cc.schedule)
    student, rows, files = teacher, [], []
    for index, target in enumerate(targets, start=1):
        at = iteration_files(out, index)
        if at.done.exists():
            rows.append(json.loads(at.done.read_text()))
            files.append(at)
            student = load(at.trained)
            continue
        step_cfg = round_config(tc, cc, index)
        # the pruned model keeps the training sizes of what it was cut from (unknown for the teacher)
        sizes = tc.train_sizes if index > 1 else None
        student, step_cfg = _pruned(student, target * original, at, cc, train_set, step_cfg,
                                    ctx, latency, sizes)
        result = fit(student, train_set, step_cfg, at.folder, eval_set=eval_set, teacher=teacher,
                     resume=resume or (at.folder / "config.json").exists(), ctx=ctx,
                     info={"iteration": index, **(info or {})}, progress=progress)
        if result.stopped:
            return CompressResult(result.model, rows, True, None, out, files, None)
        evals = [r for r in RunDir(at.folder).rows() if r.get("kind") == "eval"]
        macs = inference_macs(student, cc.cost_size)
        # fraction: of the teacher's MACs, or of its predicted latency with a latency model
        row = {"iteration": index, "target_fraction": target,
               "fraction": cost(student, cc, latency) / original,
               "macs": macs, "macs_fraction": macs / teacher_macs, "params": count_params(student),
               "eval_mad": evals[-1]["mad"] if evals else None}  # of the model carried on
        rows.append(row)
        files.append(at)
        if ctx.is_main:
            write_json(at.done, row)
        barrier(ctx)
    summary = None
    if ctx.is_main:
        save(student, out / MODEL, teacher_macs=teacher_macs, iterations=len(rows),
             train_sizes=tc.train_sizes)
        teacher_mad = (evaluate(teacher, eval_set, size=held_out_size(eval_set, tc))["mad"]
                       if eval_set is not None and labeled(eval_set) else None)
        summary = {"teacher_macs": teacher_macs, "teacher_mad": teacher_mad,
                   "teacher_params": count_params(teacher), "cost_size": cc.cost_size,
                   **({"teacher_latency_ms": original} if latency else {}), "iterations": rows}
        write_json(out / "summary.json", summary)
    barrier(ctx)
    teacher_row = summary and {"macs": teacher_macs, "params": summary["teacher_params"],
                               "mad": summary["teacher_mad"]}
    return CompressResult(student, rows, False, teacher_row, out, files, out / MODEL)


def round_config(tc: TrainConfig, cc: CompressConfig, index: int) -> TrainConfig:
    """Round `index`'s (1-based) fine-tuning settings: its own seed and, with round_lr
    "decay", the stretch of one cosine over all rounds that falls in this round (from the
    overall schedule's rate at the round's first step to its rate after the last)."""
    cfg = dataclasses.replace(tc, seed=tc.seed + index)
    if cc.round_lr == "restart":
        return cfg
    total = tc.steps * cc.iterations
    rate = lambda step: lr_at(step, total, lr=tc.lr, schedule="cosine",  # noqa: E731
                              warmup=tc.warmup, min_lr=tc.min_lr)
    start = (index - 1) * tc.steps
    return dataclasses.replace(cfg, lr=tc.lr if index == 1 else rate(start),
                               min_lr=rate(start + tc.steps),
                               warmup=tc.warmup if index == 1 else 0)


def _pruned(model: nn.Module, target: float, at: IterationFiles, cc: CompressConfig, data,
            tc: TrainConfig, ctx: Context, latency: LatencyModel | None,
            train_sizes: list[int] | None) -> tuple[nn.Module, TrainConfig]:
    """The student for an iteration and the config to fine-tune it with: reused from its
    folder if already pruned, else pruned by rank 0 (`prune_step`, BN re-estimated there)
    to `target` MACs (or predicted ms) and shared with the other ranks through the file."""
    if ctx.is_main and not at.pruned.exists():
        at.folder.mkdir(parents=True, exist_ok=True)
        fraction = min(1.0, target / cost(model, cc, latency))
        amount = ({"target_macs": fraction} if latency is None else
                  {"target_latency": fraction})
        options = StepOptions(criterion=cc.criterion, round_to=cc.round_to,
                              min_channels=cc.min_channels, size=cc.cost_size,
                              recalibrate_bn=tc.recalibrate_bn, batch_size=tc.batch_size,
                              reconstruct_batches=cc.reconstruct_batches, seed=tc.seed)
        target_key = "target_macs" if latency is None else "target_latency_ms"
        prune_step(model, amount, at.folder, data, options, latency=latency, device=ctx.device,
                   metadata={"train_sizes": train_sizes, target_key: target})
    barrier(ctx)
    if tc.recalibrate_bn and not at.recalibrated.exists():
        return load(at.pruned), tc  # a folder of an older version, BN left to fit: as then
    return (load(at.recalibrated if tc.recalibrate_bn else at.pruned),
            dataclasses.replace(tc, recalibrate_bn=0))
