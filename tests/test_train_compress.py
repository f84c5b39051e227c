"""Iterative compression: reaches the MACs target in K rounds, resumes per round, DDP; each
round is one prune step (BN re-estimated there, once)."""
import json

import pytest
import torch

import modnet_prune as mp
from modnet_prune.data import open_dataset
from modnet_prune.errors import UserError
from modnet_prune.train import bn, recalibrate_bn
from modnet_prune.graph.cost import inference_macs
from modnet_prune.train.compress import CompressConfig, compress, iteration_files
from modnet_prune.train.rundir import RunDir

from helpers import cfg, divided_arch, run_cli, same_state, torchrun

KD = {"matte": 1.0, "semantic": 10.0, "lr8x": 1.0, "hr2x": 1.0}


def test_compress_reaches_target_in_k_rounds_and_resumes_per_round(tmp_path):
    teacher = mp.MODNet(divided_arch(2)).eval()
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    data = open_dataset("synthetic:8@64", size=64, train=True)
    evalset = open_dataset("synthetic:2@64+seed99", size=64, train=False)
    cc = CompressConfig(target_macs=0.5, iterations=3, schedule="linear", round_to=2)
    tc = cfg(steps=2, recalibrate_bn=1, distill=KD)
    out = tmp_path / "c"
    result = compress(teacher, data, cc, tc, out, eval_set=evalset, progress=False)
    full = inference_macs(teacher, 512)
    fractions = [r["fraction"] for r in result.rows]
    assert len(fractions) == 3
    for row, target in zip(result.rows, (5 / 6, 4 / 6, 0.5)):
        assert row["target_fraction"] == pytest.approx(target)
        assert target - 0.08 < row["fraction"] <= target + 1e-9  # at most the target, close
    assert fractions == sorted(fractions, reverse=True)
    final = mp.load(out / "model.safetensors")
    assert inference_macs(final, 512) / full == pytest.approx(fractions[-1])
    assert all(torch.equal(v, teacher.state_dict()[k]) for k, v in before.items())  # untouched
    for k in (1, 2, 3):  # each round fine-tuned with distillation from the original
        rows = [r for r in RunDir(out / f"iter-{k}").rows() if r["kind"] == "train"]
        assert rows and all(rows[0][t] > 0 for t in ("kd_matte", "kd_lr8x", "kd_hr2x"))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["teacher_macs"] == full and summary["teacher_mad"] is not None
    assert result.teacher == {"macs": full, "params": summary["teacher_params"],
                              "mad": summary["teacher_mad"]}

    # Killed during round 3: rounds 1-2 are kept, round 3 resumes from its own checkpoint.
    pruned1 = (out / "iter-1" / "pruned.safetensors").stat().st_mtime_ns
    last3 = (out / "iter-3" / "last.safetensors").read_bytes()
    for name in ("iter-3/done.json", "model.safetensors", "summary.json"):
        (out / name).unlink()
    again = compress(teacher, data, cc, tc, out, eval_set=evalset, resume=True, progress=False)
    assert [r["fraction"] for r in again.rows] == fractions
    assert (out / "iter-1" / "pruned.safetensors").stat().st_mtime_ns == pruned1  # not re-pruned
    assert (out / "iter-3" / "last.safetensors").read_bytes() == last3  # already at its end
    assert [r["step"] for r in RunDir(out / "iter-3").rows() if r["kind"] == "train"] == [1, 2]


def test_each_round_re_estimates_bn_once_in_its_prune_step(tmp_path, monkeypatch):
    """A round's BN re-estimated student is `recalibrate_bn` of its pruned one on the
    round's seeded training batches, to the bit, and fine-tuning does not do it again."""
    calls = []
    real = bn._reestimate
    monkeypatch.setattr(bn, "_reestimate", lambda *a: calls.append(1) or real(*a))
    teacher = mp.MODNet(divided_arch(2)).eval()
    data = open_dataset("synthetic:8@64", size=64, train=True)
    cc = CompressConfig(target_macs=0.6, iterations=2, schedule="linear", round_to=2)
    tc = cfg(steps=1, recalibrate_bn=2, seed=5)
    compress(teacher, data, cc, tc, tmp_path / "c", progress=False)
    assert len(calls) == 2
    for k in (1, 2):
        at = iteration_files(tmp_path / "c", k)
        by_hand, stepped = mp.load(at.pruned), mp.load(at.recalibrated)
        assert not same_state(by_hand, stepped)
        assert recalibrate_bn(by_hand, data, 2, tc.batch_size, tc.seed + k) == 2
        assert same_state(by_hand, stepped)
        assert json.loads((at.folder / "config.json").read_text())["recalibrate_bn"] == 0


