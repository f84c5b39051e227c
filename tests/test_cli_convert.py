"""The CLI entry points and `convert`, including every bad input a user can give."""
import json
import subprocess
import sys

import pytest
import torch

import modnet_prune as mp
from modnet_prune.cli import main


@pytest.fixture(scope="module")
def official_ckpt(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "modnet_official.ckpt"
    torch.save({"module." + k: v for k, v in mp.MODNet().state_dict().items()}, path)
    return path


def test_module_entry_point_and_version():
    out = subprocess.run([sys.executable, "-m", "modnet_prune", "--version"],
                         capture_output=True, text=True, check=True).stdout
    assert out.strip() == f"modnet-prune {mp.__version__}"
    helptext = subprocess.run([sys.executable, "-m", "modnet_prune", "--help"],
                              capture_output=True, text=True, check=True).stdout
    assert "convert" in helptext


def test_convert_roundtrip_gives_identical_outputs(official_ckpt, tmp_path, capsys):
    out = tmp_path / "m.safetensors"
    assert main(["convert", "--checkpoint", str(official_ckpt), "--out", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["params"] == 6_487_075 and summary["widths_changed"] == {}
    assert summary["source_sha256"] == mp.model.io.sha256_file(official_ckpt)
    img = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(mp.load(out)(img), mp.load(official_ckpt)(img), rtol=0, atol=0)
    _, meta = mp.load(out, with_metadata=True)
    assert meta["source_sha256"] == summary["source_sha256"]


def _run_error(argv, capsys):
    code = main(argv)
    err = capsys.readouterr().err
    assert code != 0
    assert err.count("\n") == 1 and "error:" in err and "Traceback" not in err
    return err


def test_convert_bad_inputs_are_one_line_errors(official_ckpt, tmp_path, capsys):
    out = tmp_path / "out.safetensors"
    (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint at all")
    data = official_ckpt.read_bytes()
    (tmp_path / "cut.ckpt").write_bytes(data[: len(data) // 3])
    state = mp.MODNet().state_dict()
    state["f_branch.conv_f.0.layers.0.weight"].fill_(float("nan"))
    torch.save(state, tmp_path / "nan.pth")
    torch.save({"some.other.weight": torch.zeros(3)}, tmp_path / "wrong.pth")

    assert "no such file" in _run_error(["convert", "--checkpoint", str(tmp_path / "nope.ckpt"),
                                         "--out", str(out)], capsys)
    for bad in ("junk.ckpt", "cut.ckpt"):
        assert "not a readable checkpoint" in _run_error(
            ["convert", "--checkpoint", str(tmp_path / bad), "--out", str(out)], capsys)
    assert "non-finite" in _run_error(["convert", "--checkpoint", str(tmp_path / "nan.pth"),
                                       "--out", str(out)], capsys)
    assert "missing key" in _run_error(["convert", "--checkpoint", str(tmp_path / "wrong.pth"),
                                        "--out", str(out)], capsys)
    assert "does not exist" in _run_error(["convert", "--checkpoint", str(official_ckpt),
                                           "--out", str(tmp_path / "no" / "x.safetensors")], capsys)
    assert not out.exists()


def test_convert_refuses_to_overwrite_its_input(tmp_path, capsys):
    path = mp.save(mp.MODNet(), tmp_path / "m.safetensors")
    before = path.read_bytes()
    assert "overwrite the input" in _run_error(["convert", "--checkpoint", str(path),
                                                "--out", str(path)], capsys)
    assert path.read_bytes() == before


def test_unwritable_output_folder(official_ckpt, capsys):
    # /proc refuses new files even to root, unlike a chmod-ed folder
    assert "cannot write" in _run_error(["convert", "--checkpoint", str(official_ckpt),
                                         "--out", "/proc/m.safetensors"], capsys)
