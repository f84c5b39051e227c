"""Channel groups: the units a structured pruner removes channels from.

A *class* is a set of channel positions that must be removed together (a residual add
joins the i-th channels of both branches; a depthwise conv joins its input j and output
j). A *group* is a set of classes that share their sources: the output channels of one
conv, or of every conv whose outputs are added together. Removing class k of a group
removes position(s) `member.positions[k]` from every member.
"""
from __future__ import annotations

import bisect
from collections import defaultdict
from dataclasses import dataclass

from .propagate import LabelState


@dataclass(frozen=True)
class Member:
    """One layer's share of a group: which of its channel positions each class owns.

    `role` is "out" (conv/linear output rows), "in" (conv/linear input columns; positions
    count channels of the input tensor, concat offsets included) or "norm" (per-channel
    norm parameters). `size` is the layer's full width along that dimension.
    """

    module: str
    kind: str                              # the layer's kind name (see kinds.py)
    role: str                              # out | in | norm
    positions: tuple[tuple[int, ...], ...]  # per class of the group
    size: int
    splits: tuple[int, ...] = ()           # where parts begin that must each keep a channel

    def part(self, k: int) -> int | None:
        """Which part class k's channels live in (IBNorm: 0 BatchNorm, 1 InstanceNorm);
        None for a layer without parts."""
        if not self.splits:
            return None
        return bisect.bisect_right(self.splits, self.positions[k][0])


@dataclass(frozen=True)
class Group:
    name: str                     # the first source: a module path, or input:<name>
    width: int                    # number of classes (removable units)
    members: tuple[Member, ...]
    blockers: tuple[str, ...]     # why it cannot be pruned; empty when prunable

    @property
    def prunable(self) -> bool:
        return not self.blockers

    @property
    def producers(self) -> tuple[str, ...]:
        return tuple(m.module for m in self.members if m.role == "out")

    def parts(self) -> list[frozenset[int]]:
        """Class sets that must each keep one channel: every part of every member with
        parts (both halves of an IBNorm)."""
        sets = set()
        for m in self.members:
            for ks in _member_parts(m, self.width).values():
                sets.add(frozenset(ks))
        return sorted(sets, key=min)

    @property
    def min_keep(self) -> int:
        """Fewest classes a pruned group may keep: one per part of its most divided member
        (2 when it feeds an IBNorm), at least 1."""
        return max([1] + [len(_member_parts(m, self.width)) for m in self.members])


def _member_parts(member: Member, width: int) -> dict[int, list[int]]:
    parts: dict[int, list[int]] = defaultdict(list)
    if member.splits:
        for k in range(width):
            parts[member.part(k)].append(k)
    return parts


@dataclass(frozen=True)
class ChannelGraph:
    """Every channel group of a model, prunable or not, in graph order."""

    groups: tuple[Group, ...]

    def __post_init__(self):
        object.__setattr__(self, "_by_name", {g.name: g for g in self.groups})
        producer = {p: g for g in self.groups for p in g.producers}
        object.__setattr__(self, "_by_producer", producer)

    @property
    def prunable(self) -> tuple[Group, ...]:
        return tuple(g for g in self.groups if g.prunable)

    @property
    def blocked(self) -> tuple[Group, ...]:
        return tuple(g for g in self.groups if not g.prunable)

    def group(self, name: str) -> Group:
        return self._by_name[name]

    def group_of(self, module: str) -> Group | None:
        """The group holding the output channels of a layer (Conv2d, Linear...), if it ran."""
        return self._by_producer.get(module)

    def __len__(self) -> int:
        return len(self.groups)


def build_groups(state: LabelState) -> ChannelGraph:
    roots = [state.find(label) for label in range(len(state.parent))]
    family = _source_families(state, roots)
    classes: dict[int, list[int]] = defaultdict(list)   # family -> class roots, first first
    where: dict[int, tuple[int, int]] = {}               # class root -> (family, k)
    for label, root in enumerate(roots):                 # label order = creation order
        if root not in where:
            fam = family[state.source_of[label]]
            where[root] = (fam, len(classes[fam]))
            classes[fam].append(root)
    members = _members(state, roots, where, {f: len(c) for f, c in classes.items()})
    blockers = _blockers(state, roots, where)
    groups = []
    for fam, roots_of in classes.items():
        name = state.sources[state.source_of[roots_of[0]]].name
        groups.append(Group(name, len(roots_of), tuple(members[fam]), tuple(sorted(blockers[fam]))))
    return ChannelGraph(tuple(groups))


def _source_families(state: LabelState, roots: list[int]) -> list[int]:
    """Sources sharing a class form one family (one group); returns a family id per source."""
    parent = list(range(len(state.sources)))

    def find(s: int) -> int:
        while parent[s] != s:
            s = parent[s]
        return s

    first_source: dict[int, int] = {}
    for label, root in enumerate(roots):
        s = state.source_of[label]
        if root in first_source:
            a, b = find(first_source[root]), find(s)
            parent[max(a, b)] = min(a, b)
        else:
            first_source[root] = s
    return [find(s) for s in range(len(state.sources))]


def _members(state, roots, where, widths) -> dict[int, list[Member]]:
    out: dict[int, list[Member]] = defaultdict(list)
    for (module, role), rec in state.members.items():
        per_family: dict[int, list[list[int]]] = {}
        for pos, label in enumerate(rec.labels):
            fam, k = where[roots[label]]
            if fam not in per_family:
                per_family[fam] = [[] for _ in range(widths[fam])]
            per_family[fam][k].append(pos)
        for fam, positions in per_family.items():
            out[fam].append(Member(module, rec.kind, role, tuple(map(tuple, positions)),
                                   len(rec.labels), rec.splits))
    return out


def _blockers(state, roots, where) -> dict[int, set[str]]:
    out: dict[int, set[str]] = defaultdict(set)
    for label, reason in state.blocked:
        out[where[roots[label]][0]].add(reason)
    for label, root in enumerate(roots):
        source = state.sources[state.source_of[label]]
        if source.blocked:
            out[where[root][0]].add(source.blocked)
    return out
