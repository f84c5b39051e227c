"""Exact parameter and MAC counts of Conv2d/Linear layers, from shapes seen in a forward pass.

Only conv and linear multiply-accumulates are counted (the convention of published MODNet
numbers): norms, activations, interpolation and element-wise ops are excluded. A module
used several times per forward (or shared under two names) is counted once per call and
listed once, under its first name.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class LayerCost:
    name: str
    type: str
    params: int
    macs: int


def _conv_macs(m: nn.Conv2d, out: torch.Tensor) -> int:
    k = m.kernel_size[0] * m.kernel_size[1]
    return out[0].numel() * (m.in_channels // m.groups) * k


def _linear_macs(m: nn.Linear, out: torch.Tensor) -> int:
    return out[0].numel() * m.in_features


@torch.no_grad()
def layer_costs(model: nn.Module, *inputs, **kwargs) -> list[LayerCost]:
    """Per-layer params and MACs (batch 1) of the conv/linear layers that ran in the pass."""
    macs: dict[str, int] = {}
    names = {}
    for name, module in model.named_modules():  # named_modules lists a shared module once
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            names[module] = name

    def hook(module, _inputs, out):
        count = _conv_macs if isinstance(module, nn.Conv2d) else _linear_macs
        macs[names[module]] = macs.get(names[module], 0) + count(module, out)

    handles = [m.register_forward_hook(hook) for m in names]
    was_training = model.training
    try:
        model.eval()
        model(*inputs, **kwargs)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return [LayerCost(name, type(m).__name__, sum(p.numel() for p in m.parameters(recurse=False)),
                      macs[name]) for m, name in names.items() if name in macs]


def count_params(model: nn.Module) -> int:
    """Unique parameters: a shared module's tensors are counted once."""
    return sum(p.numel() for p in model.parameters())
