"""`evaluate` (library and CLI) and `synth`: scores recomputed from saved predictions,
the inference protocol, checkpoint formats, round trips and one-line errors."""
import csv
import json
import warnings

import numpy as np
import pytest
import torch

from modnet_prune import save
from modnet_prune.cli import main
from modnet_prune.data import open_dataset, open_source
from modnet_prune.data.images import read_alpha
from modnet_prune.metrics import METRICS, all_metrics, evaluate
from helpers import tiny_model


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(1)
    root = tmp_path_factory.mktemp("evaluate")
    model = tiny_model()
    save(model, root / "tiny.safetensors")
    return model, root / "tiny.safetensors"


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_evaluate_cli_scores_equal_metrics_recomputed_from_saved_predictions(checkpoint, tmp_path, capsys):
    _, ckpt = checkpoint
    spec = "synthetic:3@64+seed40"
    code, out, _ = run_cli(capsys, "evaluate", "--checkpoint", ckpt, "--data", spec, "--json",
                           "--save-predictions", tmp_path / "pred", "--csv", tmp_path / "per.csv")
    assert code == 0
    result = json.loads(out)
    assert result["count"] == 3 and result["input"] == "fixed 64x64"
    assert result["unknown"]["count"] == 3
    source = open_source(spec)
    recomputed, recomputed_unknown = [], []
    for i in range(len(source)):
        s = source.sample(i)
        pred = read_alpha(tmp_path / "pred" / f"{s.name}.png")
        assert pred.shape == s.alpha.shape
        recomputed.append(all_metrics(pred, s.alpha))
        recomputed_unknown.append(all_metrics(pred, s.alpha, s.trimap))
    for m in METRICS:
        assert result[m] == pytest.approx(np.mean([r[m] for r in recomputed]), rel=1e-9, abs=1e-15)
        assert result["unknown"][m] == pytest.approx(
            np.mean([r[m] for r in recomputed_unknown]), rel=1e-9, abs=1e-15)
    with open(tmp_path / "per.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["name"] for r in rows] == ["synth_0000040", "synth_0000041", "synth_0000042"]
    assert float(rows[1]["sad"]) == pytest.approx(recomputed[1]["sad"], rel=1e-9)
    assert float(rows[2]["unknown_conn"]) == pytest.approx(recomputed_unknown[2]["conn"], rel=1e-9)


def test_evaluate_cli_table_says_region_and_scaling(checkpoint, capsys):
    _, ckpt = checkpoint
    code, out, _ = run_cli(capsys, "evaluate", "--checkpoint", ckpt, "--data", "synthetic:2@64")
    assert code == 0
    assert "whole image" in out and "trimap=128" in out and "sum / 1000" in out
    assert "SAD" in out and "CONN" in out


class ShapeSpy(torch.nn.Module):
    """Records input sizes; predicts a constant 0.5 matte."""

    def __init__(self):
        super().__init__()
        self.sizes = []
        self.weight = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x):
        self.sizes.append(tuple(x.shape))
        return torch.full_like(x[:, :1], 0.5)


def test_folder_round_trip_and_inference_protocol(tmp_path, capsys):
    code, _, _ = run_cli(capsys, "synth", "--out", tmp_path / "syn", "--count", 3, "--size", 96,
                         "--seed", 7, "--json")
    assert code == 0
    folder = open_dataset(str(tmp_path / "syn"), size=96, train=False)
    synthetic = open_dataset("synthetic:3@96+seed7", size=96, train=False)
    for a, b in zip(folder, synthetic):
        assert a["name"] == b["name"]
        for key in ("image", "alpha", "trimap"):
            assert torch.equal(a[key], b[key]), key
    spy = ShapeSpy()
    result = evaluate(spy, open_source(str(tmp_path / "syn")))
    # MODNet protocol: 96 < 512 -> short side to 512; floor to multiples of 32
    assert spy.sizes == [(1, 3, 512, 512)] * 3
    assert result["input"].startswith("MODNet protocol") and "unknown" not in result
    a = folder.source.sample(0).alpha
    assert result["per_image"][0]["mad"] == pytest.approx(np.abs(np.round(0.5 * 255) / 255 - a).mean())
    spy.sizes.clear()
    evaluate(spy, open_source(str(tmp_path / "syn")), size=64)
    assert spy.sizes == [(1, 3, 64, 64)] * 3


