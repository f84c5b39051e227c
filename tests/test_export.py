"""ONNX export: parity with PyTorch (official and pruned widths), metadata, static, fp16, CLI."""
import copy
import json

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto

from modnet_prune import Arch, MODNet, save
from modnet_prune.cli import main
from modnet_prune.errors import UserError
from modnet_prune.deploy import onnx_export as exporter
from modnet_prune.deploy.onnx_export import export_onnx
from modnet_prune.deploy.runtime import OnnxRuntime
from helpers import randomise_bn, tiny_arch

OFFICIAL_MACS_512 = 15_465_971_712  # matte-only, docs/origin.md
OFFICIAL_PARAMS, TRAINING_HEAD_PARAMS = 6_487_075, 10_466


def pruned_arch() -> Arch:
    """A hand-narrowed model: narrower backbone, last 640, heads at 24, uneven IBNorm splits."""
    heads = dict(Arch().heads)
    for name in ("hr_branch.conv_hr2x.0", "hr_branch.conv_hr2x.1", "hr_branch.conv_hr4x.1",
                 "f_branch.conv_f2x", "lr_branch.conv_lr8x"):
        heads[name] = 24
    heads["lr_branch.conv_lr16x"] = 48
    ibn_bn = {k: int(w / 2) for k, w in heads.items()}
    ibn_bn.update({"hr_branch.conv_hr2x.0": 7, "f_branch.conv_f2x": 15, "lr_branch.conv_lr8x": 3})
    expansion = tuple(w // 2 if i % 3 == 0 else w for i, w in enumerate(Arch().expansion))
    return Arch(stages=(16, 24, 24, 48, 72, 120, 240), expansion=expansion, last=640,
                se_hidden=160, heads=heads, ibn_bn=ibn_bn)


def assert_parity(path, model, shapes, atol=1e-4):
    """Independent of the exporter's own check: ORT on the saved file vs a plain forward."""
    rt = OnnxRuntime(path)
    rng = np.random.default_rng(3)
    for n, h, w in shapes:
        x = rng.uniform(-1, 1, (n, 3, h, w)).astype(np.float32)
        with torch.no_grad():
            expected = model(torch.from_numpy(x)).numpy()
        got = rt(x)
        assert got.shape == (n, 1, h, w)
        np.testing.assert_allclose(got, expected, atol=atol, rtol=0)


def test_official_arch_parity_and_metadata(tmp_path):
    model = randomise_bn(MODNet())
    report = export_onnx(model, tmp_path / "m.onnx", metadata={"source_sha256": "ab" * 32})
    assert_parity(tmp_path / "m.onnx", model, [(1, 64, 64), (2, 96, 160)])
    proto = onnx.load(str(tmp_path / "m.onnx"))
    meta = {p.key: p.value for p in proto.metadata_props}
    assert int(meta["macs"]) == report.macs == OFFICIAL_MACS_512
    assert int(meta["params"]) == report.params == OFFICIAL_PARAMS - TRAINING_HEAD_PARAMS
    assert meta["size_multiple"] == "32" and meta["source_sha256"] == "ab" * 32
    assert json.loads(meta["normalization"])["mean"] == [0.5, 0.5, 0.5]
    assert Arch.from_json(meta["arch"]) == model.arch
    assert [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")] == [17]
    dims = [d.dim_param or d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert proto.graph.input[0].name == "image" and dims == ["batch", 3, "height", "width"]
    assert proto.graph.output[0].name == "matte"
    ops = [n.op_type for n in proto.graph.node]
    assert "Constant" not in ops and "Identity" not in ops  # lean graph
    # the fused graph (default): 69 convs, + 2 of the raw image, + the SE's 2 Linears, - the
    # last two (conv_f.0, conv_f.1), which the half-resolution tail replaces: its phase conv
    # and image conv, and for the end rows and the end columns the training graph's conv,
    # the phase conv and the image conv on strips; conv_f.1 is a MatMul per part (8 BN and
    # 8 IN channels) of the map, the rows and the columns; InstanceNorm is written out there.
    # lr16x is three convs: mix, shift and sum (UpsampledConv)
    tail = [n.op_type for n in proto.graph.node if n.name.startswith("/tail/")]
    assert ops.count("Conv") - tail.count("Conv") == 69 + 2 + 2 - 2 + 2
    assert tail.count("Conv") == 2 + 2 * 3 and ops.count("MatMul") == tail.count("MatMul") == 2 * 3
    assert ops.count("InstanceNormalization") == 16 - 1
    assert meta["graph"] == report.graph == "fused" and "BatchNormalization" not in ops
    assert len(report.parity) == 2 and all(c["max_abs"] <= 1e-4 for c in report.parity)


def test_pruned_model_parity(tmp_path):
    model = randomise_bn(MODNet(pruned_arch()))
    report = export_onnx(model, tmp_path / "p.onnx")
    assert_parity(tmp_path / "p.onnx", model, [(1, 64, 96), (2, 128, 64)])
    # smaller than the official graph by exactly the pruned conv/linear weights + BN params
    assert report.params == sum(p.numel() for p in model.parameters()) - sum(
        p.numel() for name in ("lr_branch.conv_lr", "hr_branch.conv_hr")
        for p in model.get_submodule(name).parameters())


def test_static_export_fixes_the_shape(tmp_path):
    model = randomise_bn(MODNet(tiny_arch()))
    report = export_onnx(model, tmp_path / "s.onnx", static_hw=(96, 64))
    image = onnx.load(str(tmp_path / "s.onnx")).graph.input[0]
    assert [d.dim_value for d in image.type.tensor_type.shape.dim] == [1, 3, 96, 64]
    assert report.macs_input == "1x3x96x64"
    assert [c["shape"] for c in report.parity] == [[1, 3, 96, 64]] * 2
    assert_parity(tmp_path / "s.onnx", model, [(1, 96, 64)])
    with pytest.raises(UserError, match="96x64 only"):
        OnnxRuntime(tmp_path / "s.onnx")(np.zeros((1, 3, 64, 64), np.float32))


def test_fp16_weights_halve_the_file_and_run(tmp_path):
    model = randomise_bn(MODNet(pruned_arch()))
    full = export_onnx(model, tmp_path / "f32.onnx", check=False)
    half = export_onnx(model, tmp_path / "f16.onnx", fp16=True)
    proto = onnx.load(str(tmp_path / "f16.onnx"))
    big = [i for i in proto.graph.initializer if np.prod(i.dims) >= 1024]
    assert big and all(i.data_type == TensorProto.FLOAT16 for i in big)
    assert proto.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT  # float32 I/O
    assert 0.45 < half.file_bytes / full.file_bytes < 0.55
    # the reported deviation is what an independent run measures on the check inputs
    rt = OnnxRuntime(tmp_path / "f16.onnx", threads=1)
    deltas = [np.abs(rt(x) - expected) for x, expected in _float64_mattes(model)]
    assert max(d.max() for d in deltas) == pytest.approx(half.fp16_max_abs, rel=1e-5)
    assert 0 < half.fp16_max_abs < 0.1  # rounding noise, not a broken graph


def _float64_mattes(model):
    exact = copy.deepcopy(model).double().eval()
    with torch.no_grad():
        return [(x, exact(torch.from_numpy(x).double()).float().numpy())
                for x in exporter._check_inputs(None)]


def test_parity_is_the_files_distance_from_the_float64_model(tmp_path):
    """The check bounds the file's own rounding: against PyTorch's fp32 forward it would
    add that forward's rounding too (on a Zen 3 the two summed to 1.01e-4 on a random model)."""
    model = randomise_bn(MODNet(tiny_arch()))
    report = export_onnx(model, tmp_path / "m.onnx")
    rt = OnnxRuntime(tmp_path / "m.onnx", threads=1)
    for check, (x, expected) in zip(report.parity, _float64_mattes(model), strict=True):
        assert check["max_abs"] == pytest.approx(np.abs(rt(x) - expected).max(), rel=1e-6)


def test_failed_check_writes_nothing(tmp_path, monkeypatch):
    real_lean = exporter._lean

    def corrupt(proto):  # perturb one conv weight after tracing, as a buggy pass would
        real_lean(proto)
        init = next(i for i in proto.graph.initializer if len(i.dims) == 4)
        w = onnx.numpy_helper.to_array(init) * 1.5
        init.CopyFrom(onnx.numpy_helper.from_array(w.astype(np.float32), init.name))

    monkeypatch.setattr(exporter, "_lean", corrupt)
    with pytest.raises(UserError, match="parity check failed"):
        export_onnx(MODNet(tiny_arch()), tmp_path / "bad.onnx")
    assert list(tmp_path.iterdir()) == []


def test_cli_export_and_errors(tmp_path, capsys):
    ckpt = tmp_path / "tiny.safetensors"
    save(randomise_bn(MODNet(tiny_arch())), ckpt)
    out = tmp_path / "tiny.onnx"
    assert main(["export", "--checkpoint", str(ckpt), "--out", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["opset"] == 17 and len(summary["parity"]) == 2 and out.is_file()
    meta = OnnxRuntime(out).metadata
    assert meta["source"] == "tiny.safetensors" and len(meta["source_sha256"]) == 64
    other = tmp_path / "other.onnx"
    cases = [(["--out", str(ckpt)], "must end in .onnx"),
             (["--out", str(other), "--static", "100x64"], "multiples of 32"),
             (["--out", str(other), "--opset", "7"], "supported range")]
    for extra, message in cases:
        assert main(["export", "--checkpoint", str(ckpt), *extra]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1
    before = ckpt.read_bytes()
    (tmp_path / "same.onnx").write_bytes(b"x")
    assert main(["export", "--checkpoint", str(tmp_path / "same.onnx"),
                 "--out", str(tmp_path / "same.onnx")]) == 2
    assert "refusing to overwrite" in capsys.readouterr().err and ckpt.read_bytes() == before
