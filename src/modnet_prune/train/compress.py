"""Iterative compression: prune a little, re-estimate BN, fine-tune with distillation from
the original model, repeat until the MACs target (the origin write-up's wish: small steps).

DIR layout (resumable: finished iterations are skipped, an unfinished one resumes from
its own last checkpoint, a pruned-but-untrained student is reused, not re-pruned):
  config.json                 compression + fine-tuning settings
  iter-K/pruned.safetensors   the student right after pruning step K (before fine-tuning)
  iter-K/...                  the fine-tuning run folder (log.jsonl, last.*, best.*)
  iter-K/done.json            costs and metrics once iteration K is finished
  model.safetensors           the final student; summary.json: one row per iteration
"""
from __future__ import annotations

import copy
import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ..checks import AT_LEAST_ONE
from ..errors import UserError
from ..graph.cost import count_params, layer_costs
from ..metrics import evaluate
from ..model.inputs import check_size
from ..model.io import load, save
from ..files import write_atomic, write_json
from .distributed import Context, barrier
from .loop import TrainConfig, fit, labeled
from .rundir import LAST, RunDir
from .schedule import PRUNE_SCHEDULES, macs_targets


@dataclass
class CompressConfig:
    target_macs: float              # fraction of the teacher's inference MACs to keep
    iterations: int = 4
    schedule: str = "cubic"         # how the MACs shrink over the iterations
    criterion: str = "l1"           # as `modnet_prune.prune.prune`
    round_to: int = 8
    min_channels: int = 1
    cost_size: int = 512            # input size at which MACs are counted (ratios are size-free)

    def validate(self) -> None:
        macs_targets(self.target_macs, self.iterations, self.schedule)  # raises UserError
        if self.schedule not in PRUNE_SCHEDULES:
            raise UserError(f"--schedule-prune must be one of {', '.join(PRUNE_SCHEDULES)}")
        AT_LEAST_ONE.check(self.round_to, "--round-to")
        AT_LEAST_ONE.check(self.min_channels, "--min-channels")
        check_size(self.cost_size, "--cost-size")


MODEL = "model.safetensors"


@dataclass(frozen=True)
class IterationFiles:
    """Where iteration K of a compression keeps its files (the layout above has one home:
    here; readers of a compression folder ask `iteration_files`)."""

    folder: Path

    @property
    def pruned(self) -> Path:
        return self.folder / "pruned.safetensors"

    @property
    def trained(self) -> Path:
        return self.folder / LAST

    @property
    def done(self) -> Path:
        return self.folder / "done.json"


def iteration_files(out: str | Path, index: int) -> IterationFiles:
    return IterationFiles(Path(out) / f"iter-{index}")


@dataclass
class CompressResult:
    model: nn.Module
    rows: list[dict]                # one per finished iteration
    stopped: bool
    teacher: dict | None            # macs, params, mad of the original (when finished)
    out: Path
    files: list[IterationFiles]     # of the finished iterations, in order
    model_path: Path | None         # the final student (None when stopped)


def inference_macs(model: nn.Module, size: int) -> int:
    device = next(model.parameters()).device
    return sum(c.macs for c in layer_costs(model, torch.zeros(1, 3, size, size, device=device)))



def _prune_step(model: nn.Module, keep_fraction: float, cc: CompressConfig, data: Dataset,
                batch_size: int, seed: int) -> nn.Module:
    """A pruned copy of `model` keeping `keep_fraction` of its inference MACs; widths are
    allocated by MACs saved per importance lost. `model` is untouched (it may be the
    teacher, on any device). `data` feeds data-driven criteria (taylor)."""
    from ..prune import prune  # train/ sits above prune/ in the data flow
    batches = DataLoader(data, batch_size=batch_size, shuffle=False)  # lazy: l1 reads none
    result = prune(copy.deepcopy(model).cpu().eval(), target_macs=keep_fraction,
                   criterion=cc.criterion, round_to=cc.round_to, min_channels=cc.min_channels,
                   size=(cc.cost_size, cc.cost_size), data=batches, seed=seed)
    return result.model


