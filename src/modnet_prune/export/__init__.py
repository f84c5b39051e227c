"""Deployment: runtimes (PyTorch / ONNX Runtime), ONNX export, and matting of files."""
from .runtime import OnnxRuntime, Runtime, TorchRuntime, open_runtime

__all__ = ["Runtime", "TorchRuntime", "OnnxRuntime", "open_runtime"]
