"""The layer kinds of torch.nn: Conv2d, Linear, BatchNorm, InstanceNorm, and the layers that
own no channels (activations, pooling, resizing, flatten). Each kind is one section:
its tracing rule, slicing, zeroing, owned weights and MACs."""
from __future__ import annotations

import torch
from torch import nn

from .kinds import LayerKind, Removed, keep_index, register, slice_tensor
from .propagate import Call, Channels
from .rules import require_batched, reshape, same, spatial


# --- what conv and linear share: output rows of `weight` and `bias` ------------------------
def _cut_outputs(layer: nn.Module, width: str, removed: set[int]) -> None:
    """Slice output rows away; `width` names the attribute that counts them."""
    keep = keep_index(getattr(layer, width), removed)
    slice_tensor(layer, "weight", keep)
    slice_tensor(layer, "bias", keep)
    setattr(layer, width, len(keep))


def _zero_outputs(layer: nn.Module, removed: Removed) -> None:
    rows = sorted(removed.get("out", ()))
    layer.weight[rows] = 0
    if layer.bias is not None:
        layer.bias[rows] = 0


# ... and, when dense (Linear, a Conv2d of one group), input p is column p of `weight`
def _shrink_dense(layer: nn.Module, removed: Removed, in_width: str, out_width: str) -> None:
    rm_in = removed.get("in", set())
    slice_tensor(layer, "weight", keep_index(getattr(layer, in_width), rm_in), dim=1)
    _cut_outputs(layer, out_width, removed.get("out", set()))
    setattr(layer, in_width, getattr(layer, in_width) - len(rm_in))


def _zero_dense(layer: nn.Module, removed: Removed) -> None:
    _zero_outputs(layer, removed)
    layer.weight[:, sorted(removed.get("in", ()))] = 0


# --- Conv2d ---------------------------------------------------------------------------
def conv2d_rule(ctx, call: Call) -> Channels:
    conv: nn.Conv2d = call.module
    require_batched(call, (4,))
    x = ctx.require(call.raw(0), call.value(0), dim=1)
    y = ctx.state.produce(call.name, conv.out_channels)
    ctx.state.member(call.name, "in", "conv", x.labels)
    ctx.state.member(call.name, "out", "conv", y)
    if conv.groups > 1:
        _couple_groups(ctx.state, conv, x.labels, y)
    return Channels(1, y)


def _couple_groups(state, conv: nn.Conv2d, x: tuple[int, ...], y: tuple[int, ...]) -> None:
    """Depthwise: input j and its outputs go together. Grouped: position r of every group
    goes together on each side, so `groups` stays and every group keeps the same width."""
    g = conv.groups
    if g == conv.in_channels:
        m = conv.out_channels // g
        for j in range(g):
            for t in range(m):
                state.union(x[j], y[j * m + t])
        return
    for side in (x, y):
        per = len(side) // g
        for r in range(per):
            for j in range(1, g):
                state.union(side[r], side[j * per + r])


def _is_depthwise(conv: nn.Conv2d) -> bool:
    return 1 < conv.groups == conv.in_channels


def shrink_conv2d(conv: nn.Conv2d, removed: Removed) -> None:
    g = conv.groups
    if g == 1:
        _shrink_dense(conv, removed, "in_channels", "out_channels")
        return
    rm_in = removed.get("in", set())
    if g == conv.in_channels:  # depthwise: input j and its outputs went together
        conv.groups = g - len(rm_in)
    else:  # grouped: the same in-group offsets left every group
        per = conv.in_channels // g
        slice_tensor(conv, "weight", keep_index(per, {p % per for p in rm_in}), dim=1)
    _cut_outputs(conv, "out_channels", removed.get("out", set()))
    conv.in_channels -= len(rm_in)


def zero_conv2d(conv: nn.Conv2d, removed: Removed) -> None:
    g = conv.groups
    if g == 1:
        _zero_dense(conv, removed)
        return
    _zero_outputs(conv, removed)
    if g != conv.in_channels:  # grouped: input p feeds only the outputs of its group
        per_in, per_out = conv.in_channels // g, conv.out_channels // g
        for p in removed.get("in", ()):
            j, r = divmod(p, per_in)
            conv.weight[j * per_out:(j + 1) * per_out, r] = 0
    # depthwise: an input channel's only weights are its output rows, zeroed above


