"""One calling convention for every way we run a MODNet: PyTorch, ONNX Runtime or OpenVINO.

A runtime maps a normalised batch (N, 3, H, W) float32 in [-1, 1] to mattes (N, 1, H, W)
float32 in [0, 1]; H and W are multiples of 32. Both ends are checked: a model that gives
anything else (NaN from broken weights, an ONNX graph of another shape) is an error, never
a matte. `open_runtime` picks the backend from the file: `.onnx` goes to ONNX Runtime (or
OpenVINO on request), anything `modnet_prune.load` accepts goes to PyTorch.
"""
from __future__ import annotations

import functools
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..data.protocol import check_matte
from ..model.inputs import check_size
from ..errors import UserError
from ..files import package_version
from ..model.io import load

RUNTIMES = ("auto", "torch", "onnxruntime", "openvino")
OPENVINO_MISSING = ("--runtime openvino needs the openvino package: "
                    "pip install 'modnet-prune[openvino]'")
ONNX_RUNTIMES = ("onnxruntime", "openvino")  # the runtimes that read our .onnx files


def check_threads(threads: int | None) -> None:
    if threads is not None and threads < 1:
        raise UserError(f"--threads {threads}: must be at least 1")


def _check_batch(x: np.ndarray, static_hw: tuple[int, int] | None = None,
                 static_batch: int | None = None) -> np.ndarray:
    if not isinstance(x, np.ndarray) or x.ndim != 4 or x.shape[1] != 3:
        raise UserError("runtime input must be an (N, 3, H, W) array, "
                        f"got {getattr(x, 'shape', type(x).__name__)}")
    h, w = check_size(x.shape[2:], "runtime input")
    if static_hw and (h, w) != static_hw:
        raise UserError(f"runtime input {h}x{w}: this ONNX file was exported for "
                        f"{static_hw[0]}x{static_hw[1]} only")
    if static_batch and x.shape[0] != static_batch:
        raise UserError(f"runtime input batch {x.shape[0]}: this ONNX file takes "
                        f"{static_batch} only")
    return np.ascontiguousarray(x, dtype=np.float32)


def _check_onnx_file(path: str | os.PathLike) -> None:
    if not Path(path).is_file():
        raise UserError(f"{path}: " + ("is a folder, not an .onnx file" if Path(path).is_dir()
                                       else "no such file"))


def _first_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:200]


class Runtime:
    """Base: `rt(x) -> matte`; `name`, `path` and `describe()` say what runs.

    `static_hw` / `static_batch` are set when the model only takes one input size / batch.
    """

    name = "runtime"
    static_hw: tuple[int, int] | None = None
    static_batch: int | None = None
    on_gpu = False

    def __init__(self, path: str | None = None):
        self.path = path

    def __call__(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def describe(self) -> dict:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.path or 'in-memory'})"


class TorchRuntime(Runtime):
    """A MODNet (or any module with the same signature) in eval mode, under inference_mode.

    `threads` sets torch's process-wide intra-op thread count (torch has no per-model one).
    `device` defaults to CUDA when available, else CPU.
    """

    name = "torch"

    def __init__(self, model: nn.Module, path: str | None = None, threads: int | None = None,
                 device: str | torch.device | None = None):
        super().__init__(path)
        check_threads(threads)
        if threads is not None:
            torch.set_num_threads(threads)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = model.eval().to(self.device)
        self.on_gpu = self.device.type == "cuda"

    @torch.inference_mode()
    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = _check_batch(x)
        matte = self.model(torch.from_numpy(x).to(self.device)).float().cpu().numpy()
        return check_matte(matte, x, self.path)

    def describe(self) -> dict:
        return {"runtime": self.name, "version": torch.__version__, "device": str(self.device),
                "threads": torch.get_num_threads(), "path": self.path}


