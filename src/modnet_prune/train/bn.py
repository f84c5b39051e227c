"""BatchNorm re-estimation: after pruning, running statistics no longer match the layer
outputs; re-estimating them on a few batches is cheap and recovers much of the accuracy."""
from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from .distributed import Context, all_reduce_mean


@torch.no_grad()
def recalibrate_bn(model: nn.Module, batches: Iterable[torch.Tensor], ctx: Context = Context()
                   ) -> int:
    """Reset every BatchNorm's statistics and re-estimate them as the plain average over
    `batches` (images). Weights are untouched; under DDP the ranks' estimates are averaged.
    Returns the number of batches used."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    saved = [(m.running_mean.clone(), m.running_var.clone()) for m in norms]
    was_training = model.training
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average = exact mean over the batches seen
    model.train()
    count = 0
    try:
        for img in batches:
            model(img, inference=False)  # the training heads hold an IBNorm too
            count += 1
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
        model.train(was_training)
    if count == 0:  # nothing seen: keep the old statistics rather than mean 0, var 1
        for m, (mean, var) in zip(norms, saved):
            m.running_mean.copy_(mean)
            m.running_var.copy_(var)
        return 0
    for m in norms:
        all_reduce_mean(m.running_mean, ctx)
        all_reduce_mean(m.running_var, ctx)
    return count
