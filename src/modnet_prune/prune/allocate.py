"""How many channels each group keeps, and which ones.

Four ways to decide the kept widths (all return {group name: kept width}):
- `uniform(ratio)`: every group loses `ratio` of its channels;
- `global_ranking(ratio)`: `ratio` of all channels go, the lowest-scoring first across groups;
- `by_macs(fraction)`: channels go in steps of `round_to`, always the step with the least
  importance per inference MAC saved, until at most `fraction` of the MACs remain (groups
  that cost no inference MACs, like MODNet's training-only heads, are left alone);
  `by_cost` is the same greedy in any currency, e.g. predicted milliseconds (`latency`);
- `from_plan(plan)`: per-layer decisions keyed by the Conv2d/Linear producing the group
  (a kept width, a ratio, MODNet-P's L1 threshold rule, or following another group).
Kept widths are multiples of `round_to` (groups narrower than it are left alone) and at
least `min_channels`. `select` then picks the lowest-scoring classes of each group.
"""
from __future__ import annotations

import difflib
import heapq
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch
from torch import nn

from ..checks import AT_LEAST_ONE, KEEP_FRACTION, RATIO
from ..errors import UserError
from ..files import read_yaml
from ..graph import ChannelGraph, Group, kind_of
from ..graph.macs import MacModel
from .threshold import THRESHOLD, round_width, threshold_count

Keep = dict[str, int]
PLAN_DECISIONS = ("keep", "ratio", "threshold", "follow")


@dataclass(frozen=True)
class Widths:
    """The kept widths a group may take."""

    round_to: int = 8
    min_channels: int = 1

    def __post_init__(self):
        AT_LEAST_ONE.check(self.round_to, "round_to")
        AT_LEAST_ONE.check(self.min_channels, "min_channels")

    def options(self, group: Group) -> list[int]:
        """Allowed kept widths, ascending; the last is the full width (nothing removed)."""
        w = group.width
        if not group.prunable or w < self.round_to:
            return [w]
        low = max(self.min_channels, group.min_keep)
        return [k for k in range(self.round_to, w, self.round_to) if k >= low] + [w]

    def nearest(self, group: Group, keep: float) -> int:
        return min(self.options(group), key=lambda k: (abs(k - keep), -k))


def uniform(graph: ChannelGraph, ratio: float, widths: Widths) -> Keep:
    RATIO.check(ratio, "ratio")
    return {g.name: widths.nearest(g, g.width * (1 - ratio)) for g in graph.prunable}


def global_ranking(graph: ChannelGraph, scores: Mapping[str, torch.Tensor], ratio: float,
                   widths: Widths) -> Keep:
    RATIO.check(ratio, "ratio")
    groups = [g for g in graph.prunable if len(widths.options(g)) > 1]
    ranked = sorted((float(s), g.name) for g in groups for s in scores[g.name])
    cut = ranked[:round(ratio * len(ranked))]
    lost = {g.name: 0 for g in groups}
    for _, name in cut:
        lost[name] += 1
    return {g.name: widths.nearest(g, g.width - lost[g.name]) for g in groups}


class Cost(Protocol):
    """A currency the greedy allocation spends: `graph.macs.MacModel` (MACs) or
    `latency.LatencyCost` (predicted milliseconds on one target)."""

    full: float

    def total(self, removed: Mapping[str, int]) -> float: ...

    def saving(self, removed: Mapping[str, int], group: str, more: int) -> float: ...


def by_macs(graph: ChannelGraph, scores: Mapping[str, torch.Tensor], macs: MacModel,
            fraction: float, widths: Widths) -> Keep:
    """Greedy: remove the step with the least importance per MAC saved until under target."""
    KEEP_FRACTION.check(fraction, "target MACs")
    return by_cost(graph, scores, macs, fraction, widths, "the MACs")


def smallest(graph: ChannelGraph, cost: Cost, widths: Widths) -> float:
    """The lowest `cost.total` the widths allow: every group at its narrowest option (costs
    never grow as channels go, so no other choice is cheaper)."""
    return cost.total({g.name: g.width - widths.options(g)[0] for g in graph.prunable})


