"""Predicted latency on one deployment target, as a function of the kept widths.

On a CPU runtime a conv's time is not proportional to its multiply-adds: thin convs at high
resolution, norms, resizes and concats are priced by the memory they touch. The model is

    ms = constant + sum over MAC-counting layers L (conv, linear) of
         a[kind L] * MACs(L) + b[kind L] * output elements(L) + c[kind L] * input elements(L)

with kinds dense (k x k), pointwise (1 x 1), depthwise and linear. The element terms stand for
everything that runs on a layer's input and output tensors (norms, activations, the resizes
and concats that feed it, layout changes). The coefficients are fitted to whole-model timings
of random-width prunes (`LatencyModel.fit`; the measuring lives in `measure.latency`, above
this layer); `LatencyCost` is the currency `allocate.by_cost` spends, with the interface of
`graph.macs.MacModel` (`full`, `total(removed)`, `saving(removed, group, more)`).
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn

from ..errors import UserError
from ..graph import ChannelGraph, kind_of
from ..graph.cost import run_with_hooks
from ..graph.macs import lost_widths

KINDS = ("dense", "pointwise", "depthwise", "linear")
TERMS = ("macs", "out", "in")
FEATURES = tuple(f"{kind}.{term}" for kind in KINDS for term in TERMS) + ("constant",)
FORMAT = 4  # bump when the features or the measuring change: older caches are rebuilt


@dataclass(frozen=True)
class Target:
    """What a latency model describes: one runtime, precision, exported graph and thread
    count on one CPU model, at one input size (batch 1)."""

    runtime: str
    version: str
    precision: str
    threads: int
    size: tuple[int, int]
    cpu: str
    graph: str = "fused"          # which exported graph runs (deploy.onnx_export's `graph`)
    revision: int = 0             # of the exported graphs (deploy.onnx_export.GRAPH_REVISION)

    def label(self) -> str:
        return (f"{self.runtime} {self.version} {self.precision}, {self.graph} graph, "
                f"{self.threads} thread(s), {self.size[0]}x{self.size[1]}, {self.cpu}")


@dataclass(frozen=True)
class LayerShape:
    """A MAC-counting layer's cost terms at full width (summed over its calls, batch 1)."""

    kind: str                       # one of KINDS
    macs: int
    out_elements: int
    in_elements: int
    widths: dict[str, int]          # role ("in", "out") -> channels
    macs_scale_with: tuple[str, ...]  # the roles the MACs are proportional to


def latency_kind(module: nn.Module) -> str:
    """Which coefficients price `module`: linear, depthwise, pointwise (1x1) or dense (any
    other MAC-counting layer, priced like a k x k conv)."""
    if isinstance(module, nn.Linear):
        return "linear"
    if isinstance(module, nn.Conv2d):
        if 1 < module.groups == module.in_channels:
            return "depthwise"
        if tuple(module.kernel_size) == (1, 1):
            return "pointwise"
    return "dense"


@torch.no_grad()
def layer_shapes(model: nn.Module, *inputs, **kwargs) -> dict[str, LayerShape]:
    """Cost terms of every MAC-counting layer (its kind counts MACs: conv, linear, ...)
    that runs in `model(*inputs, **kwargs)`."""
    kinds = {m: kind_of(m) for _, m in model.named_modules()}
    names = {m: n for n, m in model.named_modules() if kinds[m] and kinds[m].macs}
    seen: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])

    def hook(module, args, out):
        row = seen[names[module]]
        row[0] += kinds[module].macs(module, out)
        row[1] += out[0].numel()
        row[2] += args[0][0].numel()

    run_with_hooks(model, names, hook, *inputs, **kwargs)
    return {name: LayerShape(latency_kind(m), *seen[name], _widths(m, *seen[name][1:]),
                             tuple(kinds[m].macs_scale_with(m)))
            for m, name in names.items() if name in seen}


def _widths(module: nn.Module, out_elements: int, in_elements: int) -> dict[str, int]:
    """Channels of the layer's output and input (dim 1, or the last dim of a linear's)."""
    if isinstance(module, nn.Linear):
        return {"out": module.out_features, "in": module.in_features}
    weight = module.weight
    return {"out": weight.shape[0], "in": weight.shape[1] * getattr(module, "groups", 1)}


