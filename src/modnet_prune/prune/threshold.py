"""An adaptive per-layer width: keep the filters whose normalised L1 norm is high.

The rule of MODNet-P (sisyphus-cv-lab/MODNet-ModelCompression), reproduced here from its
description and behaviour: take the L1 norm of every output filter of one layer,
min-max normalise them over the layer (the largest becomes 1, the smallest 0), sort them
in descending order and count the filters down to the first one below `threshold`; that
first one is counted too, as MODNet-P counts it. The count is then rounded like
MobileNet rounds widths (`round_width`). A layer whose filters all have the same norm
gives no reason to drop any, so it keeps them all.

Plans use it as `{threshold: t}` (see `allocate.from_plan`), where layers of one channel
group take the largest of their counts.
"""
from __future__ import annotations

import torch

from ..checks import Range

THRESHOLD = Range(0, 1, low_open=True)  # of the min-max normalised L1 norms


def threshold_count(weight: torch.Tensor, threshold: float) -> int:
    """Filters of `weight` (output channels first) that the rule keeps, before rounding."""
    norms = weight.detach().abs().flatten(1).sum(1).double()
    low, high = norms.min(), norms.max()
    if high == low:
        return len(norms)
    normalised = (norms - low) / (high - low)
    at_or_above = int((normalised >= threshold).sum())
    return min(len(norms), at_or_above + 1)


def round_width(count: int, multiple: int) -> int:
    """`count` to the nearest multiple of `multiple` (halves up), at least `multiple`, and
    one multiple more when rounding would lose over 10 % of `count` (MobileNet's rule)."""
    rounded = max(multiple, (count + multiple // 2) // multiple * multiple)
    return rounded + multiple if rounded < 0.9 * count else rounded