class OnnxRuntime(Runtime):
    """An exported `.onnx` file in an ONNX Runtime session (CUDA provider first when present).

    Inputs and outputs are float32 at this boundary whatever the file's I/O type, so an
    fp16 export is a drop-in replacement.
    """

    name = "onnxruntime"

    def __init__(self, path: str | os.PathLike | bytes, threads: int | None = None,
                 providers: list[str] | None = None):
        """`path` may also be a serialised model (bytes), e.g. to check one before saving."""
        import onnxruntime as ort

        in_memory = isinstance(path, bytes)
        super().__init__(None if in_memory else str(path))
        if not in_memory:
            _check_onnx_file(path)
        check_threads(threads)
        options = ort.SessionOptions()
        options.log_severity_level = 3  # warnings about unused initialisers are noise here
        if threads is not None:
            options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        if os.environ.get("OMP_WAIT_POLICY", "").upper() == "PASSIVE":
            # honour the same "do not busy-wait" request torch's OpenMP pool gets
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        available = ort.get_available_providers()
        providers = providers or [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider")
                                  if p in available]
        try:
            self.session = ort.InferenceSession(path if in_memory else str(path), options,
                                                providers=providers)
        except Exception as e:  # ORT raises its own pybind types (InvalidProtobuf, Fail, ...)
            raise UserError(f"{self.path or 'in-memory model'}: not a loadable ONNX model "
                            f"({_first_line(e)})") from e
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        self._check_contract(inputs, outputs)
        self._input, self._output = inputs[0].name, outputs[0].name
        self._input_dtype = np.float16 if inputs[0].type == "tensor(float16)" else np.float32
        dims = inputs[0].shape
        if all(isinstance(d, int) for d in dims[2:4]):
            self.static_hw = (dims[2], dims[3])
        self.static_batch = dims[0] if isinstance(dims[0], int) else None
        self.threads = threads
        self.on_gpu = self.session.get_providers()[0] == "CUDAExecutionProvider"
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)
        if "arch" not in self.metadata and not in_memory:
            warnings.warn(f"{self.path}: not exported by modnet-prune (no arch metadata): "
                          "assuming MODNet's input normalisation and output", stacklevel=2)

    def _check_contract(self, inputs, outputs) -> None:
        """One float N x 3 x H x W input, one float N x 1 x H x W output: a matting graph.
        Symbolic dimensions pass here; the shapes of real outputs are checked per call."""
        name = self.path or "in-memory model"
        if len(inputs) != 1 or len(outputs) != 1:
            raise UserError(f"{name}: expected one input and one output, found "
                            f"{len(inputs)} and {len(outputs)}")
        for what, arg, channels in (("input", inputs[0], 3), ("output", outputs[0], 1)):
            dims = arg.shape
            if arg.type not in ("tensor(float)", "tensor(float16)"):
                raise UserError(f"{name}: its {what} is {arg.type}, expected float32 or float16")
            if len(dims) != 4 or (isinstance(dims[1], int) and dims[1] != channels):
                shape = "x".join(map(str, dims))
                raise UserError(f"{name}: its {what} has shape {shape}, expected "
                                f"N x {channels} x H x W (not a MODNet matting graph)")

    def __call__(self, x: np.ndarray) -> np.ndarray:
        batch = _check_batch(x, self.static_hw, self.static_batch)
        (matte,) = self.session.run([self._output], {self._input: batch.astype(self._input_dtype)})
        return check_matte(matte.astype(np.float32, copy=False), batch, self.path)

    def describe(self) -> dict:
        import onnxruntime as ort

        return {"runtime": self.name, "version": ort.__version__,
                "providers": self.session.get_providers(), "threads": self.threads or "default",
                "path": self.path}


