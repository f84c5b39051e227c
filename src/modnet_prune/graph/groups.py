"""Channel groups: the units a structured pruner removes channels from.

A *class* is a set of channel positions that must be removed together (a residual add
joins the i-th channels of both branches; a depthwise conv joins its input j and output
j). A *group* is a set of classes that share their sources: the output channels of one
conv, or of every conv whose outputs are added together. Removing class k of a group
removes position(s) `member.positions[k]` from every member.
"""
from __future__ import annotations

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
    kind: str                              # conv | linear | batchnorm | instancenorm | ibnorm
    role: str                              # out | in | norm
    positions: tuple[tuple[int, ...], ...]  # per class of the group
    size: int
    split: int | None = None               # IBNorm: positions < split are in the BN part

    def part(self, k: int) -> str | None:
        """"bn" or "in" for an IBNorm member: which half class k's channel lives in."""
        if self.split is None:
            return None
        return "bn" if self.positions[k][0] < self.split else "in"


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
        """Class sets that must each keep one channel: both halves of every IBNorm."""
        sets = set()
        for m in self.members:
            if m.kind == "ibnorm":
                for half in ("bn", "in"):
                    ks = frozenset(k for k in range(self.width) if m.part(k) == half)
                    if ks:
                        sets.add(ks)
        return sorted(sets, key=min)

    @property
    def min_keep(self) -> int:
        """Fewest classes a pruned group may keep (1, or 2 when it feeds an IBNorm)."""
        return min(2, max(1, len(self.parts())))


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
        """The group holding the output channels of a Conv2d/Linear, if it ran."""
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
                                   len(rec.labels), rec.split))
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
