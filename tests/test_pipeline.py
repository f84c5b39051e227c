"""`modnet-prune pipeline` end to end on a tiny real run: the files it promises, numbers
that agree with independent recomputation, and resuming that skips finished stages."""
from __future__ import annotations

import copy
import json
import os

import numpy as np
import pytest
import torch
import yaml
from helpers import make_teacher, same_state, tiny_recipe, write_recipe

from PIL import Image

import modnet_prune as mp
from modnet_prune.cli import main
from modnet_prune.data import open_dataset, open_source
from modnet_prune.deploy.runtime import open_runtime
from modnet_prune.deploy.web import ort_missing
from modnet_prune.graph.cost import layer_costs
from modnet_prune.metrics import evaluate
from modnet_prune.pipeline import run as pipeline_run
from modnet_prune.pipeline.recipe import recipe_from_dict
from modnet_prune.pipeline.run import STAGES, run_pipeline
from modnet_prune.prune import prune, reconstruct
from modnet_prune.train import image_batches, recalibrate_bn


def _forward_pass_macs(model, size: int) -> int:
    return sum(c.macs for c in layer_costs(model, torch.zeros(1, 3, size, size)))


@pytest.fixture(scope="module")
def iterative_run(tmp_path_factory):
    """The CLI on a 2-iteration compress recipe deployed at 96x96 (evaluated during training
    at 64x64); returns (folder, recipe path)."""
    folder = tmp_path_factory.mktemp("pipeline")
    # a random teacher is far from what int8 is made for: a loose budget, checked below
    quantize = {"calibration": "synthetic:6@64+seed7", "count": 4, "holdout": 2, "budget": 0.5}
    recipe = write_recipe(folder, tiny_recipe(make_teacher(folder), quantize=quantize,
                                              sizes={"benchmark": 96}))
    out = folder / "run"
    assert main(["pipeline", "--recipe", str(recipe), "--out", str(out), "--no-progress"]) == 0
    return out, recipe


