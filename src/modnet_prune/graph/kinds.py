"""The registry of layer kinds: everything the library knows about one type of layer.

A layer that owns channels (weights per input or output channel, per-channel scales) is
described once, by a `LayerKind` registered for its module type: how tracing maps its
channels (`rule`), how pruning removes positions (`shrink`) and how the exactness check
zeroes them (`zero`), what each position owns for importance scores (`owned`), and its
multiply-accumulates (`macs`). torch.nn's layers are registered in `torch_layers`;
any other layer, MODNet's IBNorm included, registers itself the same way:

    register(MyLayer, LayerKind("mylayer", rule=..., roles=("in", "out"), shrink=..., ...))

A registered module is a leaf of the fx trace. The lookup walks the module's type's MRO:
a subclass inherits its base's kind unless it overrides `forward` (it may compute anything).
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import nn

Removed = Mapping[str, set[int]]  # role ("in", "out", "norm") -> positions a layer loses
Rule = Callable  # (interpreter, Call) -> Channels | None; see rules.py


def _no_roles(module: nn.Module) -> tuple[str, ...]:
    return ()


@dataclass(frozen=True)
class LayerKind:
    """One type of layer. Only `rule` is needed for a layer that owns no channels.

    `roles`: the channel dimensions the layer owns: "out" (it produces channels: a group's
    source), "in" (it reads them through weights), "norm" (per-channel parameters).
    `shrink(module, removed)` slices the positions away in place; `zero(module, removed)`
    zeroes every parameter that reads or writes them. `owned(module, role, weight)` gives a
    (width, D) matrix, row p being what position p owns (a norm's scale, 1 where it has
    none); `weight` stands in for `module.weight` (e.g. gradient x weight). `macs(module,
    output)` counts one call's MACs at batch 1; `macs_scale_with(module)` names the roles
    whose widths those MACs are proportional to.
    """

    name: str                                        # Member.kind: conv, batchnorm, ...
    rule: Rule
    roles: tuple[str, ...] = ()
    shrink: Callable[[nn.Module, Removed], None] | None = None
    zero: Callable[[nn.Module, Removed], None] | None = None
    owned: Callable[[nn.Module, str, torch.Tensor | None], torch.Tensor] | None = None
    macs: Callable[[nn.Module, torch.Tensor], int] | None = None
    macs_scale_with: Callable[[nn.Module], tuple[str, ...]] = _no_roles


_KINDS: dict[type, LayerKind] = {}


def register(module_type: type[nn.Module], kind: LayerKind) -> LayerKind:
    """Describe `module_type` (and its subclasses that keep its `forward`) by `kind`."""
    if kind.roles and (kind.shrink is None or kind.zero is None or kind.owned is None):
        raise TypeError(f"{kind.name}: a layer that owns channels needs shrink, zero and owned")
    _KINDS[module_type] = kind
    return kind


def kind_of(module: nn.Module) -> LayerKind | None:
    """The registered kind of `module`, or None when no kind describes it."""
    forward = type(module).forward
    for base in type(module).__mro__:
        if base in _KINDS:
            return _KINDS[base] if base.forward is forward else None
    return None


# --- helpers for `shrink` and `zero` ------------------------------------------------------
def keep_index(size: int, removed: set[int]) -> torch.Tensor:
    """Positions 0..size-1 that stay, as an index tensor."""
    return torch.tensor([i for i in range(size) if i not in removed], dtype=torch.long)


def slice_tensor(module: nn.Module, name: str, keep: torch.Tensor, dim: int = 0) -> None:
    """Replace the parameter or buffer `name` (if any) by its `keep` entries along `dim`."""
    tensor = getattr(module, name, None)
    if tensor is None:
        return
    sliced = tensor.detach().index_select(dim, keep.to(tensor.device)).clone()
    if isinstance(tensor, nn.Parameter):
        sliced = nn.Parameter(sliced, requires_grad=tensor.requires_grad)
    setattr(module, name, sliced)
