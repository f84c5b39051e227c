"""Exact parameter and MAC counts of layers, from shapes seen in a forward pass, and
`inference_macs`, the one count of a model's inference MACs.

Only layers whose kind counts MACs are counted: conv and linear among torch.nn's (the
convention of published MODNet numbers); norms, activations, interpolation and
element-wise ops are excluded. A module
used several times per forward (or shared under two names) is counted once per call and
listed once, under its first name.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from .kinds import kind_of


@dataclass(frozen=True)
class LayerCost:
    name: str
    type: str
    params: int
    macs: int


@torch.no_grad()
def layer_costs(model: nn.Module, *inputs, **kwargs) -> list[LayerCost]:
    """Per-layer params and MACs (batch 1) of the MAC-counting layers that ran in the pass."""
    macs: dict[str, int] = {}
    names, counters = {}, {}
    for name, module in model.named_modules():  # named_modules lists a shared module once
        kind = kind_of(module)
        if kind is not None and kind.macs is not None:
            names[module], counters[module] = name, kind.macs

    def hook(module, _inputs, out):
        macs[names[module]] = macs.get(names[module], 0) + counters[module](module, out)

    run_with_hooks(model, names, hook, *inputs, **kwargs)
    return [LayerCost(name, type(m).__name__, sum(p.numel() for p in m.parameters(recurse=False)),
                      macs[name]) for m, name in names.items() if name in macs]


def run_with_hooks(model: nn.Module, modules, hook, *inputs, **kwargs) -> None:
    """One forward pass in eval mode with `hook` on each of `modules` (removed after; the
    model's training flag restored)."""
    handles = [m.register_forward_hook(hook) for m in modules]
    was_training = model.training
    try:
        model.eval()
        model(*inputs, **kwargs)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()


def count_params(model: nn.Module) -> int:
    """Unique parameters: a shared module's tensors are counted once."""
    return sum(p.numel() for p in model.parameters())


def shape_only(model: nn.Module) -> nn.Module:
    """A copy on the meta device: forward passes propagate shapes without computing, so
    counting at any input size takes the same fraction of a second and no memory."""
    return copy.deepcopy(model).to("meta")


def inference_macs(model: nn.Module, size: int) -> int:
    """MACs (batch 1) of `model`'s plain forward (MODNet: the matte alone) on a
    `size` x `size` image."""
    return sum(c.macs for c in layer_costs(shape_only(model),
                                           torch.zeros(1, 3, size, size, device="meta")))
