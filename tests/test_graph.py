"""Channel dependency analysis: MODNet's coupling table, generic CNNs, and refusals."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import modnet_prune as mp
from modnet_prune.graph import channel_graph
from modnet_prune.graph.rules import remap
from modnet_prune.graph.propagate import Channels, Unsupported
from modnet_prune.model import HEAD_CONVS, OUTPUT_CONVS

from helpers import GroupedCNN, ResidualCNN, SECNN, UNet

F_ = "backbone.model.features."


@pytest.fixture(scope="module")
def modnet_graph():
    model = mp.MODNet()
    return channel_graph(model, torch.randn(1, 3, 64, 64), concrete_args={"inference": False})


def _member(group, module, role):
    found = [m for m in group.members if m.module == module and m.role == role]
    assert len(found) == 1, (group.name, module, role, [(m.module, m.role) for m in group.members])
    return found[0]


def _span(member):
    flat = [p for ps in member.positions for p in ps]
    assert flat == list(range(flat[0], flat[-1] + 1)), "positions should be contiguous"
    return flat[0], flat[-1] + 1


def test_modnet_has_exactly_the_43_prunable_groups(modnet_graph):
    prunable = modnet_graph.prunable
    assert len(prunable) == 43
    backbone = [g for g in prunable if g.name.startswith("backbone.")]
    expansion = [g for g in backbone if g.name.endswith(".conv.0")]
    assert len(backbone) == 25 and len(expansion) == 16
    heads = {g.name for g in prunable if not g.name.startswith(("backbone.", "lr_branch.se"))}
    assert heads == {f"{name}.layers.0" for name in HEAD_CONVS}
    assert modnet_graph.group("lr_branch.se_block.fc.0").width == 320


def test_stage_groups_follow_the_residual_adds(modnet_graph):
    arch = mp.Arch()
    expected = {  # first producer of each stage -> every block output conv of that stage
        F_ + "2.conv.6": [2, 3], F_ + "4.conv.6": [4, 5, 6], F_ + "7.conv.6": [7, 8, 9, 10],
        F_ + "11.conv.6": [11, 12, 13], F_ + "14.conv.6": [14, 15, 16], F_ + "17.conv.6": [17]}
    for name, blocks in expected.items():
        group = modnet_graph.group(name)
        assert sorted(group.producers) == sorted(F_ + f"{b}.conv.6" for b in blocks)
        assert group.width == arch.block_io(blocks[0])[2]
    stem = modnet_graph.group(F_ + "0.0")  # features[1] has no expansion: its dw joins the stem
    assert set(stem.producers) == {F_ + "0.0", F_ + "1.conv.0"} and stem.width == 32


def test_concat_offsets_match_the_coupling_table(modnet_graph):
    g = modnet_graph.group
    table = [  # producer group, consumer conv, [start, end) of its input channels
        ("hr_branch.tohr_enc2x.layers.0", "hr_branch.conv_enc2x.layers.0", (3, 35)),
        ("hr_branch.tohr_enc2x.layers.0", "hr_branch.conv_hr2x.0.layers.0", (32, 64)),
        ("hr_branch.conv_enc4x.layers.0", "hr_branch.conv_hr4x.0.layers.0", (0, 64)),
        ("lr_branch.conv_lr8x.layers.0", "hr_branch.conv_hr4x.0.layers.0", (64, 96)),
        ("hr_branch.conv_hr2x.3.layers.0", "f_branch.conv_f2x.layers.0", (32, 64)),
        ("f_branch.conv_lr4x.layers.0", "f_branch.conv_f2x.layers.0", (0, 32)),
        ("hr_branch.conv_enc2x.layers.0", "hr_branch.conv_enc4x.layers.0", (0, 32)),
        ("hr_branch.tohr_enc4x.layers.0", "hr_branch.conv_enc4x.layers.0", (32, 64)),
    ]
    for producer, consumer, span in table:
        assert _span(_member(g(producer), consumer, "in")) == span, (producer, consumer)


def test_raw_image_occupies_fixed_offsets_and_is_never_prunable(modnet_graph):
    image = modnet_graph.group("input:img")
    assert not image.prunable and image.width == 3
    assert any("graph input" in b for b in image.blockers)
    spans = {m.module: _span(m) for m in image.members}
    assert spans == {F_ + "0.0": (0, 3), "hr_branch.conv_enc2x.layers.0": (0, 3),
                     "hr_branch.conv_hr4x.0.layers.0": (96, 99),
                     "hr_branch.conv_hr.0.layers.0": (32, 35), "f_branch.conv_f.0.layers.0": (32, 35)}


def test_multi_consumer_producers(modnet_graph):
    def consumers(name):
        return {m.module for m in modnet_graph.group(name).members if m.role == "in"}
    assert consumers("lr_branch.conv_lr8x.layers.0") == {
        "lr_branch.conv_lr.layers.0", "hr_branch.conv_hr4x.0.layers.0", "f_branch.conv_lr4x.layers.0"}
    assert consumers(F_ + "1.conv.3") == {F_ + "2.conv.0", "hr_branch.tohr_enc2x.layers.0"}
    assert consumers(F_ + "2.conv.6") >= {F_ + "3.conv.0", F_ + "4.conv.0", "hr_branch.tohr_enc4x.layers.0"}
    enc32x = modnet_graph.group(F_ + "18.0")  # SE: input columns and output rows, and conv_lr16x
    assert {(m.module, m.role) for m in enc32x.members if m.kind == "linear"} == {
        ("lr_branch.se_block.fc.0", "in"), ("lr_branch.se_block.fc.2", "out")}
    assert "lr_branch.conv_lr16x.layers.0" in consumers(F_ + "18.0")


def test_output_convs_are_blocked_by_name(modnet_graph):
    for name in OUTPUT_CONVS:
        group = modnet_graph.group_of(f"{name}.layers.0")
        assert not group.prunable and group.width == 1
        assert any("graph output" in b for b in group.blockers)


def test_shared_backbone_is_analysed_once(modnet_graph):
    modules = {m.module for g in modnet_graph.groups for m in g.members}
    assert not any(name.startswith("lr_branch.backbone") for name in modules)
    assert F_ + "18.0" in modules


def test_ibnorm_halves_are_remembered_per_channel(modnet_graph):
    group = modnet_graph.group("hr_branch.conv_hr2x.1.layers.0")
    norm = _member(group, "hr_branch.conv_hr2x.1.layers.1", "norm")
    assert norm.kind == "ibnorm" and norm.splits == (16,)
    assert [norm.part(k) for k in range(32)] == [0] * 16 + [1] * 16  # BatchNorm, then IN
    assert group.min_keep == 2


def test_pruned_widths_and_unequal_ibnorm_split_are_read_from_the_model():
    heads = dict(mp.Arch().heads, **{"hr_branch.conv_hr2x.1": 24})
    arch = mp.Arch(heads=heads, ibn_bn=dict(mp.Arch().ibn_bn, **{"hr_branch.conv_hr2x.1": 5}),
                   last=640, se_hidden=160)
    graph = channel_graph(mp.MODNet(arch), torch.randn(1, 3, 64, 64), concrete_args={"inference": False})
    group = graph.group("hr_branch.conv_hr2x.1.layers.0")
    norm = _member(group, "hr_branch.conv_hr2x.1.layers.1", "norm")
    assert group.width == 24 and [norm.part(k) for k in range(24)].count(0) == 5
    assert graph.group(F_ + "18.0").width == 640 and len(graph.prunable) == 43


# --- generic models (tests/helpers.py) -------------------------------------------------
def test_residual_cnn_joins_every_add_into_one_group():
    graph = channel_graph(ResidualCNN(), torch.randn(1, 3, 32, 32))
    stage = graph.group("stem.0")
    assert set(stage.producers) == {"stem.0", "blocks.0.3", "blocks.1.3"}
    assert {m.module for m in stage.members if m.role == "in"} == {"blocks.0.0", "blocks.1.0", "head"}
    assert [g.name for g in graph.prunable] == ["stem.0", "blocks.0.0", "blocks.1.0"]


def test_unet_offsets_with_image_concatenated_first():
    graph = channel_graph(UNet(), torch.randn(1, 3, 32, 32))
    spans = {g.name: _span(_member(g, "dec1.0", "in")) for g in graph.groups
             if any(m.module == "dec1.0" and m.role == "in" for m in g.members)}
    assert spans == {"input:x": (0, 3), "dec2.0": (3, 27), "enc1.0": (27, 43)}
    assert _span(_member(graph.group("mid.0"), "dec2.0", "in")) == (0, 32)
    assert _span(_member(graph.group("enc2.0"), "dec2.0", "in")) == (32, 64)
    assert len(graph.prunable) == 5 and not graph.group("input:x").prunable


def test_depthwise_and_grouped_convs_couple_channels():
    graph = channel_graph(GroupedCNN(), torch.randn(1, 3, 16, 16))
    first = graph.group("conv.0")
    # depthwise x2: class k owns output rows 2k, 2k+1; the grouped conv (4 groups of 8
    # inputs) then ties in-group offset r of all four groups: 16 channels -> 4 classes
    assert set(first.producers) == {"conv.0", "dw.0"} and first.width == 4
    dw_out = _member(first, "dw.0", "out")
    assert sorted(p for ps in dw_out.positions for p in ps) == list(range(32))
    grouped_in = _member(first, "grouped.0", "in")
    assert grouped_in.positions[0] == (0, 1, 8, 9, 16, 17, 24, 25)
    out = graph.group("grouped.0")
    assert out.width == 12 and _member(out, "grouped.0", "out").positions[0] == (0, 12, 24, 36)


def test_se_block_and_flatten_into_linear():
    graph = channel_graph(SECNN(), torch.randn(1, 3, 32, 32))
    conv = graph.group("conv.0")
    assert {(m.module, m.role) for m in conv.members} >= {("fc1", "in"), ("fc2", "out"),
                                                          ("classifier.0", "in")}
    flat = _member(conv, "classifier.0", "in")
    assert flat.positions[1] == tuple(range(16, 32))  # channel 1 -> its 4x4 pixels
    assert [g.name for g in graph.prunable] == ["conv.0", "fc1", "classifier.0"]
    assert not graph.group("classifier.2").prunable


class Unknown(nn.Module):
    def __init__(self, op):
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.b = nn.Conv2d(3, 8, 3, padding=1)
        self.c = nn.Conv2d(16, 1, 1)
        self.op = op

    def forward(self, x):
        a, b = self.a(x), self.b(x)
        return self.c(torch.cat([self.op(a), b], 1))


@pytest.mark.parametrize("op, name", [
    (lambda a: torch.roll(a, 1, dims=1), "torch.roll"),
    (lambda a: torch.cat([a[:, :4], a[:, 4:]], 1), "getitem"),
    (lambda a: a.view(-1, 8, a.shape[2], a.shape[3]), "hard-coded channel count 8"),
    (lambda a: a.softmax(dim=1), "Tensor.softmax"),
    (lambda a: F.group_norm(a, 2), "group_norm"),
])
def test_unknown_channel_ops_block_their_group_and_are_named(op, name):
    graph = channel_graph(Unknown(op), torch.randn(1, 3, 8, 8))
    blocked = graph.group("a")
    assert not blocked.prunable and any(name in reason for reason in blocked.blockers)
    assert graph.group("b").prunable and _span(_member(graph.group("b"), "c", "in")) == (8, 16)


def test_graph_output_blocks_the_group_it_reaches():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 4, 3))
    graph = channel_graph(model, torch.randn(1, 3, 8, 8))
    assert graph.group("0").prunable
    assert graph.group("2").blockers == ("reaches graph output #0",)


def test_module_called_twice_keeps_one_set_of_channels():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv2d(3, 8, 1), nn.Conv2d(3, 8, 1)
            self.shared = nn.Conv2d(8, 8, 3, padding=1)
            self.out = nn.Conv2d(16, 1, 1)

        def forward(self, x):
            return self.out(torch.cat([self.shared(self.a(x)), self.shared(self.b(x))], 1))

    graph = channel_graph(Twice(), torch.randn(1, 3, 8, 8))
    assert set(graph.group("a").producers) == {"a", "b"}  # both feed the same input columns
    shared = graph.group("shared")  # both calls' outputs are the same 8 channels
    assert shared.width == 8 and _member(shared, "out", "in").positions[3] == (3, 11)


def test_remap_follows_the_channel_axis_through_reshapes():
    x = Channels(1, (10, 11, 12))
    assert remap(x, (2, 3, 4, 4), (2, 3, 16)) == Channels(1, x.labels)
    assert remap(x, (2, 3, 1, 1), (2, 3)) == Channels(1, x.labels)
    assert remap(x, (2, 3, 2, 1), (2, 6)) == Channels(1, (10, 10, 11, 11, 12, 12))
    assert remap(x, (2, 3), (2, 1, 3, 1)) == Channels(2, x.labels)
    with pytest.raises(Unsupported):
        remap(Channels(1, (1, 2, 3, 4)), (2, 4, 4), (2, 2, 2, 4))  # splits the channel axis


def test_unbatched_input_to_instance_norm_is_refused():
    class Unbatched(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.norm = nn.Conv2d(3, 8, 3), nn.InstanceNorm2d(8)
            self.out = nn.Conv2d(8, 1, 1)

        def forward(self, x):
            y = self.norm(self.conv(x)[0])  # (C, H, W): channels on dim 0
            return self.out(y[None])

    graph = channel_graph(Unbatched(), torch.randn(1, 3, 8, 8))
    assert not graph.group("conv").prunable
    assert any("InstanceNorm2d `norm`" in b and "batched" in b for b in graph.group("conv").blockers)