def test_image_dir_alpha_dir_form_and_unpaired_files_warning(checkpoint, tmp_path, capsys):
    _, ckpt = checkpoint
    run_cli(capsys, "synth", "--out", tmp_path / "syn", "--count", 2, "--size", 64)
    (tmp_path / "syn" / "matte" / "synth_0000001.png").unlink()
    code, out, err = run_cli(capsys, "evaluate", "--checkpoint", ckpt, "--image-dir",
                             tmp_path / "syn" / "image", "--alpha-dir", tmp_path / "syn" / "matte",
                             "--size", 64, "--json")
    assert code == 0 and json.loads(out)["count"] == 1
    assert err.strip() == (f"modnet-prune evaluate: warning: {tmp_path / 'syn'}: 1 images without "
                           "a matte (e.g. synth_0000001); using 1 pairs")


def test_protocol_on_non_square_images(tmp_path):
    from PIL import Image
    (tmp_path / "image").mkdir()
    (tmp_path / "matte").mkdir()
    Image.fromarray(np.zeros((40, 56, 3), np.uint8)).save(tmp_path / "image" / "a.png")
    Image.fromarray(np.zeros((40, 56), np.uint8)).save(tmp_path / "matte" / "a.png")
    spy = ShapeSpy()
    result = evaluate(spy, str(tmp_path), save_predictions=tmp_path / "out")
    assert spy.sizes == [(1, 3, 512, 704)]  # 56/40*512 = 716 -> 704
    assert read_alpha(tmp_path / "out" / "a.png").shape == (40, 56)
    assert result["sad"] == pytest.approx(40 * 56 * 128 / 255 / 1000)


def test_official_ckpt_and_onnx_give_the_same_scores(checkpoint, tmp_path, capsys):
    model, ckpt = checkpoint
    state = {"module." + k: v for k, v in model.state_dict().items()}
    torch.save(state, tmp_path / "official.ckpt")
    dyn = {0: "n", 2: "h", 3: "w"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.zeros(1, 3, 64, 64),), str(tmp_path / "m.onnx"),
                          dynamo=False, opset_version=17, input_names=["image"],
                          output_names=["matte"], dynamic_axes={"image": dyn, "matte": dyn})
    scores = []
    for path in (ckpt, tmp_path / "official.ckpt", tmp_path / "m.onnx"):
        code, out, _ = run_cli(capsys, "evaluate", "--checkpoint", path, "--data",
                               "synthetic:2@64", "--json", "--threads", 1)
        assert code == 0
        scores.append(json.loads(out))
    assert scores[0]["sad"] == scores[1]["sad"]
    assert scores[2]["runtime"]["runtime"] == "onnxruntime"
    assert scores[2]["mad"] == pytest.approx(scores[0]["mad"], abs=2 / 255)


def test_openvino_scores_the_onnx_file_like_onnxruntime(checkpoint, tmp_path, capsys):
    pytest.importorskip("openvino", reason="openvino is not installed (CI installs it)")
    model, _ = checkpoint
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.zeros(1, 3, 64, 64),), str(tmp_path / "m.onnx"),
                          dynamo=False, opset_version=17, input_names=["image"],
                          output_names=["matte"])
    scores = {}
    for runtime in ("onnxruntime", "openvino"):
        code, out, _ = run_cli(capsys, "evaluate", "--checkpoint", tmp_path / "m.onnx", "--data",
                               "synthetic:2@64", "--json", "--threads", 1, "--runtime", runtime)
        assert code == 0
        scores[runtime] = json.loads(out)
    assert scores["openvino"]["runtime"]["runtime"] == "openvino"
    assert scores["openvino"]["mad"] == pytest.approx(scores["onnxruntime"]["mad"], abs=1e-4)


def test_library_evaluate_restores_training_mode(checkpoint):
    model, _ = checkpoint
    model.train()
    result = evaluate(model, open_dataset("synthetic:1@64", size=64, train=False))
    assert model.training and result["count"] == 1
    model.eval()