def test_each_round_reconstructs_against_the_model_it_cut(tmp_path):
    """With reconstruct_batches, every round's pruned model records the refit, and its
    refitted readers are closer to the round's input model than the plain cut's."""
    teacher = mp.MODNet(divided_arch(2)).eval()
    data = open_dataset("synthetic:8@64", size=64, train=True)
    cc = CompressConfig(target_macs=0.6, iterations=2, schedule="linear", round_to=2,
                        reconstruct_batches=1)
    compress(teacher, data, cc, cfg(steps=1), tmp_path / "c", progress=False)
    for k in (1, 2):
        record = json.loads(mp.load(iteration_files(tmp_path / "c", k).pruned,
                                    with_metadata=True)[1]["prune"])["reconstruction"]
        assert record["batches"] == 1 and record["fitted"]
        assert all(f["error_after"] <= f["error_before"] for f in record["fitted"])


def test_resume_of_a_round_pruned_by_an_older_version(tmp_path):
    """Rounds pruned before prune steps kept a BN re-estimated copy left BN to fine-tuning
    (iter-K/config.json has recalibrate_bn): such a round resumes as it was started."""
    teacher = mp.MODNet(divided_arch(2)).eval()
    data = open_dataset("synthetic:8@64", size=64, train=True)
    cc = CompressConfig(target_macs=0.7, iterations=1, round_to=2)
    tc = cfg(steps=2, recalibrate_bn=1, checkpoint_every=1)
    out = tmp_path / "c"
    compress(teacher, data, cc, tc, out, progress=False)
    at = iteration_files(out, 1)
    for old in (at.recalibrated, at.done, out / "model.safetensors", out / "summary.json"):
        old.unlink()
    config = json.loads((at.folder / "config.json").read_text())
    (at.folder / "config.json").write_text(json.dumps({**config, "recalibrate_bn": 1}))
    last = at.trained.read_bytes()
    again = compress(teacher, data, cc, tc, out, resume=True, progress=False)
    assert again.rows and at.trained.read_bytes() == last  # resumed at its end, not retrained


def test_resume_of_a_compression_started_before_a_setting_existed(tmp_path):
    """A run whose config.json predates a setting (here finetune.feature_loss and
    compress.min_channels) resumes when the setting is at its default, and not otherwise."""
    teacher = mp.MODNet(divided_arch(2)).eval()
    data = open_dataset("synthetic:8@64", size=64, train=True)
    cc = CompressConfig(target_macs=0.7, iterations=1, round_to=2)
    out = tmp_path / "c"
    compress(teacher, data, cc, cfg(steps=2, checkpoint_every=1), out, progress=False)
    config = json.loads((out / "config.json").read_text())
    del config["finetune"]["feature_loss"], config["compress"]["min_channels"]
    (out / "config.json").write_text(json.dumps(config))
    again = compress(teacher, data, cc, cfg(steps=2, checkpoint_every=1), out, resume=True,
                     progress=False)
    assert again.model_path.exists()
    with pytest.raises(UserError, match="different settings.*feature_loss"):
        compress(teacher, data, cc, cfg(steps=2, checkpoint_every=1, feature_loss="cwd"), out,
                 resume=True, progress=False)


def test_cli_compress_and_bad_target(tmp_path, capsys):
    teacher = mp.save(mp.MODNet(divided_arch(2)), tmp_path / "t.safetensors")
    common = ["compress", "--checkpoint", str(teacher), "--iterations", "1",
              "--finetune-steps", "1", "--round-to", "2", "--data", "synthetic:8@64",
              "--size", "64", "--batch-size", "4", "--workers", "0", "--recalibrate-bn", "1",
              "--no-progress"]
    r = run_cli(capsys, *common, "--target-macs", "150%", "--out", str(tmp_path / "bad"))
    assert r.returncode == 2 and "must be in (0, 1]" in r.stderr
    r = run_cli(capsys, *common, "--target-macs", "70%", "--out", str(tmp_path / "ok"), "--json")
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert len(summary["iterations"]) == 1 and summary["iterations"][0]["fraction"] <= 0.7
    assert mp.load(summary["model"]).arch != divided_arch(2)


