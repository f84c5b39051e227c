"""Matting metrics against hand-computed cases and slow reference implementations
written directly from the published definitions (loops, explicit 2-D kernel, BFS)."""
import math
from collections import deque

import numpy as np
import pytest

from modnet_prune import metrics
from modnet_prune.metrics import conn, grad, mad, mse, sad


# ----------------------------------------------------------------- slow references

def ref_gauss_gradient(im, sigma=1.4):
    """Deep Image Matting style: 2-D kernel gauss(row) * dgauss(col), L2-normalised,
    true convolution with replicated borders, written as plain loops."""
    def gauss(x):
        return math.exp(-x * x / (2 * sigma * sigma)) / (sigma * math.sqrt(2 * math.pi))

    def dgauss(x):
        return -x * gauss(x) / (sigma * sigma)

    half = math.ceil(sigma * math.sqrt(-2 * math.log(math.sqrt(2 * math.pi) * sigma * 0.01)))
    size = 2 * half + 1
    hx = np.array([[gauss(i - half) * dgauss(j - half) for j in range(size)] for i in range(size)])
    hx /= math.sqrt((hx * hx).sum())
    hy = hx.T
    h, w = im.shape
    gx, gy = np.zeros_like(im), np.zeros_like(im)
    for y in range(h):
        for x in range(w):
            for i in range(size):
                for j in range(size):
                    v = im[min(max(y - (i - half), 0), h - 1), min(max(x - (j - half), 0), w - 1)]
                    gx[y, x] += hx[i, j] * v
                    gy[y, x] += hy[i, j] * v
    return gx, gy


def mat2gray(a):
    lo, hi = a.min(), a.max()
    return (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)


def ref_grad(pred, gt, region):
    px, py = ref_gauss_gradient(mat2gray(pred))
    gx, gy = ref_gauss_gradient(mat2gray(gt))
    err = (np.sqrt(px ** 2 + py ** 2) - np.sqrt(gx ** 2 + gy ** 2)) ** 2
    return err[region].sum() / 1000


def ref_largest_4_component(mask):
    """Flood fill in row-major scan order; the first component of maximal size wins."""
    h, w = mask.shape
    seen = np.zeros_like(mask, bool)
    best = []
    for y in range(h):
        for x in range(w):
            if mask[y, x] and not seen[y, x]:
                comp, queue = [], deque([(y, x)])
                seen[y, x] = True
                while queue:
                    cy, cx = queue.popleft()
                    comp.append((cy, cx))
                    for ny, nx in ((cy - 1, cx), (cy + 1, cx), (cy, cx - 1), (cy, cx + 1)):
                        if 0 <= ny < h and 0 <= nx < w and mask[ny, nx] and not seen[ny, nx]:
                            seen[ny, nx] = True
                            queue.append((ny, nx))
                if len(comp) > len(best):
                    best = comp
    omega = np.zeros_like(mask, bool)
    for y, x in best:
        omega[y, x] = True
    return omega


def ref_conn(pred, gt, region):
    thresholds = [i / 10 for i in range(11)]
    level = np.full(pred.shape, -1.0)
    for i in range(1, 11):
        omega = ref_largest_4_component((pred >= thresholds[i]) & (gt >= thresholds[i]))
        for y in range(pred.shape[0]):
            for x in range(pred.shape[1]):
                if level[y, x] == -1 and not omega[y, x]:
                    level[y, x] = thresholds[i - 1]
    level[level == -1] = 1
    total = 0.0
    for y, x in zip(*np.nonzero(region)):
        dp, dg = pred[y, x] - level[y, x], gt[y, x] - level[y, x]
        phi_p = 1 - dp if dp >= 0.15 else 1
        phi_g = 1 - dg if dg >= 0.15 else 1
        total += abs(phi_p - phi_g)
    return total / 1000


