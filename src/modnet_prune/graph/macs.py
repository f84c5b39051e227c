"""Exact MACs after removing channels, without running the model again.

A layer's MACs are proportional to the widths of some of its roles (its kind's
`macs_scale_with`): a conv's `out_elements x in_per_group x kernel` scale by (kept inputs /
inputs) x (kept outputs / outputs), a depthwise conv's only by its kept outputs (its
inputs go with them). The base counts come from `cost.layer_costs` at one
input size; layers that did not run there (training-only heads) cost 0.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass

from torch import nn

from .groups import ChannelGraph
from .kinds import kind_of


Touches = Mapping[str, list[tuple[str, str, int]]]  # group -> (module, role, per class)


def lost_widths(touches: Touches, removed: Mapping[str, int]) -> dict[tuple[str, str], int]:
    """(module, role) -> channels it loses when each group loses `removed[group]` classes."""
    lost: dict[tuple[str, str], int] = defaultdict(int)
    for group, count in removed.items():
        for module, role, per_class in touches[group]:
            lost[module, role] += count * per_class
    return lost


@dataclass
class _Layer:
    macs: int
    sizes: dict[str, int]   # role ("in"/"out") -> width
    scale_with: tuple[str, ...]  # the roles whose widths the MACs are proportional to


class MacModel:
    """MACs as a function of how many classes each group loses (`removed`: name -> count)."""

    def __init__(self, graph: ChannelGraph, model: nn.Module, layer_macs: Mapping[str, int]):
        self.layers: dict[str, _Layer] = {}
        self.touches: dict[str, list[tuple[str, str, int]]] = defaultdict(list)
        for group in graph.groups:
            for m in group.members:
                module = model.get_submodule(m.module)
                kind = kind_of(module)
                if kind is None or kind.macs is None:
                    continue
                layer = self.layers.setdefault(m.module, _Layer(
                    layer_macs.get(m.module, 0), {}, kind.macs_scale_with(module)))
                layer.sizes[m.role] = m.size
                per_class = len(m.positions[0]) if m.positions else 0
                self.touches[group.name].append((m.module, m.role, per_class))
        self.full = sum(layer.macs for layer in self.layers.values())

    def _layer_macs(self, name: str, lost: Mapping[tuple[str, str], int]) -> int:
        layer = self.layers[name]
        kept, full = layer.macs, 1
        for role in layer.scale_with:
            kept *= layer.sizes[role] - lost.get((name, role), 0)
            full *= layer.sizes[role]
        return kept // full

    def _lost(self, removed: Mapping[str, int]) -> dict[tuple[str, str], int]:
        return lost_widths(self.touches, removed)

    def total(self, removed: Mapping[str, int]) -> int:
        lost = self._lost(removed)
        return sum(self._layer_macs(name, lost) for name in self.layers)

    def saving(self, removed: Mapping[str, int], group: str, more: int) -> int:
        """MACs saved by removing `more` further classes of `group` (others as in `removed`)."""
        after = dict(removed)
        after[group] = after.get(group, 0) + more
        layers = {module for module, _, _ in self.touches[group]}
        lost_now, lost_after = self._lost(removed), self._lost(after)
        return sum(self._layer_macs(n, lost_now) - self._layer_macs(n, lost_after) for n in layers)

    def per_channel(self, group: str) -> int:
        """MACs saved by removing one class of `group` from the unpruned model."""
        return self.saving({}, group, 1)

