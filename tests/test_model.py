"""The MODNet definition: official key layout, structure, Arch validation and tracing."""
import json
from pathlib import Path

import pytest
import torch

import modnet_prune as mp
from modnet_prune.errors import UserError
from modnet_prune.model import HEAD_CONVS

MANIFEST = Path(__file__).parent / "data" / "modnet_official_state_dict_shapes.json"


def test_state_dict_matches_official_manifest_exactly():
    expected = json.loads(MANIFEST.read_text())
    state = mp.MODNet().state_dict()
    assert len(expected) == 751
    assert list(state) == list(expected)  # same keys, same order
    assert {k: list(v.shape) for k, v in state.items()} == expected


def test_unique_params_match_published_count():
    model = mp.MODNet()
    assert sum(p.numel() for p in model.parameters()) == 6_487_075
    conv_linear = sum(m.weight.numel() for m in model.modules()
                      if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)))
    assert conv_linear == 6_451_520


def test_backbone_is_shared_not_copied():
    model = mp.MODNet()
    assert model.lr_branch.backbone is model.backbone


def test_outputs_shapes_and_ranges():
    model = mp.MODNet().eval()
    img = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        matte = model(img)
        semantic, detail, matte_train = model(img, inference=False)
    assert matte.shape == (2, 1, 64, 96)
    assert semantic.shape == (2, 1, 4, 6) and detail.shape == (2, 1, 64, 96)
    assert torch.equal(matte, matte_train)  # the training heads do not change the matte
    assert 0 <= matte.min() and matte.max() <= 1


def test_inference_skips_training_heads():
    model = mp.MODNet().eval()
    called = []
    for name in ("lr_branch.conv_lr", "hr_branch.conv_hr"):
        model.get_submodule(name).register_forward_hook(lambda *a, n=name: called.append(n))
    with torch.no_grad():
        model(torch.randn(1, 3, 64, 64))
    assert called == []


def test_residual_blocks_are_fixed_by_position():
    # 64->64 in features[11] after "pruning" stage 4 to 64 must not gain a residual add
    arch = mp.Arch(stages=(16, 24, 32, 64, 64, 160, 320))
    features = mp.MODNet(arch).backbone.model.features
    assert [i for i in range(1, 18) if features[i].residual] == [3, 5, 6, 8, 9, 10, 12, 13, 15, 16]


def test_fx_trace_matches_eager():
    model = mp.MODNet().eval()
    traced = torch.fx.symbolic_trace(model, concrete_args={"inference": False})
    img = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        for a, b in zip(model(img, inference=False), traced(img, False)):
            torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_arch_json_roundtrip_and_custom_widths():
    heads = dict(mp.Arch().heads, **{"hr_branch.conv_hr2x.1": 24, "f_branch.conv_f.0": 8})
    arch = mp.Arch(last=640, se_hidden=160, heads=heads,
                   ibn_bn=dict(mp.Arch().ibn_bn, **{"hr_branch.conv_hr2x.1": 5}))
    assert mp.Arch.from_json(arch.to_json()) == arch
    model = mp.MODNet(arch)
    assert model.hr_branch.conv_hr2x[1].layers[1].bn_channels == 5
    assert model.hr_branch.conv_hr2x[2].layers[0].in_channels == 24
    assert model.f_branch.conv_f[1].layers[0].in_channels == 8
    assert set(arch.diff()) == {"last", "se_hidden", "hr_branch.conv_hr2x.1",
                                "f_branch.conv_f.0", "hr_branch.conv_hr2x.1 (bn)"}  # conv_f.0 keeps 8 BN channels
    assert model.eval()(torch.randn(1, 3, 32, 32)).shape == (1, 1, 32, 32)


@pytest.mark.parametrize("bad", [
    dict(stages=(16, 24)),
    dict(last=0),
    dict(heads={k: 8 for k in HEAD_CONVS[:-1]}),
    dict(ibn_bn={k: 99 for k in HEAD_CONVS}),
])
def test_invalid_arch_is_refused(bad):
    with pytest.raises(UserError, match="invalid Arch"):
        mp.Arch(**bad)


@pytest.mark.parametrize("bn_channels", [0, 3, 6])
def test_ibnorm_with_one_kind_of_channel_only(bn_channels):
    from modnet_prune.model.layers import IBNorm

    norm = IBNorm(6, bn_channels).eval()
    with torch.no_grad():
        norm.bnorm.running_mean.uniform_(-1, 1)
    x = torch.randn(2, 6, 5, 5)
    bn, inst = x[:, :bn_channels], x[:, bn_channels:]
    # per-channel references, written out: (x - mean) / sqrt(var + eps) [* w + b]
    mean, var = norm.bnorm.running_mean[None, :, None, None], norm.bnorm.running_var[None, :, None, None]
    bn_ref = (bn - mean) / torch.sqrt(var + norm.bnorm.eps)
    bn_ref = bn_ref * norm.bnorm.weight[None, :, None, None] + norm.bnorm.bias[None, :, None, None]
    mu = inst.mean((2, 3), keepdim=True)
    sigma2 = ((inst - mu) ** 2).mean((2, 3), keepdim=True)
    in_ref = (inst - mu) / torch.sqrt(sigma2 + norm.inorm.eps)
    torch.testing.assert_close(norm(x), torch.cat((bn_ref, in_ref), 1))
