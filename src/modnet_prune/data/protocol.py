"""The MODNet inference protocol, as used to produce published numbers.

Normalise to [-1, 1] (`model.inputs.normalise`); if the long side < ref or the short side > ref, rescale so the short
side is ref; floor both sides to a multiple of 32; resize with area interpolation;
predict; resize the matte back to the original size with area interpolation.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import UserError
from ..model.inputs import MULTIPLE, normalise

MATTE_TOLERANCE = 1e-3  # an int8/fp16 graph may overshoot [0, 1] by rounding, not more


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


def check_matte(matte: np.ndarray, x: np.ndarray, source: str | None) -> np.ndarray:
    """`matte` must be (N, 1, H, W) for input `x` (N, 3, H, W), finite, within [0, 1]."""
    expected = (x.shape[0], 1, *x.shape[2:])
    if matte.shape != expected:
        raise UserError(f"{source or 'model'}: gave an output of shape {matte.shape} for input "
                        f"{x.shape}, not a matte {expected}")
    low, high = float(matte.min(initial=0.0)), float(matte.max(initial=0.0))
    if not (np.isfinite(low) and np.isfinite(high)):
        raise UserError(f"{source or 'model'}: gave a matte with NaN/Inf values (broken "
                        "weights?); nothing written from it")
    if low < -MATTE_TOLERANCE or high > 1 + MATTE_TOLERANCE:
        raise UserError(f"{source or 'model'}: gave matte values in [{low:.3g}, {high:.3g}], "
                        "outside [0, 1]: not a matting model's output")
    return matte
