"""Matting errors with the conventions of published tables, and the evaluation loop.

All metrics take float mattes in [0, 1] of shape (H, W) and an optional trimap. Without a
trimap they score the whole image (as MODNet/P3M/PPM-100 tables do); with one they score
its unknown region only (as trimap-based benchmarks do). Trimaps may be uint8/int
0/128/255 (unknown == 128) or float 0/0.5/1 (unknown == 0.5; a float trimap whose
maximum exceeds 1 is read as 0/128/255).

  sad  = sum |p - g| / 1000
  mse  = mean (p - g)^2            (NaN when the region is empty)
  mad  = mean |p - g|              (NaN when the region is empty)
  grad = sum (|grad p| - |grad g|)^2 / 1000, on min-max normalised mattes, gradients from
         first-derivative-of-Gaussian filters (sigma 1.4, kernel half-size
         ceil(sigma sqrt(-2 ln(sqrt(2 pi) sigma 0.01))) = 4, divided by its L2 norm, as in
         the Deep Image Matting evaluation code), replicate border
  conn = sum |phi_p - phi_g| / 1000 with thresholds 0, 0.1, ..., 1: l(x) is the last
         threshold before x leaves the largest 4-connected component of (p >= t & g >= t)
         (1 if it never does), phi = 1 - d [d >= 0.15] with d = alpha - l. Equal-sized
         largest components: the first in row-major scan order wins.

Agreement with another model (`evaluate(..., reference=R)`): the five errors above with
R's 8-bit mattes in place of the ground truth (whole image), plus
  iou      = |p >= 0.5 and r >= 0.5| / |p >= 0.5 or r >= 0.5|   (1 when both are empty)
  boundary = mean |p - r| where 0.05 <= r <= 0.95, the reference's transition band
             (NaN when the band is empty; images without one are left out of the mean)
A model agrees with itself perfectly: every error 0, IoU 1.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from scipy.ndimage import convolve1d, label
from tqdm import tqdm

from .data.datasets import open_source
from .data.images import alpha_to_uint8, write_png
from .data.protocol import to_input, to_original_size
from .errors import UserError
from .model.inputs import normalise

METRICS = ("sad", "mse", "mad", "grad", "conn")
AGREEMENT = ("iou", "boundary")
BOUNDARY_BAND, IOU_THRESHOLD = (0.05, 0.95), 0.5
SCALING = {"sad": "sum / 1000", "mse": "mean", "mad": "mean", "grad": "sum / 1000",
           "conn": "sum / 1000"}
GRAD_SIGMA, CONN_STEP, CONN_CUTOFF = 1.4, 0.1, 0.15


def unknown_region(trimap) -> np.ndarray:
    """Boolean mask of a trimap's unknown pixels (see the module doc for accepted forms)."""
    t = np.asarray(trimap)
    if t.dtype.kind in "iub" or (t.size and t.max() > 1):
        return t == 128
    return np.abs(t - 0.5) < 1e-3


def _as_matte(a) -> np.ndarray:
    a = np.asarray(a, np.float64)
    while a.ndim > 2 and a.shape[0] == 1:  # (1, 1, H, W) and (1, H, W) are mattes too
        a = a[0]
    return a


def _prepare(pred, gt, trimap) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    p, g = _as_matte(pred), _as_matte(gt)
    if p.ndim != 2 or p.shape != g.shape:
        raise ValueError(f"pred {p.shape} and gt {g.shape} must be equal (H, W) mattes")
    if trimap is None:
        return p, g, None
    region = unknown_region(trimap)
    if region.size != p.size:
        raise ValueError(f"trimap {region.shape} does not match the mattes {p.shape}")
    return p, g, region.reshape(p.shape)


def _total(error: np.ndarray, region: np.ndarray | None) -> float:
    return float(error.sum() if region is None else error[region].sum())


def _mean(error: np.ndarray, region: np.ndarray | None) -> float:
    values = error if region is None else error[region]
    return float(values.mean()) if values.size else float("nan")


def sad(pred, gt, trimap=None) -> float:
    p, g, region = _prepare(pred, gt, trimap)
    return _total(np.abs(p - g), region) / 1000.0


def mse(pred, gt, trimap=None) -> float:
    p, g, region = _prepare(pred, gt, trimap)
    return _mean((p - g) ** 2, region)


def mad(pred, gt, trimap=None) -> float:
    p, g, region = _prepare(pred, gt, trimap)
    return _mean(np.abs(p - g), region)


