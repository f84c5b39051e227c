"""MODNet training objectives: the supervised loss, SOC adaptation, and distillation.

Every function returns a dict of scalar tensors: one entry per term plus "loss", their
weighted sum, so logs show what each term contributes. Trimaps use {0, 0.5, 1}; the
unknown band is trimap == 0.5 and the official code calls the *known* pixels "boundaries".
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from torch import Tensor

SEMANTIC_STRIDE = 16
CWD_TAU = 4.0  # channel-wise distillation's temperature (the paper's, for dense prediction)


def gaussian_kernel3(sigma: float = 0.8) -> Tensor:
    """Normalised 3x3 Gaussian, the blur applied to the 1/16 semantic target."""
    g = torch.tensor([math.exp(-(d * d) / (2 * sigma * sigma)) for d in (-1, 0, 1)])
    k = torch.outer(g, g)
    return k / k.sum()


def blur3(x: Tensor, sigma: float = 0.8) -> Tensor:
    """3x3 Gaussian blur per channel, reflect-padded (size is preserved)."""
    c = x.shape[1]
    k = gaussian_kernel3(sigma).to(x).expand(c, 1, 3, 3)
    return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), k, groups=c)


def semantic_target(alpha: Tensor) -> Tensor:
    """The coarse target of the semantic head: alpha at 1/16, blurred."""
    small = F.interpolate(alpha, scale_factor=1 / SEMANTIC_STRIDE, mode="bilinear",
                          align_corners=False)
    return blur3(small)  # inputs are multiples of 32, so small is >= 2 px: reflect works


@dataclass(frozen=True)
class MattingScales:
    """Weights of the three supervised terms; defaults are the official recipe."""

    semantic: float = 10.0
    detail: float = 10.0
    matte: float = 1.0


def matting_loss(image: Tensor, trimap: Tensor, alpha: Tensor, semantic: Tensor,
                 detail: Tensor, matte: Tensor, scales: MattingScales = MattingScales()
                 ) -> dict[str, Tensor]:
    """MODNet's supervised objective.

    Band terms replace known pixels by the trimap on both sides, so they are zero there
    and averaged over *all* pixels: an empty unknown band gives 0, never 0/0. (The
    reference code leaves the ground-truth side of the matte band terms unreplaced; that
    only adds a constant |trimap - alpha| on known pixels: same gradients.)
    """
    known = trimap != 0.5
    semantic_loss = F.mse_loss(semantic, semantic_target(alpha))
    detail_loss = F.l1_loss(torch.where(known, trimap, detail), torch.where(known, trimap, alpha))

    gt_band = torch.where(known, trimap, alpha)
    matte_band = torch.where(known, trimap, matte)
    matte_loss = (F.l1_loss(matte, alpha) + 4.0 * F.l1_loss(matte_band, gt_band)
                  + F.l1_loss(image * matte, image * alpha)
                  + 4.0 * F.l1_loss(image * matte_band, image * gt_band))
    terms = {"semantic": scales.semantic * semantic_loss,
             "detail": scales.detail * detail_loss,
             "matte": scales.matte * matte_loss}
    terms["loss"] = sum(terms.values())
    return terms


def _band_mean(error: Tensor, band: Tensor) -> Tensor:
    """Per-sample mean of `error` over `band`, averaged over the batch; empty band -> 0."""
    area = band.sum(dim=(1, 2, 3))
    per_sample = (error * band).sum(dim=(1, 2, 3)) / area.clamp(min=1.0)
    return per_sample.mean()


def uncertain_band(matte: Tensor, low: float = 0.01, high: float = 0.99) -> Tensor:
    """Float mask of the transition region of a predicted matte, dilated by ~1% of its size."""
    band = ((matte > low) & (matte < high)).float()
    radius = max(1, round(0.01 * max(matte.shape[-2:])))
    return F.max_pool2d(band, 2 * radius + 1, stride=1, padding=radius)


def soc_loss(semantic: Tensor, detail: Tensor, matte: Tensor, frozen_detail: Tensor,
             frozen_matte: Tensor, semantic_scale: float = 100.0, detail_scale: float = 1.0
             ) -> dict[str, Tensor]:
    """Self-supervised sub-objective consistency (SOC) on unlabeled images.

    Semantic and matte outputs teach each other (each side's target is detached); detail
    and matte stay close to a frozen copy of the model inside the matte's transition band.
    The band mean divides by max(area, 1), so an all-fg/all-bg image gives 0, not NaN.
    """
    matte_small = semantic_target(matte)
    semantic_from_matte = matte_small.detach()
    semantic_from_matte = semantic_from_matte * (semantic_from_matte > 0.01)
    matte_from_semantic = semantic.detach() * (semantic.detach() > 0.01)
    consistency = (F.mse_loss(semantic, semantic_from_matte)
                   + F.mse_loss(matte_small, matte_from_semantic))
    band = uncertain_band(matte.detach())
    keep_detail = _band_mean((detail - frozen_detail).abs(), band)
    keep_matte = _band_mean((matte - frozen_matte).abs(), band)
    terms = {"soc_semantic": semantic_scale * consistency,
             "soc_detail": detail_scale * (keep_detail + keep_matte)}
    terms["loss"] = sum(terms.values())
    return terms


@dataclass(frozen=True)
class DistillWeights:
    """Weights of the distillation terms; 0 disables a term, all 0 (the default) is no
    distillation. `recommended()` is what `finetune` and `compress` use unless told."""

    matte: float = 0.0      # L1 between mattes
    detail: float = 0.0     # L1 between detail heads
    semantic: float = 0.0   # MSE between semantic heads
    # the (adapted) features of distill.FEATURE_TAPS, compared by the run's FEATURE_LOSSES
    lr16x: float = 0.0
    lr8x: float = 0.0
    hr4x: float = 0.0
    hr2x: float = 0.0
    f2x: float = 0.0

    @classmethod
    def recommended(cls) -> "DistillWeights":
        """Every term on; semantic at 10, as the supervised semantic scale."""
        return cls(matte=1.0, detail=1.0, semantic=10.0, lr8x=1.0, hr2x=1.0)

    @property
    def enabled(self) -> bool:
        return any(v > 0 for v in self.as_dict().values())

    def as_dict(self) -> dict[str, float]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def channel_distribution_loss(student: Tensor, teacher: Tensor, tau: float = CWD_TAU) -> Tensor:
    """Channel-wise distillation (Shu et al., ICCV 2021): each channel's map, softened by
    `tau`, is a distribution over the pixels; the loss is the teacher-to-student KL
    divergence of those distributions, averaged over channels and images, times tau^2.
    It asks where each channel responds, not how strongly: the spatial structure of a
    feature map transfers even when its scale does not."""
    s = F.log_softmax(student.float().flatten(2) / tau, dim=-1)
    t = F.log_softmax(teacher.float().flatten(2) / tau, dim=-1)
    return tau ** 2 * (t.exp() * (t - s)).sum(-1).mean()


FEATURE_LOSSES = {"mse": F.mse_loss, "cwd": channel_distribution_loss}


def distill_loss(student: tuple[Tensor, Tensor, Tensor], teacher: tuple[Tensor, Tensor, Tensor],
                 student_features: dict[str, Tensor], teacher_features: dict[str, Tensor],
                 weights: DistillWeights, feature_loss: str = "mse") -> dict[str, Tensor]:
    """Output and feature distillation; features must already be in the teacher's width
    and are compared by FEATURE_LOSSES[feature_loss].

    Student/teacher outputs are (semantic, detail, matte) as returned by
    `model(img, inference=False)`. Terms with weight 0 are omitted.
    """
    s_sem, s_det, s_mat = student
    t_sem, t_det, t_mat = (t.detach() for t in teacher)
    raw = {"matte": lambda: F.l1_loss(s_mat, t_mat),
           "detail": lambda: F.l1_loss(s_det, t_det),
           "semantic": lambda: F.mse_loss(s_sem, t_sem)}
    for name in student_features:
        raw[name] = lambda n=name: FEATURE_LOSSES[feature_loss](student_features[n],
                                                                teacher_features[n].detach())
    terms = {f"kd_{name}": w * raw[name]() for name, w in weights.as_dict().items()
             if w and name in raw}
    terms["loss"] = sum(terms.values()) if terms else s_mat.new_zeros(())
    return terms
