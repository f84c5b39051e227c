"""MODNet objectives against hand-computed values and a per-pixel reference."""
import math

import pytest
import torch
import torch.nn.functional as F

from modnet_prune.train.losses import (DistillWeights, MattingScales, blur3,
                                       channel_distribution_loss, distill_loss,
                                       gaussian_kernel3, matting_loss, soc_loss)
from modnet_prune.train.schedule import lr_at, macs_targets


def _full(value, size=32, channels=1):
    return torch.full((1, channels, size, size), float(value))


def test_gaussian_kernel_by_hand():
    side = math.exp(-1 / (2 * 0.8 ** 2))  # exp(-0.78125) = 0.457833
    one_d = torch.tensor([side, 1.0, side]) / (1 + 2 * side)
    k = gaussian_kernel3(0.8)
    assert k.sum().item() == pytest.approx(1.0)
    assert k[1, 1].item() == pytest.approx((1 / (1 + 2 * side)) ** 2, rel=1e-6)  # 0.272496
    assert torch.allclose(k, torch.outer(one_d, one_d))
    const = torch.full((1, 1, 4, 4), 0.3)
    assert torch.allclose(blur3(const), const)  # reflect padding keeps constants constant


def test_all_unknown_band_hand_computed():
    # trimap all 0.5: the band terms are plain L1. image = 1 makes compositional == plain.
    terms = matting_loss(image=_full(1, channels=3), trimap=_full(0.5), alpha=_full(0.75),
                         semantic=_full(0.5, size=2), detail=_full(0.5), matte=_full(0.25))
    assert terms["semantic"].item() == pytest.approx(10 * 0.25 ** 2)      # 0.625
    assert terms["detail"].item() == pytest.approx(10 * 0.25)             # 2.5
    assert terms["matte"].item() == pytest.approx(0.5 + 4 * 0.5 + 0.5 + 4 * 0.5)  # 5.0
    assert terms["loss"].item() == pytest.approx(0.625 + 2.5 + 5.0)


def test_empty_band_is_finite_and_band_terms_vanish():
    alpha = torch.zeros(2, 1, 32, 32)
    alpha[..., 16:] = 1.0
    trimap = alpha.clone()  # everything known: the unknown band is empty
    detail = torch.rand(2, 1, 32, 32, requires_grad=True)
    matte = torch.full((2, 1, 32, 32), 0.25, requires_grad=True)
    semantic = torch.rand(2, 1, 2, 2, requires_grad=True)
    image = -torch.ones(2, 3, 32, 32)
    terms = matting_loss(image, trimap, alpha, semantic, detail, matte)
    assert all(torch.isfinite(v) for v in terms.values())
    assert terms["detail"].item() == 0.0
    # L1 = (0.25 + 0.75) / 2 on both the plain and the compositional term; no band term
    assert terms["matte"].item() == pytest.approx(1.0)
    terms["loss"].backward()
    assert torch.count_nonzero(detail.grad) == 0
    assert all(torch.isfinite(t.grad).all() for t in (detail, matte, semantic))


def _reference_matting_loss(image, trimap, alpha, semantic, detail, matte):
    """Per-pixel loops over the written definition (docs/origin.md), no vectorised shortcuts."""
    n, _, h, w = alpha.shape
    detail_sum = matte_sum = 0.0
    for b in range(n):
        for y in range(h):
            for x in range(w):
                t, a = trimap[b, 0, y, x].item(), alpha[b, 0, y, x].item()
                p, d = matte[b, 0, y, x].item(), detail[b, 0, y, x].item()
                unknown = t == 0.5
                detail_sum += abs(d - a) if unknown else 0.0
                band = abs(p - a) if unknown else 0.0
                matte_sum += abs(p - a) + 4 * band
                for c in range(3):
                    i = image[b, c, y, x].item()
                    matte_sum += (abs(i * p - i * a) + 4 * (abs(i * p - i * a) if unknown else 0)) / 3
    pixels = n * h * w
    small = F.interpolate(alpha, scale_factor=1 / 16, mode="bilinear", align_corners=False)
    target = blur3(small)
    semantic_mse = ((semantic - target) ** 2).mean().item()
    return {"semantic": 10 * semantic_mse, "detail": 10 * detail_sum / pixels,
            "matte": matte_sum / pixels}


def test_matches_per_pixel_reference_on_random_tensors():
    g = torch.Generator().manual_seed(1)
    n, s = 2, 32
    alpha = torch.rand(n, 1, s, s, generator=g)
    trimap = torch.where(alpha < 0.3, 0.0, torch.where(alpha > 0.7, 1.0, 0.5))
    args = dict(image=torch.rand(n, 3, s, s, generator=g) * 2 - 1, trimap=trimap, alpha=alpha,
                semantic=torch.rand(n, 1, 2, 2, generator=g), detail=torch.rand(n, 1, s, s, generator=g),
                matte=torch.rand(n, 1, s, s, generator=g))
    got = matting_loss(**args)
    want = _reference_matting_loss(**args)
    for key in want:
        assert got[key].item() == pytest.approx(want[key], rel=1e-5), key


def test_scales_weight_the_terms():
    args = dict(image=_full(1, channels=3), trimap=_full(0.5), alpha=_full(0.75),
                semantic=_full(0.5, size=2), detail=_full(0.5), matte=_full(0.25))
    terms = matting_loss(**args, scales=MattingScales(semantic=1, detail=0, matte=2))
    assert terms["semantic"].item() == pytest.approx(0.0625)
    assert terms["detail"].item() == 0
    assert terms["matte"].item() == pytest.approx(10.0)