def random_mattes(seed, h=18, w=22):
    """A gt with opaque, transparent and fractional parts, and a noisy prediction,
    both quantised to 8 bits like mattes read from PNG files."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    gt = np.clip((8 - np.hypot(y - h * rng.uniform(0.3, 0.7), x - w * rng.uniform(0.3, 0.7))) / 3, 0, 1)
    gt[rng.random((h, w)) < 0.05] = rng.random()
    pred = np.clip(gt + rng.normal(0, 0.2, (h, w)) * (rng.random((h, w)) < 0.4), 0, 1)
    pred[rng.random((h, w)) < 0.03] = 1.0  # islands: disconnected false positives
    quant = lambda a: np.round(a * 255) / 255  # noqa: E731
    trimap = np.where(gt >= 1, 255, 0).astype(np.uint8)
    trimap[(gt > 0) & (gt < 1)] = 128
    trimap[rng.random((h, w)) < 0.2] = 128
    return quant(pred), quant(gt), trimap


# ----------------------------------------------------------------- hand-computed cases

PRED = np.array([[0.0, 0.5], [1.0, 1.0]])
GT = np.array([[0.0, 1.0], [1.0, 0.0]])
TRIMAP_U8 = np.array([[0, 128], [255, 128]], np.uint8)
TRIMAP_FLOAT = np.array([[0.0, 0.5], [1.0, 0.5]], np.float32)


def test_sad_mse_mad_whole_image_by_hand():
    # |delta| = 0, 0.5, 0, 1
    assert sad(PRED, GT) == pytest.approx(1.5 / 1000)
    assert mse(PRED, GT) == pytest.approx((0.25 + 1) / 4)
    assert mad(PRED, GT) == pytest.approx(1.5 / 4)


@pytest.mark.parametrize("trimap", [TRIMAP_U8, TRIMAP_FLOAT, TRIMAP_U8.astype(np.float64)])
def test_sad_mse_mad_unknown_region_by_hand(trimap):
    # unknown pixels: |delta| = 0.5 and 1
    assert sad(PRED, GT, trimap) == pytest.approx(1.5 / 1000)
    assert mse(PRED, GT, trimap) == pytest.approx((0.25 + 1) / 2)
    assert mad(PRED, GT, trimap) == pytest.approx(0.75)


def test_empty_unknown_region_gives_nan_means_and_zero_sums():
    trimap = np.zeros((2, 2), np.uint8)
    assert math.isnan(mse(PRED, GT, trimap)) and math.isnan(mad(PRED, GT, trimap))
    assert sad(PRED, GT, trimap) == 0.0


def test_conn_by_hand_hole_in_the_prediction():
    # largest component at every t: pixels 0-2; pixel 3 (p=0) leaves at t=0.1 -> l=0,
    # phi_p = 1, phi_g = 1 - 1 = 0; pixel 4 leaves too, but p = g there -> 0.
    pred = np.array([[1.0, 1.0, 1.0, 0.0, 1.0]])
    gt = np.ones((1, 5))
    assert conn(pred, gt) == pytest.approx(1 / 1000)


def test_conn_by_hand_fractional_pixel():
    # pixel 0 (p=0.5) leaves the component at t=0.6 -> l=0.5: phi_p = 1, phi_g = 0.5
    assert conn(np.array([[0.5, 1.0]]), np.ones((1, 2))) == pytest.approx(0.5 / 1000)
    # a difference under the 0.15 cut-off is ignored
    assert conn(np.array([[0.9, 1.0]]), np.ones((1, 2))) == pytest.approx(0.0)


def test_grad_kernel_is_the_published_one():
    g, dg = metrics.gaussian_derivative_kernel(1.4)
    assert g.size == dg.size == 9  # half-size ceil(1.4 * sqrt(-2 ln(0.0351))) = ceil(3.62) = 4
    assert np.sqrt((np.outer(g, dg) ** 2).sum()) == pytest.approx(1.0)


def test_perfect_prediction_scores_zero():
    _, gt, trimap = random_mattes(0)
    for region in (None, trimap):
        assert [f(gt, gt, region) for f in (sad, mse, mad, grad, conn)] == [0.0] * 5


def test_grad_uses_min_max_normalised_mattes():
    pred, gt, _ = random_mattes(1)
    assert grad(0.5 * pred + 0.25, gt) == pytest.approx(grad(pred, gt), rel=1e-9)
    assert sad(0.5 * pred + 0.25, gt) != pytest.approx(sad(pred, gt))


# ----------------------------------------------------------------- against references

@pytest.mark.parametrize("seed", range(3))
def test_grad_matches_reference(seed):
    pred, gt, trimap = random_mattes(seed)
    whole = np.ones_like(gt, bool)
    assert grad(pred, gt) == pytest.approx(ref_grad(pred, gt, whole), rel=1e-9, abs=1e-12)
    assert grad(pred, gt, trimap) == pytest.approx(ref_grad(pred, gt, trimap == 128), rel=1e-9)


@pytest.mark.parametrize("seed", range(10))
def test_conn_matches_reference(seed):
    pred, gt, trimap = random_mattes(seed)
    assert grad(pred, gt) > 0
    whole = np.ones_like(gt, bool)
    assert conn(pred, gt) == pytest.approx(ref_conn(pred, gt, whole), rel=1e-9, abs=1e-12)
    assert conn(pred, gt, trimap) == pytest.approx(ref_conn(pred, gt, trimap == 128), rel=1e-9)
    assert conn(pred, gt) > 0


@pytest.mark.parametrize("seed", range(3))
def test_sad_mse_mad_match_loops(seed):
    pred, gt, trimap = random_mattes(seed)
    cells = [(y, x) for y in range(gt.shape[0]) for x in range(gt.shape[1]) if trimap[y, x] == 128]
    diffs = [pred[c] - gt[c] for c in cells]
    assert sad(pred, gt, trimap) == pytest.approx(sum(abs(d) for d in diffs) / 1000)
    assert mse(pred, gt, trimap) == pytest.approx(sum(d * d for d in diffs) / len(diffs))
    assert mad(pred, gt, trimap) == pytest.approx(sum(abs(d) for d in diffs) / len(diffs))


def test_accepts_batch_shaped_mattes_and_rejects_mismatches():
    pred, gt, _ = random_mattes(2)
    assert sad(pred[None, None], gt[None]) == pytest.approx(sad(pred, gt))
    with pytest.raises(ValueError, match="must be equal"):
        sad(pred[:-1], gt)
    with pytest.raises(ValueError, match="trimap"):
        sad(pred, gt, np.zeros((3, 3), np.uint8))
