"""Batch augmentations for distillation inputs: the trimap rule in torch, exact ground truth
under zoom and mix, reproducible draws, and a run that uses them end to end."""
import json

import numpy as np
import pytest
import torch
from helpers import cfg, divided_arch, tiny_arch, tiny_model

import modnet_prune as mp
from modnet_prune.cli import main
from modnet_prune.data import open_dataset
from modnet_prune.data.transforms import trimap_from_alpha, trimap_tensor
from modnet_prune.errors import UserError
from modnet_prune.pipeline.recipe import RecipeError, recipe_from_dict
from modnet_prune.pipeline.run import train_config
from modnet_prune.train import TrainConfig, fit
from modnet_prune.train.augment import augment_batch


def _batch(n=3, size=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    alphas = []
    for i in range(n):   # a soft disc per sample, at its own place
        cx, cy = (torch.rand(2, generator=g) - 0.5).tolist()
        d = ((xx - cx) ** 2 + (yy - cy) ** 2).sqrt()
        alphas.append(((0.6 - d) / 0.1).clamp(0, 1))
    alpha = torch.stack(alphas)[:, None]
    image = torch.rand(n, 3, size, size, generator=g) * 2 - 1
    return {"image": image, "alpha": alpha, "trimap": trimap_tensor(alpha), "name": list("abc"[:n])}


@pytest.mark.parametrize("size", [64, 128, 200])
def test_trimap_tensor_follows_the_numpy_rule(size):
    rng = np.random.default_rng(size)
    alpha = rng.random((size, size)).astype(np.float32)
    alpha[rng.random((size, size)) < 0.5] = 1.0     # large fg/bg regions and isolated pixels
    alpha[rng.random((size, size)) < 0.3] = 0.0
    expected = np.round(trimap_from_alpha(alpha).astype(np.float32) / 127.5) * 0.5
    got = trimap_tensor(torch.from_numpy(alpha)[None, None])[0, 0].numpy()
    assert np.array_equal(got, expected)


def test_nothing_changes_at_probability_zero_and_draws_replay():
    batch = _batch()
    untouched = augment_batch(batch, ["photometric", "zoom", "mix"], 0.0, seed=1, step=5)
    for key in ("image", "alpha", "trimap"):
        assert torch.equal(untouched[key], batch[key])
    a = augment_batch(batch, ["photometric", "zoom", "mix"], 1.0, seed=1, step=5)
    b = augment_batch(batch, ["photometric", "zoom", "mix"], 1.0, seed=1, step=5)
    c = augment_batch(batch, ["photometric", "zoom", "mix"], 1.0, seed=1, step=6)
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["alpha"], b["alpha"])
    assert not torch.equal(a["image"], c["image"])
    assert a["name"] == batch["name"]


def test_zoom_moves_image_and_alpha_alike():
    batch = _batch()
    batch["image"] = batch["alpha"].expand(-1, 3, -1, -1) * 2 - 1   # the image is its alpha
    out = augment_batch(batch, ["zoom"], 1.0, seed=2, step=0)
    assert not torch.allclose(out["alpha"], batch["alpha"], atol=1e-2)
    assert torch.allclose(out["image"], out["alpha"].expand(-1, 3, -1, -1) * 2 - 1, atol=1e-5)
    assert torch.equal(out["trimap"], trimap_tensor(out["alpha"]))


def test_mix_lays_one_subject_over_another_with_the_over_operators_alpha():
    batch = _batch(n=2)            # with two samples the other one is always the neighbour
    out = augment_batch(batch, ["mix"], 1.0, seed=3, step=0)
    x, a = batch["image"], batch["alpha"]
    assert torch.allclose(out["image"], a * x + (1 - a) * x.flip(0), atol=1e-6)
    assert torch.allclose(out["alpha"], a + (1 - a) * a.flip(0), atol=1e-6)
    assert torch.equal(out["trimap"], trimap_tensor(out["alpha"]))


