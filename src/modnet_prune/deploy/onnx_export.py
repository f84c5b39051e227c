"""Export the matte-only graph of a MODNet to ONNX, checked against PyTorch before it is saved.

Exporter choice (measured on torch 2.13 / onnx 1.23 / onnxruntime 1.32, official widths):
the legacy TorchScript exporter (`dynamo=False`). It honours opset 17 (the dynamo exporter
emits 18, and onnx's down-converter fails on its Slice nodes), traces in ~1 s instead of
~70 s, needs no extra dependency (dynamo needs onnxscript + onnx-ir) and names the dynamic
axes batch/height/width. Both graphs have the same 69 Conv, 16 InstanceNormalization and
8-9 Resize nodes, the same parity with PyTorch (max |diff| 3.5e-5 at 512x384) and the same
ORT latency (within 3%). The legacy graph's only extra weight is its 241 Constant nodes
and 38-113 Identity nodes (weights that coincide after BN folding); `_lean` turns them into
initializers and plain edges: 235 nodes, dynamo 234. That is the "plain" graph; the default
"fused" one traces `InferenceMODNet` (inference_graph.py), the same matte in fewer passes.
"""
from __future__ import annotations

import copy
import io
import json
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from .. import __version__
from ..model.inputs import MULTIPLE
from ..errors import UserError
from ..memory import require_forward
from ..graph.cost import layer_costs
from ..files import write_atomic
from .inference_graph import InferenceMODNet
from .runtime import OnnxRuntime

INPUT, OUTPUT = "image", "matte"
DEFAULT_OPSET, MIN_OPSET, MAX_OPSET = 17, 13, 20
PARITY_TOL = 1e-4
# (batch, height, width) checked for a dynamic export: one square, one non-square batch of 2.
CHECK_SHAPES = ((1, 256, 256), (2, 128, 192))
MACS_SIZE = 512  # MACs in the metadata are for a 512x512 input (the protocol's reference)
FP16_MIN_ELEMENTS = 16  # smaller tensors stay float32: a Cast node would outweigh the saving
# "fused": InferenceMODNet, the same matte in fewer passes (inference_graph.py);
# "plain": the training module's own forward, kept so that benchmarks can compare the two.
GRAPHS = ("fused", "plain")
# Bumped when the exported graphs or their int8 form (quantize's conv_split) change in
# structure: latency models cached for another revision are measured again.
# 2: the half-resolution tail and one conv per IBNorm part in int8.
# 3: lr16x mixes its 1280 channels before the upsample (inference_graph.UpsampledConv).
# 4: in int8 its summed taps stay float (quantize.summed_taps).
GRAPH_REVISION = 4


