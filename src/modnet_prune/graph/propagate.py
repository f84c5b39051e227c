"""Channel labels flowing through a traced model.

Every position of every tracked channel axis carries a label (an int). Labels start at
*sources* (the output channels of a Conv2d/Linear, a graph input, a tensor nobody could
explain) and travel through ops following `rules`. Two labels are united when the
positions they name must be removed together (a residual add, a depthwise conv). Layers
that own per-channel tensors are recorded as *members*: which label sits at each position
of their channel dimension. `groups.build_groups` turns this state into channel groups.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import fx, nn


class Unsupported(Exception):
    """A rule met a case it cannot map exactly; the op's channels become unprunable."""


@dataclass(frozen=True)
class Channels:
    """The tracked channel axis of one tensor: `labels[i]` names position i along `dim`."""

    dim: int
    labels: tuple[int, ...]


@dataclass(frozen=True)
class Source:
    name: str                 # module path, "input:img", "node:zeros_1"
    blocked: str | None       # why its channels can never be removed, if so


@dataclass
class MemberRecord:
    kind: str                 # the layer's kind name (conv, batchnorm, ...; see kinds.py)
    labels: tuple[int, ...]   # label at each position of the member's channel dimension
    splits: tuple[int, ...] = ()  # where parts begin that must each keep a channel


@dataclass
class LabelState:
    """Union-find over labels, plus everything the rules recorded about them."""

    parent: list[int] = field(default_factory=list)
    source_of: list[int] = field(default_factory=list)
    sources: list[Source] = field(default_factory=list)
    members: dict[tuple[str, str], MemberRecord] = field(default_factory=dict)
    produced: dict[str, tuple[int, ...]] = field(default_factory=dict)
    blocked: list[tuple[int, str]] = field(default_factory=list)

    def new(self, count: int, name: str, blocked: str | None = None) -> tuple[int, ...]:
        self.sources.append(Source(name, blocked))
        first = len(self.parent)
        self.parent.extend(range(first, first + count))
        self.source_of.extend([len(self.sources) - 1] * count)
        return tuple(range(first, first + count))

    def find(self, label: int) -> int:
        root = label
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[label] != root:  # path compression
            self.parent[label], label = root, self.parent[label]
        return root

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:  # the smaller label stays root, so a class is named by its first label
            self.parent[max(ra, rb)] = min(ra, rb)

    def unite(self, xs: tuple[int, ...], ys: tuple[int, ...]) -> None:
        for x, y in zip(xs, ys, strict=True):
            self.union(x, y)

    def block(self, labels: tuple[int, ...], reason: str) -> None:
        self.blocked.extend((label, reason) for label in labels)

    def produce(self, module: str, count: int) -> tuple[int, ...]:
        """Output labels of a layer; a layer called twice yields the same channels."""
        if module not in self.produced:
            self.produced[module] = self.new(count, module)
        return self.produced[module]

    def member(self, module: str, role: str, kind: str, labels: tuple[int, ...],
               splits: tuple[int, ...] = ()) -> None:
        """Record that `module` owns a per-channel dimension (`role`: in, out or norm).
        `splits`: positions where a part begins that must keep one channel (IBNorm: its
        InstanceNorm half), so that no pruning empties a part."""
        key = (module, role)
        if key in self.members:  # called again: the same weights see both inputs
            self.unite(self.members[key].labels, labels)
        else:
            self.members[key] = MemberRecord(kind, labels, splits)


def _flatten_nodes(value) -> list:
    out: list = []
    fx.node.map_aggregate(value, lambda v: out.append(v) if isinstance(v, fx.Node) else None)
    return out


@dataclass
class Call:
    """One op as the rules see it: the node, its concrete inputs and output."""

    node: fx.Node
    args: tuple
    kwargs: dict
    out: object
    module: nn.Module | None = None
    name: str | None = None  # canonical module path for call_module

    def value(self, index: int, key: str | None = None, default=None):
        if index < len(self.args):
            return self.args[index]
        return self.kwargs.get(key, default) if key else default

    def raw(self, index: int, key: str | None = None):
        if index < len(self.node.args):
            return self.node.args[index]
        return self.node.kwargs.get(key) if key else None


class ChannelInterpreter(fx.Interpreter):
    """Runs the traced model once and applies a channel rule to every node."""

    def __init__(self, gm: fx.GraphModule, names: dict[int, str], rule_for):
        super().__init__(gm)
        self.state = LabelState()
        self.channels: dict[fx.Node, Channels | None] = {}
        self.names, self.rule_for = names, rule_for

    # --- what rules use -----------------------------------------------------------------
    def info(self, arg) -> Channels | None:
        return self.channels.get(arg) if isinstance(arg, fx.Node) else None

    def require(self, arg, value: torch.Tensor, dim: int) -> Channels:
        """Channels of `arg` on `dim`; a tensor nobody labelled gets unprunable labels."""
        dim %= value.dim()
        info = self.info(arg)
        if info is None:
            name = f"node:{arg.name}" if isinstance(arg, fx.Node) else "constant"
            labels = self.state.new(value.shape[dim], name, f"unlabelled tensor {name}")
            info = Channels(dim, labels)
            if isinstance(arg, fx.Node):
                self.channels[arg] = info
        if info.dim != dim:
            raise Unsupported(f"channels on dim {info.dim}, op works on dim {dim}")
        return info

    # --- node handling ------------------------------------------------------------------
    def run_node(self, node: fx.Node):
        value = super().run_node(node)
        if node.op == "placeholder":
            self.channels[node] = self._input(node, value)
        elif node.op == "output":
            self._block_outputs(node)
        elif node.op.startswith("call_"):
            self.channels[node] = self._apply(node, value)
        return value

    def _input(self, node: fx.Node, value) -> Channels | None:
        if not isinstance(value, torch.Tensor) or value.dim() == 0:
            return None
        dim = 1 if value.dim() > 1 else 0
        name = f"input:{node.target}"
        return Channels(dim, self.state.new(value.shape[dim], name, f"graph input `{node.target}`"))

    def _block_outputs(self, node: fx.Node) -> None:
        for i, arg in enumerate(_flatten_nodes(node.args)):
            info = self.info(arg)
            if info is not None:
                self.state.block(info.labels, f"reaches graph output #{i}")

    def _apply(self, node: fx.Node, out) -> Channels | None:
        args, kwargs = self.fetch_args_kwargs_from_env(node)
        call = Call(node, tuple(args), dict(kwargs), out)
        if node.op == "call_module":
            call.module = self.fetch_attr(node.target)
            call.name = self.names.get(id(call.module), node.target)
        rule = self.rule_for(call)
        touched = [i for i in map(self.info, _flatten_nodes((node.args, node.kwargs))) if i]
        if rule is None:
            return self._unknown(call, touched, "no rule for this op") if touched else None
        try:
            return rule(self, call)
        except Unsupported as e:
            return self._unknown(call, touched, str(e))

    def _unknown(self, call: Call, touched: list[Channels], why: str) -> None:
        reason = f"{describe(call)} at node `{call.node.name}`: {why}"
        for info in touched:
            self.state.block(info.labels, reason)
        return None


def describe(call: Call) -> str:
    node = call.node
    if node.op == "call_module":
        return f"{type(call.module).__name__} `{call.name}`"
    if node.op == "call_method":
        return f"Tensor.{node.target}"
    module = getattr(node.target, "__module__", None) or "builtins"
    return f"{module}.{getattr(node.target, '__name__', node.target)}"
