"""Deployment: ONNX export, int8 quantization, runtimes (PyTorch / ONNX Runtime / OpenVINO),
matting of files.

Names are imported on first use, so `modnet_prune.deploy.runtime` alone (what benchmarks
load, RSS included) does not pull in onnx or PyAV.
"""
from importlib import import_module

_HOME = {
    "Runtime": "runtime", "TorchRuntime": "runtime", "OnnxRuntime": "runtime",
    "OpenVinoRuntime": "runtime", "open_runtime": "runtime",
    "InferenceMODNet": "inference_graph",
    "export_onnx": "onnx_export", "ExportReport": "onnx_export",
    "Matter": "matting", "Background": "matting", "MatteSummary": "matting",
    "matte_files": "matting",
    "quantize_model": "quantize", "QuantizeReport": "quantize",
    "Int8Capability": "cpu", "int8_capability": "cpu",
}
__all__ = list(_HOME)


def __getattr__(name: str):
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f".{_HOME[name]}", __name__), name)
