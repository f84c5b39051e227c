"""The MODNet inference protocol, as used to produce published numbers.

Normalise to [-1, 1] (`model.inputs.normalise`); if the long side < ref or the short side > ref, rescale so the short
side is ref; floor both sides to a multiple of 32; resize with area interpolation;
predict; resize the matte back to the original size with area interpolation.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..model.inputs import MULTIPLE, normalise


def protocol_size(height: int, width: int, ref: int = 512) -> tuple[int, int]:
    """Network input size (h, w) for an image of the given size."""
    if max(height, width) < ref or min(height, width) > ref:
        # short side -> ref exactly; long side truncated, as the reference demo does
        if width >= height:
            height, width = ref, int(width / height * ref)
        else:
            height, width = int(height / width * ref), ref
    h, w = height - height % MULTIPLE, width - width % MULTIPLE
    return max(h, MULTIPLE), max(w, MULTIPLE)


def to_input(image: np.ndarray, ref: int = 512) -> torch.Tensor:
    """uint8 RGB (H, W, 3) -> normalised (1, 3, h, w) float32 at the protocol size."""
    x = torch.from_numpy(np.array(image, copy=True))  # readers may return read-only arrays
    x = normalise(x.permute(2, 0, 1)[None])
    h, w = protocol_size(image.shape[0], image.shape[1], ref)
    return F.interpolate(x, size=(h, w), mode="area")


def to_original_size(matte: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Predicted (N, 1, h, w) matte back at (height, width) with area interpolation."""
    return F.interpolate(matte, size=(height, width), mode="area")