@lru_cache(maxsize=4)
def gaussian_derivative_kernel(sigma: float = GRAD_SIGMA) -> tuple[np.ndarray, np.ndarray]:
    """1-D factors (smoothing g, derivative dg) of the 2-D kernel g(y) dg(x) / ||g dg||_2."""
    half = math.ceil(sigma * math.sqrt(-2.0 * math.log(math.sqrt(2 * math.pi) * sigma * 1e-2)))
    x = np.arange(-half, half + 1, dtype=np.float64)
    g = np.exp(-x ** 2 / (2 * sigma ** 2)) / (sigma * math.sqrt(2 * math.pi))
    dg = -x * g / sigma ** 2
    norm = math.sqrt(float((g ** 2).sum() * (dg ** 2).sum()))  # = L2 norm of outer(g, dg)
    return g, dg / norm


def gradient_magnitude(alpha: np.ndarray, sigma: float = GRAD_SIGMA) -> np.ndarray:
    """|grad| of the min-max normalised matte, derivative-of-Gaussian filters, replicate border."""
    lo, hi = float(alpha.min()), float(alpha.max())
    a = (alpha - lo) / (hi - lo) if hi > lo else np.zeros_like(alpha)
    g, dg = gaussian_derivative_kernel(sigma)
    gx = convolve1d(convolve1d(a, g, axis=0, mode="nearest"), dg, axis=1, mode="nearest")
    gy = convolve1d(convolve1d(a, dg, axis=0, mode="nearest"), g, axis=1, mode="nearest")
    return np.sqrt(gx ** 2 + gy ** 2)


def grad(pred, gt, trimap=None) -> float:
    p, g, region = _prepare(pred, gt, trimap)
    return _total((gradient_magnitude(p) - gradient_magnitude(g)) ** 2, region) / 1000.0


def _largest_component(mask: np.ndarray) -> np.ndarray:
    labels, count = label(mask)  # scipy's default 2-D structure is 4-connectivity
    if count == 0:
        return np.zeros_like(mask)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == int(np.argmax(sizes))


def conn(pred, gt, trimap=None, step: float = CONN_STEP) -> float:
    p, g, region = _prepare(pred, gt, trimap)
    steps = round(1 / step)
    thresholds = np.arange(steps + 1) / steps  # i/10: the doubles nearest 0.1, 0.2, ...
    level = np.full(p.shape, -1.0)
    for previous, t in zip(thresholds[:-1], thresholds[1:]):
        omega = _largest_component((p >= t) & (g >= t))
        level[(level == -1) & ~omega] = previous
    level[level == -1] = 1.0
    dp, dg = p - level, g - level
    phi_p = 1.0 - dp * (dp >= CONN_CUTOFF)
    phi_g = 1.0 - dg * (dg >= CONN_CUTOFF)
    return _total(np.abs(phi_p - phi_g), region) / 1000.0


def iou(pred, reference, threshold: float = IOU_THRESHOLD) -> float:
    p, r = _as_matte(pred) >= threshold, _as_matte(reference) >= threshold
    union = int((p | r).sum())
    return float((p & r).sum() / union) if union else 1.0


def boundary(pred, reference, band: tuple[float, float] = BOUNDARY_BAND) -> float:
    p, r, _ = _prepare(pred, reference, None)
    return _mean(np.abs(p - r), (r >= band[0]) & (r <= band[1]))


def all_metrics(pred, gt, trimap=None) -> dict[str, float]:
    """All five metrics, in METRICS order."""
    functions = {"sad": sad, "mse": mse, "mad": mad, "grad": grad, "conn": conn}
    return {name: functions[name](pred, gt, trimap) for name in METRICS}


# --------------------------------------------------------------------------- evaluation

def _predictor(model) -> Callable[[torch.Tensor], torch.Tensor]:
    """(1, 3, h, w) normalised input -> (1, 1, h, w) matte on the CPU, for a MODNet-like
    nn.Module (run on its own device) or a runtime callable on numpy arrays."""
    if isinstance(model, torch.nn.Module):
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")

        @torch.inference_mode()
        def run(x: torch.Tensor) -> torch.Tensor:
            return model(x.to(device)).float().cpu()
        return run
    return lambda x: torch.from_numpy(np.asarray(model(x.numpy()), np.float32))


def network_input(image: np.ndarray, size: int | None) -> torch.Tensor:
    """uint8 RGB -> (1, 3, h, w) in [-1, 1]: the MODNet protocol when size is None,
    else size x size (area interpolation, none when the image already has that size)."""
    image = np.array(image, np.uint8)  # a writable copy: decoded images may be read-only
    if size is None:
        return to_input(image)
    x = normalise(torch.from_numpy(image).permute(2, 0, 1)[None])
    return x if x.shape[-2:] == (size, size) else F.interpolate(x, size=(size, size), mode="area")