def test_soc_empty_band_is_finite_and_zero():
    semantic = torch.ones(2, 1, 2, 2, requires_grad=True)
    detail = torch.rand(2, 1, 32, 32, requires_grad=True)
    matte = torch.ones(2, 1, 32, 32, requires_grad=True)  # all foreground: no transition band
    terms = soc_loss(semantic, detail, matte, frozen_detail=torch.zeros_like(detail),
                     frozen_matte=torch.zeros_like(matte))
    assert terms["soc_detail"].item() == 0.0
    assert terms["soc_semantic"].item() == pytest.approx(0.0, abs=1e-10)
    terms["loss"].backward()
    assert torch.isfinite(detail.grad).all() and torch.count_nonzero(detail.grad) == 0


def test_soc_band_mean_hand_computed():
    # one sample with a band, one without: the empty one contributes 0, not NaN
    matte = torch.zeros(2, 1, 32, 32)
    matte[0, :, :, 16] = 0.5                      # a 1-px transition line in sample 0
    detail = torch.zeros_like(matte)
    frozen = torch.full_like(matte, 0.2)           # |detail - frozen| = 0.2 everywhere
    terms = soc_loss(torch.zeros(2, 1, 2, 2), detail, matte, frozen_detail=frozen,
                     frozen_matte=matte)          # matte term = 0 (same as frozen)
    # sample 0: band mean 0.2; sample 1: empty band -> 0; batch mean 0.1
    assert terms["soc_detail"].item() == pytest.approx(0.1)


def test_distill_loss_terms_and_weights():
    student = (_full(0.5, size=2), _full(0.2), _full(0.3))
    teacher = (_full(0.25, size=2), _full(0.6), _full(0.1))
    sf = {"lr8x": _full(1.0, size=4, channels=3)}
    tf = {"lr8x": _full(3.0, size=4, channels=3), "hr2x": _full(0.0, size=16, channels=2)}
    terms = distill_loss(student, teacher, sf, tf,
                         DistillWeights(matte=1, detail=2, semantic=10, lr8x=0.5, hr2x=1))
    assert terms["kd_matte"].item() == pytest.approx(0.2)
    assert terms["kd_detail"].item() == pytest.approx(2 * 0.4)
    assert terms["kd_semantic"].item() == pytest.approx(10 * 0.0625)
    assert terms["kd_lr8x"].item() == pytest.approx(0.5 * 4.0)
    assert "kd_hr2x" not in terms  # no student feature for it: not distilled
    assert terms["loss"].item() == pytest.approx(0.2 + 0.8 + 0.625 + 2.0)
    off = distill_loss(student, teacher, sf, tf, DistillWeights(matte=1, detail=0, semantic=0,
                                                                lr8x=0, hr2x=0))
    assert set(off) == {"kd_matte", "loss"}


def test_channel_wise_distillation_by_hand():
    # one image, one channel of two pixels: the teacher [0, 4 ln 3] softened by tau = 4 is
    # softmax([0, ln 3]) = (1/4, 3/4); the student [0, 0] is (1/2, 1/2).
    # KL = 1/4 ln(1/2) + 3/4 ln(3/2); the loss is tau^2 KL.
    teacher = torch.tensor([0.0, 4 * math.log(3)]).view(1, 1, 1, 2)
    student = torch.zeros(1, 1, 1, 2)
    kl = 0.25 * math.log(0.5) + 0.75 * math.log(1.5)
    assert channel_distribution_loss(student, teacher, tau=4.0).item() == pytest.approx(16 * kl)
    # a second channel where the two agree halves the mean over channels
    both = channel_distribution_loss(torch.cat([student, teacher], 1),
                                     torch.cat([teacher, teacher], 1), tau=4.0)
    assert both.item() == pytest.approx(8 * kl)
    # where each channel responds, not its offset: a shifted copy ...
    assert channel_distribution_loss(teacher + 5.0, teacher).item() == pytest.approx(0, abs=1e-6)
    # ... is free, and the terms come out through distill_loss's feature_loss
    outputs = (_full(0.5, size=2), _full(0.2), _full(0.3))
    terms = distill_loss(outputs, outputs, {"f2x": student}, {"f2x": teacher},
                         DistillWeights(f2x=2.0), feature_loss="cwd")
    assert terms["kd_f2x"].item() == pytest.approx(2 * 16 * kl)


def test_lr_schedules():
    assert [lr_at(s, 100, lr=1.0, schedule="constant", warmup=4) for s in range(5)] == [0.25, 0.5, 0.75, 1.0, 1.0]
    assert lr_at(4, 100, lr=1.0, schedule="cosine", warmup=4) == pytest.approx(1.0)
    last = lr_at(99, 100, lr=1.0, schedule="cosine", warmup=4, min_lr=0.01)
    assert 0.01 < last == pytest.approx(0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * 95 / 96)))
    assert lr_at(4 + 48, 100, lr=1.0, schedule="cosine", warmup=4) == pytest.approx(0.5)
    # official: x0.1 every quarter of the run
    assert [lr_at(s, 40, lr=0.01, schedule="step") for s in (0, 9, 10, 29, 30)] == pytest.approx(
        [0.01, 0.01, 0.001, 0.0001, 0.00001])


def test_macs_targets_linear_and_cubic():
    assert macs_targets(0.5, 2, "linear") == pytest.approx([0.75, 0.5])
    cubic = macs_targets(0.5, 2, "cubic")
    assert cubic == pytest.approx([1 - 0.5 * (1 - 0.5 ** 3), 0.5])  # 0.5625, 0.5
    assert macs_targets(0.3, 4, "cubic")[-1] == pytest.approx(0.3)
    steps = macs_targets(0.3, 4, "cubic")
    removed = [1 - steps[0]] + [a - b for a, b in zip(steps, steps[1:])]
    assert removed == sorted(removed, reverse=True)  # big cuts first, small near the target
