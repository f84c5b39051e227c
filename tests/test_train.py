"""The training loop: learning, exact resume, run-folder rules, Ctrl-C, BN re-estimation
on seeded batches."""
import json
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch

import modnet_prune as mp
from modnet_prune.data import open_dataset
from modnet_prune.errors import UserError
from modnet_prune.pipeline.recipe import RecipeError, recipe_from_dict
from modnet_prune.pipeline.run import train_config
from modnet_prune.train import Student, TrainConfig, fit, image_batches, recalibrate_bn
from modnet_prune.train.rundir import RunDir

from helpers import ENV, cfg, cli_process, divided_arch, run_cli, torchrun

def train_rows(out) -> list[dict]:
    return [r for r in RunDir(out).rows() if r["kind"] == "train"]


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_loss_falls_when_fitting_a_fixed_batch(tmp_path, precision):
    data = open_dataset("synthetic:4@64", size=64, train=False)  # same batch every step
    model = mp.MODNet(divided_arch())
    fit(model, data, cfg(steps=30, optimizer="adamw", lr=3e-3, checkpoint_every=30,
                         precision=precision),
        tmp_path / "run", progress=False)
    losses = [r["loss"] for r in train_rows(tmp_path / "run")]
    assert len(losses) == 30
    assert sum(losses[-5:]) / 5 < 0.6 * sum(losses[:5]) / 5
    row = train_rows(tmp_path / "run")[-1]
    assert {"step", "loss", "semantic", "detail", "matte", "lr", "samples_per_s",
            "world_size"} <= set(row)
    assert row["world_size"] == 1 and row["samples_per_s"] > 0


def _final_weights(out) -> dict:
    return mp.load(Path(out) / "last.safetensors").state_dict()


def test_resume_after_a_kill_matches_an_uninterrupted_run(tmp_path, monkeypatch):
    data = open_dataset("synthetic:12@64", size=64, train=True)  # random crops/flips/jitter
    saved_states = {}
    original_save = RunDir.save_state

    def save_and_keep(self, state):
        original_save(self, state)
        saved_states[state["step"]] = self.file("last.state.pt").read_bytes()
    monkeypatch.setattr(RunDir, "save_state", save_and_keep)

    evalset = open_dataset("synthetic:2@64+seed500", size=64, train=False)
    run = RunDir(tmp_path / "run")
    fit(mp.MODNet(divided_arch()), data, cfg(eval_every=2), run.path, eval_set=evalset,
        progress=False)
    straight, straight_rows = _final_weights(run.path), train_rows(run.path)
    assert sorted(saved_states) == [3, 6]
    # "Killed" after logging step 6 but before its checkpoint: the state says step 3.
    run.file("last.state.pt").write_bytes(saved_states[3])

    torch.manual_seed(123)  # whatever the caller's RNG, the state file decides
    result = fit(mp.MODNet(divided_arch()), data, cfg(eval_every=2), run.path, eval_set=evalset,
                 resume=True, progress=False)
    assert result.step == 6 and not result.stopped
    evals = [r for r in run.rows() if r["kind"] == "eval"]
    assert [r["step"] for r in evals] == [2, 4, 6]
    assert result.best_mad == min(r["mad"] for r in evals) == run.best_file_mad()
    assert [r["step"] for r in train_rows(run.path)] == [1, 2, 3, 4, 5, 6]  # no repeats
    resumed = _final_weights(run.path)
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)
    assert train_rows(run.path)[3:] == [
        {**r, "samples_per_s": pytest.approx(r["samples_per_s"], rel=10)} for r in straight_rows[3:]]


def test_run_folder_rules(tmp_path):
    data = open_dataset("synthetic:8@64", size=64, train=True)
    out = tmp_path / "run"
    fit(mp.MODNet(divided_arch()), data, cfg(steps=2), out, progress=False)
    saved = json.loads((out / "config.json").read_text())
    assert saved["lr"] == 0.01 and saved["arch"] == divided_arch().to_dict()
    with pytest.raises(UserError, match="already holds a run"):
        fit(mp.MODNet(divided_arch()), data, cfg(steps=2), out, progress=False)
    with pytest.raises(UserError, match="different settings.*lr"):
        fit(mp.MODNet(divided_arch()), data, cfg(steps=4, lr=0.5), out, resume=True, progress=False)
    with pytest.raises(UserError, match="fewer than --batch-size"):
        fit(mp.MODNet(divided_arch()), data, cfg(batch_size=16), tmp_path / "b", progress=False)
    with pytest.raises(UserError, match="exactly one of"):
        fit(mp.MODNet(divided_arch()), data, cfg(epochs=1.0), tmp_path / "c", progress=False)
    with pytest.raises(UserError, match="--steps 0: must be an integer >= 1"):
        fit(mp.MODNet(divided_arch()), data, cfg(steps=0), tmp_path / "c", progress=False)
    # epochs: 8 samples / batch 4 = 2 steps per epoch
    r = fit(mp.MODNet(divided_arch()), data, cfg(steps=None, epochs=1.5), tmp_path / "d",
            progress=False)
    assert r.step == 3


