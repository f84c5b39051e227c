"""`benchmark`: interleaving, statistics, ratio, peak RSS probe and the JSON shape.

Never asserts absolute times: only structure, counts and hand-computed statistics.
"""
import json
import os
import warnings

import pytest
import torch

import modnet_prune as mp
from modnet_prune.cli import main
from modnet_prune.measure import benchmark as bm

STATS = {"median_ms", "p90_ms", "min_ms", "mean_ms", "throughput", "peak_rss_mb", "times_ms",
         "path", "runtime", "runtime_info"}


def test_models_run_interleaved_after_warmup():
    calls = []
    fns = [lambda x, n=n: calls.append(n) for n in "AB"]
    times = bm.interleaved_times(fns, None, repeat=3, warmup=2, progress=False)
    assert "".join(calls) == "AB" * 5
    assert [len(t) for t in times] == [3, 3] and all(t >= 0 for ts in times for t in ts)


def test_statistics_and_per_pair_ratio_by_hand():
    s = bm.latency_stats([4.0, 1.0, 10.0, 2.0, 3.0])
    assert (s["median_ms"], s["min_ms"], s["mean_ms"]) == (3.0, 1.0, 4.0)
    assert s["p90_ms"] == pytest.approx(4.0 + 0.6 * 6.0)  # linear between 4th and 5th of 5
    assert s["throughput"] == pytest.approx(1000 / 3)
    # median of (2, 4, 2) = 2, not the ratio of medians 4 / 1
    assert bm.pair_ratio([2.0, 4.0, 6.0], [1.0, 1.0, 3.0]) == 2.0
    assert bm.fastest_ratio([2.0, 4.0, 6.0], [1.0, 1.0, 3.0]) == 2.0 / 1.0
    assert bm.fastest_ratio([9.0, 3.0], [4.0, 6.0]) == 3.0 / 4.0


def test_bad_repeat_refused():
    with pytest.raises(bm.UserError, match="repeat"):
        bm.interleaved_times([print], None, repeat=0, warmup=1)


def test_busy_machine_warning(monkeypatch):
    monkeypatch.setattr(os, "getloadavg", lambda: (5.5, 1.0, 1.0))
    assert "load average 5.50" in bm.busy_warning(threads=2)
    monkeypatch.setattr(os, "getloadavg", lambda: (0.5, 1.0, 1.0))
    assert bm.busy_warning(threads=2) is None


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    return mp.save(mp.MODNet(), tmp_path_factory.mktemp("bench") / "official.safetensors")


@pytest.fixture
def narrow_and_onnx(tmp_path):
    heads = {k: max(1, w // 4) for k, w in mp.Arch().heads.items()}
    narrow = mp.MODNet(mp.Arch(last=320, se_hidden=80, heads=heads)).eval()
    onnx_path = tmp_path / "narrow.onnx"
    with warnings.catch_warnings():  # tracer chatter about the Python-bool `inference` flag
        warnings.simplefilter("ignore")
        torch.onnx.export(narrow, (torch.zeros(1, 3, 64, 64),), str(onnx_path), dynamo=False,
                          input_names=["img"], output_names=["matte"])
    return mp.save(narrow, tmp_path / "narrow.safetensors"), onnx_path


def _run_json(capsys, *args):
    assert main(["benchmark", "--size", "64", "--repeat", "2", "--warmup", "1",
                 "--threads", "1", "--json", *args]) == 0
    return json.loads(capsys.readouterr().out)


def test_single_model_json_shape(capsys, official):
    r = _run_json(capsys, "--checkpoint", str(official))
    assert set(r) == {"a", "env"}
    assert STATS <= set(r["a"]) and len(r["a"]["times_ms"]) == 2
    assert r["a"]["runtime"] == "torch" and r["a"]["runtime_info"]["threads"] == 1
    env = r["env"]
    assert env["threads"] == 1 and torch.get_num_threads() == 1
    assert env["torch"] == torch.__version__ and env["cpu"] and env["size"] == [64, 64]
    # the probe runs in a fresh process, so loading 26 MB of weights shows above the baseline
    assert r["a"]["peak_rss_mb"] > env["rss_baseline_mb"] + 20


@pytest.mark.slow
def test_vs_json_shape_torch_against_onnxruntime(capsys, narrow_and_onnx):
    narrow, onnx_path = narrow_and_onnx
    r = _run_json(capsys, "--checkpoint", str(onnx_path), "--vs", str(narrow))
    assert set(r) == {"a", "b", "ratio", "env"}
    assert r["a"]["runtime"] == "onnxruntime" and r["b"]["runtime"] == "torch"
    for side in ("a", "b"):
        assert STATS <= set(r[side]) and len(r[side]["times_ms"]) == 2
        assert r[side]["min_ms"] <= r[side]["median_ms"] <= r[side]["p90_ms"]
    assert r["ratio"] == pytest.approx(bm.pair_ratio(r["a"]["times_ms"], r["b"]["times_ms"]))
    assert r["env"]["onnxruntime"]


def test_runtimes_side_by_side_name_the_fastest(capsys, narrow_and_onnx):
    pytest.importorskip("openvino", reason="openvino is not installed (CI installs it)")
    _, onnx_path = narrow_and_onnx
    r = _run_json(capsys, "--checkpoint", str(onnx_path), "--runtimes", "onnxruntime,openvino")
    assert set(r) == {"models", "fastest", "env"} and r["env"]["openvino"]
    assert [m["runtime"] for m in r["models"]] == ["onnxruntime", "openvino"]
    for m in r["models"]:
        assert STATS <= set(m) and len(m["times_ms"]) == 2 and m["runtime_info"]["threads"] == 1
    best = min(r["models"], key=lambda m: m["median_ms"])
    assert r["fastest"] == {str(onnx_path): best["runtime"]}
    second = r["models"][1]
    assert second["ratio"] == pytest.approx(bm.pair_ratio(second["times_ms"],
                                                          r["models"][0]["times_ms"]))


def test_bad_inputs_refused_with_one_line(capsys, official, tmp_path):
    for args, message in [(["--checkpoint", str(tmp_path / "none.ckpt")], "no such file"),
                          (["--checkpoint", str(official), "--size", "100"], "96x96, 128x128"),
                          (["--checkpoint", str(official), "--repeat", "0"], "repeat >= 1"),
                          (["--checkpoint", str(official), "--threads", "0"], "threads >= 1"),
                          (["--checkpoint", str(official), "--runtimes", "onnxruntime,tensorrt"],
                           "name distinct runtimes")]:
        assert main(["benchmark", *args]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
