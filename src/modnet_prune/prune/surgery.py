"""Channel surgery: physically remove classes of channel groups from a copy of a model.

`removal` maps a group name to the class indices to remove. Every member of the group
loses its positions of those classes, by its layer kind's `shrink` (graph/kinds.py):
conv/linear rows (weight, bias) and columns (at their concat offsets), norm parameters
and running statistics, IBNorm halves, depthwise `groups`. `zero_removed` is the same
bookkeeping with the kinds' `zero` instead: the reference the exactness check compares
against.
"""
from __future__ import annotations

import copy
from collections import defaultdict
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from ..graph import ChannelGraph, kind_of

Removal = Mapping[str, Sequence[int]]


def removed_positions(graph: ChannelGraph, removal: Removal) -> dict[str, dict[str, set[int]]]:
    """For each touched module: the positions each of its roles loses."""
    out: dict[str, dict[str, set[int]]] = defaultdict(lambda: defaultdict(set))
    for name, classes in removal.items():
        for m in graph.group(name).members:
            for k in classes:
                out[m.module][m.role].update(m.positions[k])
    return out


def shrink(model: nn.Module, graph: ChannelGraph, removal: Removal) -> nn.Module:
    """A physically smaller deep copy of `model` (shared modules stay shared)."""
    return _each_kind(model, graph, removal, "shrink")


@torch.no_grad()
def zero_removed(model: nn.Module, graph: ChannelGraph, removal: Removal) -> nn.Module:
    """A deep copy of `model` with every weight that reads or writes a removed channel zeroed."""
    return _each_kind(model, graph, removal, "zero")


def _each_kind(model: nn.Module, graph: ChannelGraph, removal: Removal, action: str) -> nn.Module:
    """A deep copy with every touched layer passed to its kind's `shrink` or `zero`."""
    result = copy.deepcopy(model)
    for name, roles in removed_positions(graph, removal).items():
        module = result.get_submodule(name)
        getattr(kind_of(module), action)(module, roles)
    return result