def check_reachable(graph: ChannelGraph, cost: Cost, fraction: float, widths: Widths,
                    what: str) -> None:
    """Refuse a target below the smallest reachable cost, naming that cost."""
    low = smallest(graph, cost, widths)
    if low > fraction * cost.full:
        raise UserError(f"cannot reach {fraction:.3f} of {what} with round_to={widths.round_to}, "
                        f"min_channels={widths.min_channels}: the smallest reachable is "
                        f"{low / cost.full:.3f}")


def by_cost(graph: ChannelGraph, scores: Mapping[str, torch.Tensor], cost: Cost,
            fraction: float, widths: Widths, what: str) -> Keep:
    """Greedy: remove the step (`round_to` channels of one group) with the least importance
    per unit of `cost` saved, until at most `fraction` of `cost.full` remains. `what` names
    the currency in messages ("the MACs")."""
    check_reachable(graph, cost, fraction, widths, what)
    groups = {g.name: g for g in graph.prunable}
    keep = {name: g.width for name, g in groups.items()}
    order = {name: torch.argsort(scores[name], stable=True) for name in groups}
    removed: dict[str, int] = {}

    def next_step(name: str) -> tuple[float, int] | None:
        lower = [k for k in widths.options(groups[name]) if k < keep[name]]
        if not lower:
            return None
        width, now, after = groups[name].width, keep[name], lower[-1]
        lost = float(scores[name][order[name][width - now:width - after]].sum())
        saved = cost.saving(removed, name, now - after)
        return (lost / saved, after) if saved > 0 else None

    heap = [(step[0], name) for name in groups if (step := next_step(name))]
    heapq.heapify(heap)
    goal, total = fraction * cost.full, cost.full
    while total > goal and heap:
        _, name = heapq.heappop(heap)
        step = next_step(name)  # savings shrink as neighbours shrink: re-evaluate lazily
        if step is None:
            continue
        if heap and step[0] > heap[0][0]:
            heapq.heappush(heap, (step[0], name))
            continue
        keep[name] = step[1]
        removed[name] = groups[name].width - step[1]
        total = cost.total(removed)
        if (following := next_step(name)):
            heapq.heappush(heap, (following[0], name))
    return keep


def select(group: Group, scores: torch.Tensor, keep: int) -> list[int]:
    """Classes to remove: lowest scores first, never emptying a part of a layer (either
    half of an IBNorm)."""
    parts = group.parts()
    left = [len(p) for p in parts]
    removed: list[int] = []
    for k in torch.argsort(scores, stable=True).tolist():
        if len(removed) == group.width - keep:
            break
        hit = [i for i, p in enumerate(parts) if k in p]
        if any(left[i] == 1 for i in hit):
            continue
        for i in hit:
            left[i] -= 1
        removed.append(k)
    if len(removed) < group.width - keep:
        raise UserError(f"{group.name}: cannot keep only {keep} channels without emptying "
                        f"a part of {_divided(group)} (each keeps a channel)")
    return sorted(removed)


# --- plans ----------------------------------------------------------------------------
def read_plan(path: str | Path) -> dict:
    """A plan file: YAML or JSON mapping a Conv2d/Linear path to {keep: N} or {ratio: r}."""
    plan = read_yaml(path, "plan")
    if not isinstance(plan, dict) or not plan:
        raise UserError(f"{path}: a plan must be a non-empty mapping of layer -> {{keep: N}}")
    return plan


