"""Post-training int8 quantization (ONNX Runtime, static QDQ), held to a measured fidelity budget.

    report = quantize_model("student.onnx", "synthetic:24@512+seed7", "student.int8.onnx")

Weights are int8 per output channel, activations uint8 with ranges calibrated on `count`
images of a dataset spec, preprocessed by `Matter.network_input` at the deployment size, so
calibration sees exactly what `matte` feeds. Ops that ORT's CPU provider has no int8 kernel
for (FLOAT_OPS) are never quantized: they read their neighbours' DequantizeLinear output and
feed a QuantizeLinear that an int8 consumer needs, and no Q/DQ pair is spent on them alone.
The graph quantized is the given one with each conv whose output is split along channels (an
IBNorm's halves) made one conv per part (`conv_split`): the same function, cheaper in int8.

Fidelity: the int8 and fp32 mattes of `holdout` further images (disjoint from calibration)
are compared at the deployment size before anything is written. When the mean |delta alpha|
exceeds the budget, the quantized nodes are ranked once by the error each adds to its own
output in the QDQ graph, and the fewest of the top-ranked ones that bring the delta under
the budget are kept float (their count doubled, then bisected; every try re-quantizes from
the same calibration ranges and re-measures). When MAX_KEPT_FLOAT nodes are not enough, the
quantization is refused, naming the best delta reached. The result's metadata record the
precision, the nodes kept float, the delta and the calibration data.

Beside the delta, the report gives the fp32 model's own noise floor: how far its matte moves
when every input pixel moves by -1, 0 or +1 grey level (uniformly, a fixed seed), an input
change no photo pipeline preserves. An int8 delta near it is as faithful as this model can
be asked to be; a budget far below it asks int8 to be steadier than fp32 itself.
"""
from __future__ import annotations

import copy
import hashlib
import json
import logging
import tempfile
import time
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import onnx
import torch
from tqdm import tqdm

from ..data import open_source
from ..data.protocol import MULTIPLE
from ..errors import UserError
from ..files import sha256_file, write_atomic
from ..model.inputs import normalise
from .conv_split import split_convs
from .cpu import Int8Capability, int8_capability
from .matting import Matter
from .runtime import OnnxRuntime

METHODS = ("minmax", "percentile", "entropy")
DEFAULT_METHOD, DEFAULT_COUNT, DEFAULT_HOLDOUT, DEFAULT_SIZE = "minmax", 32, 8, 512
# 32 calibration images: the shipped teacher at 512², calibrated on three disjoint sets,
# kept its held-out MAD within 1.015x the fp32 one's on all three with 24 or 32 images and
# reached 1.026x with 16 (mean 1.010x at 32); 17 s to quantize on 2 cores
# (benchmarks/int8_calibration.py, benchmarks/int8.md).
# Mean |int8 alpha - fp32 alpha| allowed on the held-out images at the deployment size:
# half a level of the 8-bit matte that `matte` writes (0.5 / 255). benchmarks/int8.md: the
# shipped teacher at 128x128, where it is accurate, comes out at 6.0e-4 with every
# quantizable node int8 (held-out MAD 1.017x the fp32 one's); an untrained one-shot prune
# at 2.3e-2 (refused), and the teacher at 512, where fp32 itself is at MAD 0.26, at 1.7e-2.
DEFAULT_BUDGET = 2e-3
# No int8 kernel in ORT's CPU provider: they run float (InstanceNormalization is what the
# profile in benchmarks/int8.md shows; BatchNormalization only occurs unfolded in graphs
# from other exporters).
FLOAT_OPS = ("InstanceNormalization", "BatchNormalization")
MAX_KEPT_FLOAT = 32  # the most sensitive nodes tried float before refusing
QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
QUANTIZED_OPS = QDQ_OPS + ("QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger",
                           "DynamicQuantizeLinear")


# --------------------------------------------------------------------------- inputs

