"""`prune_step`: prune a model, re-estimate its BatchNorm statistics, save both. The one
path of one-shot pruning (the pipeline's `prune` stage, once) and of iterative
compression (`compress`, once per iteration).

A step's folder (the pipeline's run folder, or a compression's iteration folder) holds:
  pruned.safetensors         the model right after pruning (written last: a folder that
                             has it holds a finished step)
  recalibrated.safetensors   the same with BatchNorm statistics re-estimated on the
                             training set (`recalibrate_bn`), when the step asks for it
"""
from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.utils.data import Dataset

from ..model.io import save
from ..prune import prune, reconstruct
from .bn import recalibrate_bn
from .loader import image_batches

if TYPE_CHECKING:
    from ..prune.latency import LatencyModel


@dataclass(frozen=True)
class StepFiles:
    """Where a prune step keeps its models (the layout above has one home: here)."""

    folder: Path

    @property
    def pruned(self) -> Path:
        return self.folder / "pruned.safetensors"

    @property
    def recalibrated(self) -> Path:
        return self.folder / "recalibrated.safetensors"


@dataclass(frozen=True)
class StepOptions:
    """How a step prunes, beside the amount: `prune`'s settings and the data it reads."""

    criterion: str = "l1"
    allocation: str = "uniform"     # ratio only (as `prune`)
    round_to: int = 8
    min_channels: int = 1
    size: int = 512                 # input size at which MACs are counted
    calibration_batches: int = 4    # training batches for data-driven criteria (taylor)
    recalibrate_bn: int = 0         # training batches for BN re-estimation; 0: none
    reconstruct_batches: int = 0    # training batches to refit the cut layers' readers on
    batch_size: int = 16
    seed: int = 0                   # of the criterion and of the batches drawn


@dataclass(frozen=True)
class PruneStep:
    """What a step wrote: the pruned model and, when asked for, its BN re-estimated copy."""

    files: StepFiles
    details: dict                   # `PruneResult.to_dict()`
    recalibrated_batches: int | None  # None: no BN re-estimation asked for

    @property
    def pruned(self) -> Path:
        return self.files.pruned

    @property
    def recalibrated(self) -> Path | None:
        return None if self.recalibrated_batches is None else self.files.recalibrated

    @property
    def start(self) -> Path:
        """The model to fine-tune from."""
        return self.recalibrated or self.pruned


def prune_step(model: nn.Module, amount: Mapping, folder: str | Path, train_set: Dataset,
               options: StepOptions, *, latency: LatencyModel | None = None,
               metadata: Mapping | None = None, device: torch.device | str = "cpu") -> PruneStep:
    """Prune a copy of `model` by `amount` (one of `prune`'s: {"ratio": r}, {"target_macs":
    f}, {"target_latency": f} with `latency`, {"plan": p}) on the CPU, re-estimate BN
    statistics of a copy of the result on `device` from `options.recalibrate_bn` seeded
    batches of `train_set`, and save both into `folder` (an existing folder), each with
    `metadata` (e.g. train_sizes). With `options.reconstruct_batches`, the layers that lost
    inputs are first refitted to `model`'s outputs on that many other seeded batches
    (`prune.reconstruct`). `model` is untouched (it may be the teacher, anywhere)."""
    files = StepFiles(Path(folder))
    o = options
    data = (image_batches(train_set, o.calibration_batches, o.batch_size, o.seed)
            if o.criterion == "taylor" else None)
    original = copy.deepcopy(model).cpu().eval()
    result = prune(original, **amount, latency=latency,
                   allocation=o.allocation, criterion=o.criterion, round_to=o.round_to,
                   min_channels=o.min_channels, size=(o.size, o.size), data=data, seed=o.seed)
    if o.reconstruct_batches:
        reconstruct(original, result, image_batches(train_set, o.reconstruct_batches,
                                                    o.batch_size, o.seed + 1),
                    batches=o.reconstruct_batches, seed=o.seed)
    details, metadata, used = result.to_dict(), dict(metadata or {}), None
    if o.recalibrate_bn:
        recalibrated = copy.deepcopy(result.model).to(device)
        used = recalibrate_bn(recalibrated, train_set, o.recalibrate_bn, o.batch_size, o.seed)
        save(recalibrated.eval(), files.recalibrated, recalibrated_batches=used, **metadata)
    save(result.model, files.pruned, prune=details, **metadata)
    return PruneStep(files, details, used)
