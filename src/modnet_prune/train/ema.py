"""Exponential moving average of a model's weights (Polyak averaging).

Late in training the weights wander around a minimum with the noise of each batch; their
running average sits nearer its centre. Measured on the multi-scale teacher (models/README):
the plain mean of two checkpoints 400 steps apart was better at 512² than either of them.
The average covers every floating-point parameter and buffer — BatchNorm running
statistics included, so the averaged model is self-consistent — and copies the integer
ones (batch counters).
"""
from __future__ import annotations

import copy

import torch
from torch import nn


def ema_decay(decay: float, updates: int) -> float:
    """The decay of update number `updates` (1, 2, ...): `decay`, but never more than
    (1 + n) / (10 + n), so that the first updates, whose average would otherwise be mostly
    the starting weights, count at their share."""
    return min(decay, (1 + updates) / (10 + updates))


class WeightAverage:
    """`shadow` = the moving average of `model`'s weights; `update(model)` after each step."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay, self.updates = decay, 0
        self.shadow = copy.deepcopy(model).eval().requires_grad_(False)

    def to(self, device: torch.device) -> "WeightAverage":
        self.shadow.to(device)
        return self

    def reset(self, model: nn.Module) -> None:
        """Start the average again at `model`'s current weights."""
        self.shadow.load_state_dict(model.state_dict())
        self.updates = 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        keep = ema_decay(self.decay, self.updates)
        # named_parameters/buffers list a tensor shared by two modules once (state_dict
        # would list it under each name, and average it twice)
        pairs = [*zip(self.shadow.parameters(), model.parameters()),
                 *zip(self.shadow.buffers(), model.buffers())]
        for avg, now in pairs:
            if avg.is_floating_point():
                avg.lerp_(now.detach().to(avg.dtype), 1.0 - keep)
            else:
                avg.copy_(now)

    def state_dict(self) -> dict:
        return {"updates": self.updates, "weights": self.shadow.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.shadow.load_state_dict(state["weights"])
        self.updates = int(state["updates"])