def test_synth_is_resumable_and_refuses_other_settings(tmp_path, capsys):
    out = tmp_path / "syn"
    assert run_cli(capsys, "synth", "--out", out, "--count", 2, "--size", 64)[0] == 0
    first = (out / "image" / "synth_0000001.png").read_bytes()
    (out / "matte" / "synth_0000001.png").unlink()  # an interrupted run
    code, text, _ = run_cli(capsys, "synth", "--out", out, "--count", 3, "--size", 64, "--json")
    summary = json.loads(text)
    assert code == 0 and summary["written"] == 2 and summary["skipped"] == 1
    assert (out / "image" / "synth_0000001.png").read_bytes() == first
    code, _, err = run_cli(capsys, "synth", "--out", out, "--count", 3, "--size", 128)
    assert code == 2 and "size 64 (asked 128)" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("argv, message", [
    (["--checkpoint", "{tmp}/missing.safetensors", "--data", "synthetic:1@64"], "no such file"),
    (["--checkpoint", "{ckpt}", "--data", "{tmp}/nowhere"], "no such folder"),
    (["--checkpoint", "{ckpt}", "--data", "{tmp}"], "no dataset layout recognised"),
    (["--checkpoint", "{ckpt}", "--data", "synthetic:1@64", "--size", "100"], "multiple of 32"),
    (["--checkpoint", "{ckpt}", "--data", "synthetic:2"], "give the size"),
    (["--checkpoint", "{ckpt}", "--image-dir", "{tmp}"], "--image-dir needs --alpha-dir"),
    (["--checkpoint", "{ckpt}", "--data", "synthetic:1@64", "--csv", "{tmp}/no/dir/x.csv"],
     "output folder does not exist"),
])
def test_evaluate_bad_inputs_are_one_line_errors(checkpoint, tmp_path, capsys, argv, message):
    _, ckpt = checkpoint
    argv = [a.format(tmp=tmp_path, ckpt=ckpt) for a in argv]
    code, _, err = run_cli(capsys, "evaluate", *argv)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_evaluate_refuses_to_write_predictions_over_ground_truth(checkpoint, tmp_path, capsys):
    _, ckpt = checkpoint
    run_cli(capsys, "synth", "--out", tmp_path / "syn", "--count", 1, "--size", 64)
    code, _, err = run_cli(capsys, "evaluate", "--checkpoint", ckpt, "--data", tmp_path / "syn",
                           "--save-predictions", tmp_path / "syn" / "matte")
    assert code == 2 and "inside the input folder" in err


def test_evaluate_warns_once_when_evaluated_outside_the_training_sizes(tmp_path, capsys):
    trained = tmp_path / "trained64.safetensors"
    save(tiny_model(), trained, train_sizes=[64])
    unknown = tmp_path / "unknown.safetensors"
    save(tiny_model(), unknown)
    spec = "synthetic:1@64"
    code, _, err = run_cli(capsys, "evaluate", "--checkpoint", trained, "--data", spec, "--json")
    assert code == 0 and "warning" not in err  # the set's own size, 64: trained there
    code, _, err = run_cli(capsys, "evaluate", "--checkpoint", trained, "--data", spec,
                           "--size", 128, "--json")
    lines = [line for line in err.splitlines() if "warning" in line]
    assert code == 0 and len(lines) == 1
    assert "trained at 64x64" in lines[0] and "evaluated at 128x128" in lines[0]
    code, _, err = run_cli(capsys, "evaluate", "--checkpoint", unknown, "--data", spec,
                           "--size", 128, "--json")
    assert code == 0 and "warning" not in err  # no metadata: unknown, not wrong


def test_convert_records_training_sizes_and_keeps_the_precision(tmp_path, capsys):
    half = tmp_path / "half.safetensors"
    save(tiny_model(), half, dtype=torch.float16)
    out = tmp_path / "stamped.safetensors"
    code, stdout, _ = run_cli(capsys, "convert", "--checkpoint", half, "--out", out,
                              "--train-sizes", "256,128", "--json")
    assert code == 0 and json.loads(stdout)["train_sizes"] == [128, 256]
    from modnet_prune.model.io import read_train_sizes, stored_dtype
    assert read_train_sizes(out) == [128, 256] and stored_dtype(out) == torch.float16
    code, _, err = run_cli(capsys, "convert", "--checkpoint", half, "--out", tmp_path / "x.safetensors",
                           "--train-sizes", "100")
    assert code != 0 and "--train-sizes 100" in err and len(err.strip().splitlines()) == 1