@pytest.mark.slow
def test_end_to_end_outputs_agree_with_recomputation(iterative_run, capsys):
    out, _ = iterative_run
    for name in ("summary.json", "report.md", "report.html", "student.safetensors",
                 "student.onnx", "teacher.onnx", "figures/pareto.png", "figures/samples.png"):
        assert (out / name).is_file(), name
    summary = json.loads((out / "summary.json").read_text())
    teacher_entry, student_entry, *int8_entries = summary["models"]
    teacher, student = mp.load(teacher_entry["checkpoint"]), mp.load(out / "student.safetensors")

    # cost: MACs recounted from a forward pass, the fraction within the recipe's target
    assert summary["size"] == [96, 96]
    assert student_entry["macs"] == _forward_pass_macs(student, 96)
    assert teacher_entry["macs"] == _forward_pass_macs(teacher, 96)
    assert student_entry["macs_fraction"] <= 0.5
    assert student_entry["params"] == sum(p.numel() for p in student.parameters())

    # accuracy at the deployment size, where latency is measured: the held-out portraits
    # rendered at 96x96 and scored again; beside it, the same at sizes.eval (64x64)
    deployed, at_eval = open_source("synthetic:4@96+seed5000"), open_source("synthetic:4@64+seed5000")
    assert summary["evaluation"]["size"] == 96 and summary["evaluation"]["eval_size"] == 64
    for entry, model in ((teacher_entry, teacher), (student_entry, student)):
        again, beside = evaluate(model, deployed, size=96), evaluate(model, at_eval, size=64)
        for metric in ("mse", "mad", "sad", "grad", "conn"):  # to float noise (a random teacher's
            # nearly flat mattes make Grad's min-max normalisation sensitive to the last bits)
            assert entry["metrics"]["whole"][metric] == pytest.approx(again[metric], rel=1e-5)
            assert entry["metrics_eval"]["whole"][metric] == pytest.approx(beside[metric], rel=1e-5)
    assert summary["variants"][-1]["mad"] == student_entry["metrics_eval"]["whole"]["mad"]
    grid = summary["samples"][0]["images"]
    for image in grid.values():  # the sample grid shows the deployment size
        with Image.open(out / image) as png:
            assert png.size == (96, 96)

    # the exported student is the student
    x = np.random.default_rng(1).uniform(-1, 1, (1, 3, 64, 96)).astype(np.float32)
    onnx_out = open_runtime(out / "student.onnx")(x)
    with torch.no_grad():
        torch_out = student(torch.from_numpy(x)).numpy()
    assert np.abs(onnx_out - torch_out).max() < 1e-4

    # the browser page holds byte-identical copies of both ONNX files (or says why it is absent)
    if ort_missing() is None:
        assert summary["web"] == {"dir": "web"}
        for name in ("teacher.onnx", "student.onnx"):
            assert (out / "web/models" / name).read_bytes() == (out / name).read_bytes()
    else:
        assert summary["web"] == {"dir": None, "reason": ort_missing()}

    # the budget was spent in full, split over the two iterations, and logged
    training = summary["training"]["tiny"]
    assert training["samples"] == 32 and training["steps"] == 4
    assert [it["start_samples"] for it in training["iterations"]] == [0, 16]
    assert training["curve"][-1]["samples"] == 32
    assert [v["name"] for v in summary["variants"]] == [
        "teacher", "iter-1-pruned", "iter-1", "iter-2-pruned", "tiny"]  # int8: scored at 96 only
    for runtime in ("torch", "onnxruntime"):
        assert student_entry["latency"][runtime]["median_ms"] > 0
        assert len(student_entry["latency"][runtime]["times_ms"]) == 2
        assert teacher_entry["speedup"][runtime] == 1.0

    # int8 files of both, scored on the same held-out set at the deployment size, timed in
    # the same ORT run
    assert [m["name"] for m in int8_entries] == ["teacher-int8", "tiny-int8"]
    bench = json.loads((out / "stages" / "benchmark.json").read_text())["runtimes"]
    assert [os.path.basename(m["path"]) for m in bench["onnxruntime"]["models"]] == [
        "teacher.onnx", "student.onnx", "teacher.int8.onnx", "student.int8.onnx"]
    for entry, fp32 in zip(int8_entries, (teacher_entry, student_entry)):
        runtime = open_runtime(out / entry["onnx"])
        assert runtime.metadata["precision"] == "int8"
        again = evaluate(runtime, deployed, size=96)
        assert entry["metrics"]["whole"]["mad"] == pytest.approx(again["mad"], rel=1e-5)
        assert entry["macs"] == fp32["macs"] and list(entry["latency"]) == ["onnxruntime"]
        assert entry["int8"]["delta_mean"] <= 0.5 and entry["speedup"]["onnxruntime"] > 0
    assert list(summary["samples"][0]["images"])[-2:] == ["teacher int8", "tiny int8"]
    assert "teacher int8: ONNX Runtime static QDQ" in (out / "report.md").read_text()