def fp32_graph(model: str | Path) -> tuple[bytes, dict[str, str]]:
    """The fp32 matte graph of a checkpoint (exported and parity-checked) or of an `.onnx`
    file from `export`, and its metadata. Quantized and non-MODNet graphs are refused."""
    path = Path(model)
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    if path.suffix.lower() != ".onnx":
        from ..model.io import load
        from .onnx_export import export_onnx

        with tempfile.TemporaryDirectory(prefix="modnet-int8-") as tmp:
            exported = Path(tmp) / "fp32.onnx"
            export_onnx(load(path), exported, metadata={"source": path.name,
                                                        "source_sha256": sha256_file(path)})
            payload = exported.read_bytes()
    else:
        payload = path.read_bytes()
    try:
        proto = onnx.load_from_string(payload)
    except Exception as e:  # onnx raises protobuf's DecodeError and others
        raise UserError(f"{path}: not a readable ONNX file") from e
    meta = {p.key: p.value for p in proto.metadata_props}
    if meta.get("precision") == "int8" or any(n.op_type in QUANTIZED_OPS for n in proto.graph.node):
        raise UserError(f"{path}: already quantized; quantize the fp32 model it came from")
    inputs = [i for i in proto.graph.input if i.name not in {t.name for t in proto.graph.initializer}]
    if len(inputs) != 1 or len(proto.graph.output) != 1 or _channels(inputs[0]) != 3 \
            or _channels(proto.graph.output[0]) != 1:
        raise UserError(f"{path}: not a MODNet matte graph (expected one N x 3 x H x W input "
                        "and one N x 1 x H x W output, as `modnet-prune export` writes)")
    if path.suffix.lower() == ".onnx":
        meta.setdefault("source", path.name)
        meta.setdefault("source_sha256", sha256_file(path))
    return payload, meta


def _channels(value) -> int | None:
    t = value.type.tensor_type
    if t.elem_type != onnx.TensorProto.FLOAT or len(t.shape.dim) != 4:
        return None
    dim = t.shape.dim[1]
    return dim.dim_value if dim.HasField("dim_value") else None


def _images(spec: str, count: int, holdout: int, matter: Matter, progress: bool):
    """(calibration batches, held-out batches, sha256 of both) from the first count+holdout
    images of `spec`, preprocessed as `matte` does."""
    source = open_source(spec, size=matter.ref)
    if len(source) < count + holdout:
        raise UserError(f"--count {count} calibration + {holdout} held-out images: "
                        f"{spec} has only {len(source)} ({source.description})")
    digest = hashlib.sha256()
    batches = []
    for index in tqdm(range(count + holdout), desc="calibration images", unit="img",
                      disable=not progress):
        x = matter.network_input(source.sample(index).image)
        digest.update(np.ascontiguousarray(x).tobytes())
        batches.append(x)
    return batches[:count], batches[count:], digest.hexdigest()


# --------------------------------------------------------------------------- quantizing

class BudgetError(UserError):
    """The int8 graph stays above the fidelity budget however many nodes are kept float."""


@dataclass
class QuantizeReport:
    out: str
    method: str
    size: int
    count: int
    holdout: int
    budget: float
    delta_mean: float              # mean |int8 - fp32| alpha over the held-out images
    delta_p99: float               # 99th percentile of the per-pixel |int8 - fp32|
    kept_float: list[str]          # sensitive nodes kept float to meet the budget
    float_ops: list[str]           # op types never quantized (no int8 CPU kernel)
    calibration: str
    calibration_sha256: str
    capability: dict
    nodes: dict[str, int]          # op-type counts of the written graph
    file_bytes: int
    fp32_bytes: int
    noise_floor: float = 0.0       # mean |fp32(x + 1 grey level noise) - fp32(x)| alpha
    rounds: list[dict] = field(default_factory=list)  # {kept_float, delta_mean} per try
    seconds: float = 0.0
    summed_taps: list[str] = field(default_factory=list)  # float by design (`summed_taps`)

    def as_dict(self) -> dict:
        return asdict(self)


@contextmanager
def _quiet_ort_quantization():
    """onnxruntime.quantization logs advice (pre-processing) on the root logger each call."""
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)


