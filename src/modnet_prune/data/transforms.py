"""Trimaps from alphas, and the transforms that turn a raw sample into network tensors.

Trimap rule (used wherever a dataset has no trimap of its own): with
r = max(1, round(min(H, W) / 64)) pixels (2 at 128, 8 at 512, 17 at 1080),
foreground = erode(alpha >= 0.99, r), unknown = dilate(alpha > 0.01, r) minus foreground,
background = the rest. Erosion/dilation use a (2r+1) square. Values: uint8 0/128/255.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from scipy.ndimage import maximum_filter, minimum_filter

from ..model.inputs import normalise

FG_THRESHOLD, BG_THRESHOLD = 0.99, 0.01
UNKNOWN = 128


def trimap_radius(height: int, width: int) -> int:
    return max(1, round(min(height, width) / 64))


def trimap_from_alpha(alpha: np.ndarray, radius: int | None = None) -> np.ndarray:
    """uint8 trimap (0 bg, 128 unknown, 255 fg) from a float alpha in [0, 1] (module doc)."""
    r = trimap_radius(*alpha.shape) if radius is None else radius
    fg = minimum_filter(alpha >= FG_THRESHOLD, size=2 * r + 1, mode="nearest")
    reach = maximum_filter(alpha > BG_THRESHOLD, size=2 * r + 1, mode="nearest")
    trimap = np.where(reach, UNKNOWN, 0).astype(np.uint8)
    trimap[fg] = 255
    return trimap


def trimap_tensor(alpha: torch.Tensor) -> torch.Tensor:
    """The same rule on a batch of alphas (N, 1, H, W) in [0, 1], as network tensors:
    {0, 0.5, 1}. (A window clipped to the image equals scipy's "nearest" edge mode for a
    minimum or maximum, since the replicated pixels are inside the window anyway.)"""
    r = trimap_radius(*alpha.shape[-2:])
    def widest(mask: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(mask.float(), 2 * r + 1, stride=1, padding=r) > 0
    fg = ~widest(alpha < FG_THRESHOLD)               # erosion of alpha >= 0.99
    reach = widest(alpha > BG_THRESHOLD)
    return torch.where(fg, 1.0, torch.where(reach, 0.5, 0.0)).to(alpha.dtype)


def resize_sample(image: np.ndarray, alpha: np.ndarray | None, trimap: np.ndarray | None,
                  size: int, box: tuple[float, float, float, float] | None = None):
    """Crop `box` (x0, y0, x1, y1; default the whole image) and resize it to size x size.
    Image and alpha use Pillow's antialiased bilinear filter, a trimap nearest neighbour;
    a None alpha (unlabeled image) stays None."""
    h, w = image.shape[:2]
    if box is None:
        if (h, w) == (size, size):
            return image, alpha, trimap
        box = (0.0, 0.0, float(w), float(h))
    bilinear, nearest = Image.Resampling.BILINEAR, Image.Resampling.NEAREST
    image = np.asarray(Image.fromarray(image).resize((size, size), bilinear, box=box))
    if alpha is not None:
        alpha = np.asarray(Image.fromarray(alpha.astype(np.float32)).resize((size, size), bilinear, box=box))
        alpha = np.clip(alpha, 0.0, 1.0)
    if trimap is not None:
        trimap = np.asarray(Image.fromarray(trimap).resize((size, size), nearest, box=box))
    return image, alpha, trimap


def random_crop_box(rng: np.random.Generator, height: int, width: int,
                    scale=(0.5, 1.0), ratio=(0.8, 1.25)) -> tuple[float, float, float, float]:
    """A random box covering `scale` of the image area with aspect ratio in `ratio`."""
    area = height * width * rng.uniform(*scale)
    aspect = np.exp(rng.uniform(np.log(ratio[0]), np.log(ratio[1])))
    bw = min(width, np.sqrt(area * aspect))
    bh = min(height, np.sqrt(area / aspect))
    x0, y0 = rng.uniform(0, width - bw), rng.uniform(0, height - bh)
    return (float(x0), float(y0), float(x0 + bw), float(y0 + bh))


def colour_jitter(rng: np.random.Generator, image: np.ndarray, strength: float = 1.0) -> np.ndarray:
    """Brightness, contrast, saturation and a small per-channel gain, on uint8 RGB."""
    x = image.astype(np.float32) / 255.0
    x = x * rng.uniform(1 - 0.25 * strength, 1 + 0.25 * strength)
    mean = x.mean()
    x = mean + (x - mean) * rng.uniform(1 - 0.25 * strength, 1 + 0.25 * strength)
    grey = x.mean(axis=2, keepdims=True)
    x = grey + (x - grey) * rng.uniform(1 - 0.3 * strength, 1 + 0.3 * strength)
    x = x * rng.uniform(1 - 0.05 * strength, 1 + 0.05 * strength, 3).astype(np.float32)
    return np.round(np.clip(x, 0, 1) * 255).astype(np.uint8)


def train_transform(rng: np.random.Generator, image, alpha, trimap, size: int):
    """Random crop + resize to size x size, horizontal flip, colour jitter (alpha and
    trimap may be None)."""
    box = random_crop_box(rng, *image.shape[:2])
    image, alpha, trimap = resize_sample(image, alpha, trimap, size, box)
    if rng.random() < 0.5:
        image, alpha, trimap = (None if a is None else a[:, ::-1] for a in (image, alpha, trimap))
    return colour_jitter(rng, image), alpha, trimap


def to_tensors(image: np.ndarray, alpha: np.ndarray | None, trimap: np.ndarray | None) -> dict:
    """Network tensors: image (3,H,W) in [-1, 1], alpha (1,H,W) in [0, 1], trimap (1,H,W)
    in {0, 0.5, 1} (derived from the alpha by the module rule when not given); an
    unlabeled sample (alpha None) gives the image alone."""
    img = torch.from_numpy(np.array(image, np.float32)).permute(2, 0, 1)  # copies: inputs
    if alpha is None:                                                     # may be read-only
        return {"image": normalise(img)}
    if trimap is None:
        trimap = trimap_from_alpha(alpha)
    tri = torch.from_numpy(np.array(trimap, np.float32))
    return {
        "image": normalise(img),
        "alpha": torch.from_numpy(np.array(alpha, np.float32))[None],
        "trimap": (torch.round(tri / 127.5) * 0.5)[None],
    }


def resize_batch(batch: dict, size: int) -> dict:
    """A training batch resized to size x size: image and alpha with antialiased bilinear
    filtering (as `resize_sample`), the trimap nearest-neighbour (its unknown band then
    has the width the trimap rule gives at the new size, up to rounding)."""
    if batch["image"].shape[-1] == size and batch["image"].shape[-2] == size:
        return batch
    def smooth(x):
        return F.interpolate(x, (size, size), mode="bilinear", antialias=True, align_corners=False)
    out = dict(batch)
    out["image"] = smooth(batch["image"])
    if "alpha" in batch:  # unlabeled batches hold images only
        out["alpha"] = smooth(batch["alpha"]).clamp_(0.0, 1.0)
        out["trimap"] = F.interpolate(batch["trimap"], (size, size), mode="nearest-exact")
    return out