def features(shapes: Mapping[str, LayerShape],
             lost: Mapping[tuple[str, str], int] | None = None,
             layers: Iterable[str] | None = None) -> np.ndarray:
    """The feature vector (order FEATURES) of `layers` (default: all) with
    `lost[(layer, "in"|"out")]` channels removed from each; the constant term is 1."""
    lost = lost or {}
    x = np.zeros(len(FEATURES))
    x[-1] = 1.0
    for name in shapes if layers is None else layers:
        s = shapes[name]
        kept = {role: (w - lost.get((name, role), 0)) / w for role, w in s.widths.items()}
        macs = s.macs * float(np.prod([kept[role] for role in s.macs_scale_with]))
        base = KINDS.index(s.kind) * len(TERMS)
        x[base:base + 3] += (macs, s.out_elements * kept["out"], s.in_elements * kept["in"])
    return x


@dataclass
class LatencyModel:
    """Fitted coefficients (ms per unit of each feature) of one target, and their error on
    held-out prunes (`error`: filled by whoever measured them)."""

    target: Target
    coefficients: dict[str, float]
    error: dict = field(default_factory=dict)
    samples: int = 0                      # timed models the fit used
    format: int = FORMAT
    # the machine while it was measured: CPUs other processes kept busy on average, CPU count
    load: dict = field(default_factory=dict)

    def predict(self, x: np.ndarray) -> float:
        return float(np.dot([self.coefficients[f] for f in FEATURES], x))

    def predict_model(self, model: nn.Module, *inputs, **kwargs) -> float:
        """Predicted milliseconds of `model` on the target; `inputs` at the target's size."""
        return self.predict(features(layer_shapes(model, *inputs, **kwargs)))

    @classmethod
    def fit(cls, target: Target, xs: Sequence[np.ndarray], ms: Sequence[float]) -> "LatencyModel":
        """Non-negative least squares on relative errors (each timing weighs by 1/ms), so a
        small student counts as much as the teacher; no coefficient can make a removed channel
        cost time."""
        from scipy.optimize import nnls

        a, y = np.asarray(xs, dtype=np.float64), np.asarray(ms, dtype=np.float64)
        scale = a.max(axis=0)
        scale[scale == 0] = 1.0                      # features no layer has: coefficient 0
        w = 1.0 / y
        solution, _ = nnls(a / scale * w[:, None], y * w)
        return cls(target, dict(zip(FEATURES, (solution / scale).tolist())), samples=len(ms))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping) -> "LatencyModel":
        if d.get("format") != FORMAT or set(d.get("coefficients", ())) != set(FEATURES):
            raise UserError("latency model of another format: rebuild it (modnet-prune profile "
                            "--rebuild)")
        t = dict(d["target"])
        t["size"] = tuple(t["size"])
        return cls(Target(**t), dict(d["coefficients"]), dict(d.get("error", {})),
                   int(d.get("samples", 0)), load=dict(d.get("load", {})))


class LatencyCost:
    """Predicted milliseconds as a function of how many classes each group loses."""

    def __init__(self, graph: ChannelGraph, shapes: Mapping[str, LayerShape],
                 cost: LatencyModel):
        self.shapes, self.cost = dict(shapes), cost
        self.touches: dict[str, list[tuple[str, str, int]]] = defaultdict(list)
        for group in graph.groups:
            for m in group.members:
                if m.module in self.shapes and m.role in ("in", "out"):
                    per_class = len(m.positions[0]) if m.positions else 0
                    self.touches[group.name].append((m.module, m.role, per_class))
        self.full = self.total({})

    def _lost(self, removed: Mapping[str, int]) -> dict[tuple[str, str], int]:
        return lost_widths(self.touches, removed)

    def total(self, removed: Mapping[str, int]) -> float:
        return self.cost.predict(features(self.shapes, self._lost(removed)))

    def saving(self, removed: Mapping[str, int], group: str, more: int) -> float:
        """Milliseconds saved by removing `more` further classes of `group`: only the layers
        it touches change (the model is a sum over layers; the constants cancel)."""
        after = dict(removed)
        after[group] = after.get(group, 0) + more
        layers = {module for module, _, _ in self.touches[group]}
        now = features(self.shapes, self._lost(removed), layers)
        return self.cost.predict(now - features(self.shapes, self._lost(after), layers))
