"""What a MODNet takes as input: RGB scaled to [-1, 1] by (x / 255 - 0.5) / 0.5, with height
and width positive multiples of 32 (the network downsamples five times). Every module
that feeds a MODNet, checks a size or parses one uses these; `data/protocol.py` builds the
published inference protocol (which size to resize a photo to) on top of them.
"""
from __future__ import annotations

import re

import torch

from ..errors import UserError

MULTIPLE = 32
Size = tuple[int, int]


def normalise(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 (or 0..255 float) RGB -> float32 in [-1, 1]; layout is kept."""
    return (pixels.float() / 255.0 - 0.5) / 0.5


def check_size(size: int | Size, name: str = "size", multiple: int = MULTIPLE) -> Size:
    """(H, W) from N or (H, W) when both are positive multiples of `multiple`, else a
    UserError naming `name` and the nearest valid sizes."""
    square = isinstance(size, int)
    h, w = (size, size) if square else (int(s) for s in size)
    if h > 0 and w > 0 and h % multiple == 0 and w % multiple == 0:
        return h, w
    if square:
        problem = f"{name} {h}: must be a positive multiple of {multiple}"
        near = [str(a) for a in _nearest(h, multiple)]
    else:
        problem = f"{name} {h}x{w}: height and width must be positive multiples of {multiple}"
        near = [f"{a}x{b}" for a in _nearest(h, multiple) for b in _nearest(w, multiple)
                if h != w or a == b]  # a square stays square
    raise UserError(problem + (f"; nearest valid: {', '.join(near)}" if multiple > 1 else ""))


def _nearest(n: int, multiple: int) -> list[int]:
    if n > 0 and n % multiple == 0:
        return [n]
    below = n // multiple * multiple
    return [below, below + multiple] if below > 0 else [multiple]


def parse_size(text: int | str | Size, name: str = "size") -> Size:
    """(H, W) from 512, "512", "512x288" or (512, 288); refuses sizes MODNet cannot take."""
    if isinstance(text, str):
        match = re.fullmatch(r"\s*(\d+)\s*(?:[xX]\s*(\d+))?\s*", text)
        if not match:
            raise UserError(f"{name} {text!r}: expected N or HxW, for example 512 or 512x288")
        text = (int(match[1]), int(match[2] or match[1]))
    return check_size(text, name)
