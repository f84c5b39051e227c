"""How each op maps channels from its inputs to its output.

A rule takes the interpreter (`ctx`) and the `Call`, records members and unions in
`ctx.state`, and returns the output's `Channels` (None: the output has no tracked channel
axis). A rule that meets a case it cannot map exactly raises `Unsupported`; the op's
channels are then blocked, and the reason names the op. Ops without a rule are treated
the same way whenever they see a tracked channel: the analysis never guesses.

This module holds the rules of functions and tensor methods; a layer (module) gets its
rule from its registered kind (`kinds`; torch.nn's layers in `torch_layers`).
"""
from __future__ import annotations

import builtins
import math
import operator

import torch
import torch.nn.functional as F

from .kinds import kind_of
from .propagate import Call, Channels, Unsupported


def require_batched(call: Call, ndims: tuple[int, ...]) -> None:
    """Refuse an input whose number of dims is not in `ndims` (e.g. unbatched input)."""
    if call.value(0).dim() not in ndims:
        raise Unsupported(f"expects a batched input ({' or '.join(f'{n}-D' for n in ndims)})")


# --- ops that keep every channel where it is -----------------------------------------
def same(ctx, call: Call) -> Channels | None:
    """Element-wise unary ops: output shape equals input shape."""
    x = ctx.info(call.raw(0))
    if x is not None and tuple(call.out.shape) != tuple(call.value(0).shape):
        raise Unsupported("output shape differs from input shape")
    return x


def spatial(ctx, call: Call) -> Channels | None:
    """Pooling/resizing: only dims after the channel dim change."""
    x, src = ctx.info(call.raw(0)), call.value(0)
    if x is None:
        return None
    out = call.out
    if x.dim != 1 or src.dim() < 3 or out.dim() != src.dim() or out.shape[:2] != src.shape[:2]:
        raise Unsupported("expects (N, C, spatial...) with channels on dim 1")
    return x


def meta(ctx, call: Call) -> None:
    """size(), dim(), .shape: read shapes, touch no values."""
    return None


def elementwise(ctx, call: Call) -> Channels | None:
    """add/sub/mul/div with broadcasting: aligned channel positions are removed together."""
    out = call.out
    pairs = [(raw, val) for raw, val in zip(call.node.args, call.args)
             if isinstance(val, torch.Tensor)]
    found: Channels | None = None
    for raw, val in pairs:
        info = ctx.info(raw)
        if info is None or val.shape[info.dim] != out.shape[info.dim + out.dim() - val.dim()]:
            continue  # unlabelled, or broadcast along the channel dim: nothing to unite
        aligned = Channels(info.dim + out.dim() - val.dim(), info.labels)
        if found is None:
            found = aligned
        elif found.dim != aligned.dim:
            raise Unsupported("inputs carry channels on different dims")
        else:
            ctx.state.unite(found.labels, aligned.labels)
    if found is not None:
        _refuse_unlabelled(ctx, pairs, found, out)
    return found


def _refuse_unlabelled(ctx, pairs, found: Channels, out: torch.Tensor) -> None:
    for raw, val in pairs:
        d = found.dim - (out.dim() - val.dim())
        if ctx.info(raw) is None and d >= 0 and val.shape[d] > 1:
            name = raw.name if hasattr(raw, "name") else "a constant"
            raise Unsupported(f"`{name}` (not a layer) mixes into the channels element-wise")


def cat(ctx, call: Call) -> Channels | None:
    tensors, raws = call.value(0, "tensors"), call.raw(0, "tensors")
    dim = call.value(1, "dim", 0) % call.out.dim()
    labelled = [ctx.info(r) for r in raws if ctx.info(r) is not None]
    if not labelled:
        return None
    if all(info.dim == dim for info in labelled):  # concatenation along channels: offsets
        parts = [ctx.require(r, t, dim).labels for r, t in zip(raws, tensors)]
        return Channels(dim, sum(parts, ()))
    first = labelled[0]
    if any(ctx.info(r) is None or ctx.info(r).dim != first.dim for r in raws):
        raise Unsupported("concatenation mixes tensors with channels on different dims")
    for info in labelled[1:]:  # along another dim: same positions must go together
        ctx.state.unite(first.labels, info.labels)
    return first


# --- ops that move the channel dim ---------------------------------------------------
def reshape(ctx, call: Call) -> Channels | None:
    """flatten/view/reshape/squeeze/unsqueeze, mapped from input and output shapes."""
    x = ctx.info(call.raw(0))
    if x is None:
        return None
    result = remap(x, tuple(call.value(0).shape), tuple(call.out.shape))
    if call.node.target in ("view", "reshape", torch.reshape):
        _refuse_literal_width(call, result.dim)
    return result


