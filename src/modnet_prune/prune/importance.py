"""Channel importance: one score per class of every prunable group (higher = keep).

- `l1` / `l2`: magnitude of everything the class owns, over every member of the group:
  producer rows, consumer columns (at their concat offsets) and norm scales. An
  affine-free norm channel (the InstanceNorm half of an IBNorm) has the implicit scale 1.
- `bn`: |gamma| summed over the group's norm layers; InstanceNorm-half channels count
  with their implicit gamma of 1 (InstanceNorm without affine parameters outputs unit
  variance, exactly what a BatchNorm channel with gamma = 1 does). Groups with no norm
  layer (e.g. the SE hidden layer) fall back to `l1`.
- `fpgm`: distance of the class's weights (all members, concatenated) to all the other
  classes of its group; a channel near the geometric median is the most replaceable.
- `taylor`: first-order estimate of how much the outputs change when a channel goes:
  (sum over its consumer columns of gradient x weight)^2, the gradient of a random
  projection <r, outputs> (r ~ N(0, 1), fresh per batch), averaged over a few batches;
  this estimates E||J a_c||^2, the squared output change, without labels. Data: image
  batches; by default a few synthetic portraits for MODNet, random images otherwise.
- `random`: uniform noise, the baseline for experiments.

Cross-group normalisation: every group's scores are divided by their mean, so each group
averages 1. A global ranking (or importance per MAC saved) then compares a channel with
its siblings' typical importance, not raw magnitudes of layers of different shapes.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from itertools import islice

import torch
from torch import nn

from ..errors import UserError
from ..graph import ChannelGraph, Group, Member, kind_of
from .harness import Harness

Scores = dict[str, torch.Tensor]


# --- what one member owns, per class -------------------------------------------------------
def member_matrix(module: nn.Module, member: Member,
                  weight: torch.Tensor | None = None) -> torch.Tensor:
    """The member's weights owned by each class, one row per class: (width, D).

    What a position owns is its layer kind's `owned` (graph/kinds.py): conv/linear read
    `weight` (default: the layer's own; pass e.g. grad x weight), norms give their scale.
    """
    rows = torch.tensor([p for ps in member.positions for p in ps], dtype=torch.long)
    owned = kind_of(module).owned(module, member.role, weight)
    return owned[rows.to(owned.device)].reshape(len(member.positions), -1)


# --- criteria -----------------------------------------------------------------------------
def _magnitude(model: nn.Module, group: Group, p: int, members=None) -> torch.Tensor:
    members = group.members if members is None else members
    total = torch.zeros(group.width)
    for m in members:
        w = member_matrix(model.get_submodule(m.module), m).detach().float().abs().cpu()
        total += w.pow(p).sum(1) if p == 2 else w.sum(1)
    return total.sqrt() if p == 2 else total


def _bn(model: nn.Module, group: Group) -> torch.Tensor:
    norms = [m for m in group.members if m.role == "norm"]
    return _magnitude(model, group, 1, norms) if norms else _magnitude(model, group, 1)


def _fpgm(model: nn.Module, group: Group) -> torch.Tensor:
    rows = [member_matrix(model.get_submodule(m.module), m).detach().float().cpu()
            for m in group.members]
    x = torch.cat(rows, dim=1)
    return torch.cdist(x[None], x[None])[0].sum(1)


def _taylor(model: nn.Module, graph: ChannelGraph, harness: Harness, data, batches: int) -> Scores:
    groups = graph.prunable
    consumers = {g.name: [m for m in g.members if m.role == "in"] for g in groups}
    weights = {m.module: model.get_submodule(m.module).weight
               for members in consumers.values() for m in members}
    flags = {name: w.requires_grad for name, w in weights.items()}
    scores = {g.name: torch.zeros(g.width) for g in groups}
    generator = torch.Generator().manual_seed(0)
    was_training, seen = model.training, 0
    model.eval()
    try:
        for w in weights.values():
            w.requires_grad_(True)
        for inputs in islice(harness.batches(model, data, "taylor"), batches):
            grads = _projection_grads(model, harness, inputs, list(weights.values()), generator)
            products = {name: g * w.detach() for (name, w), g in zip(weights.items(), grads)}
            for group in groups:
                effect = torch.zeros(group.width)
                for m in consumers[group.name]:
                    module = model.get_submodule(m.module)
                    effect += member_matrix(module, m, products[m.module]).sum(1).float().cpu()
                scores[group.name] += effect.pow(2)
            seen += 1
    finally:
        model.train(was_training)
        for name, w in weights.items():
            w.requires_grad_(flags[name])
    if not seen:
        raise UserError("taylor: the data gave no batches")
    return {name: s / seen for name, s in scores.items()}


def _projection_grads(model, harness, inputs, weights, generator) -> tuple[torch.Tensor, ...]:
    with torch.enable_grad():
        outputs = model(*inputs, **harness.full)
        outputs = outputs if isinstance(outputs, (tuple, list)) else (outputs,)
        loss = sum((torch.randn(y.shape, generator=generator).to(y) * y).sum()
                   for y in outputs if isinstance(y, torch.Tensor))
        return torch.autograd.grad(loss, weights, allow_unused=True, materialize_grads=True)


@dataclass(frozen=True)
class Inputs:
    """What data-driven criteria may use: how to call the model, data, batches, a seed."""

    harness: Harness
    data: Iterable | None
    batches: int
    seed: int


def _per_group(score):
    return lambda model, graph, inputs: {g.name: score(model, g) for g in graph.prunable}


def _random(model: nn.Module, graph: ChannelGraph, inputs: Inputs) -> Scores:
    generator = torch.Generator().manual_seed(inputs.seed)
    return {g.name: torch.rand(g.width, generator=generator) for g in graph.prunable}


# Every criterion: (model, graph, inputs) -> raw scores of each prunable group. A new
# criterion is one entry here; the CLI, recipes and `prune` take their choices from it.
_CRITERIA = {
    "l1": _per_group(lambda model, g: _magnitude(model, g, 1)),
    "l2": _per_group(lambda model, g: _magnitude(model, g, 2)),
    "bn": _per_group(_bn),
    "fpgm": _per_group(_fpgm),
    "taylor": lambda model, graph, i: _taylor(model, graph, i.harness, i.data, i.batches),
    "random": _random,
}
CRITERIA = tuple(_CRITERIA)


def importance(model: nn.Module, graph: ChannelGraph, criterion: str = "l1", *,
               harness: Harness | None = None, data: Iterable | None = None,
               batches: int = 4, seed: int = 0) -> Scores:
    """Normalised scores (mean 1 per group) for every prunable group, keyed by group name."""
    if criterion not in CRITERIA:
        raise UserError(f"unknown criterion {criterion!r}; choose one of {', '.join(CRITERIA)}")
    raw = _CRITERIA[criterion](model, graph, Inputs(harness or Harness(), data, batches, seed))
    return {name: _normalise(s) for name, s in raw.items()}


def _normalise(scores: torch.Tensor) -> torch.Tensor:
    scores = scores.double()
    mean = scores.mean()
    if not torch.isfinite(scores).all():
        raise UserError("importance scores are not finite (NaN/Inf weights?)")
    return scores / mean if mean > 0 else torch.ones_like(scores)