@pytest.mark.slow
def test_torchrun_two_processes_compress(tmp_path):
    teacher = mp.save(mp.MODNet(divided_arch(2)), tmp_path / "t.safetensors")
    out = tmp_path / "c"
    r = torchrun("compress", "--checkpoint", str(teacher), "--target-macs", "0.6",
                  "--iterations", "2", "--finetune-steps", "2", "--round-to", "2",
                  "--data", "synthetic:8@64", "--size", "64", "--batch-size", "2",
                  "--workers", "0", "--log-every", "1", "--recalibrate-bn", "1",
                  "--out", str(out), "--no-progress", "--json")
    assert r.returncode == 0, r.stderr[-3000:]
    for k in (1, 2):
        rows = [x for x in RunDir(out / f"iter-{k}").rows() if x["kind"] == "train"]
        assert [x["step"] for x in rows] == [1, 2] and {x["world_size"] for x in rows} == {2}
        assert rows[0]["kd_lr8x"] > 0
    assert json.loads(r.stdout)["iterations"][-1]["fraction"] <= 0.6


def test_compress_by_predicted_latency(tmp_path):
    from modnet_prune.prune.latency import LatencyModel, Target
    from test_latency import TABLE

    latency = LatencyModel(Target("onnxruntime", "1.0", "fp32", 1, (64, 64), "cpu"), dict(TABLE))
    teacher = mp.MODNet(divided_arch(2)).eval()
    data = open_dataset("synthetic:4@64", size=64, train=True)
    cc = CompressConfig(target_latency=0.8, iterations=2, schedule="linear", round_to=2)
    result = compress(teacher, data, cc, cfg(steps=1), tmp_path / "c", progress=False,
                      latency=latency)
    x = torch.zeros(1, 3, 64, 64)
    full = latency.predict_model(teacher, x)
    for row, target in zip(result.rows, (0.9, 0.8)):
        assert row["target_fraction"] == pytest.approx(target)
        assert row["fraction"] <= target + 1e-9
    final = mp.load(tmp_path / "c" / "model.safetensors")
    assert latency.predict_model(final, x) / full == pytest.approx(result.rows[-1]["fraction"])
    summary = json.loads((tmp_path / "c" / "summary.json").read_text())
    assert summary["teacher_latency_ms"] == pytest.approx(full)
    with pytest.raises(UserError, match="go together"):
        compress(teacher, data, cc, cfg(steps=1), tmp_path / "d", progress=False)


def test_round_lr_decay_spreads_one_cosine_over_the_rounds():
    """Round boundaries sit on the overall cosine, by hand: min + (max - min)(1 + cos(pi p))/2
    with p = (step - warmup) / (total - warmup); warm-up only in round 1; restart: unchanged."""
    import math
    from modnet_prune.train.compress import round_config
    tc = cfg(steps=50, lr=1e-3, min_lr=1e-5, warmup=3, schedule="cosine", seed=7)
    decay = CompressConfig(target_macs=0.25, iterations=4, round_lr="decay")
    overall = lambda t: 1e-5 + (1e-3 - 1e-5) * (1 + math.cos(math.pi * (t - 3) / 197)) / 2  # noqa: E731
    rounds = [round_config(tc, decay, k) for k in (1, 2, 3, 4)]
    assert [r.seed for r in rounds] == [8, 9, 10, 11]
    assert (rounds[0].lr, rounds[0].warmup) == (1e-3, 3)
    for k, r in enumerate(rounds, start=1):
        assert r.min_lr == pytest.approx(overall(50 * k))
        if k > 1:
            assert (r.lr, r.warmup) == (pytest.approx(overall(50 * (k - 1))), 0)
    assert rounds[-1].min_lr == pytest.approx(1e-5)
    restart = round_config(tc, CompressConfig(target_macs=0.25, iterations=4), 3)
    assert (restart.lr, restart.min_lr, restart.warmup, restart.seed) == (1e-3, 1e-5, 3, 10)
    with pytest.raises(UserError, match="--round-lr decay spreads one cosine"):
        compress(mp.MODNet(divided_arch(4)), open_dataset("synthetic:4@64", size=64, train=True),
                 decay, cfg(steps=2, schedule="step"), "unused", progress=False)