def owned_conv2d(conv: nn.Conv2d, role: str, weight: torch.Tensor | None) -> torch.Tensor:
    """Output p: its filter. Input p: the weights that read it (none for depthwise: its
    weights are the output rows of the same conv)."""
    weight = conv.weight if weight is None else weight
    if role == "out":
        return weight.reshape(conv.out_channels, -1)
    g = conv.groups
    if g == 1:
        return weight.transpose(0, 1).reshape(conv.in_channels, -1)
    if g == conv.in_channels:
        return weight.new_zeros(conv.in_channels, 0)
    per_in, per_out = conv.in_channels // g, conv.out_channels // g
    return torch.stack([weight[(p // per_in) * per_out:(p // per_in + 1) * per_out, p % per_in]
                        for p in range(conv.in_channels)]).reshape(conv.in_channels, -1)


def conv2d_macs(conv: nn.Conv2d, out: torch.Tensor) -> int:
    k = conv.kernel_size[0] * conv.kernel_size[1]
    return out[0].numel() * (conv.in_channels // conv.groups) * k


register(nn.Conv2d, LayerKind(
    "conv", conv2d_rule, ("in", "out"), shrink_conv2d, zero_conv2d, owned_conv2d, conv2d_macs,
    macs_scale_with=lambda conv: ("out",) if _is_depthwise(conv) else ("in", "out")))


# --- Linear ---------------------------------------------------------------------------
def linear_rule(ctx, call: Call) -> Channels:
    x = ctx.require(call.raw(0), call.value(0), dim=-1)
    y = ctx.state.produce(call.name, call.module.out_features)
    ctx.state.member(call.name, "in", "linear", x.labels)
    ctx.state.member(call.name, "out", "linear", y)
    return Channels(call.out.dim() - 1, y)


def shrink_linear(fc: nn.Linear, removed: Removed) -> None:
    _shrink_dense(fc, removed, "in_features", "out_features")


def owned_linear(fc: nn.Linear, role: str, weight: torch.Tensor | None) -> torch.Tensor:
    weight = fc.weight if weight is None else weight
    return weight if role == "out" else weight.transpose(0, 1)


register(nn.Linear, LayerKind(
    "linear", linear_rule, ("in", "out"), shrink_linear, _zero_dense, owned_linear,
    macs=lambda fc, out: out[0].numel() * fc.in_features,
    macs_scale_with=lambda fc: ("in", "out")))


# --- per-channel norms ----------------------------------------------------------------
def norm_rule(kind: str, ndims=None, splits=None):
    """The rule of a norm over dim 1: records a "norm" member and keeps the channels.

    `ndims(module)`: the input dims it accepts (default: any); `splits(module)`: positions
    where a part begins that must keep one channel (IBNorm: where InstanceNorm starts)."""
    def rule(ctx, call: Call) -> Channels:
        if ndims is not None:
            require_batched(call, ndims(call.module))
        x = ctx.require(call.raw(0), call.value(0), dim=1)
        parts = tuple(splits(call.module)) if splits is not None else ()
        ctx.state.member(call.name, "norm", kind, x.labels, parts)
        return x
    return rule


def shrink_norm(norm: nn.Module, positions: set[int]) -> None:
    """Slice a BatchNorm/InstanceNorm: affine parameters, running statistics, width."""
    keep = keep_index(norm.num_features, positions)
    for name in ("weight", "bias", "running_mean", "running_var"):
        slice_tensor(norm, name, keep)
    norm.num_features = len(keep)


def zero_norm(norm: nn.Module, positions: set[int]) -> None:
    positions = sorted(positions)
    for name in ("weight", "bias"):
        if getattr(norm, name, None) is not None:
            getattr(norm, name)[positions] = 0


def norm_scales(norm: nn.Module) -> torch.Tensor:
    """Per-channel scale (gamma), 1 where the norm has no affine parameters."""
    return norm.weight.detach() if norm.weight is not None else torch.ones(norm.num_features)


def _norm_kind(name: str, ndims=None) -> LayerKind:
    return LayerKind(name, norm_rule(name, ndims), ("norm",),
                     shrink=lambda m, removed: shrink_norm(m, removed.get("norm", set())),
                     zero=lambda m, removed: zero_norm(m, removed.get("norm", set())),
                     owned=lambda m, role, weight: norm_scales(m)[:, None])


register(nn.modules.batchnorm._BatchNorm, _norm_kind("batchnorm"))
# InstanceNorm also accepts unbatched input, its channels then on dim 0: refuse that.
register(nn.modules.instancenorm._InstanceNorm,
         _norm_kind("instancenorm", ndims=lambda m: (m._get_no_batch_dim() + 1,)))


# --- layers that own no channels -------------------------------------------------------
_SAME = (nn.ReLU, nn.ReLU6, nn.Sigmoid, nn.Tanh, nn.GELU, nn.SiLU, nn.Hardswish, nn.Hardsigmoid,
         nn.LeakyReLU, nn.ELU, nn.Hardtanh, nn.Mish, nn.Identity, nn.Dropout, nn.Dropout2d)
_SPATIAL = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d,
            nn.Upsample, nn.UpsamplingBilinear2d, nn.UpsamplingNearest2d)
for _type in _SAME:
    register(_type, LayerKind("elementwise", same))
for _type in _SPATIAL:
    register(_type, LayerKind("spatial", spatial))
register(nn.Flatten, LayerKind("reshape", reshape))