def _calibration_reader(input_name: str, batches: list[np.ndarray]):
    """ORT's calibration interface over the preprocessed batches."""
    from onnxruntime.quantization import CalibrationDataReader  # slow to import: on use

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter(batches)

        def get_next(self):
            x = next(self.items, None)
            return None if x is None else {input_name: x}

    return Reader()


class _Quantizer:
    """Re-quantizes one fp32 graph with other nodes kept float, from ranges calibrated once."""

    weight_type = "QInt8"  # ORT's QuantType; benchmarks/int8_no_vnni.py measures QUInt8

    def __init__(self, fp32: bytes, batches: list[np.ndarray], method: str, reduce_range: bool,
                 folder: Path):
        from onnxruntime.quantization import CalibrationMethod

        self.folder = folder
        self.proto = onnx.load_from_string(fp32)
        _unshare_initializers(self.proto)
        split_convs(self.proto)  # the same function: exact, and faster in int8 (conv_split.py)
        self.fp32 = self.proto.SerializeToString()  # what the int8 graph's nodes are named after
        self.source = folder / "fp32.onnx"
        onnx.save(self.proto, self.source)
        self.cache = folder / "ranges.json"
        self.always_float = [n.name for n in self.proto.graph.node if n.op_type in FLOAT_OPS]
        self.summed_taps = summed_taps(self.proto.graph)
        self.unquantized = self.always_float + self.summed_taps  # before any kept float
        self.method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                       "percentile": CalibrationMethod.Percentile}[method]
        self.reduce_range = reduce_range
        self.reader = _calibration_reader(self.proto.graph.input[0].name, batches)

    def __call__(self, kept_float: list[str]) -> bytes:
        from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

        out = self.folder / "int8.onnx"
        with _quiet_ort_quantization():
            quantize_static(self.source, out, self.reader, quant_format=QuantFormat.QDQ,
                            per_channel=True, reduce_range=self.reduce_range,
                            activation_type=QuantType.QUInt8,
                            weight_type=getattr(QuantType, self.weight_type),
                            nodes_to_exclude=self.unquantized + kept_float,
                            calibrate_method=self.method, calibration_cache_path=self.cache)
        return out.read_bytes()


def summed_taps(graph: onnx.GraphProto) -> list[str]:
    """The nodes of each conv on an upsample that mixes its channels first
    (`inference_graph.UpsampledConv`) after its 1x1 mix: the Resize, the one-hot depthwise
    shift and the grouped sum. They stay float in int8: quantized, every output would be a
    sum of k*k taps each rounded on its own (the shipped teacher's held-out MAD at 512^2, one
    calibration set: 1.025x the fp32 file's with them int8, 1.017x with them float;
    benchmarks/int8.md). The mix conv, nearly all of the MACs, is quantized."""
    producers = {out: node for node in graph.node for out in node.output}
    weights = {t.name: t.dims for t in graph.initializer}

    def conv_groups(node) -> int:
        return next((a.i for a in node.attribute if a.name == "group"), 1)

    found = []
    for total in graph.node:  # the sum: a grouped conv fed by a depthwise conv fed by a Resize
        shift = producers.get(total.input[0]) if total.op_type == "Conv" else None
        if shift is None or conv_groups(total) == 1 or shift.op_type != "Conv":
            continue
        dims = weights.get(shift.input[1])
        resize = producers.get(shift.input[0])
        if dims and dims[1] == 1 and conv_groups(shift) == dims[0] > 1 and \
                resize is not None and resize.op_type == "Resize":
            found += [resize.name, shift.name, total.name]
    return found


def quantize_graph(fp32: bytes, batches: list[np.ndarray], method: str = DEFAULT_METHOD,
                   reduce_range: bool | None = None, kept_float: Sequence[str] = ()) -> bytes:
    """The int8 QDQ graph `quantize_model` starts from (every quantizable node int8 but the
    `summed_taps` and the nodes named in `kept_float`), with no fidelity check: what timing
    needs (`modnet-prune profile --precision int8`), where the graph's structure matters and
    its ranges do not."""
    if reduce_range is None:
        reduce_range = int8_capability().reduce_range
    with tempfile.TemporaryDirectory(prefix="modnet-int8-") as tmp:
        return _Quantizer(fp32, batches, method, reduce_range, Path(tmp))(list(kept_float))


