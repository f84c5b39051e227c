"""Channel surgery is exact (every MODNet group, generic CNNs); importance, allocation, API."""
import dataclasses
import json

import pytest
import torch
from torch import nn

import modnet_prune as mp
from modnet_prune.errors import UserError
from modnet_prune.graph.cost import layer_costs
from modnet_prune.model.layers import Conv2dIBNormReLU
from modnet_prune.prune import ExactnessError, model_graph, check_exact, importance, prune
from modnet_prune.prune.allocate import Widths, from_plan, select
from modnet_prune.prune.harness import MODNET, harness_for
from modnet_prune.prune.surgery import shrink
from modnet_prune.prune.verify import max_difference
from helpers import GroupedCNN, ResidualCNN, SECNN, UNet

TOL = 1e-4
N_MODNET_GROUPS = 43


def _randomise(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial biases, BN affine parameters and running statistics: a wrong slice shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            elif isinstance(m, (nn.Conv2d, nn.Linear)) and m.bias is not None:
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
    return model.eval()


def _half_removal(graph, seed: int = 0) -> dict[str, list[int]]:
    """A random half of every prunable group (both IBNorm halves keep a channel)."""
    g = torch.Generator().manual_seed(seed)
    return {group.name: select(group, torch.rand(group.width, generator=g),
                               max(group.min_keep, group.width // 2))
            for group in graph.prunable}


@pytest.fixture(scope="module")
def modnet():
    torch.manual_seed(0)
    model = _randomise(mp.MODNet())
    return model, model_graph(model)


# --- exactness ---------------------------------------------------------------------------
@pytest.mark.parametrize("index", range(N_MODNET_GROUPS))
def test_each_modnet_group_alone_is_exact(modnet, index):
    model, graph = modnet
    group = graph.prunable[index]
    removal = {group.name: _half_removal(graph, seed=index)[group.name]}
    pruned = MODNET.rebuild(shrink(model, graph, removal))
    assert isinstance(pruned, mp.MODNet)
    assert sum(p.numel() for p in pruned.parameters()) < sum(p.numel() for p in model.parameters())
    assert max_difference(model, pruned, graph, removal, MODNET) <= TOL


def test_all_modnet_groups_together_are_exact_and_round_trip(modnet, tmp_path):
    model, graph = modnet
    removal = _half_removal(graph, seed=99)
    pruned = MODNET.rebuild(shrink(model, graph, removal))
    assert check_exact(model, pruned, graph, removal, MODNET) <= TOL
    again = model_graph(pruned)  # the pruned model has the same groups, narrower
    assert [g.name for g in again.prunable] == [g.name for g in graph.prunable]
    for old, new in zip(graph.prunable, again.prunable):
        assert new.width == old.width - len(removal[old.name]), old.name
    mp.save(pruned, tmp_path / "p.safetensors")
    loaded = mp.load(tmp_path / "p.safetensors")
    assert loaded.arch == pruned.arch
    img = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded(img), pruned(img))


def test_exactness_check_catches_a_wrong_concat_offset(modnet):
    """The Torch-Pruning bug: offsets computed without the image remove image channels."""
    model, graph = modnet
    group = graph.group("hr_branch.tohr_enc2x.layers.0")
    members = tuple(dataclasses.replace(m, positions=tuple(tuple(p - 3 for p in ps) for ps in m.positions))
                    if m.module == "hr_branch.conv_enc2x.layers.0" else m for m in group.members)
    broken = dataclasses.replace(graph, groups=tuple(
        dataclasses.replace(g, members=members) if g is group else g for g in graph.groups))
    removal = {group.name: list(range(8))}
    pruned = MODNET.rebuild(shrink(model, broken, removal))
    with pytest.raises(ExactnessError):
        check_exact(model, pruned, graph, removal, MODNET)


class IBNormCNN(nn.Module):
    """MODNet's IBNorm with an unequal split, without MODNet's rebuild from an Arch."""

    def __init__(self):
        super().__init__()
        self.a = Conv2dIBNormReLU(3, 16, 3, bn_channels=5)
        self.b = Conv2dIBNormReLU(16 + 3, 12, 3, bn_channels=9)
        self.out = nn.Conv2d(12, 1, 1)

    def forward(self, x):
        return self.out(self.b(torch.cat([self.a(x), x], 1)))


GENERIC = [ResidualCNN, UNet, GroupedCNN, SECNN, IBNormCNN]


@pytest.mark.parametrize("make", GENERIC, ids=lambda c: c.__name__)
def test_generic_models_every_group_alone_and_together(make):
    model = _randomise(make())
    harness = harness_for(model)
    graph = model_graph(model, harness)
    for seed in range(4):  # several random halves: every boundary channel gets its turn
        removal = _half_removal(graph, seed)
        for name, classes in removal.items():
            single = {name: classes}
            pruned = shrink(model, graph, single)
            assert max_difference(model, pruned, graph, single, harness) <= TOL, (name, seed)
        pruned = shrink(model, graph, removal)
        assert max_difference(model, pruned, graph, removal, harness) <= TOL, seed
    assert sum(p.numel() for p in pruned.parameters()) < sum(p.numel() for p in model.parameters())


def test_grouped_conv_keeps_groups_and_depthwise_updates_them():
    model = _randomise(GroupedCNN())
    graph = model_graph(model)
    removal = {"conv.0": [1, 3], "grouped.0": list(range(6))}
    pruned = shrink(model, graph, removal)
    assert (pruned.dw[0].in_channels, pruned.dw[0].out_channels, pruned.dw[0].groups) == (8, 16, 8)
    assert (pruned.grouped[0].in_channels, pruned.grouped[0].out_channels,
            pruned.grouped[0].groups) == (16, 24, 4)
    assert max_difference(model, pruned, graph, removal, harness_for(model)) <= TOL


def test_ibnorm_keeps_each_channel_in_its_half(modnet):
    model, graph = modnet
    group = graph.group("hr_branch.conv_hr2x.1.layers.0")  # BN part: classes 0..15
    removal = {group.name: [0, 1, 2, 16, 20]}
    shrunk = shrink(model, graph, removal)
    assert shrunk.hr_branch.conv_hr2x[1].layers[1].bn_channels == 13  # before any rebuild
    pruned = MODNET.rebuild(shrunk)
    ibn = pruned.hr_branch.conv_hr2x[1].layers[1]
    original = model.hr_branch.conv_hr2x[1].layers[1]
    assert ibn.bn_channels == 13 and ibn.inorm.num_features == 14
    assert torch.equal(ibn.bnorm.running_mean, original.bnorm.running_mean[3:])
    assert pruned.arch.ibn_bn["hr_branch.conv_hr2x.1"] == 13
    with pytest.raises(UserError, match="emptying a part of ibnorm `hr_branch.conv_hr2x.1.lay"):
        select(group, torch.arange(32.0), keep=1)
    assert select(group, torch.arange(32.0), keep=2) == [k for k in range(32) if k not in (15, 31)]


# --- importance ----------------------------------------------------------------------------
class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.b = nn.Conv2d(4, 2, 1)

    def forward(self, x):
        return self.b(torch.relu(self.bn(self.a(x))))


def test_l1_l2_bn_fpgm_match_hand_computation():
    model = _randomise(Tiny())
    graph = model_graph(model)
    wa, wb, gamma = model.a.weight.detach(), model.b.weight.detach(), model.bn.weight.detach()
    l1 = wa.abs().sum((1, 2, 3)) + wb.abs().sum((0, 2, 3)) + gamma.abs()
    l2 = (wa.pow(2).sum((1, 2, 3)) + wb.pow(2).sum((0, 2, 3)) + gamma.pow(2)).sqrt()
    rows = torch.cat([wa.flatten(1), gamma[:, None], wb.flatten(1).T], 1)
    fpgm = torch.stack([sum((rows[i] - rows[j]).norm() for j in range(4)) for i in range(4)])
    for criterion, raw in (("l1", l1), ("l2", l2), ("bn", gamma.abs()), ("fpgm", fpgm)):
        got = importance(model, graph, criterion)["a"]
        torch.testing.assert_close(got, (raw / raw.mean()).double(), rtol=1e-5, atol=1e-6)


def test_bn_criterion_gives_instance_norm_channels_their_implicit_gamma(modnet):
    model, graph = modnet
    scores = importance(model, graph, "bn")["hr_branch.conv_hr2x.1.layers.0"]
    gamma = model.hr_branch.conv_hr2x[1].layers[1].bnorm.weight.detach().abs()
    raw = torch.cat([gamma, torch.ones(16)])
    torch.testing.assert_close(scores, (raw / raw.mean()).double())


def test_taylor_equals_activation_times_gradient():
    """(sum over consumer columns of grad x weight)^2 == (sum over pixels of dL/da x a)^2."""
    model = _randomise(Tiny())
    graph = model_graph(model)
    images = [torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    got = importance(model, graph, "taylor", harness=harness_for(model), data=images)["a"]
    # slow reference: the same random projections, gradients taken at the activation
    generator, want = torch.Generator().manual_seed(0), torch.zeros(4)
    for x in images:
        act = torch.relu(model.bn(model.a(x))).detach().requires_grad_(True)
        y = model.b(act)
        loss = (torch.randn(y.shape, generator=generator) * y).sum()
        (grad,) = torch.autograd.grad(loss, act)
        want += (grad * act).sum((0, 2, 3)).pow(2)
    want /= len(images)
    torch.testing.assert_close(got, (want / want.mean()).double(), rtol=1e-4, atol=1e-6)


def test_scores_are_normalised_per_group_and_random_is_reproducible(modnet):
    model, graph = modnet
    for criterion in ("l1", "fpgm", "random"):
        scores = importance(model, graph, criterion)
        assert set(scores) == {g.name for g in graph.prunable}
        for s in scores.values():
            assert torch.isfinite(s).all() and abs(float(s.mean()) - 1) < 1e-9
    assert all(torch.equal(a, b) for a, b in zip(importance(model, graph, "random", seed=3).values(),
                                                  importance(model, graph, "random", seed=3).values()))
    with pytest.raises(UserError, match="unknown criterion"):
        importance(model, graph, "l3")


# --- allocation and the public API ---------------------------------------------------------
def test_uniform_ratio_rounds_widths_and_is_exact():
    model = _randomise(mp.MODNet())
    result = prune(model, ratio=0.3, size=64, verify=True)
    assert result.max_abs_diff <= TOL
    for name, (before, after) in result.widths.items():
        if before < 8:
            assert after == before
        else:
            assert after % 8 == 0 or after == before
            assert abs(after - 0.7 * before) <= 4, (name, before, after)
    arch = result.model.arch
    assert arch.last == 896 and arch.heads["hr_branch.conv_hr2x.1"] == 24
    assert result.params_after == sum(p.numel() for p in result.model.parameters())
    assert result.macs_after == sum(c.macs for c in layer_costs(result.model, torch.randn(1, 3, 64, 64)))
    json.dumps(result.to_dict())


@pytest.mark.parametrize("fraction", [0.3, 0.5, 0.7])
def test_target_macs_lands_at_or_just_under(fraction):
    model = _randomise(mp.MODNet())
    result = prune(model, target_macs=fraction, size=64)
    measured = sum(c.macs for c in layer_costs(result.model, torch.randn(1, 3, 64, 64)))
    assert measured == result.macs_after
    assert fraction - 0.05 <= measured / result.macs_before <= fraction
    assert all(after % 8 == 0 or after == before for before, after in result.widths.values())


def test_target_macs_spends_importance_where_macs_are():
    """Worthless channels go first, and `kept` names the survivors by original index."""
    model = _randomise(mp.MODNet())
    useful = [0, 1, 2, 3, 16, 17, 18, 19]  # four in each IBNorm half
    useless = [k for k in range(32) if k not in useful]
    with torch.no_grad():  # conv_lr4x's other channels: no weights at all, in or out
        model.f_branch.conv_lr4x.layers[0].weight[useless] = 0
        model.f_branch.conv_f2x.layers[0].weight[:, useless] = 0  # lr2x sits at offset 0
        model.f_branch.conv_lr4x.layers[1].bnorm.weight[4:] = 0
    result = prune(model, target_macs=0.9, size=64)
    assert result.widths["f_branch.conv_lr4x.layers.0"] == (32, 8)
    assert result.kept["f_branch.conv_lr4x.layers.0"] == useful


def test_global_ranking_removes_the_requested_share():
    model = _randomise(mp.MODNet())
    result = prune(model, ratio=0.4, allocation="global", criterion="l2", size=64, verify=True)
    before = sum(b for b, _ in result.widths.values())
    after = sum(a for _, a in result.widths.values())
    assert 0.35 <= 1 - after / before <= 0.45


def test_plan_decisions_and_aliases(modnet):
    model, graph = modnet
    plan = {"hr_branch.tohr_enc2x.layers.0": {"keep": 20},
            "lr_branch.backbone.model.features.18.0": {"ratio": 0.5},  # alias of the shared backbone
            "backbone.model.features.3.conv.6": {"keep": 16},          # a residual stage member
            "backbone.model.features.2.conv.6": {"keep": 16}}
    keep = from_plan(graph, model, plan, Widths(8, 1))
    assert keep == {"hr_branch.tohr_enc2x.layers.0": 20, "backbone.model.features.18.0": 640,
                    "backbone.model.features.2.conv.6": 16}


@pytest.mark.parametrize("plan, message", [
    ({"hr_branch.tohr_enc2x": {"keep": 8}}, "name the layer"),
    ({"hr_branch.tohr_enc2x.layers.1": {"keep": 8}}, "IBNorm"),
    ({"hr_branch.tohr_enc2.layers.0": {"keep": 8}}, "did you mean hr_branch.tohr_enc2x.layers.0"),
    ({"f_branch.conv_f.1.layers.0": {"keep": 1}}, "is an output layer"),
    ({"hr_branch.conv_hr2x.1.layers.0": {"keep": 0}}, r"keep 0 must be an integer in \[1, 32\]"),
    ({"hr_branch.conv_hr2x.1.layers.0": {"keep": 33}}, r"keep 33 must be an integer in \[1, 32\]"),
    ({"hr_branch.conv_hr2x.1.layers.0": {"keep": 1}}, "empty a part of ibnorm `hr_branch.conv_hr2x.1.layers.1`"),
    ({"hr_branch.conv_hr2x.1.layers.0": {"ratio": 1.0}}, "ratio 1.0"),
    ({"hr_branch.conv_hr2x.1.layers.0": 8}, r"expected \{keep: N\}"),
    ({"backbone.model.features.2.conv.6": {"keep": 16},
      "backbone.model.features.3.conv.6": {"keep": 8}}, "same channel group"),
])
def test_bad_plans_are_refused_clearly(modnet, plan, message):
    model, graph = modnet
    with pytest.raises(UserError, match=message):
        from_plan(graph, model, plan, Widths(8, 1))


def test_plan_file_and_reusing_a_result_plan(tmp_path):
    model = _randomise(mp.MODNet())
    (tmp_path / "plan.yaml").write_text("hr_branch.conv_hr2x.0.layers.0: {keep: 40}\n"
                                        "backbone.model.features.18.0: {ratio: 0.25}\n")
    first = prune(model, plan=tmp_path / "plan.yaml", size=64, verify=True)
    assert first.model.arch.heads["hr_branch.conv_hr2x.0"] == 40 and first.model.arch.last == 960
    assert first.plan == {"backbone.model.features.18.0": {"keep": 960},
                          "hr_branch.conv_hr2x.0.layers.0": {"keep": 40}}
    (tmp_path / "again.json").write_text(json.dumps(first.plan))
    second = prune(model, plan=str(tmp_path / "again.json"), size=64)
    assert second.kept == first.kept
    (tmp_path / "bad.yaml").write_text("- just\n- a list\n")
    with pytest.raises(UserError, match="mapping"):
        prune(model, plan=tmp_path / "bad.yaml", size=64)


def test_pruning_twice_and_leaving_the_input_alone(tmp_path):
    model = _randomise(mp.MODNet())
    state = {k: v.clone() for k, v in model.state_dict().items()}
    once = prune(model, ratio=0.25, size=64)
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    mp.save(once.model, tmp_path / "once.safetensors")
    twice = prune(mp.load(tmp_path / "once.safetensors"), target_macs=0.6, criterion="fpgm",
                  size=64, verify=True)
    assert twice.macs_before == once.macs_after and twice.max_abs_diff <= TOL
    assert twice.model.training is False


@pytest.mark.parametrize("kwargs, message", [
    ({}, "exactly one of"), ({"ratio": 0.5, "target_macs": 0.5}, "exactly one of"),
    ({"ratio": 1.2}, "ratio"), ({"target_macs": 0.0}, "target MACs"),
    ({"ratio": 0.5, "allocation": "layerwise"}, "unknown allocation"),
    ({"target_macs": 0.5, "allocation": "global"}, "applies to a ratio"),
    ({"ratio": 0.5, "criterion": "l3"}, "unknown criterion"),
    ({"ratio": 0.5, "size": 100}, "multiples of 32"), ({"ratio": 0.5, "round_to": 0}, "round_to"),
    ({"target_macs": 0.01, "size": 64}, "cannot reach"),
])
def test_bad_arguments_are_user_errors(modnet, kwargs, message):
    with pytest.raises(UserError, match=message):
        prune(modnet[0], **kwargs)


def test_generic_model_through_the_api():
    model = _randomise(UNet())
    result = prune(model, ratio=0.5, round_to=4, criterion="l2", size=(64, 64), verify=True)
    assert result.model.dec1[0].in_channels == 3 + 12 + 8  # the image channels stay
    assert result.macs_after < result.macs_before / 2
