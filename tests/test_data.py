"""Dataset folders in each public layout (built in tmp folders), pairing, errors, trimaps
and transforms."""
import numpy as np
import pytest
import torch
from PIL import Image

from modnet_prune.data import DataWarning, open_dataset, open_source, trimap_from_alpha
from modnet_prune.data.transforms import trimap_radius
from modnet_prune.errors import UserError


def _write(path, array, **kw):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **kw)


def _sample(seed, h=40, w=56):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    alpha = np.zeros((h, w), np.uint8)
    alpha[h // 4: 3 * h // 4, w // 4: 3 * w // 4] = 255
    alpha[h // 4 - 1, w // 4: 3 * w // 4] = 100
    return image, alpha


def _make_pairs(image_dir, alpha_dir, stems, trimap_dir=None, image_ext=".jpg"):
    for i, stem in enumerate(stems):
        image, alpha = _sample(i)
        _write(image_dir / f"{stem}{image_ext}", image, quality=95)
        _write(alpha_dir / f"{stem}.png", alpha)
        if trimap_dir is not None:
            _write(trimap_dir / f"{stem}.png", trimap_from_alpha(alpha / 255.0))


def test_ppm100_layout_with_missing_pairs_warns_and_continues(tmp_path):
    _make_pairs(tmp_path / "image", tmp_path / "matte", ["a", "b", "c"])
    _write(tmp_path / "image" / "lonely.jpg", _sample(9)[0])
    _write(tmp_path / "matte" / "orphan.png", _sample(9)[1])
    with pytest.warns(DataWarning, match=r"1 images without a matte \(e\.g\. lonely\).*"
                                         r"1 mattes without an image \(e\.g\. orphan\)"):
        ds = open_dataset(str(tmp_path), size=64, train=False)
    assert len(ds) == 3
    assert "PPM-100" in ds.source.description
    item = ds[1]
    assert item["name"] == "b"
    assert item["image"].shape == (3, 64, 64) and item["alpha"].shape == (1, 64, 64)
    raw = ds.source.sample(1)
    assert raw.trimap is None and raw.alpha.shape == (40, 56)
    assert np.array_equal(np.round(raw.alpha * 255).astype(np.uint8), _sample(1)[1])


def test_p3m10k_root_picks_train_or_both_validation_sets(tmp_path):
    _make_pairs(tmp_path / "train" / "blurred_image", tmp_path / "train" / "mask", ["t1", "t2"])
    val = tmp_path / "validation"
    _make_pairs(val / "P3M-500-P" / "blurred_image", val / "P3M-500-P" / "mask", ["p1"],
                val / "P3M-500-P" / "trimap")
    _make_pairs(val / "P3M-500-NP" / "original_image", val / "P3M-500-NP" / "mask", ["n1", "n2"],
                val / "P3M-500-NP" / "trimap")
    train = open_source(str(tmp_path), train=True)
    assert [p.name for p in train.pairs] == ["t1", "t2"] and not train.has_trimaps
    evaluation = open_source(str(tmp_path), train=False)
    assert [p.name for p in evaluation.pairs] == ["P3M-500-NP/n1", "P3M-500-NP/n2", "P3M-500-P/p1"]
    assert evaluation.has_trimaps
    sample = evaluation.sample(2)
    assert set(np.unique(sample.trimap)) == {0, 128, 255}
    assert np.array_equal(sample.trimap, trimap_from_alpha(sample.alpha))
    # one split folder directly
    assert len(open_source(str(val / "P3M-500-P"))) == 1


def test_am2k_layout_with_trimaps(tmp_path):
    _make_pairs(tmp_path / "original", tmp_path / "mask", ["x", "y"], tmp_path / "trimap")
    ds = open_dataset(str(tmp_path), size=32, train=False)
    assert "AM-2k" in ds.source.description and ds.source.has_trimaps
    assert set(torch.unique(ds[0]["trimap"]).tolist()) == {0.0, 0.5, 1.0}


def test_explicit_folders_spec(tmp_path):
    _make_pairs(tmp_path / "photos", tmp_path / "alphas_here", ["k1", "k2"], image_ext=".png")
    spec = f"images={tmp_path / 'photos'},alphas={tmp_path / 'alphas_here'}"
    ds = open_dataset(spec, size=32, train=True)
    assert len(ds) == 2 and ds[0]["image"].shape == (3, 32, 32)
    with pytest.raises(UserError, match="alphas=DIR"):
        open_source(f"images={tmp_path / 'photos'}")
    with pytest.raises(UserError, match="expected images=DIR"):
        open_source(f"pictures={tmp_path}")
    with pytest.raises(UserError, match="no such folder"):
        open_source(f"images={tmp_path / 'nope'},alphas={tmp_path / 'alphas_here'}")


def test_empty_unrecognised_and_missing_folders_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="no dataset layout recognised"):
        open_source(str(tmp_path))
    (tmp_path / "image").mkdir()
    (tmp_path / "matte").mkdir()
    with pytest.raises(UserError, match="no images"):
        open_source(str(tmp_path))
    with pytest.raises(UserError, match="no such folder"):
        open_source(str(tmp_path / "missing"))
    _write(tmp_path / "image" / "a.jpg", _sample(0)[0])
    _write(tmp_path / "matte" / "b.png", _sample(0)[1])
    with pytest.raises(UserError, match="no image has a matte"):
        open_source(str(tmp_path))


def test_duplicate_stems_and_size_mismatch_are_user_errors(tmp_path):
    _make_pairs(tmp_path / "image", tmp_path / "matte", ["a"])
    _write(tmp_path / "image" / "a.png", _sample(0)[0])
    with pytest.raises(UserError, match="share the stem 'a'"):
        open_source(str(tmp_path))
    (tmp_path / "image" / "a.png").unlink()
    _write(tmp_path / "matte" / "a.png", np.zeros((10, 10), np.uint8))
    with pytest.raises(UserError, match=r"image is 56x40 but its matte is 10x10"):
        open_source(str(tmp_path)).sample(0)


def test_grayscale_rgba_16bit_and_exif_inputs(tmp_path):
    image, alpha = _sample(3)
    _write(tmp_path / "image" / "gray.jpg", image[..., 0])
    _write(tmp_path / "image" / "rgba.png", np.dstack([image, np.full(alpha.shape, 7, np.uint8)]))
    # EXIF orientation 6: stored sideways (56 high, 40 wide), displayed 40 high, 56 wide
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(np.rot90(image, 1).copy()).save(tmp_path / "image" / "rotated.jpg", exif=exif)
    for stem in ("gray", "rgba", "rotated"):
        _write(tmp_path / "matte" / f"{stem}.png", alpha)
    Image.fromarray(alpha.astype(np.uint16) * 257).save(tmp_path / "matte" / "gray.png")
    src = open_source(str(tmp_path))
    by_name = {src.pairs[i].name: src.sample(i) for i in range(len(src))}
    gray = by_name["gray"]
    assert gray.image.shape == (40, 56, 3)
    assert np.array_equal(gray.image[..., 0], gray.image[..., 2])
    assert np.allclose(gray.alpha, alpha / 255.0, atol=1e-6)  # 16-bit matte scaled to [0, 1]
    assert np.array_equal(by_name["rgba"].image, image)  # alpha channel dropped
    assert by_name["rotated"].image.shape == (40, 56, 3)


def test_trimap_from_alpha_by_hand():
    alpha = np.zeros((64, 64), np.float32)  # radius = round(64 / 64) = 1
    alpha[20:40, 20:40] = 1.0
    alpha[19, 20:40] = 0.5
    trimap = trimap_from_alpha(alpha)
    assert trimap_radius(64, 64) == 1 and trimap_radius(512, 700) == 8
    # fg eroded by 1: rows/cols 21..38; unknown: the alpha>0 box (19..39 x 20..39) dilated by 1
    expected = np.zeros((64, 64), np.uint8)
    expected[18:41, 19:41] = 128
    expected[21:39, 21:39] = 255
    assert np.array_equal(trimap, expected)


def test_train_items_are_random_crops_with_image_and_matte_aligned(tmp_path):
    """A grey image equal to its matte: after crop/resize/flip/jitter the image must still
    be an increasing function of the matte (jitter is per-image affine on grey)."""
    y, x = np.mgrid[0:48, 0:64]
    alpha = np.clip((x - 10) / 30 + (y - 20) / 40, 0, 1)  # asymmetric: flips are visible
    a8 = np.round(alpha * 255).astype(np.uint8)
    _write(tmp_path / "image" / "a.png", np.dstack([a8] * 3))
    _write(tmp_path / "matte" / "a.png", a8)
    ds = open_dataset(str(tmp_path), size=32, train=True)
    torch.manual_seed(3)
    items = [ds[0] for _ in range(8)]
    assert len({i["alpha"].numpy().tobytes() for i in items}) == 8
    flipped = 0
    for item in items:
        image, matte = item["image"][0].flatten(), item["alpha"][0].flatten()
        assert np.corrcoef(image, matte)[0, 1] > 0.95  # (clipping bends it a little)
        assert set(torch.unique(item["trimap"]).tolist()) <= {0.0, 0.5, 1.0}
        flipped += bool(item["alpha"][0, :, 0].mean() > item["alpha"][0, :, -1].mean())
    assert 0 < flipped < 8


def test_eval_items_resize_the_whole_image(tmp_path):
    image, alpha = _sample(0, h=64, w=96)
    _write(tmp_path / "image" / "a.png", image)
    _write(tmp_path / "matte" / "a.png", alpha)
    item = open_dataset(str(tmp_path), size=32, train=False)[0]
    expected = np.asarray(Image.fromarray(alpha / np.float32(255)).resize((32, 32), Image.BILINEAR))
    assert np.allclose(item["alpha"][0].numpy(), expected, atol=1e-6)