def _unshare_initializers(proto: onnx.ModelProto) -> None:
    """One initializer per consuming input. The exporter shares tensors that coincide (e.g.
    zero biases), and ORT quantizes an initializer once for all its consumers, so a shared
    one would reach a node kept float through a DequantizeLinear."""
    g = proto.graph
    by_name = {t.name: t for t in g.initializer}
    seen: set[str] = set()
    for node in g.node:
        for k, name in enumerate(node.input):
            if name not in by_name:
                continue
            if name in seen:
                copy_ = copy.deepcopy(by_name[name])
                copy_.name = f"{name}.{node.name or node.output[0]}.{k}"
                g.initializer.append(copy_)
                node.input[k] = copy_.name
            seen.add(name)


# one level of an 8-bit image in network units, from the one input normalisation
GREY_LEVEL = float(normalise(torch.tensor(1.0)) - normalise(torch.tensor(0.0)))


def noise_floor(fp32: OnnxRuntime, reference: list[np.ndarray], heldout: list[np.ndarray],
                seed: int = 0) -> float:
    """Mean |alpha| moved by -1/0/+1 grey level of uniform input noise (see the module doc)."""
    rng = np.random.default_rng(seed)
    moved = []
    for x, ref in zip(heldout, reference):
        noisy = np.clip(x + GREY_LEVEL * rng.integers(-1, 2, x.shape), -1.0, 1.0)
        moved.append(float(np.abs(fp32(noisy.astype(np.float32)) - ref).mean()))
    return float(np.mean(moved))


def _deltas(reference: list[np.ndarray], int8: OnnxRuntime, heldout: list[np.ndarray]):
    diffs = [np.abs(int8(x) - ref) for x, ref in zip(heldout, reference)]
    return (float(np.mean([d.mean() for d in diffs])),
            float(np.percentile(np.concatenate([d.ravel() for d in diffs]), 99)))


def rank_sensitive_nodes(fp32: bytes, int8: bytes, x: np.ndarray,
                         kept_float: set[str] = frozenset()) -> list[str]:
    """Quantized nodes of `int8` (those not in `kept_float`), most harmful first: each scored
    by how much the relative error of its (quantized) output exceeds that of its inputs,
    both against the fp32 graph on input `x`: the error its own weights and output
    quantization add."""
    q, f = onnx.load_from_string(int8), onnx.load_from_string(fp32)
    produced = {o: n for n in q.graph.node for o in n.output}
    consumers: dict[str, list] = {}
    for n in q.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    float_names = {o for n in f.graph.node for o in n.output} | {i.name for i in f.graph.input}

    def origin(name: str) -> str:
        """The fp32 tensor a Q -> DQ chain carries."""
        node = produced.get(name)
        if node is not None and node.op_type == "DequantizeLinear":
            quant = produced.get(node.input[0])
            if quant is not None and quant.op_type == "QuantizeLinear":
                return quant.input[0]
        return name

    def seen(name: str) -> str:
        """What consumers see of a node output: its DQ'd copy when it is quantized."""
        for c in consumers.get(name, []):
            if c.op_type == "QuantizeLinear":
                dq = next((d for d in consumers.get(c.output[0], [])
                           if d.op_type == "DequantizeLinear"), None)
                if dq is not None:
                    return dq.output[0]
        return name

    candidates = []
    for node in q.graph.node:
        if node.op_type in QDQ_OPS or node.name in kept_float or not node.output \
                or node.output[0] not in float_names:
            continue
        acts = [i for i in node.input if i and produced.get(i) is not None and
                produced[i].op_type == "DequantizeLinear" and origin(i) != i]
        if acts:  # a node ORT runs in int8: its activations come through Q -> DQ
            candidates.append((node, acts))
    q_names = {seen(n.output[0]) for n, _ in candidates} | {a for _, acts in candidates for a in acts}
    f_names = {n.output[0] for n, _ in candidates} | {origin(a) for _, acts in candidates for a in acts}
    qv, fv = _tensors(q, sorted(q_names), x), _tensors(f, sorted(f_names), x)

    def rel(qname: str, fname: str) -> float:
        a, b = qv[qname], fv[fname]
        return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-12))

    scores = [(rel(seen(n.output[0]), n.output[0]) - max(rel(a, origin(a)) for a in acts), n.name)
              for n, acts in candidates]
    return [name for _, name in sorted(scores, reverse=True)]