@pytest.mark.slow  # its fixture runs the pipeline (~40 s on 2 busy cores)
def test_resume_skips_every_finished_stage(iterative_run, capsys, monkeypatch):
    out, recipe = iterative_run
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    for stage in STAGES:  # any stage that runs again fails the test
        monkeypatch.setitem(pipeline_run.STAGE_FUNCTIONS, stage, _must_not_run)
    capsys.readouterr()
    assert main(["pipeline", "--recipe", str(recipe), "--out", str(out), "--resume",
                 "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert printed.count("done earlier, skipped") == len(STAGES)
    assert "tiny: teacher vs student" in printed and "MAD" in printed  # the final table
    after = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    assert after == before


def _must_not_run(run):
    raise AssertionError("a finished stage ran again")


def test_resume_of_a_run_recorded_before_a_recipe_key_existed(iterative_run, capsys, monkeypatch):
    """A recipe.json written before `finetune.multi_size` existed resumes (the key takes its
    default); a real change of recipe is still refused."""
    out, recipe = iterative_run
    path = out / "recipe.json"
    original = path.read_text()
    older = json.loads(original)
    del older["recipe"]["finetune"]["multi_size"]
    for stage in STAGES:
        monkeypatch.setitem(pipeline_run.STAGE_FUNCTIONS, stage, _must_not_run)
    try:
        path.write_text(json.dumps(older))
        assert main(["pipeline", "--recipe", str(recipe), "--out", str(out), "--resume",
                     "--no-progress"]) == 0
        older["recipe"]["finetune"]["lr"] *= 2
        path.write_text(json.dumps(older))
        assert main(["pipeline", "--recipe", str(recipe), "--out", str(out), "--resume",
                     "--no-progress"]) != 0
        assert "finetune.lr" in capsys.readouterr().err
    finally:
        path.write_text(original)


@pytest.mark.slow  # same fixture; it re-evaluates, so it runs after the tests above
def test_resume_re_evaluates_a_run_evaluated_by_an_older_version(iterative_run, monkeypatch):
    """A run whose evaluate stage predates deployment-size accuracy evaluates again and
    reports again on --resume; training, export and benchmark are not redone."""
    out, recipe = iterative_run
    record = out / "stages" / "evaluate.json"
    old = json.loads(record.read_text())
    old.pop("format")
    record.write_text(json.dumps(old))
    reported = (out / "summary.json").stat().st_mtime_ns
    for stage in ("prune", "finetune", "export", "benchmark"):
        monkeypatch.setitem(pipeline_run.STAGE_FUNCTIONS, stage, _must_not_run)
    summary = run_pipeline(recipe_from_dict(yaml.safe_load(recipe.read_text())), out, resume=True,
                           progress=False, echo=lambda _: None)
    assert json.loads(record.read_text())["format"] == pipeline_run.EVALUATE_FORMAT
    assert (out / "summary.json").stat().st_mtime_ns != reported  # reported again
    assert summary["models"][1]["metrics"] == old["models"]["student"]["deploy_metrics"]


@pytest.mark.slow  # same fixture
def test_rerun_refuses_without_resume_or_with_another_recipe(iterative_run, capsys):
    out, recipe = iterative_run
    assert main(["pipeline", "--recipe", str(recipe), "--out", str(out)]) == 2
    assert "already holds a pipeline run: pass --resume" in capsys.readouterr().err
    assert main(["pipeline", "--recipe", str(recipe), "--out", str(out), "--resume",
                 "--budget-samples", "64"]) == 2
    err = capsys.readouterr().err
    assert "finetune.samples: 32 -> 64" in err and len(err.strip().splitlines()) == 1
    assert main(["pipeline", "--recipe", str(recipe), "--out", str(out), "--resume",
                 "--precision", "bf16"]) == 2
    err = capsys.readouterr().err
    assert "finetune.precision: 'fp32' -> 'bf16'" in err and len(err.strip().splitlines()) == 1


@pytest.mark.slow
def test_interrupted_run_resumes_at_the_failed_stage(tmp_path, monkeypatch):
    """A one-shot recipe whose export fails: a resumed run redoes export onward only, and
    its summary equals what the first run had computed up to there. The recipe is called
    `teacher`: models are keyed by role, so its student replaces no teacher entry."""
    teacher = make_teacher(tmp_path)
    data = tiny_recipe(teacher, finetune={"samples": 16, "eval_every_samples": 0})
    data.update(name="teacher", prune={"method": "ratio", "ratio": 0.5, "round_to": 4}, distill={})
    recipe = recipe_from_dict(data)
    out = tmp_path / "run"

    def broken_export(run):
        raise RuntimeError("disk full")
    monkeypatch.setitem(pipeline_run.STAGE_FUNCTIONS, "export", broken_export)
    with pytest.raises(RuntimeError, match="disk full"):
        run_pipeline(recipe, out, progress=False, echo=lambda _: None)
    done = sorted(p.stem for p in (out / "stages").glob("*.json"))
    assert done == ["evaluate", "finetune", "prune"]
    evaluated = json.loads((out / "stages" / "evaluate.json").read_text())

    monkeypatch.setitem(pipeline_run.STAGE_FUNCTIONS, "export", pipeline_run.stage_export)
    for stage in ("prune", "finetune", "evaluate"):
        monkeypatch.setitem(pipeline_run.STAGE_FUNCTIONS, stage, _must_not_run)
    summary = run_pipeline(recipe, out, resume=True, progress=False, echo=lambda _: None)
    assert summary["models"][1]["metrics"] == evaluated["models"]["student"]["deploy_metrics"]
    assert evaluated["models"]["teacher"]["checkpoint"] == str(teacher)
    assert summary["models"][0]["checkpoint"] == str(teacher)
    assert [m["name"] for m in summary["models"]] == ["teacher", "teacher (student)"]
    assert [v["name"] for v in summary["variants"]] == [
        "teacher", "pruned", "recalibrated", "teacher (student)"]
    assert summary["training"]["teacher (student)"]["samples"] == 16
    assert {p.name for p in (out / "predictions").iterdir()} == {"teacher", "student"}


def test_one_shot_prune_stage_is_one_prune_step(tmp_path):
    """The prune stage cuts the teacher as `prune` does (taylor: on the recipe's seeded
    training batches), and its BN re-estimated model is `recalibrate_bn` of its pruned
    one on those batches, to the bit; the record names the files as it always has."""
    teacher = make_teacher(tmp_path)
    data = tiny_recipe(teacher, recalibrate_bn=2)
    data.update(prune={"method": "ratio", "ratio": 0.5, "round_to": 4, "criterion": "taylor",
                       "calibration_batches": 2})
    recipe, out = recipe_from_dict(data), tmp_path / "run"
    out.mkdir()
    record = pipeline_run.stage_prune(pipeline_run.Run(recipe, out, progress=False))
    assert (record["pruned"], record["recalibrated"], record["recalibrate_batches"]) == (
        "pruned.safetensors", "recalibrated.safetensors", 2)
    train = open_dataset("synthetic:32@64+seed0", size=64, train=True)
    cut = prune(mp.load(teacher), ratio=0.5, round_to=4, criterion="taylor", size=(64, 64),
                data=image_batches(train, 2, 8, seed=0)).model
    pruned = mp.load(out / "pruned.safetensors")
    recalibrated = mp.load(out / "recalibrated.safetensors")
    assert same_state(cut, pruned) and not same_state(pruned, recalibrated)
    assert recalibrate_bn(pruned, train, 2, 8, seed=0) == 2
    assert same_state(pruned, recalibrated)


def test_prune_stage_reconstructs_on_other_seeded_batches(tmp_path):
    """`prune.reconstruct_batches`: the stage's pruned model is `reconstruct` of the plain
    cut on that many training batches of the next seed, to the bit, and says so."""
    teacher = make_teacher(tmp_path)
    data = tiny_recipe(teacher)
    data.update(prune={"method": "ratio", "ratio": 0.5, "round_to": 4, "reconstruct_batches": 2})
    recipe, out = recipe_from_dict(data), tmp_path / "run"
    out.mkdir()
    record = pipeline_run.stage_prune(pipeline_run.Run(recipe, out, progress=False))
    assert record["prune"]["reconstruction"]["batches"] == 2
    train = open_dataset("synthetic:32@64+seed0", size=64, train=True)
    original = mp.load(teacher)
    result = prune(original, ratio=0.5, round_to=4, size=(64, 64))
    plain = copy.deepcopy(result.model)
    reconstruct(original, result, image_batches(train, 2, 8, seed=1), batches=2)
    pruned = mp.load(out / "pruned.safetensors")
    assert same_state(result.model, pruned) and not same_state(plain, pruned)


def test_missing_default_teacher_says_how_to_train_it(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no models/ folder here
    recipe = write_recipe(tmp_path, {"name": "x"})
    assert main(["pipeline", "--recipe", str(recipe), "--out", "run"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "models/modnet-synthetic.safetensors: teacher checkpoint not found" in err
    assert "modnet-prune train" in err and not os.path.exists("run")
