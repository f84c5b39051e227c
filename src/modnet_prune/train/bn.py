"""BatchNorm re-estimation: after pruning, running statistics no longer match the layer
outputs; re-estimating them on a few batches is cheap and recovers much of the accuracy.

`recalibrate_bn` is the one way it is done: by `fit` before training (`--recalibrate-bn`)
and by every prune step (`prune_step`: the pipeline's one-shot prune, each `compress`
iteration), always on the seeded `image_batches` of the training set.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import nn
from torch.utils.data import Dataset

from .distributed import Context, all_reduce_mean
from .loader import image_batches


def recalibrate_bn(model: nn.Module, dataset: Dataset, batches: int, batch_size: int,
                   seed: int, ctx: Context = Context(), keep: Sequence[nn.Module] = ()) -> int:
    """Reset every BatchNorm's statistics of `model` and re-estimate them as the plain
    average over `image_batches(dataset, batches, batch_size, seed, ctx)`. Weights are
    untouched; under DDP the ranks' estimates are averaged. BatchNorms inside the `keep`
    modules (frozen parts) keep their statistics and run in eval mode meanwhile. Returns
    the batches used."""
    device = next(model.parameters()).device
    images = (b.to(device) for b in image_batches(dataset, batches, batch_size, seed, ctx))
    return _reestimate(model, images, ctx, keep)


@torch.no_grad()
def _reestimate(model: nn.Module, images: Iterable[torch.Tensor], ctx: Context,
                keep: Sequence[nn.Module] = ()) -> int:
    kept = {id(m) for k in keep for m in k.modules()}
    norms = [m for m in model.modules()
             if isinstance(m, nn.modules.batchnorm._BatchNorm) and id(m) not in kept]
    momenta = [m.momentum for m in norms]
    saved = [(m.running_mean.clone(), m.running_var.clone()) for m in norms]
    was_training = model.training
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average = exact mean over the batches seen
    model.train()
    for module in keep:
        module.eval()
    count = 0
    try:
        for img in images:
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