class OpenVinoRuntime(Runtime):
    """An exported `.onnx` file (fp32, fp16 weights or int8 QDQ) compiled by OpenVINO for the CPU.

    The `openvino` package is optional (`pip install 'modnet-prune[openvino]'`). Inference
    precision is pinned to f32: on CPUs with bf16 units OpenVINO would otherwise compute in
    bf16, and the matte would no longer be the one the export checked (int8 QDQ layers still
    run in int8). `threads` sets INFERENCE_NUM_THREADS; one stream, latency hint.
    """

    name = "openvino"

    def __init__(self, path: str | os.PathLike, threads: int | None = None):
        try:
            import openvino  # noqa: F401 -- optional: refuse in one line where it is missing
        except ImportError as e:
            raise UserError(OPENVINO_MISSING) from e
        super().__init__(str(path))
        _check_onnx_file(path)
        check_threads(threads)
        core = _openvino_core()
        config = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY",
                  "NUM_STREAMS": 1}
        if threads is not None:
            config["INFERENCE_NUM_THREADS"] = threads
        try:
            model = core.read_model(str(path))
            if len(model.inputs) != 1 or len(model.outputs) != 1:
                raise UserError(f"{path}: expected one input and one output, found "
                                f"{len(model.inputs)} and {len(model.outputs)}")
            self.compiled = core.compile_model(model, "CPU", config)
        except RuntimeError as e:  # OpenVINO raises RuntimeError subclasses for bad files
            raise UserError(f"{path}: OpenVINO cannot load it ({_first_line(e)})") from e
        shape = model.input(0).get_partial_shape()
        if shape[2].is_static and shape[3].is_static:
            self.static_hw = (shape[2].get_length(), shape[3].get_length())
        self.static_batch = shape[0].get_length() if shape[0].is_static else None
        self.request = self.compiled.create_infer_request()
        self.threads = self.compiled.get_property("INFERENCE_NUM_THREADS")
        self.version = package_version("openvino")
        import onnx  # here, not at the top: benchmarks import this module for its RSS baseline

        self.metadata = {p.key: p.value for p in
                         onnx.load(str(path), load_external_data=False).metadata_props}

    def __call__(self, x: np.ndarray) -> np.ndarray:
        batch = _check_batch(x, self.static_hw, self.static_batch)
        self.request.infer({0: batch})
        # a copy: the request's output buffer is reused by the next call
        matte = np.array(self.request.get_output_tensor(0).data, dtype=np.float32)
        return check_matte(matte, batch, self.path)

    def describe(self) -> dict:
        return {"runtime": self.name, "version": self.version, "device": "CPU",
                "threads": self.threads, "path": self.path}


@functools.cache
def _openvino_core():
    """One OpenVINO Core for the life of the process, as OpenVINO advises. With a Core per
    file, a process that had compiled and released int8 files crashed at its next fork
    (a subprocess in the test suite); with one Core it does not."""
    import openvino as ov

    return ov.Core()


def open_runtime(path: str | os.PathLike, runtime: str = "auto", threads: int | None = None,
                 device: str | None = None) -> Runtime:
    """A Runtime for a checkpoint (`.ckpt`/`.pth`/`.safetensors`) or an `.onnx` file.

    runtime: "auto" (by file type), "torch", "onnxruntime" or "openvino". `device` applies
    to torch only.
    """
    if runtime not in RUNTIMES:
        raise UserError(f"unknown runtime {runtime!r} (choose from {', '.join(RUNTIMES)})")
    is_onnx = Path(path).suffix.lower() == ".onnx"
    if runtime == "auto":
        runtime = "onnxruntime" if is_onnx else "torch"
    if runtime in ONNX_RUNTIMES:
        if not is_onnx:
            raise UserError(f"{path}: {runtime} needs an .onnx file "
                            "(export one with `modnet-prune export`)")
        if runtime == "openvino":
            return OpenVinoRuntime(path, threads=threads)
        return OnnxRuntime(path, threads=threads)
    if is_onnx:
        raise UserError(f"{path}: an .onnx file runs with onnxruntime or openvino, not torch")
    return TorchRuntime(load(path), path=str(path), threads=threads, device=device)
