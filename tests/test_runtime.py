"""Runtime layer: PyTorch and ONNX Runtime give the same mattes through one interface."""
import sys
import warnings

import numpy as np
import pytest
import torch

from modnet_prune import save
from modnet_prune.errors import UserError
from modnet_prune.deploy import OnnxRuntime, TorchRuntime, open_runtime
from helpers import tiny_model


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A tiny model saved as .safetensors and exported (independently of our exporter)."""
    torch.manual_seed(1)
    root = tmp_path_factory.mktemp("runtime")
    model = tiny_model()
    save(model, root / "tiny.safetensors")
    dyn = {0: "n", 2: "h", 3: "w"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.zeros(1, 3, 64, 64),), str(root / "tiny.onnx"),
                          dynamo=False, opset_version=17, input_names=["image"],
                          output_names=["matte"], dynamic_axes={"image": dyn, "matte": dyn})
    return model, root


def test_auto_picks_backend_by_file_type(files):
    _, root = files
    assert isinstance(open_runtime(root / "tiny.onnx"), OnnxRuntime)
    assert isinstance(open_runtime(root / "tiny.safetensors"), TorchRuntime)
    rt = open_runtime(root / "tiny.onnx", runtime="onnxruntime", threads=1)
    info = rt.describe()
    assert info["runtime"] == "onnxruntime" and "CPUExecutionProvider" in info["providers"]
    assert info["threads"] == 1 and rt.name == "onnxruntime" and rt.path.endswith("tiny.onnx")
    assert not rt.on_gpu and not TorchRuntime(files[0], device="cpu").on_gpu


def test_torch_and_onnxruntime_agree(files):
    model, root = files
    x = np.random.default_rng(0).uniform(-1, 1, (2, 3, 96, 64)).astype(np.float32)
    expected = model(torch.from_numpy(x)).detach().numpy()  # independent: plain forward
    for rt in (open_runtime(root / "tiny.onnx"), open_runtime(root / "tiny.safetensors"),
               TorchRuntime(model, device="cpu")):
        matte = rt(x)
        assert matte.shape == (2, 1, 96, 64) and matte.dtype == np.float32
        np.testing.assert_allclose(matte, expected, atol=1e-5, rtol=0)
    # batch items are independent: running one alone gives the same matte
    np.testing.assert_allclose(open_runtime(root / "tiny.onnx")(x[1:]), expected[1:], atol=1e-5)


def test_bad_files_and_inputs_are_user_errors(files, tmp_path):
    _, root = files
    (tmp_path / "junk.onnx").write_bytes(b"not a protobuf" * 10)
    with pytest.raises(UserError, match="not a loadable ONNX model"):
        open_runtime(tmp_path / "junk.onnx")
    with pytest.raises(UserError, match="no such file"):
        open_runtime(tmp_path / "missing.onnx")
    with pytest.raises(UserError, match="no such file"):
        open_runtime(tmp_path / "missing.safetensors")
    with pytest.raises(UserError, match="needs an .onnx file"):
        open_runtime(root / "tiny.safetensors", runtime="onnxruntime")
    with pytest.raises(UserError, match="unknown runtime"):
        open_runtime(root / "tiny.onnx", runtime="tensorrt")
    rt = open_runtime(root / "tiny.onnx")
    with pytest.raises(UserError, match="multiples of 32"):
        rt(np.zeros((1, 3, 50, 64), np.float32))
    with pytest.raises(UserError, match=r"\(N, 3, H, W\)"):
        rt(np.zeros((3, 64, 64), np.float32))


def _openvino():
    return pytest.importorskip("openvino", reason="openvino is not installed "
                               "(pip install 'modnet-prune[openvino]'; CI installs it)")


def test_openvino_runs_our_onnx_file_like_onnxruntime(files):
    _openvino()
    model, root = files
    rt = open_runtime(root / "tiny.onnx", runtime="openvino", threads=1)
    info = rt.describe()
    assert rt.name == info["runtime"] == "openvino" and info["threads"] == 1
    assert rt.static_hw is None and rt.static_batch is None and not rt.on_gpu
    x = np.random.default_rng(2).uniform(-1, 1, (2, 3, 96, 160)).astype(np.float32)
    expected = model(torch.from_numpy(x)).detach().numpy()
    first = rt(x)
    assert first.shape == (2, 1, 96, 160) and first.dtype == np.float32
    np.testing.assert_allclose(first, expected, atol=1e-4, rtol=0)
    np.testing.assert_allclose(first, open_runtime(root / "tiny.onnx", threads=1)(x), atol=1e-4)
    rt(x[:1] * 0)  # outputs are copies: a later call does not change an earlier matte
    np.testing.assert_array_equal(rt(x), first)
    with pytest.raises(UserError, match="needs an .onnx file"):
        open_runtime(root / "tiny.safetensors", runtime="openvino")


def test_openvino_bad_files_are_user_errors(tmp_path):
    _openvino()
    (tmp_path / "junk.onnx").write_bytes(b"not a protobuf" * 10)
    with pytest.raises(UserError, match="OpenVINO cannot load it"):
        open_runtime(tmp_path / "junk.onnx", runtime="openvino")
    with pytest.raises(UserError, match="no such file"):
        open_runtime(tmp_path / "missing.onnx", runtime="openvino")


def test_openvino_runs_int8_qdq(files, tmp_path):
    _openvino()
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType,
                                          quantize_static)

    _, root = files
    rng = np.random.default_rng(3)
    batches = [rng.uniform(-1, 1, (1, 3, 64, 64)).astype(np.float32) for _ in range(4)]

    class Calibration(CalibrationDataReader):
        def __init__(self):
            self.feed = iter({"image": b} for b in batches)

        def get_next(self):
            return next(self.feed, None)

    quantize_static(str(root / "tiny.onnx"), str(tmp_path / "int8.onnx"), Calibration(),
                    quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8)
    x = rng.uniform(-1, 1, (1, 3, 64, 96)).astype(np.float32)
    fp32 = open_runtime(root / "tiny.onnx", "openvino", threads=1)(x)
    ov8 = open_runtime(tmp_path / "int8.onnx", "openvino", threads=1)(x)
    ort8 = open_runtime(tmp_path / "int8.onnx", "onnxruntime", threads=1)(x)
    assert np.isfinite(ov8).all() and 0 <= ov8.min() and ov8.max() <= 1
    # OpenVINO computes the quantized graph: its matte is nearer ORT's int8 one than fp32 is
    # (the two int8 kernels round differently, by about one output step)
    assert np.abs(ov8 - ort8).mean() < np.abs(fp32 - ort8).mean()


def test_openvino_missing_is_one_clear_error(files, monkeypatch):
    _, root = files
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino -> ImportError
    with pytest.raises(UserError, match=r"pip install 'modnet-prune\[openvino\]'"):
        open_runtime(root / "tiny.onnx", runtime="openvino")
