"""Group lasso over channel groups: training that drives whole channels to zero.

The idea (structured sparsity learning; DCP does it under a distillation loss): trained
this way before a cut, the channels a magnitude criterion then removes are ones the network
has already learnt to do without. A channel's weights are everything it owns in the conv and
linear members of its group (graph/kinds.py's `owned`): its producers' filters and its
consumers' input columns, at every concat offset. Norm members are left out: an affine-free
InstanceNorm channel has no scale to shrink, and a BatchNorm's gamma is reached through the
consumers anyway.

`GroupLasso.shrink_(model, amount)` is the proximal step of sum_c ||w_c||_2: every channel's
weights shrink towards zero by `amount` in L2 norm, to exactly zero when shorter. Training
applies it after each optimizer step with amount = lr x weight, decoupled from the optimizer
as AdamW decouples its weight decay: as a loss term under Adam's per-weight step sizes, the
penalty shrank every channel alike and zeroed none (`benchmarks/recovery.md`, its
group-lasso section).
`GroupLasso(model)(model)`, the mean over groups of the mean channel norm, is what the
training log records. As a 50-step phase before a 25 %-MACs cut it did not pay either way
(rows H, I there), so no recipe uses it.
"""
from __future__ import annotations

import torch
from torch import nn

from ..graph import ChannelGraph, Group
from .api import model_graph
from .importance import member_matrix

# Under the square root, so that an all-zero channel has a finite (zero) gradient.
EPS = 1e-12


class GroupLasso:
    """`GroupLasso(model)(model)`: the penalty, differentiable in the model's weights.
    The graph is traced once; the call reads the weights as they are now."""

    def __init__(self, model: nn.Module, graph: ChannelGraph | None = None):
        graph = graph or model_graph(model)
        self.groups: list[Group] = [g for g in graph.prunable if _weighted(model, g)]

    def __call__(self, model: nn.Module) -> torch.Tensor:
        if not self.groups:
            return next(model.parameters()).new_zeros(())
        return torch.stack([channel_norms(model, g).mean() for g in self.groups]).mean()

    def shrink_(self, model: nn.Module, amount: float) -> None:
        """w_c <- w_c * max(0, 1 - amount / ||w_c||) for every channel c, in place.

        Written through autograd, so any layer kind's `owned` works: Q = sum_c s_c ||w_c||^2
        / 2 with s_c = min(1, amount / ||w_c||) held constant has dQ/dw = s_c w on channel
        c's weights. A weight two channels own (a conv's [out, in] entry) gets both shares;
        where that overshoots zero it is set to zero."""
        if not self.groups or amount <= 0:
            return
        params = [p for p in model.parameters() if p.requires_grad]
        quadratic = 0.0
        for group in self.groups:
            norms = channel_norms(model, group)
            share = (amount / norms.detach()).clamp(max=1.0)
            quadratic = quadratic + (share * norms.pow(2)).sum() / 2
        grads = torch.autograd.grad(quadratic, params, allow_unused=True)
        with torch.no_grad():
            for p, g in zip(params, grads):
                if g is not None:
                    new = p - g.to(p.dtype)
                    p.copy_(torch.where(new * p > 0, new, torch.zeros_like(p)))


def channel_norms(model: nn.Module, group: Group) -> torch.Tensor:
    """||w_c||_2 for each class c of `group`, over its conv/linear members: (width,)."""
    squares = None
    for member in _weight_members(model, group):
        rows = member_matrix(model.get_submodule(member.module), member).float()
        part = rows.pow(2).sum(1)
        squares = part if squares is None else squares + part.to(squares.device)
    return (squares + EPS).sqrt()


def _weight_members(model: nn.Module, group: Group):
    return [m for m in group.members if m.role in ("in", "out")
            and isinstance(model.get_submodule(m.module), (nn.Conv2d, nn.Linear))]


def _weighted(model: nn.Module, group: Group) -> bool:
    """Does the group own any conv/linear weight? (A depthwise conv's input role owns none.)"""
    return any(member_matrix(model.get_submodule(m.module), m).shape[1]
               for m in _weight_members(model, group))