def evaluate(model, data, *, size: int | None = None, save_predictions: str | Path | None = None,
             progress: bool = False, reference=None) -> dict:
    """Mean matting errors of `model` over a dataset, at each ground truth's resolution.

    model: a MODNet (any nn.Module image -> matte) or a runtime (numpy N,3,H,W -> N,1,H,W).
    data: a dataset from `open_dataset`, a source from `open_source`, or a spec string.
    size: None runs the MODNet inference protocol on real photos and the generation size
    on synthetic data; an int runs every image at size x size. Predictions are resized
    back (area) and scored as the 8-bit mattes `save_predictions` writes (one PNG per
    image, named by its stem), like published evaluations that score saved PNGs.
    reference: None scores against the ground truth; a model or runtime (or the list
    `reference_mattes` made of it on the same data and size) scores agreement with its
    mattes instead (module doc), on labeled and unlabeled data alike.
    Returns {"count", "sad", "mse", "mad", "grad", "conn" (whole-image means), "unknown"
    (means over the trimap's unknown region, when samples have trimaps), "iou" and
    "boundary" (with a reference), "reference", "per_image", ...}.
    """
    source = _source(data)
    size = size if size is not None else getattr(source, "native_size", None)
    if reference is None and not getattr(source, "labeled", True):
        raise UserError(f"{source.description}: no ground-truth mattes to score against; "
                        "score agreement with another model's mattes instead "
                        "(evaluate --reference MODEL)")
    targets = reference
    if reference is not None and not isinstance(reference, list):
        targets = reference_mattes(reference, source, size=size, progress=progress)
    if targets is not None and len(targets) != len(source):
        raise ValueError(f"{len(targets)} reference mattes for {len(source)} samples")
    rows = []
    with _eval_mode(model) as predict:
        for index in tqdm(range(len(source)), desc="evaluate", unit="img", disable=not progress):
            target = None if targets is None else targets[index].astype(np.float32) / np.float32(255.0)
            rows.append(_evaluate_one(predict, source.sample(index), size, save_predictions, target))
    return _summary(rows, size, getattr(source, "description", type(source).__name__),
                    "ground truth" if reference is None else "reference mattes")


def reference_mattes(model, data, *, size: int | None = None, progress: bool = False
                     ) -> list[np.ndarray]:
    """`model`'s 8-bit mattes of every sample (the targets of an agreement evaluation)."""
    source = _source(data)
    size = size if size is not None else getattr(source, "native_size", None)
    with _eval_mode(model) as predict:
        return [_matte8(predict, source.sample(i).image, size)
                for i in tqdm(range(len(source)), desc="reference", unit="img", disable=not progress)]


def _source(data):
    return open_source(data) if isinstance(data, str) else getattr(data, "source", data)


@contextmanager
def _eval_mode(model):
    """The model's predictor, with an nn.Module in eval mode meanwhile."""
    was_training = getattr(model, "training", False)
    if was_training:
        model.eval()
    try:
        yield _predictor(model)
    finally:
        if was_training:
            model.train()


def _matte8(predict, image: np.ndarray, size: int | None) -> np.ndarray:
    height, width = image.shape[:2]
    matte = to_original_size(predict(network_input(image, size)), height, width)
    return alpha_to_uint8(matte[0, 0].numpy())


def _evaluate_one(predict, sample, size: int | None, save_dir, target: np.ndarray | None) -> dict:
    height, width = sample.image.shape[:2]
    matte8 = _matte8(predict, sample.image, size)
    if save_dir is not None:
        path = Path(save_dir) / f"{sample.name}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_png(path, matte8)
    pred = matte8.astype(np.float32) / np.float32(255.0)  # exactly what reading the PNG gives
    row = {"name": sample.name, "height": height, "width": width}
    if target is not None:
        return {**row, **all_metrics(pred, target), "iou": iou(pred, target),
                "boundary": boundary(pred, target)}
    row.update(all_metrics(pred, sample.alpha))
    if sample.trimap is not None:
        row.update({f"unknown_{k}": v for k, v in all_metrics(pred, sample.alpha, sample.trimap).items()})
    return row


def _summary(rows: list[dict], size: int | None, description: str, reference: str) -> dict:
    summary = {"count": len(rows)}
    summary.update({m: float(np.mean([r[m] for r in rows])) if rows else float("nan") for m in METRICS})
    if rows and "iou" in rows[0]:
        bands = [r["boundary"] for r in rows if not math.isnan(r["boundary"])]
        summary.update(iou=float(np.mean([r["iou"] for r in rows])),
                       boundary=float(np.mean(bands)) if bands else float("nan"))
    summary.update(region="whole image", scaling=SCALING, dataset=description, reference=reference,
                   input=(f"fixed {size}x{size}" if size else
                          "MODNet protocol (short side 512, sides floored to multiples of 32)"))
    scored = [r for r in rows if "unknown_sad" in r]
    if scored:
        unknown = {m: float(np.nanmean([r[f"unknown_{m}"] for r in scored])) for m in METRICS}
        summary["unknown"] = {**unknown, "count": len(scored), "region": "unknown (trimap == 128)"}
    summary["per_image"] = rows
    return summary
