"""Runtime layer: PyTorch and ONNX Runtime give the same mattes through one interface."""
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