def test_eval_keeps_best_by_mad(tmp_path):
    data = open_dataset("synthetic:8@64", size=64, train=True)
    evalset = open_dataset("synthetic:2@64+seed500", size=64, train=False)
    out = tmp_path / "run"
    result = fit(mp.MODNet(divided_arch()), data, cfg(steps=4, eval_every=2), out,
                 eval_set=evalset, progress=False)
    evals = [r for r in RunDir(out).rows() if r["kind"] == "eval"]
    assert [r["step"] for r in evals] == [2, 4]
    assert result.best_mad == min(r["mad"] for r in evals)
    best = mp.load(out / "best.safetensors", with_metadata=True)[1]
    assert float(best["mad"]) == result.best_mad


def test_recalibrate_bn_gives_the_exact_mean_over_batches():
    model = mp.MODNet(divided_arch()).train()
    bn = model.backbone.model.features[2].conv[1]  # a backbone BN
    seen = []
    handle = bn.register_forward_hook(lambda m, i, o: seen.append(i[0].detach()))
    images = [{"image": x} for x in torch.randn(6, 3, 64, 64)]
    assert recalibrate_bn(model, images, batches=3, batch_size=2, seed=0) == 3
    handle.remove()
    assert [len(x) for x in seen] == [2, 2, 2]
    mean = torch.stack([x.mean(dim=(0, 2, 3)) for x in seen]).mean(0)
    assert torch.allclose(bn.running_mean, mean, atol=1e-6)
    assert bn.momentum == 0.1 and model.training


class _Numbered(torch.utils.data.Dataset):
    """Image i is the constant i: a batch says which samples it holds."""

    def __len__(self):
        return 10

    def __getitem__(self, index):
        return {"image": torch.full((3, 4, 4), float(index))}


def test_image_batches_are_the_seeded_shuffle_and_leave_the_rng_alone():
    order = torch.randperm(10, generator=torch.Generator().manual_seed(3)).tolist()
    state = torch.get_rng_state()
    batches = list(image_batches(_Numbered(), 3, 4, seed=3))
    assert [b[:, 0, 0, 0].int().tolist() for b in batches] == [order[:4], order[4:8], order[8:]]
    assert torch.equal(torch.get_rng_state(), state)
    augmented = open_dataset("synthetic:8@64", size=64, train=True)  # random crops, flips...
    first = list(image_batches(augmented, 2, 2, seed=1))
    torch.manual_seed(123)  # the caller's RNG does not reach the augmentation
    again = list(image_batches(augmented, 2, 2, seed=1))
    assert len(first) == 2 and all(torch.equal(a, b) for a, b in zip(first, again))
    assert not torch.equal(first[0], next(image_batches(augmented, 1, 2, seed=2)))


def test_adapter_init_recovers_kept_channels():
    """A student that keeps teacher channels [5, 1, 6] of hr2x: the least-squares init
    finds that selection (up to numerical noise)."""
    student = Student(mp.MODNet(divided_arch()), {"hr2x": 8})
    hr2x = student.model.hr_branch.conv_hr2x
    kept = torch.tensor([5, 1, 6, 0, 2, 3, 4, 7])[: hr2x[-1].layers[0].out_channels]
    img = torch.randn(2, 3, 64, 64)
    student.model.eval()
    captured = {}
    with torch.no_grad():
        handle = hr2x.register_forward_hook(lambda m, i, o: captured.update(x=o))
        student.model(img, inference=False)
        handle.remove()
    teacher = torch.zeros(2, 8, *captured["x"].shape[-2:])
    teacher[:, kept] = captured["x"]
    student.fit_adapters(img, {"hr2x": teacher})
    w = student.adapters["hr2x"].weight[:, :, 0, 0]
    expected = torch.zeros_like(w)
    expected[kept, torch.arange(len(kept))] = 1
    assert torch.allclose(w, expected, atol=1e-3)


