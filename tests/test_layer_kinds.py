"""A layer kind registered from outside the package is traced, pruned exactly and costed:
the registry (graph/kinds.py) is the only place a new channel-owning layer is described."""
import pytest
import torch
from torch import nn

from modnet_prune.graph import Channels, LayerKind, channel_graph, register
from modnet_prune.graph.cost import layer_costs
from modnet_prune.graph.kinds import keep_index, slice_tensor
from modnet_prune.prune import prune, reconstruct


class Pointwise(nn.Module):
    """A 1x1 channel mix written with einsum: no torch.nn layer the library knows."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(cout, cin) / cin ** 0.5)
        self.bias = nn.Parameter(torch.randn(cout) * 0.1)

    def forward(self, x):
        return torch.einsum("oi,nihw->nohw", self.weight, x) + self.bias[:, None, None]


class Unregistered(Pointwise):
    def forward(self, x):  # same maths, but a new forward: the registered kind no longer applies
        return super().forward(x)


def _rule(ctx, call):
    x = ctx.require(call.raw(0), call.value(0), dim=1)
    y = ctx.state.produce(call.name, call.module.weight.shape[0])
    ctx.state.member(call.name, "in", "pointwise", x.labels)
    ctx.state.member(call.name, "out", "pointwise", y)
    return Channels(1, y)


def _shrink(pw, removed):
    slice_tensor(pw, "weight", keep_index(pw.weight.shape[1], removed.get("in", set())), dim=1)
    keep = keep_index(pw.weight.shape[0], removed.get("out", set()))
    slice_tensor(pw, "weight", keep)
    slice_tensor(pw, "bias", keep)


def _zero(pw, removed):
    rows = sorted(removed.get("out", ()))
    pw.weight[rows] = 0
    pw.bias[rows] = 0
    pw.weight[:, sorted(removed.get("in", ()))] = 0


register(Pointwise, LayerKind(
    "pointwise", _rule, ("in", "out"), _shrink, _zero,
    owned=lambda pw, role, weight: (pw.weight if weight is None else weight).T
    if role == "in" else (pw.weight if weight is None else weight),
    macs=lambda pw, out: out[0].numel() * pw.weight.shape[1],
    macs_scale_with=lambda pw: ("in", "out")))


class Net(nn.Module):
    def __init__(self, mix=Pointwise):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.mix = mix(16, 24)
        self.head = nn.Conv2d(24, 2, 1)

    def forward(self, x):
        return self.head(torch.relu(self.mix(torch.relu(self.stem(x)))))


def test_registered_layer_is_traced_as_a_channel_owner():
    graph = channel_graph(Net(), torch.randn(1, 3, 32, 32))
    assert [(g.name, g.width) for g in graph.prunable] == [("stem", 16), ("mix", 24)]
    stem_members = {(m.module, m.kind, m.role) for m in graph.group("stem").members}
    assert ("mix", "pointwise", "in") in stem_members
    mix_members = {(m.module, m.kind, m.role) for m in graph.group("mix").members}
    assert mix_members == {("mix", "pointwise", "out"), ("head", "conv", "in")}


def test_a_layer_without_a_kind_blocks_its_channels():
    graph = channel_graph(Net(Unregistered), torch.randn(1, 3, 32, 32))  # traced into: einsum
    assert [g.name for g in graph.prunable] == []
    assert graph.group("stem").blockers == ("torch.functional.einsum at node `einsum`: "
                                            "no rule for this op",)


def test_registered_layer_is_pruned_exactly_and_costed():
    torch.manual_seed(0)
    model = Net().eval()
    result = prune(model, ratio=0.5, criterion="l2", size=(32, 32), round_to=1, verify=True)
    assert result.max_abs_diff <= 1e-4  # pruned == original with the removed channels zeroed
    kept_in, kept_out = result.kept["stem"], result.kept["mix"]
    assert (len(kept_in), len(kept_out)) == (8, 12)
    mix = result.model.mix
    assert torch.equal(mix.weight, model.mix.weight[kept_out][:, kept_in])
    assert torch.equal(mix.bias, model.mix.bias[kept_out])
    # MACs by hand at 32x32: stem 8*3*9, mix 12*8, head 2*12, per pixel
    assert result.macs_after == 32 * 32 * (8 * 3 * 9 + 12 * 8 + 2 * 12)
    costs = {c.name: c.macs for c in layer_costs(result.model, torch.zeros(1, 3, 32, 32))}
    assert costs == {"stem": 32 * 32 * 8 * 27, "mix": 32 * 32 * 96, "head": 32 * 32 * 24}


def test_a_kind_that_owns_channels_must_say_how_to_cut_them():
    with pytest.raises(TypeError, match="needs shrink, zero and owned"):
        register(Unregistered, LayerKind("broken", _rule, ("in", "out")))


def test_reconstruction_names_a_registered_layer_it_cannot_refit():
    """`reconstruct` refits torch's convs and linear layers; a user's layer that lost inputs
    is reported as skipped, with why, and the conv reading its cut outputs is refitted."""
    torch.manual_seed(0)
    model = Net().eval()
    result = prune(model, ratio=0.5, criterion="l2", size=(32, 32), round_to=1)
    mix = result.model.mix.weight.detach().clone()
    report = reconstruct(model, result, [torch.randn(2, 3, 32, 32)])
    assert report.skipped == {"mix": "Pointwise has no least-squares refit"}
    assert [f.layer for f in report.fitted] == ["head"]
    assert torch.equal(result.model.mix.weight, mix)
