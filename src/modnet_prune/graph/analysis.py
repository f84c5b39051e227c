"""`channel_graph(model, *inputs)`: trace with torch.fx, propagate channel labels, build groups."""
from __future__ import annotations

import inspect

import torch
from torch import fx, nn

from ..errors import UserError
from .groups import ChannelGraph, build_groups
from .propagate import ChannelInterpreter
from .kinds import kind_of
from .rules import rule_for


class _Tracer(fx.Tracer):
    """torch.nn layers are leaves (the default), and so is every layer of a registered kind."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return kind_of(m) is not None or super().is_leaf_module(m, qualname)


def trace(model: nn.Module, concrete_args: dict | None = None) -> fx.GraphModule:
    try:
        graph = _Tracer().trace(model, concrete_args=concrete_args)
    except Exception as e:  # fx raises TraceError, TypeError, ... on data-dependent code
        raise UserError(f"{type(model).__name__} cannot be traced by torch.fx: "
                        f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from e
    return fx.GraphModule(model, graph)


@torch.no_grad()
def channel_graph(model: nn.Module, *inputs: torch.Tensor,
            concrete_args: dict | None = None) -> ChannelGraph:
    """Channel groups of `model`, found by running its fx graph once on `inputs`.

    `concrete_args` fixes Python arguments of `forward` (e.g. {"inference": False}); give
    the values that run every branch you want pruned consistently. Modules shared under
    several names are reported under their first name in `named_modules()`.
    """
    gm = trace(model, concrete_args)
    names = {id(m): name for name, m in model.named_modules()}
    interpreter = ChannelInterpreter(gm, names, rule_for)
    args = _placeholder_values(model, gm, inputs, concrete_args or {})
    was_training = model.training
    model.eval()  # never update BatchNorm statistics while analysing
    try:
        interpreter.run(*args)
    finally:
        model.train(was_training)
    return build_groups(interpreter.state)


def _placeholder_values(model: nn.Module, gm: fx.GraphModule, inputs: tuple,
                        concrete: dict) -> list:
    """One value per placeholder: fx renames them (inference -> inference_1), so they are
    matched to `forward`'s parameters by position."""
    params = list(inspect.signature(model.forward).parameters)
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    values, pending = [], list(inputs)
    for param, node in zip(params, placeholders):
        if param in concrete:
            values.append(concrete[param])
        elif pending:
            values.append(pending.pop(0))
        elif node.args:
            values.append(node.args[0])  # the default value of that argument
        else:
            raise UserError(f"channel graph: no input given for argument `{node.target}`")
    return values
