"""The exactness check: a pruned model must equal the original with its removed channels
zeroed (every weight that reads or writes them), on every output, to float precision."""
from __future__ import annotations

import torch
from torch import nn

from ..errors import UserError
from ..graph import ChannelGraph
from .harness import Harness
from .surgery import Removal, zero_removed

TOLERANCE = 1e-4


class ExactnessError(UserError):
    """The pruned model differs from the zeroed original: a surgery bug, never user input.
    A UserError so that the CLI reports it in one line and writes nothing."""


def _outputs(value) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (tuple, list)):
        return [t for v in value for t in _outputs(v)]
    return []


@torch.no_grad()
def max_difference(original: nn.Module, pruned: nn.Module, graph: ChannelGraph,
                   removal: Removal, harness: Harness) -> float:
    """Largest |pruned - zeroed original| over all outputs, in eval mode, at two sizes."""
    reference = zero_removed(original, graph, removal).eval()
    was_training = pruned.training
    pruned.eval()
    worst = 0.0
    try:
        for seed, size in enumerate(harness.verify_sizes):
            inputs = harness.make(original, size, seed=seed)
            want = _outputs(reference(*inputs, **harness.full))
            got = _outputs(pruned(*inputs, **harness.full))
            if [w.shape for w in want] != [g.shape for g in got]:
                raise ExactnessError("pruned model's outputs have different shapes")
            worst = max([worst] + [float((w - g).abs().max()) for w, g in zip(want, got)])
    finally:
        pruned.train(was_training)
    return worst


def check_exact(original: nn.Module, pruned: nn.Module, graph: ChannelGraph, removal: Removal,
                harness: Harness, tolerance: float = TOLERANCE) -> float:
    worst = max_difference(original, pruned, graph, removal, harness)
    if not worst <= tolerance:
        raise ExactnessError(f"exactness check failed: max |delta| {worst:.3g} > {tolerance:g} "
                             "between the pruned model and the zeroed original")
    return worst
