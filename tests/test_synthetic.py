"""Synthetic portraits: determinism, fractional alpha, and the open_dataset contract."""
import pickle

import numpy as np
import pytest
import torch

from modnet_prune.data import open_dataset, render_portrait
from modnet_prune.errors import UserError


def test_same_seed_gives_byte_identical_sample():
    a_img, a_alpha = render_portrait(1234, 96)
    b_img, b_alpha = render_portrait(1234, 96)
    assert a_img.tobytes() == b_img.tobytes() and a_alpha.tobytes() == b_alpha.tobytes()
    c_img, c_alpha = render_portrait(1235, 96)
    assert not np.array_equal(a_img, c_img) and not np.array_equal(a_alpha, c_alpha)


def test_samples_are_portraits_with_fractional_alpha():
    for seed in range(12):
        image, alpha = render_portrait(seed, 128)
        assert image.shape == (128, 128, 3) and image.dtype == np.uint8
        assert alpha.shape == (128, 128) and alpha.dtype == np.uint8
        fg = alpha == 255
        # a person, not an empty frame or a full one
        assert 0.05 < fg.mean() < 0.9
        # the figure reaches down to the bottom edge (shoulders/torso cut by the frame)
        assert fg[-1].any()
        # hair fringe and strands: a real share of pixels is semi-transparent
        fractional = (alpha > 0) & (alpha < 255)
        assert fractional.sum() > 60, seed
        assert 0 < np.median(alpha[fractional]) < 255


def test_strands_leave_isolated_semi_transparent_pixels():
    """Thin strands: semi-transparent pixels away from the opaque body (> 2 px)."""
    from scipy.ndimage import binary_dilation
    isolated = 0
    for seed in range(8):
        _, alpha = render_portrait(seed, 128)
        near_body = binary_dilation(alpha >= 128, iterations=3)
        isolated += int(((alpha > 0) & (alpha < 128) & ~near_body).sum())
    assert isolated > 50


def test_open_dataset_synthetic_contract():
    ds = open_dataset("synthetic:5@64+seed10", size=64, train=False)
    assert len(ds) == 5
    item = ds[2]
    assert item["name"] == "synth_0000012"
    assert item["image"].shape == (3, 64, 64) and item["image"].dtype == torch.float32
    assert item["alpha"].shape == (1, 64, 64) and item["trimap"].shape == (1, 64, 64)
    assert -1.0 <= item["image"].min() and item["image"].max() <= 1.0
    assert 0.0 <= item["alpha"].min() and item["alpha"].max() <= 1.0
    assert set(torch.unique(item["trimap"]).tolist()) <= {0.0, 0.5, 1.0}
    # the evaluation items are exactly the generated sample (no resize at the native size)
    image, alpha = render_portrait(12, 64)
    expected = (torch.from_numpy(image).permute(2, 0, 1).float() / 255 - 0.5) / 0.5
    assert torch.equal(item["image"], expected)
    assert torch.equal(item["alpha"][0], torch.from_numpy(alpha).float() / 255)


def test_seed_argument_and_seed_suffix():
    a = open_dataset("synthetic:3@64", size=64, train=False, seed=7)[0]
    b = open_dataset("synthetic:3@64+seed7", size=64, train=False, seed=999)[0]
    assert a["name"] == b["name"] == "synth_0000007"
    assert torch.equal(a["image"], b["image"])


def test_train_transforms_are_random_but_reproducible_from_torch_seed():
    ds = open_dataset("synthetic:2@96", size=64, train=True)
    torch.manual_seed(0)
    first = ds[0]
    torch.manual_seed(0)
    again = ds[0]
    other = ds[0]
    assert first["image"].shape == (3, 64, 64)
    assert torch.equal(first["image"], again["image"]) and torch.equal(first["alpha"], again["alpha"])
    assert not torch.equal(first["image"], other["image"])


def test_dataset_pickles_and_works_with_worker_processes():
    ds = open_dataset("synthetic:8@64", size=64, train=True)
    clone = pickle.loads(pickle.dumps(ds))
    assert len(clone) == 8
    loader = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=2)
    batches = list(loader)
    assert [b["image"].shape for b in batches] == [(4, 3, 64, 64)] * 2
    assert batches[1]["name"] == [f"synth_{i:07d}" for i in range(4, 8)]


@pytest.mark.parametrize("spec", ["synthetic:", "synthetic:0@64", "synthetic:5@16",
                                  "synthetic:5@64+seed", "synthetic:x@64"])
def test_bad_synthetic_specs_are_user_errors(spec):
    with pytest.raises(UserError):
        open_dataset(spec, size=64, train=False)


def test_size_must_be_a_multiple_of_32():
    with pytest.raises(UserError, match="multiple of 32"):
        open_dataset("synthetic:2@64", size=100, train=False)
