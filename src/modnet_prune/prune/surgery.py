"""Channel surgery: physically remove classes of channel groups from a copy of a model.

`removal` maps a group name to the class indices to remove. Every member of the group
loses its positions of those classes: conv/linear rows (weight, bias) and columns (at
their concat offsets), BatchNorm affine parameters and running statistics, IBNorm halves
(`bn_channels` becomes the number of kept BatchNorm-part channels), depthwise `groups`.
`zero_removed` is the same bookkeeping with zeros instead of slicing: the reference the
exactness check compares against.
"""
from __future__ import annotations

import copy
from collections import defaultdict
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from ..graph import ChannelGraph

Removal = Mapping[str, Sequence[int]]
Removed = dict[str, set[int]]  # role -> positions of one module


def removed_positions(graph: ChannelGraph, removal: Removal) -> dict[str, tuple[str, Removed]]:
    """For each touched module: its kind and the positions each role loses."""
    out: dict[str, tuple[str, Removed]] = {}
    for name, classes in removal.items():
        for m in graph.group(name).members:
            kind, roles = out.setdefault(m.module, (m.kind, defaultdict(set)))
            for k in classes:
                roles[m.role].update(m.positions[k])
    return out


def shrink(model: nn.Module, graph: ChannelGraph, removal: Removal) -> nn.Module:
    """A physically smaller deep copy of `model` (shared modules stay shared)."""
    pruned = copy.deepcopy(model)
    for name, (kind, roles) in removed_positions(graph, removal).items():
        _SHRINK[kind](pruned.get_submodule(name), roles)
    return pruned


@torch.no_grad()
def zero_removed(model: nn.Module, graph: ChannelGraph, removal: Removal) -> nn.Module:
    """A deep copy of `model` with every weight that reads or writes a removed channel zeroed."""
    reference = copy.deepcopy(model)
    for name, (kind, roles) in removed_positions(graph, removal).items():
        _ZERO[kind](reference.get_submodule(name), roles)
    return reference


# --- slicing -------------------------------------------------------------------------
def _keep(size: int, removed: set[int]) -> torch.Tensor:
    return torch.tensor([i for i in range(size) if i not in removed], dtype=torch.long)


def _slice(module: nn.Module, name: str, keep: torch.Tensor, dim: int = 0) -> None:
    tensor = getattr(module, name, None)
    if tensor is None:
        return
    sliced = tensor.detach().index_select(dim, keep.to(tensor.device)).clone()
    if isinstance(tensor, nn.Parameter):
        sliced = nn.Parameter(sliced, requires_grad=tensor.requires_grad)
    setattr(module, name, sliced)


def _shrink_conv(conv: nn.Conv2d, removed: Removed) -> None:
    rm_in, rm_out = removed.get("in", set()), removed.get("out", set())
    g = conv.groups
    if g == 1:
        _slice(conv, "weight", _keep(conv.in_channels, rm_in), dim=1)
    elif g == conv.in_channels:  # depthwise: input j and its outputs went together
        conv.groups = g - len(rm_in)
    else:  # grouped: the same in-group offsets left every group
        per = conv.in_channels // g
        _slice(conv, "weight", _keep(per, {p % per for p in rm_in}), dim=1)
    _slice(conv, "weight", _keep(conv.out_channels, rm_out))
    _slice(conv, "bias", _keep(conv.out_channels, rm_out))
    conv.in_channels -= len(rm_in)
    conv.out_channels -= len(rm_out)


def _shrink_linear(fc: nn.Linear, removed: Removed) -> None:
    rm_in, rm_out = removed.get("in", set()), removed.get("out", set())
    _slice(fc, "weight", _keep(fc.in_features, rm_in), dim=1)
    _slice(fc, "weight", _keep(fc.out_features, rm_out))
    _slice(fc, "bias", _keep(fc.out_features, rm_out))
    fc.in_features -= len(rm_in)
    fc.out_features -= len(rm_out)


def _shrink_norm(norm: nn.Module, removed: Removed | set[int]) -> None:
    positions = removed if isinstance(removed, set) else removed.get("norm", set())
    keep = _keep(norm.num_features, positions)
    for name in ("weight", "bias", "running_mean", "running_var"):
        _slice(norm, name, keep)
    norm.num_features = len(keep)


def _shrink_ibnorm(ibn: nn.Module, removed: Removed) -> None:
    split = ibn.bn_channels
    positions = removed.get("norm", set())
    bn_part = {p for p in positions if p < split}
    _shrink_norm(ibn.bnorm, bn_part)
    _shrink_norm(ibn.inorm, {p - split for p in positions if p >= split})
    ibn.bn_channels = split - len(bn_part)


_SHRINK = {"conv": _shrink_conv, "linear": _shrink_linear, "batchnorm": _shrink_norm,
           "instancenorm": _shrink_norm, "ibnorm": _shrink_ibnorm}


# --- zeroing -------------------------------------------------------------------------
def _zero_conv(conv: nn.Conv2d, removed: Removed) -> None:
    rows = sorted(removed.get("out", ()))
    conv.weight[rows] = 0
    if conv.bias is not None:
        conv.bias[rows] = 0
    g = conv.groups
    if g == 1:
        conv.weight[:, sorted(removed.get("in", ()))] = 0
    elif g != conv.in_channels:  # grouped: input p feeds only the outputs of its group
        per_in, per_out = conv.in_channels // g, conv.out_channels // g
        for p in removed.get("in", ()):
            j, r = divmod(p, per_in)
            conv.weight[j * per_out:(j + 1) * per_out, r] = 0
    # depthwise: an input channel's only weights are its output rows, zeroed above


def _zero_linear(fc: nn.Linear, removed: Removed) -> None:
    rows = sorted(removed.get("out", ()))
    fc.weight[rows] = 0
    if fc.bias is not None:
        fc.bias[rows] = 0
    fc.weight[:, sorted(removed.get("in", ()))] = 0


def _zero_norm(norm: nn.Module, removed: Removed | set[int]) -> None:
    positions = sorted(removed if isinstance(removed, set) else removed.get("norm", ()))
    for name in ("weight", "bias"):
        if getattr(norm, name, None) is not None:
            getattr(norm, name)[positions] = 0


def _zero_ibnorm(ibn: nn.Module, removed: Removed) -> None:
    split, positions = ibn.bn_channels, removed.get("norm", set())
    _zero_norm(ibn.bnorm, {p for p in positions if p < split})
    _zero_norm(ibn.inorm, {p - split for p in positions if p >= split})


_ZERO = {"conv": _zero_conv, "linear": _zero_linear, "batchnorm": _zero_norm,
         "instancenorm": _zero_norm, "ibnorm": _zero_ibnorm}