def test_cli_train_errors_are_one_line(tmp_path, capsys):
    r = run_cli(capsys, "train", "--data", str(tmp_path / "nope"), "--steps", "1",
                "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and "no such folder" in r.stderr and "Traceback" not in r.stderr
    r = run_cli(capsys, "train", "--data", "synthetic:8@64", "--size", "50", "--steps", "1",
             "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and "multiple of 32" in r.stderr
    r = run_cli(capsys, "train", "--data", "synthetic:8@64", "--size", "64", "--steps", "1",
                "--checkpoint", str(tmp_path / "missing.safetensors"), "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and "no such file" in r.stderr


def test_ctrl_c_saves_and_resume_finishes(tmp_path):
    out = tmp_path / "run"
    args = ["train", "--data", "synthetic:16@64", "--size", "64", "--batch-size", "2",
            "--steps", "400", "--checkpoint-every", "1000", "--log-every", "1", "--workers", "1",
            "--threads", "1", "--out", str(out), "--no-progress"]
    proc = subprocess.Popen([sys.executable, "-m", "modnet_prune", *args], env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (out / "log.jsonl").exists() or len(train_rows(out)) < 2:
        assert time.time() < deadline and proc.poll() is None, proc.stderr.read() if proc.poll() else ""
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    state = torch.load(out / "last.state.pt", weights_only=True)
    rows = train_rows(out)
    assert state["step"] == rows[-1]["step"] < 400  # saved where it stopped, nothing lost
    r = cli_process(*[a if a != "400" else str(state["step"] + 2) for a in args], "--resume", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["step"] == state["step"] + 2
    steps = [x["step"] for x in train_rows(out)]
    assert steps == list(range(1, state["step"] + 3))


@pytest.mark.slow
def test_torchrun_two_processes_train_and_resume(tmp_path):
    init = mp.save(mp.MODNet(divided_arch()), tmp_path / "init.safetensors")
    out = tmp_path / "run"
    common = ["train", "--checkpoint", str(init), "--data", "synthetic:16@64", "--size", "64",
              "--batch-size", "2", "--log-every", "1", "--checkpoint-every", "2",
              "--workers", "1", "--out", str(out), "--no-progress", "--json"]
    r = torchrun(*common, "--steps", "2")
    assert r.returncode == 0, r.stderr[-2000:]
    r = torchrun(*common, "--steps", "4", "--resume")
    assert r.returncode == 0, r.stderr[-2000:]
    rows = train_rows(out)
    assert [x["step"] for x in rows] == [1, 2, 3, 4]
    assert {x["world_size"] for x in rows} == {2}
    assert json.loads((out / "config.json").read_text())["world_size"] == 2
    assert mp.load(out / "last.safetensors").arch == divided_arch()


def test_channel_wise_distillation_on_the_other_taps(tmp_path):
    data = open_dataset("synthetic:4@64", size=64, train=False)
    teacher, student = mp.MODNet(divided_arch(2)).eval(), mp.MODNet(divided_arch(4))
    weights = {"matte": 1.0, "lr16x": 1.0, "hr4x": 1.0, "f2x": 1.0}
    fit(student, data, cfg(steps=20, optimizer="adamw", lr=3e-3, checkpoint_every=20,
                           supervised=0.0, distill=weights, feature_loss="cwd"),
        tmp_path / "cwd", teacher=teacher, progress=False)
    rows = train_rows(tmp_path / "cwd")
    for term in ("kd_lr16x", "kd_hr4x", "kd_f2x"):
        assert 0 < rows[-1][term] < rows[0][term], term
    assert "kd_lr8x" not in rows[0]
    with pytest.raises(UserError, match="--feature-loss must be one of mse, cwd"):
        cfg(steps=1, distill=weights, feature_loss="kl").validate(has_teacher=True)


def test_distillation_pulls_the_student_towards_the_teacher(tmp_path):
    data = open_dataset("synthetic:4@64", size=64, train=False)
    teacher, student = mp.MODNet(divided_arch(2)).eval(), mp.MODNet(divided_arch(4))
    weights = {"matte": 1.0, "detail": 1.0, "semantic": 10.0, "lr8x": 1.0, "hr2x": 1.0}
    fit(student, data, cfg(steps=20, optimizer="adamw", lr=3e-3, checkpoint_every=20,
                           supervised=0.0, distill=weights), tmp_path / "kd", teacher=teacher,
        progress=False)
    rows = train_rows(tmp_path / "kd")
    assert not {"matte", "semantic", "detail"} & set(rows[0])  # supervised term off
    for term in ("kd_matte", "kd_detail", "kd_semantic", "kd_lr8x", "kd_hr2x"):
        assert 0 < rows[-1][term] < rows[0][term], term
    assert rows[-1]["kd_matte"] < 0.7 * rows[0]["kd_matte"]
    state = torch.load(tmp_path / "kd" / "last.state.pt", weights_only=True)
    assert {k for k in state["module"] if k.startswith("adapters.")} == {
        "adapters.lr8x.weight", "adapters.lr8x.bias", "adapters.hr2x.weight", "adapters.hr2x.bias"}
    assert mp.load(tmp_path / "kd" / "last.safetensors").arch == divided_arch(4)  # no adapters
    hooked = [m for net in (student, teacher) for m in net.modules() if m._forward_hooks]
    assert not hooked  # the feature taps are gone once the run is over


def test_cli_finetune_with_teacher_and_bn_recalibration(tmp_path, capsys):
    teacher = mp.save(mp.MODNet(divided_arch(2)), tmp_path / "teacher.safetensors")
    student = mp.save(mp.MODNet(divided_arch(4)), tmp_path / "student.safetensors")
    out = tmp_path / "ft"
    r = run_cli(capsys, "finetune", "--student", str(student), "--teacher", str(teacher),
             "--data", "synthetic:8@64", "--size", "64", "--batch-size", "4", "--steps", "2",
             "--log-every", "1", "--recalibrate-bn", "2", "--kd-detail", "0", "--workers", "0",
             "--out", str(out), "--json", "--no-progress")
    assert r.returncode == 0, r.stderr
    rows = train_rows(out)
    assert [x["step"] for x in rows] == [1, 2]
    assert all(rows[0][k] > 0 for k in ("kd_matte", "kd_semantic", "kd_lr8x", "kd_hr2x"))
    assert "kd_detail" not in rows[0] and rows[0]["matte"] > 0
    saved = json.loads((out / "config.json").read_text())
    assert saved["recalibrate_bn"] == 2 and saved["teacher"]["sha256"]
    # the student's BN statistics were re-estimated: no longer the fresh 0 / 1
    bn = mp.load(out / "last.safetensors").backbone.model.features[0][1]
    assert not torch.allclose(bn.running_mean, torch.zeros_like(bn.running_mean))


def test_soc_adaptation_runs_finite_from_a_checkpoint(tmp_path, capsys):
    init = mp.save(mp.MODNet(divided_arch()), tmp_path / "init.safetensors")
    r = run_cli(capsys, "train", "--objective", "soc", "--data", "synthetic:4@64", "--size", "64",
                "--batch-size", "2", "--steps", "2", "--workers", "0", "--log-every", "1",
                "--out", str(tmp_path / "soc"), "--json")
    assert r.returncode == 2 and "give it as --checkpoint" in r.stderr
    r = run_cli(capsys, "train", "--objective", "soc", "--checkpoint", str(init),
                "--data", "synthetic:4@64", "--size", "64", "--batch-size", "2", "--steps", "2",
                "--workers", "0", "--log-every", "1", "--lr", "0.001",
                "--out", str(tmp_path / "soc"), "--json")
    assert r.returncode == 0, r.stderr
    rows = train_rows(tmp_path / "soc")
    assert [x["step"] for x in rows] == [1, 2]
    assert all(set(x) >= {"soc_semantic", "soc_detail", "loss"} for x in rows)
    # step 1 starts from the frozen copy itself: detail/matte agree with it exactly
    assert rows[0]["soc_detail"] == 0.0 and rows[0]["soc_semantic"] > 0


def test_multi_size_batches_are_resized_reproducibly():
    from modnet_prune.data.transforms import resize_batch
    from modnet_prune.train.schedule import step_size_at

    sizes = [64, 96, 128]
    drawn = [step_size_at(step, 3, sizes) for step in range(60)]
    assert drawn == [step_size_at(step, 3, sizes) for step in range(60)]  # resumable
    assert set(drawn) == set(sizes)
    # A 2x2 checkerboard of constant 64x64 blocks: halving keeps each block's value.
    block = torch.tensor([[0.0, 1.0], [1.0, 0.0]]).repeat_interleave(64, 0).repeat_interleave(64, 1)
    batch = {"image": block.expand(2, 3, 128, 128).clone(), "alpha": block.expand(2, 1, 128, 128).clone(),
             "trimap": (block * 0.5).expand(2, 1, 128, 128).clone(), "name": ["a", "b"]}
    small = resize_batch(batch, 64)
    expected = block[::2, ::2]
    assert small["image"].shape == (2, 3, 64, 64) and small["name"] == ["a", "b"]
    interior = (slice(None), slice(None), slice(4, 28), slice(4, 28))  # away from the edges
    assert torch.allclose(small["alpha"][interior], expected[4:28, 4:28].expand(2, 1, 24, 24))
    assert set(small["trimap"].unique().tolist()) <= {0.0, 0.5}
    assert resize_batch(batch, 128) is batch
    with pytest.raises(UserError, match="multi-size"):
        TrainConfig(size=128, multi_size=[64, 256], steps=1).validate(has_teacher=False)


def test_checkpoints_record_the_training_sizes(tmp_path):
    from modnet_prune.model.io import read_train_sizes

    data = open_dataset("synthetic:4@64", size=64, train=False)
    for name, multi, expected in (("one", [], [64]), ("multi", [64, 32], [32, 64])):
        fit(mp.MODNet(divided_arch(8)), data, cfg(steps=2, checkpoint_every=2, multi_size=multi),
            tmp_path / name, eval_set=data, progress=False)
        for checkpoint in ("last.safetensors", "best.safetensors"):
            assert read_train_sizes(tmp_path / name / checkpoint) == expected


def test_bf16_forwards_give_fp32_losses_close_to_fp32_and_keep_weights_fp32(tmp_path):
    data = open_dataset("synthetic:4@64", size=64, train=False)
    teacher = mp.MODNet(divided_arch(2)).eval()
    weights = {"matte": 1.0, "semantic": 10.0, "lr8x": 1.0}
    first, conv_dtypes = {}, {}
    for precision in ("fp32", "bf16"):
        torch.manual_seed(0)
        student = mp.MODNet(divided_arch(4))
        conv = next(m for m in student.modules() if isinstance(m, torch.nn.Conv2d))
        seen = []
        conv.register_forward_hook(lambda _m, _i, out, seen=seen: seen.append(out.dtype))
        fit(student, data, cfg(steps=2, checkpoint_every=2, distill=weights,
                                        precision=precision),
            tmp_path / precision, teacher=teacher, progress=False)
        first[precision], conv_dtypes[precision] = train_rows(tmp_path / precision)[0], seen
        assert all(p.dtype == torch.float32 for p in student.parameters())
        saved = mp.load(tmp_path / precision / "last.safetensors").state_dict().values()
        assert all(v.dtype == torch.float32 for v in saved if v.is_floating_point())
    # adapters are fitted in fp32 before training; then the two training steps
    assert conv_dtypes == {"fp32": [torch.float32] * 3,
                           "bf16": [torch.float32, torch.bfloat16, torch.bfloat16]}
    terms = ("loss", "matte", "semantic", "detail", "kd_matte", "kd_semantic", "kd_lr8x")
    for term in terms:  # same initial weights and batch: only the arithmetic differs
        # bf16 keeps ~3 significant digits per op; through a randomly initialised network
        # the first losses move by up to ~12 % (on a trained teacher the matte moves by
        # ~1e-4 mean |d alpha|); training under bf16 is checked to learn just below
        assert first["bf16"][term] == pytest.approx(first["fp32"][term], rel=0.2), term
    assert any(first["bf16"][t] != first["fp32"][t] for t in terms)


def test_unknown_precisions_are_refused_by_config_and_recipe_key(tmp_path):
    with pytest.raises(UserError, match="--precision must be one of fp32, bf16"):
        fit(mp.MODNet(divided_arch(4)), open_dataset("synthetic:4@64", size=64, train=False),
            cfg(precision="fp16"), tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()
    with pytest.raises(RecipeError, match="finetune.precision"):
        recipe_from_dict({"finetune": {"precision": "fp16"}})
    recipe = recipe_from_dict({"finetune": {"precision": "bf16"}})
    assert train_config(recipe, steps=4, recalibrate=0).precision == "bf16"


def test_bf16_on_a_cpu_without_bf16_units_warns_once(tmp_path, monkeypatch):
    monkeypatch.setattr("platform.machine", lambda: "x86_64")
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    data = open_dataset("synthetic:4@64", size=64, train=False)
    with pytest.warns(UserWarning, match="no bfloat16 units") as caught:
        fit(mp.MODNet(divided_arch(4)), data, cfg(steps=1, precision="bf16"), tmp_path / "run",
            progress=False)
    assert len([w for w in caught if "bfloat16" in str(w.message)]) == 1
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fit(mp.MODNet(divided_arch(4)), data, cfg(steps=1, precision="bf16"), tmp_path / "amx",
            progress=False)


def test_weight_average_follows_the_decay_formula_and_copies_counters():
    from modnet_prune.train.ema import WeightAverage
    shared = torch.nn.Linear(2, 2)  # one tensor under two names, as MODNet's backbone
    model = torch.nn.Sequential(shared, torch.nn.BatchNorm1d(2), shared)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    avg = WeightAverage(model, decay=0.5)
    expected = {k: v.float().clone() for k, v in start.items() if v.is_floating_point()}
    for n in (1, 2, 3):
        with torch.no_grad():
            for v in [*model.parameters(), *model.buffers()]:
                v.add_(n) if v.is_floating_point() else v.fill_(10 * n)
        avg.update(model)
        keep = min(0.5, (1 + n) / (10 + n))  # 2/11, 3/12, 0.5
        for k, v in model.state_dict().items():
            if v.is_floating_point():
                expected[k] = keep * expected[k] + (1 - keep) * v
    shadow = avg.shadow.state_dict()
    for k, v in expected.items():
        torch.testing.assert_close(shadow[k], v)
    assert shadow["1.num_batches_tracked"].item() == 30
    assert not any(p.requires_grad for p in avg.shadow.parameters())


def test_ema_run_saves_and_returns_the_average_of_its_steps_and_resumes_exactly(tmp_path,
                                                                                 monkeypatch):
    from modnet_prune.train.ema import WeightAverage, ema_decay
    data = open_dataset("synthetic:12@64", size=64, train=True)
    seen, states = [], {}
    original_update, original_save = WeightAverage.update, RunDir.save_state

    def record(self, model):
        original_update(self, model)
        seen.append({k: v.detach().clone() for k, v in model.state_dict().items()})

    def save_and_keep(self, state):
        original_save(self, state)
        states[state["step"]] = self.file("last.state.pt").read_bytes()
    monkeypatch.setattr(WeightAverage, "update", record)
    monkeypatch.setattr(RunDir, "save_state", save_and_keep)
    torch.manual_seed(0)
    model = mp.MODNet(divided_arch())
    start = {k: v.clone() for k, v in model.state_dict().items()}
    run = RunDir(tmp_path / "run")
    result = fit(model, data, cfg(ema=0.6), run.path, progress=False)

    assert len(seen) == 6
    expected = {k: v.clone() for k, v in start.items() if v.is_floating_point()}
    for n, weights in enumerate(seen, 1):
        keep = ema_decay(0.6, n)
        for k in expected:
            expected[k] = keep * expected[k] + (1 - keep) * weights[k]
    saved = _final_weights(run.path)
    for k, v in expected.items():
        torch.testing.assert_close(saved[k], v, rtol=1e-5, atol=1e-6)
        assert torch.equal(result.model.state_dict()[k], saved[k])
    raw = torch.load(run.file("last.state.pt"), weights_only=True)["module"]
    assert any(not torch.equal(raw[f"model.{k}"], saved[k]) for k in expected)

    run.file("last.state.pt").write_bytes(states[3])  # killed before step 6's checkpoint
    fit(mp.MODNet(divided_arch()), data, cfg(ema=0.6), run.path, resume=True, progress=False)
    resumed = _final_weights(run.path)
    assert all(torch.equal(saved[k], resumed[k]) for k in saved)


def test_ema_decay_out_of_range_is_refused(tmp_path):
    data = open_dataset("synthetic:8@64", size=64, train=True)
    with pytest.raises(UserError, match="--ema 1"):
        fit(mp.MODNet(divided_arch()), data, cfg(ema=1.0), tmp_path / "r", progress=False)
    with pytest.raises(RecipeError, match="finetune.ema"):
        recipe_from_dict({"name": "x", "teacher": "t.safetensors", "finetune": {"ema": -0.1}})


def test_held_out_set_is_scored_at_its_own_size_not_the_training_size(tmp_path):
    # The benchmark recipes train at 512² and score 128² portraits during training: each
    # evaluation must run them at 128², as the pipeline's final evaluation does.
    train_set = open_dataset("synthetic:8@64", size=64, train=True)
    held_out = open_dataset("synthetic:4@32+seed50", size=32, train=False)
    result = fit(mp.MODNet(divided_arch()), train_set, cfg(size=64, steps=2, checkpoint_every=2),
                 tmp_path / "run", eval_set=held_out, progress=False)
    logged = [r for r in RunDir(tmp_path / "run").rows() if r["kind"] == "eval"][-1]["mad"]
    at_own_size = mp.metrics.evaluate(result.model, held_out, size=32)["mad"]
    at_training_size = mp.metrics.evaluate(result.model, held_out, size=64)["mad"]
    assert logged == pytest.approx(at_own_size, rel=1e-6)
    assert abs(at_training_size - at_own_size) > 1e-3 * at_own_size  # the two differ


def test_frozen_modules_keep_weights_and_statistics_while_the_rest_trains(tmp_path):
    data = open_dataset("synthetic:4@64", size=64, train=False)
    teacher, student = mp.MODNet(divided_arch(2)).eval(), mp.MODNet(divided_arch(4))
    for bn in (m for m in student.modules() if isinstance(m, torch.nn.BatchNorm2d)):
        bn.running_mean.uniform_(-1, 1)  # statistics a reset or an update would change
        bn.running_var.uniform_(0.5, 2)
    before = {k: v.clone() for k, v in student.state_dict().items()}
    weights = {"matte": 1.0, "detail": 1.0, "semantic": 10.0, "lr8x": 1.0}  # every head
    fit(student, data, cfg(steps=6, optimizer="adamw", lr=3e-3, supervised=0.0, eval_every=3,
                           distill=weights, recalibrate_bn=2, freeze=["backbone"]),
        tmp_path / "frozen", teacher=teacher, eval_set=data, progress=False)
    after = mp.load(tmp_path / "frozen" / "last.safetensors").state_dict()
    # "backbone." and its alias "lr_branch.backbone." name the same, untouched tensors
    frozen = [k for k in before if ".backbone." in f".{k}"]
    assert frozen and all(k.startswith(("backbone.", "lr_branch.backbone.")) for k in frozen)
    assert all(torch.equal(before[k], after[k]) for k in frozen)  # weights and BN statistics
    trained = [k for k in before if k not in frozen and not k.endswith("num_batches_tracked")]
    changed = [k for k in trained if not torch.equal(before[k], after[k])]
    assert set(changed) == set(trained)  # everything else trained or was re-estimated
    assert all(p.requires_grad for p in student.parameters())  # frozen for the run only


def test_freezing_an_unknown_module_is_one_line(tmp_path):
    data = open_dataset("synthetic:4@64", size=64, train=False)
    with pytest.raises(UserError, match=r"--freeze bakbone: the model has no module .*backbone"):
        fit(mp.MODNet(divided_arch(4)), data, cfg(freeze=["bakbone"]), tmp_path / "r",
            progress=False)
    assert not (tmp_path / "r").exists()  # refused before anything is written
    with pytest.raises(UserError, match="--group-lasso"):
        fit(mp.MODNet(divided_arch(4)), data, cfg(freeze=["backbone"], group_lasso=1.0),
            tmp_path / "r2", progress=False)
    recipe = recipe_from_dict({"finetune": {"freeze": ["backbone"]}})
    assert train_config(recipe, steps=4, recalibrate=0).freeze == ["backbone"]
    with pytest.raises(RecipeError, match="finetune.freeze"):
        recipe_from_dict({"finetune": {"freeze": "backbone"}})


def test_resume_knows_a_model_file_by_content_not_path(tmp_path):
    run = RunDir(tmp_path / "run")
    teacher = {"path": "models/t.safetensors", "sha256": "ab" * 32}
    run.start({"lr": 0.01, "teacher": teacher}, resume=False)
    run.file("last.state.pt").write_bytes(b"")  # a finished step: a run to check against
    moved = {**teacher, "path": "/elsewhere/t.safetensors"}
    run.start({"lr": 0.01, "teacher": moved}, resume=True)  # same file, other path: accepted
    with pytest.raises(UserError, match="different settings.*teacher"):
        run.start({"lr": 0.01, "teacher": {**moved, "sha256": "cd" * 32}}, resume=True)