def compress(teacher: nn.Module, train_set: Dataset, cc: CompressConfig, tc: TrainConfig,
             out: str | Path, *, eval_set: Dataset | None = None, resume: bool = False,
             ctx: Context | None = None, info: dict | None = None, progress: bool = True
             ) -> CompressResult:
    """Prune `teacher` to cc.target_macs of its MACs in cc.iterations steps, each followed
    by `tc` (its `steps` per iteration) of fine-tuning with distillation from `teacher`."""
    ctx, out = ctx or Context(), Path(out)
    cc.validate()
    tc = tc.for_data(labeled(train_set))
    tc.validate(has_teacher=True)
    if ctx.is_main:
        RunDir(out).start({"compress": dataclasses.asdict(cc), "finetune": dataclasses.asdict(tc),
                           **(info or {}), "world_size": ctx.world_size}, resume)
    barrier(ctx)
    teacher = teacher.eval()
    original = inference_macs(teacher, cc.cost_size)
    targets = macs_targets(cc.target_macs, cc.iterations, cc.schedule)
    student, rows, files = teacher, [], []
    for index, target in enumerate(targets, start=1):
        at = iteration_files(out, index)
        if at.done.exists():
            rows.append(json.loads(at.done.read_text()))
            files.append(at)
            student = load(at.trained)
            continue
        step_cfg = dataclasses.replace(tc, seed=tc.seed + index)
        # the pruned model keeps the training sizes of what it was cut from (unknown for the teacher)
        sizes = tc.train_sizes if index > 1 else None
        student = _pruned(student, target * original, at, cc, train_set, step_cfg, ctx, sizes)
        result = fit(student, train_set, step_cfg, at.folder, eval_set=eval_set, teacher=teacher,
                     resume=resume or (at.folder / "config.json").exists(), ctx=ctx,
                     info={"iteration": index, **(info or {})}, progress=progress)
        if result.stopped:
            return CompressResult(result.model, rows, True, None, out, files, None)
        evals = [r for r in RunDir(at.folder).rows() if r.get("kind") == "eval"]
        macs = inference_macs(student, cc.cost_size)
        row = {"iteration": index, "target_fraction": target, "fraction": macs / original,
               "macs": macs, "params": count_params(student),
               "eval_mad": evals[-1]["mad"] if evals else None}  # of the model carried on
        rows.append(row)
        files.append(at)
        if ctx.is_main:
            write_json(at.done, row)
        barrier(ctx)
    summary = None
    if ctx.is_main:
        save(student, out / MODEL, teacher_macs=original, iterations=len(rows),
             train_sizes=tc.train_sizes)
        teacher_mad = (evaluate(teacher, eval_set, size=tc.size)["mad"]
                       if eval_set is not None and labeled(eval_set) else None)
        summary = {"teacher_macs": original, "teacher_mad": teacher_mad,
                   "teacher_params": count_params(teacher), "cost_size": cc.cost_size,
                   "iterations": rows}
        write_json(out / "summary.json", summary)
    barrier(ctx)
    teacher_row = summary and {"macs": original, "params": summary["teacher_params"],
                               "mad": summary["teacher_mad"]}
    return CompressResult(student, rows, False, teacher_row, out, files, out / MODEL)


def _pruned(model: nn.Module, target: float, at: IterationFiles, cc: CompressConfig, data,
            tc: TrainConfig, ctx: Context, train_sizes: list[int] | None) -> nn.Module:
    """The student for an iteration: reused from its folder if already pruned, else pruned
    by rank 0 to `target` MACs and shared with the other ranks through the file."""
    path = at.pruned
    if ctx.is_main and not path.exists():
        at.folder.mkdir(parents=True, exist_ok=True)
        current = inference_macs(model, cc.cost_size)
        pruned = _prune_step(model, min(1.0, target / current), cc, data, tc.batch_size, tc.seed)
        save(pruned, path, target_macs=target, train_sizes=train_sizes)
    barrier(ctx)
    return load(path)