def from_plan(graph: ChannelGraph, model: nn.Module, plan: Mapping, widths: Widths) -> Keep:
    """Kept widths from a plan; every entry is checked before anything is decided.

    Decisions: `{keep: N}`; `{ratio: r}` (remove that fraction, rounded to `round_to`);
    `{threshold: t}` (the layer's own filters decide, see `threshold`; several layers of
    one group take the largest count); `{follow: LAYER}` (keep the fraction of channels
    that LAYER's group keeps, rounded down, as MODNet's SE hidden layer follows its input).
    """
    canonical = {id(m): name for name, m in model.named_modules()}
    aliases = {name: canonical[id(m)] for name, m in model.named_modules(remove_duplicate=False)}
    keep: Keep = {}
    chosen_by: dict[str, str] = {}
    by_threshold: set[str] = set()
    followers: dict[str, tuple[str, Group]] = {}
    for layer, decision in plan.items():
        layer = str(layer)
        group = _plan_group(graph, model, aliases, layer)
        _check_decision(layer, decision)
        if "follow" in decision:
            followers[group.name] = (layer, _followed(graph, model, aliases, layer, decision["follow"]))
            continue
        k = _plan_keep(group, layer, decision, widths, model.get_submodule(aliases[layer]))
        if "threshold" in decision and group.name in by_threshold:
            k = max(k, keep[group.name])  # coupled layers: the larger count wins
        elif group.name in keep and keep[group.name] != k:
            raise UserError(f"plan: {chosen_by[group.name]} and {layer} produce the same channel "
                            f"group ({group.name}) but ask for different widths")
        if "threshold" in decision:
            by_threshold.add(group.name)
        keep[group.name], chosen_by[group.name] = k, layer
    for name, (layer, followed) in followers.items():
        if name in keep or followed.name in followers:
            raise UserError(f"plan: {layer}: follow a layer whose width the plan decides (or "
                            "leaves whole), in a group no other entry decides")
        kept = keep.get(followed.name, followed.width)
        group = graph.group(name)
        keep[name] = max(group.min_keep, group.width * kept // followed.width)
    return keep


def _followed(graph: ChannelGraph, model: nn.Module, aliases: dict, layer: str, target) -> Group:
    if not isinstance(target, str):
        raise UserError(f"plan: {layer}: follow {target!r} must name a Conv2d or Linear")
    return _plan_group(graph, model, aliases, target)


def _plan_group(graph: ChannelGraph, model: nn.Module, aliases: dict, layer: str) -> Group:
    if layer not in aliases:
        close = difflib.get_close_matches(layer, list(aliases), n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise UserError(f"plan: no module named {layer!r} in the model{hint}")
    module = model.get_submodule(aliases[layer])
    kind = kind_of(module)
    if kind is None or "out" not in kind.roles:
        raise UserError(f"plan: {layer} is a {type(module).__name__}; name the layer (Conv2d, "
                        "Linear, ...) whose output channels you want to prune")
    group = graph.group_of(aliases[layer])
    if group is None:
        raise UserError(f"plan: {layer} does not run in the forward pass")
    if not group.prunable:
        output = [b for b in group.blockers if "graph output" in b]
        what = "is an output layer" if output else "cannot be pruned"
        raise UserError(f"plan: {layer} {what} ({group.blockers[0]})")
    return group


def _check_decision(layer: str, decision) -> None:
    if not (isinstance(decision, dict) and len(decision) == 1
            and set(decision) <= set(PLAN_DECISIONS)):
        raise UserError(f"plan: {layer}: expected {{keep: N}}, {{ratio: r}}, {{threshold: t}} "
                        f"or {{follow: LAYER}}, got {decision!r}")


def _plan_keep(group: Group, layer: str, decision: dict, widths: Widths, module: nn.Module) -> int:
    if "ratio" in decision:
        ratio = RATIO.check(decision["ratio"], f"plan: {layer}: ratio")
        return widths.nearest(group, group.width * (1 - ratio))
    if "threshold" in decision:
        t = THRESHOLD.check(decision["threshold"], f"plan: {layer}: threshold")
        count = round_width(threshold_count(module.weight, t), widths.round_to)
        return max(widths.min_channels, group.min_keep, min(group.width, count))
    k = decision["keep"]
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= group.width:
        raise UserError(f"plan: {layer}: keep {k!r} must be an integer in [1, {group.width}]")
    if k < group.min_keep:
        raise UserError(f"plan: {layer}: keep {k} would empty a part of {_divided(group)}; "
                        f"keep at least {group.min_keep}")
    return k


def _divided(group: Group) -> str:
    """The layer of `group` whose parts each keep a channel, e.g. "ibnorm `a.layers.1`"."""
    m = next(m for m in group.members if m.splits)
    return f"{m.kind} `{m.module}`"
