"""`modnet-prune prune`: output file, metadata, table/JSON, and clean failures."""
import json

import pytest
import torch

import modnet_prune as mp
from modnet_prune.cli import main
from modnet_prune.prune import prune


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "base.safetensors"
    torch.manual_seed(0)
    mp.save(mp.MODNet(), path)
    return path


def _run(capsys, *argv):
    code = main(["prune", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


def test_ratio_json_writes_a_loadable_smaller_model_with_metadata(checkpoint, tmp_path, capsys):
    out = tmp_path / "small.safetensors"
    code, stdout, _ = _run(capsys, "--checkpoint", checkpoint, "--out", out, "--ratio", 0.5,
                           "--size", 64, "--json")
    assert code == 0
    summary = json.loads(stdout)
    assert summary["params"]["after"] < summary["params"]["before"] == 6_487_075
    assert summary["macs"]["after"] < summary["macs"]["before"]
    assert summary["file_bytes"]["after"] == out.stat().st_size < checkpoint.stat().st_size
    model, metadata = mp.load(out, with_metadata=True)
    assert sum(p.numel() for p in model.parameters()) == summary["params"]["after"]
    record = json.loads(metadata["prune"])
    assert record["criterion"] == "l1" and record["allocation"] == {"mode": "uniform", "ratio": 0.5}
    assert record["params"] == summary["params"] and record["macs"] == summary["macs"]
    assert record["plan"]["backbone.model.features.18.0"] == {"keep": 640}
    assert model.arch.last == 640 == summary["widths"]["backbone.model.features.18.0"][1]
    assert metadata["source_sha256"] == mp.model.io.sha256_file(checkpoint)


def test_table_with_verify_and_plan_file(checkpoint, tmp_path, capsys):
    plan = tmp_path / "plan.yaml"
    plan.write_text("hr_branch.conv_hr2x.0.layers.0: {keep: 32}\n")
    out = tmp_path / "planned.safetensors"
    code, stdout, _ = _run(capsys, "--checkpoint", checkpoint, "--out", out, "--plan", plan,
                           "--size", 64, "--verify")
    assert code == 0
    assert "params" in stdout and "MACs at 64x64" in stdout and "exactness check passed" in stdout
    assert mp.load(out).arch.heads["hr_branch.conv_hr2x.0"] == 32


def test_reconstruct_refits_only_the_reader_of_the_cut_group(checkpoint, tmp_path, capsys):
    plan = tmp_path / "plan.yaml"
    plan.write_text("hr_branch.conv_hr2x.0.layers.0: {keep: 32}\n")
    plain, refit = tmp_path / "plain.safetensors", tmp_path / "refit.safetensors"
    assert _run(capsys, "--checkpoint", checkpoint, "--out", plain, "--plan", plan,
                "--size", 64)[0] == 0
    code, stdout, _ = _run(capsys, "--checkpoint", checkpoint, "--out", refit, "--plan", plan,
                           "--size", 64, "--reconstruct", "synthetic:3@64",
                           "--reconstruct-count", 3)
    assert code == 0 and "reconstruction on 2 batches" in stdout
    reader = "hr_branch.conv_hr2x.1.layers.0"
    record = json.loads(mp.load(refit, with_metadata=True)[1]["prune"])["reconstruction"]
    assert [f["layer"] for f in record["fitted"]] == [reader] and record["skipped"] == {}
    assert record["fitted"][0]["error_after"] < record["fitted"][0]["error_before"]
    a, b = mp.load(plain).state_dict(), mp.load(refit).state_dict()
    changed = {k for k in a if not torch.equal(a[k], b[k])}
    assert changed == {reader + ".weight", reader + ".bias"}


def test_official_layout_checkpoint_and_target_macs(tmp_path, capsys):
    official = tmp_path / "modnet.ckpt"
    torch.save({"module." + k: v for k, v in mp.MODNet().state_dict().items()}, official)
    out = tmp_path / "half.safetensors"
    code, stdout, _ = _run(capsys, "--checkpoint", official, "--out", out, "--target-macs", 0.5,
                           "--size", 64, "--json")
    assert code == 0
    summary = json.loads(stdout)
    assert 0.45 <= summary["macs"]["after"] / summary["macs"]["before"] <= 0.5


@pytest.mark.parametrize("extra, message", [
    (["--ratio", "1.5"], "ratio 1.5"),
    (["--target-macs", "0.001"], "cannot reach"),
    (["--plan", "missing.yaml"], "no such plan file"),
    (["--ratio", "0.5", "--criterion", "l1", "--data", "synthetic:2@64"], "--data is only used"),
    (["--ratio", "0.5", "--size", "100"], "multiples of 32"),
    (["--ratio", "0.5", "--reconstruct", "synthetic:2@64", "--reconstruct-count", "4"],
     "synthetic:2@64 has only 2 images"),
    (["--ratio", "0.5", "--reconstruct", "synthetic:2@64", "--reconstruct-count", "0"],
     "--reconstruct-count 0: must be an integer >= 1"),
])
def test_errors_are_one_line_and_write_nothing(checkpoint, tmp_path, capsys, extra, message):
    out = tmp_path / "never.safetensors"
    code, stdout, err = _run(capsys, "--checkpoint", checkpoint, "--out", out, "--size", 64, *extra)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not out.exists() and not list(tmp_path.glob(".never*"))


def test_missing_checkpoint_and_overwriting_the_input(checkpoint, tmp_path, capsys):
    code, _, err = _run(capsys, "--checkpoint", tmp_path / "nope.ckpt", "--out", tmp_path / "o.safetensors",
                        "--ratio", 0.5)
    assert code == 2 and "no such file" in err
    code, _, err = _run(capsys, "--checkpoint", checkpoint, "--out", checkpoint, "--ratio", 0.5)
    assert code == 2 and "refusing to overwrite" in err


def test_exactly_one_way_to_choose_widths(checkpoint, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["prune", "--checkpoint", str(checkpoint), "--out", str(tmp_path / "o"),
              "--ratio", "0.5", "--target-macs", "0.5"])
    assert exc.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err


def test_analyze_lists_the_channel_groups(capsys):
    assert main(["analyze", "--groups", "--json", "--size", "64"]) == 0
    groups = json.loads(capsys.readouterr().out)
    assert len(groups) == 47 and sum(g["prunable"] for g in groups) == 43
    lr8x = next(g for g in groups if g["name"] == "lr_branch.conv_lr8x.layers.0")
    reader = next(m for m in lr8x["members"] if m["module"] == "hr_branch.conv_hr4x.0.layers.0")
    assert reader["span"] == [64, 96] and reader["size"] == 99
    # one lr8x channel at 64x64: conv_lr8x's row (k5, 8x8 out), a column of conv_hr4x.0
    # (k3, 64 out, 16x16) and of conv_lr4x (k5, 32 out, 16x16); conv_lr is training-only
    assert lr8x["macs_per_channel"] == 96 * 25 * 8 * 8 + 64 * 9 * 16 * 16 + 32 * 25 * 16 * 16
    assert main(["analyze", "--groups", "--size", "64"]) == 0
    assert "43 prunable of 47" in capsys.readouterr().out


def test_half_precision_input_stays_half_and_exact(tmp_path, capsys):
    half = tmp_path / "half.safetensors"
    model = mp.MODNet()
    mp.save(model, half, dtype=torch.float16)
    out = tmp_path / "small.safetensors"
    code, stdout, _ = _run(capsys, "--checkpoint", half, "--out", out, "--ratio", 0.25,
                           "--size", 64, "--json")
    assert code == 0
    summary = json.loads(stdout)
    ratio = summary["file_bytes"]["after"] / summary["file_bytes"]["before"]
    assert ratio < summary["params"]["after"] / summary["params"]["before"] + 0.01
    assert mp.model.io.stored_dtype(out) == torch.float16
    # Same weights as pruning the loaded half model in memory and keeping float32.
    expected = prune(mp.load(half), ratio=0.25, size=(64, 64)).model.state_dict()
    got = mp.load(out).state_dict()
    assert got.keys() == expected.keys()
    assert all(torch.equal(got[k], expected[k]) for k in got)


def test_prune_keeps_the_training_sizes_of_its_input(tmp_path, capsys):
    from modnet_prune.model.io import read_train_sizes

    source = tmp_path / "trained.safetensors"
    mp.save(mp.MODNet(), source, train_sizes=[128, 512])
    out = tmp_path / "pruned.safetensors"
    code, _, _ = _run(capsys, "--checkpoint", source, "--out", out, "--ratio", 0.5, "--size", 64)
    assert code == 0 and read_train_sizes(out) == [128, 512]
