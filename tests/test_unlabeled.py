"""Unlabeled data (photo trees, video frames, slices, weighted mixtures), training on the
teacher's targets alone, and agreement metrics against another model's mattes."""
import json
from pathlib import Path

import av
import numpy as np
import pytest
import torch
import yaml
from helpers import make_teacher, tiny_arch, tiny_model
from PIL import Image

import modnet_prune as mp
from modnet_prune.cli import main
from modnet_prune.data import open_dataset, open_source
from modnet_prune.data.images import read_alpha
from modnet_prune.errors import UserError
from modnet_prune.metrics import METRICS, all_metrics, boundary, evaluate, iou
from modnet_prune.pipeline.recipe import load_recipe
from modnet_prune.train import TrainConfig, fit


def _photo(path, level, size=(40, 56)):
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(level)
    image = np.clip(level + rng.integers(-20, 20, (*size, 3)), 0, 255).astype(np.uint8)
    Image.fromarray(image).save(path)


def _video(path, frames=30, rate=10):
    """A clip whose frame k is flat grey 8k: the frame a sample came from is readable."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for k in range(frames):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 8 * k, np.uint8), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())


@pytest.fixture
def photos(tmp_path):
    root = tmp_path / "photos"
    for i, rel in enumerate(["a.jpg", "b.png", "trip/c.webp", "trip/day2/d.jpeg"]):
        _photo(root / rel, 40 * i + 20)
    (root / ".cache").mkdir()
    _photo(root / ".cache" / "thumb.jpg", 0)   # hidden: left out
    (root / "notes.txt").write_text("not an image")
    return root


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


# --------------------------------------------------------------------------- loading

def test_image_tree_loads_as_unlabeled_images(photos):
    source = open_source(str(photos))
    assert not source.labeled and len(source) == 4
    assert [source.sample(i).name for i in range(4)] == ["a", "b", "trip/c", "trip/day2/d"]
    sample = source.sample(2)
    assert sample.alpha is None and sample.trimap is None and sample.image.shape == (40, 56, 3)
    for train in (True, False):
        data = open_dataset(str(photos), size=64, train=train)
        item = data[1]
        assert not data.labeled and set(item) == {"image", "name"}
        assert item["image"].shape == (3, 64, 64) and -1 <= item["image"].min() <= item["image"].max() <= 1
    batch = next(iter(torch.utils.data.DataLoader(data, batch_size=2)))
    assert batch["image"].shape == (2, 3, 64, 64)


def test_video_frames_are_sampled_at_the_given_rate(tmp_path):
    _video(tmp_path / "clips" / "call.mp4")   # 30 frames at 10 fps: 3 s
    source = open_source(f"{tmp_path / 'clips' / 'call.mp4'}@2fps")
    assert not source.labeled and len(source) == 6  # t = 0, 0.5, ..., 2.5
    levels = [source.sample(i).image.mean() for i in range(6)]
    assert levels == pytest.approx([8 * k for k in (0, 5, 10, 15, 20, 25)], abs=3)
    assert source.sample(3).name == "call/000003"
    assert len(open_source(str(tmp_path / "clips" / "call.mp4"))) == 3   # default 1 fps
    _photo(tmp_path / "clips" / "still.png", 100)
    mixed = open_source(f"{tmp_path / 'clips'}@0.5fps")   # a folder of videos and images
    assert len(mixed) == 2 + 1 and "2 frames of 1 videos at 0.5 fps" in mixed.description
    item = open_dataset(f"{tmp_path / 'clips'}@2fps", size=32, train=True)[0]
    assert set(item) == {"image", "name"}


def test_a_dataset_with_an_unrecognised_layout_is_not_read_as_photos(tmp_path):
    _photo(tmp_path / "pics" / "a.jpg", 50)
    _photo(tmp_path / "mask" / "a.png", 50)
    with pytest.raises(UserError, match="holds mattes"):
        open_source(str(tmp_path))
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    with pytest.raises(UserError, match="nor any image or video"):
        open_source(str(tmp_path / "empty"))


def test_slices_cut_a_spec_in_order(photos):
    train, held_out = open_source(f"{photos}[:75%]"), open_source(f"{photos}[75%:]")
    names = lambda s: [s.sample(i).name for i in range(len(s))]  # noqa: E731
    assert names(train) == ["a", "b", "trip/c"] and names(held_out) == ["trip/day2/d"]
    assert names(open_source("synthetic:10@64[20%:40%]")) == names(open_source("synthetic:2@64+seed2"))
    with pytest.raises(UserError, match="selects no sample"):
        open_source(f"{photos}[50%:60%]")


def test_mixtures_sample_in_the_given_proportion(photos):
    mix = open_source(f"3*{photos} + 1*synthetic:20@64")
    assert len(mix) == 24 and not mix.labeled           # one unlabeled part: all unlabeled
    parts = [mix.part_of(i) for i in range(len(mix))]
    assert parts.count(0) == 18 and parts.count(1) == 6  # 3/4 of 24, 1/4 of 24
    photo_names = [mix.sample(i).name for i in range(18)]
    assert sorted({photo_names.count(n) for n in set(photo_names)}) in ([4, 5], [5, 4])
    assert all(mix.sample(i).alpha is None for i in (0, 20))
    synthetic_names = {mix.sample(i).name for i in range(18, 24)}
    assert len(synthetic_names) == 6                     # 6 of the 20, spread, none twice
    # a shuffled epoch draws the parts in that proportion too
    data = open_dataset(f"3*{photos} + 1*synthetic:20@64", size=32, train=False)
    order = list(torch.utils.data.RandomSampler(data, generator=torch.Generator().manual_seed(0)))
    assert sum(mix.part_of(i) == 0 for i in order[:12]) in range(6, 12)
    concat = open_source("synthetic:3@64 + synthetic:2@64+seed7")  # unweighted: concatenation
    assert concat.labeled and len(concat) == 5 and concat.sample(4).name == open_source(
        "synthetic:1@64+seed8").sample(0).name
    with pytest.raises(UserError, match="weight every part"):
        open_source(f"2*{photos} + synthetic:4@64")


# --------------------------------------------------------------------------- training

def _cfg(**kw):
    base = dict(size=64, batch_size=2, steps=2, lr=1e-3, optimizer="adamw", workers=0,
                log_every=1, checkpoint_every=2, schedule="constant")
    return TrainConfig(**{**base, **kw})


def test_ground_truth_terms_on_unlabeled_data_are_refused(photos, tmp_path, capsys):
    data = open_dataset(str(photos), size=64, train=True)
    teacher, student = tiny_model(), mp.MODNet(tiny_arch())
    with pytest.raises(UserError, match="no ground-truth mattes.*supervised"):
        fit(student, data, _cfg(supervised=1.0, distill={"matte": 1.0}), tmp_path / "a",
            teacher=teacher, progress=False)
    with pytest.raises(UserError, match="teacher must provide the targets"):
        fit(student, data, _cfg(), tmp_path / "b", progress=False)
    t = mp.save(teacher, tmp_path / "t.safetensors")
    s = mp.save(student, tmp_path / "s.safetensors")
    code, _, err = run_cli(capsys, "finetune", "--student", s, "--teacher", t, "--data", photos,
                           "--size", 64, "--batch-size", 2, "--steps", 1, "--supervised", 1,
                           "--workers", 0, "--out", tmp_path / "c", "--no-progress")
    assert code == 2 and "no ground-truth mattes" in err and len(err.strip().splitlines()) == 1
    code, _, err = run_cli(capsys, "train", "--data", photos, "--size", 64, "--batch-size", 2,
                           "--steps", 1, "--workers", 0, "--out", tmp_path / "d")
    assert code == 2 and "teacher must provide" in err


def test_finetune_on_unlabeled_photos_distils_and_scores_agreement(photos, tmp_path, capsys):
    t = mp.save(tiny_model(), tmp_path / "t.safetensors")
    s = mp.save(mp.MODNet(tiny_arch()), tmp_path / "s.safetensors")
    out = tmp_path / "ft"
    code, _, err = run_cli(capsys, "finetune", "--student", s, "--teacher", t,
                           "--data", f"{photos}[:75%]", "--eval-data", f"{photos}[75%:]",
                           "--size", 64, "--batch-size", 2, "--steps", 2, "--log-every", 1,
                           "--workers", 0, "--out", out, "--json", "--no-progress")
    assert code == 0, err
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    train = [r for r in rows if r["kind"] == "train"]
    assert all(r["kd_matte"] > 0 and "matte" not in r and "semantic" not in r for r in train)
    (evaluation,) = [r for r in rows if r["kind"] == "eval"]
    assert evaluation["reference"] == "teacher" and 0 <= evaluation["iou"] <= 1
    assert json.loads((out / "config.json").read_text())["supervised"] == 0.0
    assert (out / "best.safetensors").exists()


# --------------------------------------------------------------------------- agreement

def test_iou_and_boundary_by_hand():
    ref = np.array([[0.0, 0.2, 0.6], [1.0, 0.96, 0.5]])
    pred = np.array([[0.0, 0.5, 0.4], [1.0, 1.0, 0.5]])
    # masks >= 0.5: ref {(0,2), (1,0), (1,1), (1,2)}, pred {(0,1), (1,0), (1,1), (1,2)}
    assert iou(pred, ref) == pytest.approx(3 / 5)
    # band 0.05 <= ref <= 0.95: 0.2, 0.6, 0.5 -> |0.3|, |0.2|, 0
    assert boundary(pred, ref) == pytest.approx(0.5 / 3)
    assert iou(np.zeros((2, 2)), np.zeros((2, 2))) == 1.0
    assert np.isnan(boundary(np.ones((2, 2)), np.ones((2, 2))))


def test_agreement_with_itself_is_perfect_and_with_another_model_is_not(photos, tmp_path):
    torch.manual_seed(3)
    model, other = tiny_model(), tiny_model()
    same = evaluate(model, str(photos), size=64, reference=model)
    assert all(same[m] == 0 for m in METRICS) and same["iou"] == 1.0
    assert same["boundary"] == 0 or np.isnan(same["boundary"])
    diff = evaluate(other, str(photos), size=64, reference=model,
                    save_predictions=tmp_path / "other")
    evaluate(model, "synthetic:2@64", size=64, reference=model)  # labeled data works too
    evaluate(model, str(photos), size=64, reference=model, save_predictions=tmp_path / "ref")
    assert diff["mad"] > 0
    source = open_source(str(photos))
    by_hand = []
    for i in range(len(source)):
        name = source.sample(i).name
        p, r = read_alpha(tmp_path / "other" / f"{name}.png"), read_alpha(tmp_path / "ref" / f"{name}.png")
        by_hand.append({**all_metrics(p, r), "iou": iou(p, r), "boundary": boundary(p, r)})
    for m in METRICS + ("iou",):
        assert diff[m] == pytest.approx(np.mean([row[m] for row in by_hand]), rel=1e-9, abs=1e-15)
    assert diff["boundary"] == pytest.approx(np.nanmean([row["boundary"] for row in by_hand]))
    with pytest.raises(UserError, match="no ground-truth mattes.*--reference"):
        evaluate(model, str(photos), size=64)


def test_evaluate_cli_with_a_reference_model(photos, tmp_path, capsys):
    a = mp.save(tiny_model(), tmp_path / "a.safetensors")
    code, out, err = run_cli(capsys, "evaluate", "--checkpoint", a, "--reference", a,
                             "--data", photos, "--size", 64, "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["count"] == 4 and result["mad"] == 0 and result["iou"] == 1.0
    assert result["reference"] == str(a)
    code, out, _ = run_cli(capsys, "evaluate", "--checkpoint", a, "--reference", a,
                           "--data", photos, "--size", 64)
    assert code == 0 and "IoU" in out and "boundary" in out
    code, _, err = run_cli(capsys, "evaluate", "--checkpoint", a, "--data", photos)
    assert code == 2 and "--reference" in err


# --------------------------------------------------------------------------- the template

@pytest.mark.slow
def test_official_unlabeled_template_runs_end_to_end(tmp_path, monkeypatch, capsys):
    """recipes/official-unlabeled.yaml as a user runs it, from a folder holding photos/,
    with a tiny teacher and a tiny budget: the held-out tenth is scored by agreement."""
    template = Path(__file__).parents[1] / "recipes" / "official-unlabeled.yaml"
    recipe = load_recipe(template).to_dict()
    assert (recipe["data"]["train"], recipe["data"]["eval"]) == ("photos/[:90%]", "photos/[90%:]")
    assert recipe["finetune"]["supervised"] is None and recipe["prune"]["target_macs"] == 0.5
    for i in range(10):
        _photo(tmp_path / "photos" / f"img{i:02d}.jpg", 20 * i + 10)
    teacher = make_teacher(tmp_path)  # said to be trained on synthetic portraits, like ours:
    mp.save(mp.load(teacher), teacher, description="trained on synthetic portraits")
    recipe.update(teacher=str(teacher), recalibrate_bn=1,
                  sizes={"train": 64, "eval": 64, "benchmark": 64},
                  benchmark={"repeat": 2, "warmup": 1, "threads": 1},
                  report={"samples": 1})
    recipe["finetune"].update(samples=32, batch_size=8, workers=0, warmup_samples=0)
    recipe["prune"].update(round_to=4, min_channels=8, iterations=2)  # the teacher is narrow
    (tmp_path / "mine.yaml").write_text(yaml.safe_dump(recipe))
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(capsys, "pipeline", "--recipe", "mine.yaml", "--out", "run",
                             "--no-progress")
    assert code == 0, err
    assert "no ground truth; scoring agreement with the teacher" in out
    assert out.count("trained on synthetic portraits only") == 1  # photos: the note, once
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["evaluation"]["reference"] == "teacher" and summary["evaluation"]["count"] == 1
    teacher_entry, student_entry = summary["models"]
    assert teacher_entry["metrics"]["whole"]["mad"] == 0 and teacher_entry["metrics"]["whole"]["iou"] == 1
    assert student_entry["macs_fraction"] <= 0.5
    again = evaluate(mp.load(tmp_path / "run" / "student.safetensors"), "photos/[90%:]",
                     size=64, reference=mp.load(teacher))
    for metric in ("mad", "iou", "grad"):
        assert student_entry["metrics"]["whole"][metric] == pytest.approx(again[metric], rel=1e-6)
    assert summary["training"]["official-unlabeled"]["samples"] == 32
    report = (tmp_path / "run" / "report.md").read_text()
    assert "agreement with the teacher" in report
    assert (tmp_path / "run" / "figures" / "samples.png").is_file()


# --------------------------------------------------------------------------- recipes and the shipped teacher

def test_recipe_held_out_data_must_be_disjoint_from_every_training_part(tmp_path):
    from modnet_prune.pipeline.recipe import RecipeError, recipe_from_dict
    photos = str(tmp_path / "photos")

    def check(train, held_out):
        return recipe_from_dict({"data": {"train": train, "eval": held_out}})
    check(f"{photos}[:90%]", f"{photos}[90%:]")
    check("synthetic:100@64[:50%]", "synthetic:100@64[50%:]")
    with pytest.raises(RecipeError, match=r"overlaps the training part \[0%:90%\]"):
        check(f"{photos}[:90%]", f"{photos}[80%:]")
    with pytest.raises(RecipeError, match="is the training folder"):
        check(f"{photos}@2fps", photos)
    with pytest.raises(RecipeError, match="seeds 5..9 overlap the training seeds 0..9"):
        check(f"synthetic:10@64 + {photos}", "synthetic:5@64+seed5")
    with pytest.raises(RecipeError, match="expected synthetic:N@S"):
        check(f"{photos} + synthetic:lots", "synthetic:5@64+seed50")


def test_the_shipped_teacher_says_it_knows_synthetic_portraits_only(photos, tmp_path, capsys):
    from modnet_prune.model.shipped import SYNTHETIC_TEACHER_SHA256, trained_on_synthetic
    from modnet_prune.files import sha256_file
    models = Path(__file__).parents[1] / "models"
    shipped = sorted(models.glob("modnet-synthetic*.safetensors"))
    assert [p.name for p in shipped] == ["modnet-synthetic-128.safetensors",
                                         "modnet-synthetic.safetensors"]
    for path in shipped:  # known by hash, not only by their metadata
        assert sha256_file(path) in SYNTHETIC_TEACHER_SHA256 and trained_on_synthetic(path)
    plain = mp.save(tiny_model(), tmp_path / "plain.safetensors")
    alike = mp.save(tiny_model(), tmp_path / "alike.safetensors",
                    description="MODNet trained on synthetic portraits at 64x64")
    student = mp.save(tiny_model(), tmp_path / "student.safetensors",
                      teacher_sha256=next(iter(SYNTHETIC_TEACHER_SHA256)))
    assert not trained_on_synthetic(plain)
    assert trained_on_synthetic(alike) and trained_on_synthetic(student)
    note = "trained on synthetic portraits only"
    code, _, err = run_cli(capsys, "evaluate", "--checkpoint", alike, "--reference", plain,
                           "--data", photos, "--size", 64, "--json")
    assert code == 0 and err.count(note) == 1 and "official MODNet checkpoint" in err
    code, _, err = run_cli(capsys, "evaluate", "--checkpoint", alike, "--data", "synthetic:2@64",
                           "--json")
    assert code == 0 and note not in err
    code, _, err = run_cli(capsys, "evaluate", "--checkpoint", plain, "--reference", plain,
                           "--data", photos, "--size", 64, "--json")
    assert code == 0 and note not in err
    code, _, err = run_cli(capsys, "matte", "--checkpoint", alike, photos / "a.jpg",
                           "--out", tmp_path / "mattes", "--no-progress", "--size", 64)
    assert code == 0 and note in err and (tmp_path / "mattes" / "a_alpha.png").is_file()


def test_predictions_are_never_written_into_the_photo_folder(photos, tmp_path, capsys):
    a = mp.save(tiny_model(), tmp_path / "a.safetensors")
    code, _, err = run_cli(capsys, "evaluate", "--checkpoint", a, "--reference", a, "--data",
                           photos, "--size", 64, "--save-predictions", photos / "trip")
    assert code == 2 and "input folder" in err
    assert sorted(p.name for p in (photos / "trip").iterdir()) == ["c.webp", "day2"]


def test_shifted_synthetic_portraits_differ_in_kind_and_leave_the_standard_ones_alone():
    from modnet_prune.data.synthetic import render_portrait
    standard = open_source("synthetic:40@64+seed100")
    shifted = open_source("synthetic-shifted:40@64+seed100")
    assert standard.labeled and shifted.labeled and "(shifted)" in shifted.description
    s_img, s_alpha = render_portrait(100, 64)
    assert np.array_equal(standard.sample(0).image, s_img)          # the standard generator
    assert np.array_equal(standard.sample(0).alpha, s_alpha.astype(np.float32) / 255)  # untouched
    coverage = lambda src: np.mean([(src.sample(i).alpha > 0.5).mean() for i in range(40)])  # noqa: E731
    assert coverage(shifted) > 1.3 * coverage(standard)            # close-ups (0.60 vs 0.40)
    brightness = [abs(shifted.sample(i).image.mean() - standard.sample(i).image.mean())
                  for i in range(40)]
    assert np.median(brightness) > 10                              # exposure off 0.8..1.2