def test_mix_on_unlabeled_data_uses_the_teachers_matte():
    batch = {"image": _batch(n=2)["image"]}
    out = augment_batch(batch, ["mix"], 1.0, seed=3, step=0,
                        matte_of=lambda img: torch.full_like(img[:, :1], 0.25))
    x = batch["image"]
    assert torch.allclose(out["image"], 0.25 * x + 0.75 * x.flip(0), atol=1e-6)
    assert set(out) == {"image"}


def test_photometric_changes_the_image_only_and_stays_in_range():
    batch = _batch()
    out = augment_batch(batch, ["photometric"], 1.0, seed=4, step=0)
    assert torch.equal(out["alpha"], batch["alpha"]) and torch.equal(out["trimap"], batch["trimap"])
    assert (out["image"] - batch["image"]).abs().mean() > 0.05
    assert out["image"].min() >= -1 and out["image"].max() <= 1


def test_unknown_augmentations_are_refused_by_flag_and_by_recipe_key():
    with pytest.raises(UserError, match="--augment blur"):
        TrainConfig(size=64, steps=1, augment=["zoom", "blur"], supervised=1.0).validate(False)
    with pytest.raises(UserError, match="--augment-p"):
        TrainConfig(size=64, steps=1, augment_p=1.5, supervised=1.0).validate(False)
    with pytest.raises(RecipeError, match=r"finetune.augment\[0\]"):
        recipe_from_dict({"finetune": {"augment": ["blur"]}})
    recipe = recipe_from_dict({"finetune": {"augment": ["mix", "zoom"], "augment_p": 0.3}})
    config = train_config(recipe, steps=4, recalibrate=0)
    assert (config.augment, config.augment_p) == (["mix", "zoom"], 0.3)


def test_augmented_distillation_on_unlabeled_images_runs_and_resumes(tmp_path, capsys):
    """The teacher's matte feeds mix on image-only data; the run is seeded by step, so a
    run resumed from its step-2 checkpoint ends with the weights of an uninterrupted one."""
    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    from PIL import Image
    for i in range(6):
        Image.fromarray(rng.integers(0, 255, (48, 40, 3), dtype=np.uint8)).save(photos / f"{i}.png")
    t = mp.save(tiny_model(), tmp_path / "t.safetensors")
    s = mp.save(mp.MODNet(tiny_arch()), tmp_path / "s.safetensors")
    args = ["finetune", "--student", s, "--teacher", t, "--data", photos, "--size", 64,
            "--batch-size", 2, "--log-every", 1, "--checkpoint-every", 2, "--workers", 0,
            "--augment", "photometric,zoom,mix", "--augment-p", 1, "--no-progress", "--seed", 3,
            "--schedule", "constant", "--warmup", 0]
    assert main([str(a) for a in args + ["--steps", 4, "--out", tmp_path / "a"]]) == 0
    assert main([str(a) for a in args + ["--steps", 2, "--out", tmp_path / "b"]]) == 0
    assert main([str(a) for a in args + ["--steps", 4, "--out", tmp_path / "b", "--resume"]]) == 0
    capsys.readouterr()
    config = json.loads((tmp_path / "a" / "config.json").read_text())
    assert config["augment"] == ["photometric", "zoom", "mix"] and config["supervised"] == 0.0
    a, b = (mp.load(tmp_path / r / "last.safetensors").state_dict() for r in "ab")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_run_folder_from_before_augmentations_resumes(tmp_path):
    data = open_dataset("synthetic:4@64", size=64, train=False)
    fit(mp.MODNet(divided_arch(8)), data, cfg(steps=2, checkpoint_every=2), tmp_path / "run",
        progress=False)
    path = tmp_path / "run" / "config.json"
    older = json.loads(path.read_text())
    del older["augment"], older["augment_p"]
    path.write_text(json.dumps(older))
    result = fit(mp.MODNet(divided_arch(8)), data, cfg(steps=4, checkpoint_every=2),
                 tmp_path / "run", resume=True, progress=False)
    assert result.step == 4
    with pytest.raises(UserError, match="augment"):   # a real change is still refused
        fit(mp.MODNet(divided_arch(8)), data, cfg(steps=4, augment=["zoom"]), tmp_path / "run",
            resume=True, progress=False)
