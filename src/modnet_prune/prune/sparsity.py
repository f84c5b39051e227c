"""Group lasso over channel groups: a training penalty that drives whole channels to zero.

The idea (structured sparsity learning; DCP does it under a distillation loss): trained
under it before a cut, the channels a magnitude criterion then removes are ones the network
has already learnt to do without. At our budgets it did not pay (50 AdamW steps move each
weight by about the learning rate per step: `benchmarks/recovery.md`, rows H and I), so no
recipe uses it; it stays as an option for longer schedules. A channel's weights are everything it
owns in the conv and linear members of its group (graph/kinds.py's `owned`): its producers'
filters and its consumers' input columns, at every concat offset. Norm members are left
out: an affine-free InstanceNorm channel has no scale to shrink, and a BatchNorm's gamma
is reached through the consumers anyway.

    penalty = mean over prunable groups of (mean over the group's channels of ||w_c||_2)

Means, not sums, so one weight (`--group-lasso`) means the same for a network of any size.
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