def remap(x: Channels, src: tuple[int, ...], dst: tuple[int, ...]) -> Channels:
    """The channel axis after a reshape: kept, or merged with neighbouring dims (flatten)."""
    before = [math.prod(src[:i]) for i in range(len(src) + 1)]
    after = [math.prod(dst[:j]) for j in range(len(dst) + 1)]
    d, spans = x.dim, set()
    for j in range(len(dst)):
        starts = [a for a in range(d + 1) if before[a] == after[j]]
        ends = [b for b in range(d + 1, len(src) + 1) if before[b] == after[j + 1]]
        if starts and ends:
            spans.add((j, max(starts), min(ends)))
    if len({j for j, _, _ in spans}) != 1:
        raise Unsupported("reshape splits the channel dim or is ambiguous about it")
    j, a, b = spans.pop()
    inner = math.prod(src[d + 1:b])
    width = math.prod(src[a:b])
    return Channels(j, tuple(x.labels[(p // inner) % src[d]] for p in range(width)))


def _refuse_literal_width(call: Call, dim: int) -> None:
    shape = call.node.args[1:]
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = shape[0]
    if dim < len(shape) and isinstance(shape[dim], int) and shape[dim] != -1:
        raise Unsupported(f"hard-coded channel count {shape[dim]} in the target shape")


def reduce(ctx, call: Call) -> Channels | None:
    """mean/sum/amax over dims that are not the channel dim."""
    x = ctx.info(call.raw(0))
    if x is None:
        return None
    ndim = call.value(0).dim()
    dims = call.value(1, "dim")
    if dims is None:
        raise Unsupported("reduces over every dim, channels included")
    dims = {d % ndim for d in ((dims,) if isinstance(dims, int) else dims)}
    if x.dim in dims:
        raise Unsupported("reduces over the channel dim")
    keep = call.value(2, "keepdim", False)
    return Channels(x.dim if keep else x.dim - sum(d < x.dim for d in dims), x.labels)


def getitem(ctx, call: Call) -> Channels | None:
    """Basic indexing that leaves the channel dim whole (x[:, :, 2:], x[None])."""
    x = ctx.info(call.raw(0))
    if x is None:
        return None
    src = call.value(0)
    if not isinstance(src, torch.Tensor):
        raise Unsupported("indexes a container of channel tensors")
    index = call.value(1)
    index = index if isinstance(index, tuple) else (index,)
    dim_in = dim_out = 0
    for item in _expand_ellipsis(index, src.dim()):
        if item is None:
            dim_out += 1
            continue
        if dim_in == x.dim:
            if item != slice(None):
                raise Unsupported("slices or indexes the channel dim")
            return Channels(dim_out, x.labels)
        if not isinstance(item, (int, slice)):
            raise Unsupported("advanced indexing")
        dim_in, dim_out = dim_in + 1, dim_out + isinstance(item, slice)
    return Channels(dim_out + x.dim - dim_in, x.labels)


def _expand_ellipsis(index: tuple, ndim: int) -> tuple:
    if Ellipsis not in index:
        return index
    used = sum(item is not None and item is not Ellipsis for item in index)
    at = index.index(Ellipsis)
    return index[:at] + (slice(None),) * (ndim - used) + index[at + 1:]


# --- lookup ----------------------------------------------------------------------------
SAME_FUNCTIONS = {F.relu, F.relu6, F.gelu, F.silu, F.hardswish, F.hardsigmoid, F.leaky_relu,
                  F.elu, F.hardtanh, F.mish, F.dropout, F.dropout2d, torch.relu, torch.sigmoid,
                  torch.tanh, torch.abs, torch.neg, torch.exp, F.sigmoid, F.tanh, operator.neg}
SPATIAL_FUNCTIONS = {F.interpolate, F.avg_pool2d, F.max_pool2d, F.adaptive_avg_pool2d,
                     F.adaptive_max_pool2d}
ELEMENTWISE_FUNCTIONS = {operator.add, operator.sub, operator.mul, operator.truediv,
                         operator.iadd, operator.isub, operator.imul, operator.itruediv,
                         torch.add, torch.sub, torch.mul, torch.div}
FUNCTIONS = {**dict.fromkeys(SAME_FUNCTIONS, same), **dict.fromkeys(SPATIAL_FUNCTIONS, spatial),
             **dict.fromkeys(ELEMENTWISE_FUNCTIONS, elementwise),
             torch.cat: cat, torch.concat: cat, torch.concatenate: cat,
             torch.flatten: reshape, torch.reshape: reshape, torch.squeeze: reshape,
             torch.unsqueeze: reshape, torch.mean: reduce, torch.sum: reduce, torch.amax: reduce,
             operator.getitem: getitem}
METHODS = {**dict.fromkeys(("relu", "relu_", "sigmoid", "sigmoid_", "tanh", "contiguous",
                            "clone", "detach", "float", "abs", "neg", "exp"), same),
           **dict.fromkeys(("add", "add_", "sub", "sub_", "mul", "mul_", "div", "div_"),
                           elementwise),
           **dict.fromkeys(("flatten", "view", "reshape", "squeeze", "unsqueeze"), reshape),
           **dict.fromkeys(("mean", "sum", "amax"), reduce),
           **dict.fromkeys(("size", "dim", "ndimension"), meta)}
SHAPE_ATTRIBUTES = {"shape", "dtype", "device", "ndim"}


def rule_for(call: Call):
    """The rule for one op, or None when no rule knows it."""
    node = call.node
    if node.op == "call_module":
        kind = kind_of(call.module)
        return kind.rule if kind is not None else None
    if node.op == "call_method":
        return METHODS.get(node.target)
    if node.target is builtins.getattr and call.value(1) in SHAPE_ATTRIBUTES:
        return meta
    return FUNCTIONS.get(node.target)