class MatteGraph(nn.Module):
    """image -> matte only, as the training module computes it (the "plain" graph)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.model(image, inference=True)


@dataclass
class ExportReport:
    out: str
    opset: int
    graph: str
    nodes: int
    params: int
    macs: int
    macs_input: str
    file_bytes: int
    precision: str
    # per checked input: {"shape": [N, 3, H, W], "max_abs": max |onnx fp32 - torch|}
    parity: list[dict] = field(default_factory=list)
    # fp16 only: max and mean |onnx fp16 - torch fp32| over the checked shapes
    fp16_max_abs: float | None = None
    fp16_mean_abs: float | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def _trace_to_onnx(graph: nn.Module, opset: int,
                   static_hw: tuple[int, int] | None) -> onnx.ModelProto:
    h, w = static_hw or (64, 64)
    dynamic = None if static_hw else {name: {0: "batch", 2: "height", 3: "width"}
                                      for name in (INPUT, OUTPUT)}
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # Known and harmless: the legacy exporter's deprecation notice, and "instance_norm
        # exported with train=True", which is right: InstanceNorm always uses input statistics.
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(graph, (torch.zeros(1, 3, h, w),), buffer, dynamo=False,
                              opset_version=opset, input_names=[INPUT], output_names=[OUTPUT],
                              dynamic_axes=dynamic, do_constant_folding=True)
        except Exception as e:  # the exporter's errors (unsupported op/opset) carry no type
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise UserError(f"ONNX export failed at opset {opset}: {first[:200]}") from e
    return onnx.load_from_string(buffer.getvalue())


def _lean(model: onnx.ModelProto) -> None:
    """Constant nodes -> initializers; Identity nodes (the legacy exporter's deduplicated
    weights) -> direct edges. Computation is unchanged."""
    g = model.graph
    outputs = {o.name for o in g.output}
    rename: dict[str, str] = {}
    kept = []
    for node in g.node:
        node.input[:] = [rename.get(name, name) for name in node.input]
        if node.op_type == "Constant" and node.attribute[0].name == "value":
            tensor = copy.deepcopy(node.attribute[0].t)
            tensor.name = node.output[0]
            g.initializer.append(tensor)
        elif node.op_type == "Identity" and node.output[0] not in outputs:
            rename[node.output[0]] = node.input[0]
        else:
            kept.append(node)
    del g.node[:]
    g.node.extend(kept)


def _weights_to_fp16(model: onnx.ModelProto) -> None:
    """Store float32 initializers as float16, each followed by a Cast back to float32.

    Computation and I/O stay float32 (ORT folds the Casts at load): the file halves and the
    error is that of rounding the weights. A fully fp16 graph measured no more accurate on
    ORT's CPU provider (it runs fp16 nodes that lack CPU kernels in fp32 behind inserted
    Casts) and 1.45x slower at 512x512 (official widths, 1 thread).
    """
    g = model.graph
    casts = []
    for init in g.initializer:
        if init.data_type != TensorProto.FLOAT or np.prod(init.dims) < FP16_MIN_ELEMENTS:
            continue
        values = numpy_helper.to_array(init)
        if np.abs(values).max() > np.finfo(np.float16).max:
            raise UserError(f"--fp16: {init.name} has values beyond the float16 range")
        name = init.name
        init.CopyFrom(numpy_helper.from_array(values.astype(np.float16), f"{name}.fp16"))
        casts.append(helper.make_node("Cast", [init.name], [name], to=TensorProto.FLOAT,
                                      name=f"{name}.to_fp32"))
    nodes = casts + list(g.node)
    del g.node[:]
    g.node.extend(nodes)


def _inference_params(model: nn.Module) -> int:
    """Parameters of the modules that the matte-only forward runs (shared ones once)."""
    used: set[int] = set()

    def record(module, _inputs, _output):
        used.update(id(p) for p in module.parameters(recurse=False))

    handles = [m.register_forward_hook(record) for m in model.modules()
               if next(m.parameters(recurse=False), None) is not None]
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, 64, 64), inference=True)
    finally:
        for h in handles:
            h.remove()
    return sum(p.numel() for p in model.parameters() if id(p) in used)


def _metadata(model: nn.Module, params: int, macs: int, macs_input: str, precision: str,
              graph: str, extra: dict[str, str]) -> dict[str, str]:
    meta = {
        "input": f"{INPUT}: float32 N x 3 x H x W, RGB, (pixel / 255 - 0.5) / 0.5, in [-1, 1]",
        "output": f"{OUTPUT}: float32 N x 1 x H x W, alpha in [0, 1]",
        "normalization": json.dumps({"scale": 1 / 255, "mean": [0.5] * 3, "std": [0.5] * 3,
                                     "channels": "RGB", "layout": "NCHW"}),
        "size_multiple": str(MULTIPLE),
        "inference_protocol": "if the long side < 512 or the short side > 512, scale the short "
                              "side to 512; floor H and W to multiples of 32; area-resize in; "
                              "predict; area-resize the matte back",
        "reference_size": "512",
        "params": str(params),
        "macs": str(macs),
        "macs_input": macs_input,
        "precision": precision,
        "graph": graph,
        "arch": model.arch.to_json() if hasattr(model, "arch") else "",
        "onnx_export": f"torch.onnx (TorchScript) {torch.__version__}",
        "tool_version": __version__,
    }
    meta.update(extra)
    return meta


def _check_inputs(static_hw: tuple[int, int] | None) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    if static_hw:  # one size only: check it with noise and with a smooth ramp
        h, w = static_hw
        ramp = np.broadcast_to(np.linspace(-1, 1, w, dtype=np.float32), (1, 3, h, w))
        return [rng.uniform(-1, 1, (1, 3, h, w)).astype(np.float32), np.ascontiguousarray(ramp)]
    return [rng.uniform(-1, 1, (n, 3, h, w)).astype(np.float32) for n, h, w in CHECK_SHAPES]


def _parity(fp32_bytes: bytes, fp16_bytes: bytes | None, model: nn.Module,
            static_hw: tuple[int, int] | None, report: ExportReport) -> None:
    # One ORT thread: a deterministic reduction order, so a check that passed passes again.
    # The reference is the model in float64, so the check bounds the file's own rounding, not
    # the sum of two fp32 libraries': on a Zen 3 (AVX2) a random-BN test model's ONNX and
    # PyTorch fp32 mattes differed by 1.01e-4 at 256x256, each ~6e-5 from float64's.
    exact = copy.deepcopy(model).double().eval()
    exported = OnnxRuntime(fp32_bytes, threads=1)
    half = OnnxRuntime(fp16_bytes, threads=1) if fp16_bytes else None
    deltas16 = []
    for x in _check_inputs(static_hw):
        with torch.inference_mode():
            expected = exact(torch.from_numpy(x).double()).float().numpy()
        delta = float(np.abs(exported(x) - expected).max())
        report.parity.append({"shape": list(x.shape), "max_abs": delta})
        if not delta <= PARITY_TOL:  # also catches NaN
            raise UserError(f"ONNX/PyTorch parity check failed at {x.shape[2]}x{x.shape[3]}: "
                            f"max |diff| {delta:.2e} > {PARITY_TOL:.0e}; nothing written")
        if half:
            deltas16.append(np.abs(half(x) - expected))
    if half:
        report.fp16_max_abs = float(max(d.max() for d in deltas16))
        report.fp16_mean_abs = float(np.mean([d.mean() for d in deltas16]))
        if not np.isfinite(report.fp16_max_abs):
            raise UserError("--fp16: the half-precision model gives non-finite mattes; "
                            "nothing written")


def export_onnx(model: nn.Module, out: str | Path, opset: int = DEFAULT_OPSET,
                static_hw: tuple[int, int] | None = None, fp16: bool = False,
                check: bool = True, metadata: dict[str, str] | None = None,
                graph: str = "fused") -> ExportReport:
    """Write the matte-only ONNX graph of `model` to `out` (atomically) and describe it.

    `graph` "fused" (default) traces `InferenceMODNet`, "plain" the model's own forward.

    With `check`, ONNX Runtime must match PyTorch in float64 to 1e-4 (fp32 graph) before
    anything is written; with `fp16` the half-precision file's deviation is measured and reported.
    `metadata` (e.g. source, source_sha256) is added to the file's metadata.
    """
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise UserError(f"--opset {opset}: supported range is {MIN_OPSET}..{MAX_OPSET}")
    if graph not in GRAPHS:
        raise UserError(f"--graph {graph!r}: choose from {', '.join(GRAPHS)}")
    if static_hw:  # the check's float64 forward holds twice a float32 one's bytes
        require_forward(*static_hw, batch=2 if check else 1,
                        what=f"--static {static_hw[0]}x{static_hw[1]}: exporting and checking "
                             "at that size")
    model = copy.deepcopy(model).float().cpu().eval()
    h, w = static_hw or (MACS_SIZE, MACS_SIZE)
    macs = sum(c.macs for c in layer_costs(model, torch.zeros(1, 3, h, w), inference=True))
    params = _inference_params(model)
    precision = "fp16 weights, fp32 compute and I/O" if fp16 else "fp32"

    # eval() on the wrapper too: the exporter restores the wrapper's mode, recursively, after
    # tracing, and a fresh Module is in training mode (BN would then use batch statistics)
    traced = InferenceMODNet(model) if graph == "fused" else MatteGraph(model)
    proto = _trace_to_onnx(traced.eval(), opset, static_hw)
    _lean(proto)
    proto.producer_name, proto.producer_version = "modnet-prune", __version__
    proto.doc_string = "MODNet portrait matting, matte-only graph (image -> matte)"
    meta = _metadata(model, params, macs, f"1x3x{h}x{w}", precision, graph, metadata or {})
    onnx.helper.set_model_props(proto, meta)
    onnx.checker.check_model(proto)
    fp32_bytes = proto.SerializeToString()
    if fp16:
        _weights_to_fp16(proto)
        onnx.checker.check_model(proto)
    payload = proto.SerializeToString()

    report = ExportReport(out=str(out), opset=opset, graph=graph, nodes=len(proto.graph.node),
                          params=params, macs=macs, macs_input=f"1x3x{h}x{w}", file_bytes=len(payload),
                          precision=precision)
    if check:
        _parity(fp32_bytes, payload if fp16 else None, model, static_hw, report)
    write_atomic(out, lambda tmp: Path(tmp).write_bytes(payload))
    return report
