"""`prune(model, ...)`: analyse, score, allocate, cut, (verify); and `describe_groups`."""
from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..checks import KEEP_FRACTION, RATIO
from ..errors import UserError
from ..graph import ChannelGraph, channel_graph
from ..graph.cost import count_params, layer_costs
from ..graph.macs import MacModel
from . import allocate
from .harness import Harness, InputFn, harness_for
from .importance import CRITERIA, importance
from .latency import LatencyCost, LatencyModel, layer_shapes
from .surgery import shrink
from .verify import check_exact

ALLOCATIONS = ("uniform", "global")
AMOUNTS = ("target_macs", "target_latency", "plan", "ratio")  # `prune`'s ways to say how much


@dataclass
class PruneResult:
    """A pruned model and what was done to get it."""

    model: nn.Module                          # pruned, eval mode
    kept: dict[str, list[int]]                # group -> kept original class indices
    widths: dict[str, tuple[int, int]]        # group -> (before, after), prunable groups
    params_before: int
    params_after: int
    macs_before: int                          # conv+linear MACs of the inference path
    macs_after: int
    size: tuple[int, int]
    criterion: str
    allocation: dict                          # how the widths were decided
    settings: dict = field(default_factory=dict)
    max_abs_diff: float | None = None         # exactness check, when run
    latency: dict | None = None               # predicted ms before/after, given a LatencyModel
    reconstruction: dict | None = None        # layers refitted afterwards (`reconstruct`)

    @property
    def removal(self) -> dict[str, list[int]]:
        """Group -> the original class indices removed, for the groups that shrank."""
        return {name: sorted(set(range(before)) - set(self.kept[name]))
                for name, (before, after) in self.widths.items() if after < before}

    @property
    def plan(self) -> dict[str, dict[str, int]]:
        """Changed groups as a plan (itself a valid --plan file for the same model)."""
        return {name: {"keep": after} for name, (before, after) in self.widths.items()
                if after < before}

    def to_dict(self) -> dict:
        return {
            "criterion": self.criterion, "allocation": self.allocation, **self.settings,
            "size": list(self.size),
            "params": {"before": self.params_before, "after": self.params_after},
            "macs": {"before": self.macs_before, "after": self.macs_after},
            "plan": self.plan, "max_abs_diff": self.max_abs_diff,
            **({"latency": self.latency} if self.latency else {}),
            **({"reconstruction": self.reconstruction} if self.reconstruction else {}),
        }


def model_graph(model: nn.Module, harness: Harness | None = None) -> ChannelGraph:
    """The channel graph of `model` as pruning sees it: `graph.channel_graph` on the small
    inputs its harness makes, every output enabled (MODNet: all three heads)."""
    harness = harness or harness_for(model)
    inputs = harness.make(model, harness.analysis_size)
    return channel_graph(model, *inputs, concrete_args=harness.full or None)


def mac_model(graph: ChannelGraph, model: nn.Module, harness: Harness,
              size: tuple[int, int]) -> MacModel:
    """MACs of the plain forward (MODNet: the matte only) at `size`, as a function of the
    channels removed."""
    layers = {c.name: c.macs for c in layer_costs(model, *harness.make(model, size))}
    return MacModel(graph, model, layers)


def prune(model: nn.Module, *, ratio: float | None = None, target_macs: float | None = None,
          target_latency: float | None = None, plan: Mapping | str | Path | None = None,
          allocation: str = "uniform", criterion: str = "l1", round_to: int = 8,
          min_channels: int = 1, size: tuple[int, int] | int = (512, 512),
          data: Iterable | None = None, verify: bool = False, inputs: InputFn | None = None,
          seed: int = 0, latency: LatencyModel | None = None) -> PruneResult:
    """Prune `model` structurally; exactly one of `ratio`, `target_macs`, `target_latency`,
    `plan`.

    `ratio` removes that fraction of channels, per group (`allocation="uniform"`) or over
    one ranking of all groups ("global"); `target_macs` keeps at most that fraction of the
    inference MACs at `size`; `target_latency` at most that fraction of the latency that
    `latency` (a fitted `LatencyModel`; `modnet-prune profile` builds one) predicts at its
    target's size; `plan` is a mapping or a YAML/JSON file (see `allocate`).
    Unreachable targets are refused before any channel is scored.
    `data` feeds the taylor criterion (image batches, or dicts with "image"). `inputs`
    makes inputs for models other than MODNet: (size, batch, generator) -> tuple.
    The input model is not modified.
    """
    how = _allocation(ratio, target_macs, target_latency, plan, allocation)
    if criterion not in CRITERIA:
        raise UserError(f"unknown criterion {criterion!r}; choose one of {', '.join(CRITERIA)}")
    if target_latency is not None and latency is None:
        raise UserError("target_latency needs a latency model of the target "
                        "(build one with `modnet-prune profile`)")
    harness = harness_for(model, inputs)
    size = harness.check_size(size)
    widths = allocate.Widths(round_to, min_channels)
    graph = model_graph(model, harness)
    macs = mac_model(graph, model, harness, size)
    ms = latency_cost(model, graph, harness, latency) if latency else None
    if how["mode"] in ("target_macs", "target_latency"):
        cost, what = (macs, "the MACs") if how["mode"] == "target_macs" else (
            ms, "the predicted latency")
        allocate.check_reachable(graph, cost, how[how["mode"]], widths, what)
    scores = importance(model, graph, criterion, harness=harness, data=data, seed=seed)
    keep = _decide(how, graph, model, scores, macs, ms, widths)
    removal = {name: allocate.select(graph.group(name), scores[name], k)
               for name, k in keep.items() if k < graph.group(name).width}
    pruned = harness.rebuild(shrink(model, graph, removal)).eval()
    lost = {n: len(r) for n, r in removal.items()}
    result = PruneResult(
        model=pruned, kept=_kept(graph, removal),
        widths={g.name: (g.width, keep.get(g.name, g.width)) for g in graph.prunable},
        params_before=count_params(model), params_after=count_params(pruned),
        macs_before=macs.full, macs_after=macs.total(lost),
        size=size, criterion=criterion, allocation=how,
        settings={"round_to": round_to, "min_channels": min_channels},
        latency=None if ms is None else {
            "target": dataclasses.asdict(latency.target),
            "predicted_ms": {"before": ms.full, "after": ms.total(lost)}})
    if verify:
        result.max_abs_diff = check_exact(model, pruned, graph, removal, harness)
    return result


