"""Augmentations of the training batch, made for distillation inputs.

A student distilled on one distribution tracks its teacher there and drifts from it
elsewhere (other exposure, framing, backgrounds). These widen what the student is shown;
the teacher labels whatever it sees, so none needs ground truth, and where the batch has
ground truth it is transformed with the image, so supervised terms stay exact:

- photometric: exposure (gain and gamma), contrast, colour cast, sensor noise and blur;
  the image alone changes.
- zoom: close-ups and tilts (zoom x1 to x2.5 about a random point, rotation up to 15
  degrees); image and alpha are resampled alike (bilinear), the trimap follows the alpha
  by the trimap rule.
- mix: the subject of one sample laid over another sample, image' = a_i x_i + (1 - a_i)
  x_j, with the over operator's alpha' = a_i + (1 - a_i) a_j; a_i is the ground truth or,
  on unlabeled data, the teacher's matte of x_i (`matte_of`).

Each applies to each sample with probability `p`; every draw comes from (seed, step,
rank), so a resumed run replays the same batches.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ..data.transforms import trimap_tensor
from .schedule import step_seed

AUGMENTATIONS = ("photometric", "zoom", "mix")


def augment_batch(batch: dict, names: Sequence[str], p: float, seed: int, step: int,
                  rank: int = 0, matte_of: Callable[[Tensor], Tensor] | None = None) -> dict:
    """`batch` (image in [-1, 1]; alpha and trimap when labeled) with `names` applied in
    the order zoom, mix, photometric (a camera sees the composed scene)."""
    if not names:
        return batch
    g = torch.Generator().manual_seed(step_seed(seed, step) * 64 + rank)
    out = dict(batch)
    if "zoom" in names:
        out = _zoom(out, _chosen(g, out, p), g)
    if "mix" in names:
        out = _mix(out, _chosen(g, out, p), g, matte_of)
    if "photometric" in names:
        out["image"] = _photometric(out["image"], _chosen(g, out, p), g)
    return out


def _chosen(g: torch.Generator, batch: dict, p: float) -> Tensor:
    return torch.rand(batch["image"].shape[0], generator=g) < p


def _per_sample(chosen: Tensor, like: Tensor) -> Tensor:
    """`chosen` shaped (N, 1, 1, 1) on `like`'s device, to pick whole samples."""
    return chosen.to(like.device).view(-1, 1, 1, 1)


def _uniform(g: torch.Generator, n: int, low: float, high: float) -> Tensor:
    return low + (high - low) * torch.rand(n, generator=g)


def _photometric(image: Tensor, chosen: Tensor, g: torch.Generator) -> Tensor:
    n = image.shape[0]
    gain = _uniform(g, n, -0.7, 0.7).exp()          # x0.5 .. x2 exposure
    gamma = _uniform(g, n, -0.4, 0.4).exp()
    contrast = _uniform(g, n, -0.4, 0.4).exp()
    cast = _uniform(g, 3 * n, -0.1, 0.1).exp().view(n, 3)
    noise = _uniform(g, n, 0.0, 0.05)
    blur = _uniform(g, n, 0.0, 1.5) * (torch.rand(n, generator=g) < 0.3)
    grain = torch.randn(image.shape, generator=g)
    x = (image.detach().cpu() + 1) / 2               # [0, 1]
    x = (x * (gain[:, None] * cast)[..., None, None]).clamp(0, 1) ** gamma.view(n, 1, 1, 1)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = mean + (x - mean) * contrast.view(n, 1, 1, 1)
    x = torch.stack([_gaussian_blur(xi, s) for xi, s in zip(x, blur.tolist())])
    x = (x + noise.view(n, 1, 1, 1) * grain).clamp(0, 1)
    augmented = (x * 2 - 1).to(image.device, image.dtype)
    return torch.where(_per_sample(chosen, image), augmented, image)


def _gaussian_blur(x: Tensor, sigma: float) -> Tensor:
    """x (C, H, W) blurred by a separable Gaussian of `sigma` pixels (0: unchanged)."""
    if sigma < 0.3:
        return x
    radius = max(1, math.ceil(2.5 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    c = x.shape[0]
    y = F.pad(x[None], (radius, radius, radius, radius), mode="reflect")
    y = F.conv2d(y, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    y = F.conv2d(y, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
    return y[0]


def _zoom(batch: dict, chosen: Tensor, g: torch.Generator) -> dict:
    image = batch["image"]
    n = image.shape[0]
    scale = torch.where(chosen, _uniform(g, n, 1.0, 2.5), torch.ones(n))
    angle = torch.where(chosen, _uniform(g, n, -15.0, 15.0), torch.zeros(n)) * math.pi / 180
    reach = 1 - 1 / scale                             # the view stays inside the image
    shift = (torch.rand(n, 2, generator=g) * 2 - 1) * reach[:, None]
    cos, sin = angle.cos() / scale, angle.sin() / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1),
                         torch.stack([sin, cos, shift[:, 1]], 1)], 1).to(image)
    grid = F.affine_grid(theta, list(image.shape), align_corners=False)

    def warp(x: Tensor) -> Tensor:
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection",
                             align_corners=False)

    pick = _per_sample(chosen, image)
    out = dict(batch, image=torch.where(pick, warp(image), image))
    if "alpha" in batch:
        alpha = torch.where(pick, warp(batch["alpha"]).clamp(0, 1), batch["alpha"])
        out.update(alpha=alpha, trimap=_trimap_where(chosen, alpha, batch["trimap"]))
    return out


def _mix(batch: dict, chosen: Tensor, g: torch.Generator,
         matte_of: Callable[[Tensor], Tensor] | None) -> dict:
    image = batch["image"]
    n = image.shape[0]
    if n < 2 or not chosen.any():
        return batch
    other = (torch.arange(n) + torch.randint(1, n, (1,), generator=g)) % n  # never itself
    labeled = "alpha" in batch
    if not labeled and matte_of is None:
        raise ValueError("mix on unlabeled data needs the teacher's mattes (matte_of)")
    subject = batch["alpha"] if labeled else matte_of(image)
    pick = _per_sample(chosen, image)
    mixed = subject * image + (1 - subject) * image[other]
    out = dict(batch, image=torch.where(pick, mixed, image))
    if labeled:
        alpha = batch["alpha"]
        alpha = torch.where(pick, alpha + (1 - alpha) * alpha[other], alpha)
        out.update(alpha=alpha, trimap=_trimap_where(chosen, alpha, batch["trimap"]))
    return out


def _trimap_where(chosen: Tensor, alpha: Tensor, trimap: Tensor) -> Tensor:
    """The trimap rule applied to the changed samples' alphas; the others keep theirs."""
    return torch.where(_per_sample(chosen, alpha), trimap_tensor(alpha), trimap)