def _tensors(proto: onnx.ModelProto, names: list[str], x: np.ndarray) -> dict[str, np.ndarray]:
    """Values of the named tensors on input x, the graph run as written (no fusions)."""
    import onnxruntime as ort

    m = copy.deepcopy(proto)
    del m.graph.output[:]
    m.graph.output.extend(onnx.helper.make_empty_tensor_value_info(n) for n in names)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    session = ort.InferenceSession(m.SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    values = session.run(names, {proto.graph.input[0].name: x})
    return {n: v.astype(np.float32) for n, v in zip(names, values)}


class _KeptFloatSearch:
    """The fewest of the ranked sensitive nodes to keep float for the budget to hold: the
    count doubles (1, 2, 4, ...) until it holds, then is bisected down; each try
    re-quantizes and re-measures. Keeps the best try for the refusal message."""

    def __init__(self, quantizer: _Quantizer, reference, heldout, budget: float,
                 threads: int | None, progress: bool):
        self.quantizer, self.reference, self.heldout = quantizer, reference, heldout
        self.budget, self.threads, self.rounds = budget, threads, []
        self.bar = tqdm(desc="quantize", unit="try", disable=not progress)

    def _try(self, kept: list[str]):
        int8 = self.quantizer(kept)
        delta = _deltas(self.reference, OnnxRuntime(int8, threads=self.threads), self.heldout)
        self.rounds.append({"kept_float": len(kept), "delta_mean": delta[0], "delta_p99": delta[1]})
        self.bar.update()
        self.bar.set_postfix(kept_float=len(kept), delta=f"{delta[0]:.2e}")
        return kept, delta, int8

    def run(self):
        try:
            best = self._try([])
            if best[1][0] <= self.budget:
                return best
            ranking = rank_sensitive_nodes(self.quantizer.fp32, best[2], self.heldout[0],
                                           set(self.quantizer.unquantized))
            low, high = 0, None  # low fails; high (when found) passes
            while high is None and low < min(MAX_KEPT_FLOAT, len(ranking)):
                k = min(max(1, 2 * low), MAX_KEPT_FLOAT, len(ranking))
                result = self._try(ranking[:k])
                best = min(best, result, key=lambda r: r[1][0])
                low, high = (low, result) if result[1][0] <= self.budget else (k, None)
            if high is None:
                return best
            while len(high[0]) - low > 1:
                k = (low + len(high[0])) // 2
                result = self._try(ranking[:k])
                low, high = (low, result) if result[1][0] <= self.budget else (k, high)
            return high
        finally:
            self.bar.close()


def quantize_model(model: str | Path, calibration: str, out: str | Path, *,
                   count: int = DEFAULT_COUNT, holdout: int = DEFAULT_HOLDOUT,
                   method: str = DEFAULT_METHOD, budget: float = DEFAULT_BUDGET,
                   size: int = DEFAULT_SIZE, capability: Int8Capability | None = None,
                   threads: int | None = None, progress: bool = False) -> QuantizeReport:
    """Quantize `model` (checkpoint or fp32 `.onnx`) to an int8 QDQ `.onnx` at `out`, or
    refuse (UserError, nothing written) when the budget cannot be met. See the module doc."""
    start = time.perf_counter()
    _check_options(model, out, count, holdout, method, budget, size)
    capability = capability or int8_capability()
    fp32, meta = fp32_graph(model)
    reference_rt = OnnxRuntime(fp32, threads=threads)
    matter = Matter(reference_rt, ref=size)
    calib, heldout, digest = _images(calibration, count, holdout, matter, progress)
    reference = [reference_rt(x) for x in heldout]
    floor = noise_floor(reference_rt, reference, heldout)
    with tempfile.TemporaryDirectory(prefix="modnet-int8-") as tmp:
        quantizer = _Quantizer(fp32, calib, method, capability.reduce_range, Path(tmp))
        search = _KeptFloatSearch(quantizer, reference, heldout, budget, threads, progress)
        kept, delta, int8 = search.run()
    rounds = search.rounds
    if delta[0] > budget:
        raise BudgetError(f"int8 cannot meet --budget {budget:g}: the best mean |delta alpha| "
                        f"reached is {delta[0]:.3g} (with {len(kept)} nodes kept float, at "
                        f"{size}x{size} on {holdout} held-out images; 1 grey level of input "
                        f"noise moves the fp32 matte by {floor:.3g}); nothing written")
    proto = onnx.load_from_string(int8)
    float_ops = sorted({n.op_type for n in proto.graph.node if n.name in quantizer.always_float})
    report = QuantizeReport(
        out=str(out), method=method, size=size, count=count, holdout=holdout, budget=budget,
        delta_mean=delta[0], delta_p99=delta[1], kept_float=kept, float_ops=float_ops,
        calibration=calibration, calibration_sha256=digest, capability=capability.as_dict(),
        nodes=_op_counts(proto), file_bytes=0, fp32_bytes=len(fp32), noise_floor=floor,
        rounds=rounds, summed_taps=quantizer.summed_taps)
    payload = _with_metadata(proto, meta, report)
    report.file_bytes = len(payload)
    write_atomic(out, lambda tmp: Path(tmp).write_bytes(payload))
    report.seconds = time.perf_counter() - start
    return report


def _check_options(model, out, count: int, holdout: int, method: str, budget: float,
                   size: int) -> None:
    if method not in METHODS:
        raise UserError(f"--method {method}: choose from {', '.join(METHODS)}")
    if count < 1 or holdout < 1:
        raise UserError(f"--count {count} / --holdout {holdout}: need at least 1 image each")
    if not budget > 0:
        raise UserError(f"--budget {budget}: must be a positive mean |delta alpha|")
    if size < MULTIPLE or size % MULTIPLE:
        raise UserError(f"--size {size}: must be a positive multiple of {MULTIPLE}")
    if Path(out).suffix.lower() != ".onnx":
        raise UserError(f"{out}: the output name must end in .onnx")
    if Path(out).resolve() == Path(model).resolve():
        raise UserError(f"{out}: is the input model; choose another --out")


def _op_counts(proto: onnx.ModelProto) -> dict[str, int]:
    counts: dict[str, int] = {}
    for n in proto.graph.node:
        counts[n.op_type] = counts.get(n.op_type, 0) + 1
    return dict(sorted(counts.items()))


def _with_metadata(proto: onnx.ModelProto, meta: dict[str, str], report: QuantizeReport) -> bytes:
    meta = {**meta, "precision": "int8",
            "int8_scheme": "QDQ; int8 weights per output channel"
                           f"{' (7-bit range)' if report.capability['reduce_range'] else ''}, "
                           "uint8 activations",
            "int8_method": report.method, "int8_size": str(report.size),
            "int8_calibration": f"{report.calibration} (first {report.count} images)",
            "int8_calibration_sha256": report.calibration_sha256,
            "int8_kept_float": json.dumps(report.kept_float),
            "int8_float_ops": json.dumps(report.float_ops),
            "int8_float_summed_taps": json.dumps(report.summed_taps),
            "int8_delta_mean": f"{report.delta_mean:.6g}", "int8_delta_p99": f"{report.delta_p99:.6g}",
            "int8_fp32_noise_floor": f"{report.noise_floor:.6g}",
            "int8_budget": f"{report.budget:g}", "int8_holdout": str(report.holdout),
            "int8_cpu": report.capability["description"]}
    del proto.metadata_props[:]
    onnx.helper.set_model_props(proto, meta)
    proto.producer_name = "modnet-prune"
    return proto.SerializeToString()