def latency_cost(model: nn.Module, graph: ChannelGraph, harness: Harness,
                 latency: LatencyModel) -> LatencyCost:
    """Predicted milliseconds of `model` on `latency`'s target, by classes removed per group."""
    size = harness.check_size(latency.target.size)
    return LatencyCost(graph, layer_shapes(model, *harness.make(model, size)), latency)


def _allocation(ratio, target_macs, target_latency, plan, allocation: str) -> dict:
    values = {"ratio": ratio, "target_macs": target_macs, "target_latency": target_latency,
              "plan": plan}
    given = [k for k in AMOUNTS if values[k] is not None]
    if len(given) != 1:
        raise UserError(f"give exactly one of {', '.join(AMOUNTS)}"
                        + (f" (got {', '.join(given)})" if given else ""))
    if allocation not in ALLOCATIONS:
        raise UserError(f"unknown allocation {allocation!r}; choose uniform or global")
    if allocation != "uniform" and ratio is None:
        raise UserError(f"allocation {allocation!r} applies to a ratio; targets and plans "
                        "allocate by themselves")
    if ratio is not None:
        RATIO.check(ratio, "ratio")
        return {"mode": allocation, "ratio": float(ratio)}
    if target_macs is not None:
        KEEP_FRACTION.check(target_macs, "target MACs")
        return {"mode": "target_macs", "target_macs": float(target_macs)}
    if target_latency is not None:
        KEEP_FRACTION.check(target_latency, "target latency")
        return {"mode": "target_latency", "target_latency": float(target_latency)}
    if isinstance(plan, (str, Path)):
        return {"mode": "plan", "file": str(plan), "plan": allocate.read_plan(plan)}
    return {"mode": "plan", "plan": dict(plan)}


def smallest_fraction(model: nn.Module, round_to: int = 8, min_channels: int = 1,
                      size: tuple[int, int] | int = (512, 512)) -> float:
    """The share of `model`'s inference MACs left when every channel group is cut to the
    smallest width `round_to`/`min_channels` allow: no MACs target below it is reachable."""
    harness = harness_for(model)
    size = harness.check_size(size)
    graph, widths = model_graph(model, harness), allocate.Widths(round_to, min_channels)
    macs = mac_model(graph, model, harness, size)
    return allocate.smallest(graph, macs, widths) / macs.full


def _decide(how: dict, graph, model, scores, macs: MacModel, ms: LatencyCost | None,
            widths) -> dict[str, int]:
    mode = how["mode"]
    if mode != "plan" and all(len(widths.options(g)) == 1 for g in graph.prunable):
        widest = max((g.width for g in graph.prunable), default=0)
        raise UserError(f"nothing can be pruned: with round_to={widths.round_to} and "
                        f"min_channels={widths.min_channels} no channel group may shrink "
                        f"(the widest has {widest} channels)")
    if mode == "uniform":
        return allocate.uniform(graph, how["ratio"], widths)
    if mode == "global":
        return allocate.global_ranking(graph, scores, how["ratio"], widths)
    if mode == "target_macs":
        return allocate.by_macs(graph, scores, macs, how["target_macs"], widths)
    if mode == "target_latency":
        return allocate.by_cost(graph, scores, ms, how["target_latency"], widths,
                                "the predicted latency")
    return allocate.from_plan(graph, model, how["plan"], widths)


def _kept(graph: ChannelGraph, removal: Mapping[str, list[int]]) -> dict[str, list[int]]:
    kept = {}
    for g in graph.prunable:
        gone = set(removal.get(g.name, ()))
        kept[g.name] = [k for k in range(g.width) if k not in gone]
    return kept


@torch.no_grad()
def describe_groups(model: nn.Module, size: tuple[int, int] | int = (512, 512),
                    inputs: InputFn | None = None) -> list[dict]:
    """Every channel group: width, members, blockers, inference MACs saved per removed
    channel at `size`. A member's `span` is its [start, end) channels when contiguous."""
    harness = harness_for(model, inputs)
    size = harness.check_size(size)
    graph = model_graph(model, harness)
    macs = mac_model(graph, model, harness, size)
    return [{"name": g.name, "width": g.width, "prunable": g.prunable,
             "blockers": list(g.blockers), "members": [_member_dict(m) for m in g.members],
             "macs_per_channel": macs.per_channel(g.name)}
            for g in graph.groups]


def _member_dict(m) -> dict:
    flat = sorted(p for ps in m.positions for p in ps)
    contiguous = flat == list(range(flat[0], flat[-1] + 1))
    return {"module": m.module, "kind": m.kind, "role": m.role, "size": m.size,
            "span": [flat[0], flat[-1] + 1] if contiguous else None}
