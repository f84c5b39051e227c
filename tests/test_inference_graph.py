"""The fused inference graph: the same matte as MODNet's own forward, for any widths and
sizes, in an ONNX graph with fewer nodes of every kind the rewrite removes."""
import collections
import dataclasses

import numpy as np
import onnx
import onnx.numpy_helper
import pytest
import torch

from modnet_prune import MODNet, save
from modnet_prune.cli import main
from modnet_prune.errors import UserError
from torch.nn import functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from modnet_prune.deploy.inference_graph import (MIX_FIRST_MIN_CHANNELS, FoldedIBNormConv,
                                                 HalfResolutionTail, InferenceMODNet,
                                                 UpsampledConv, phase_conv_kernel,
                                                 upsample_conv_kernel)
from modnet_prune.model.layers import Conv2dIBNormReLU, IBNorm
from modnet_prune.deploy.onnx_export import export_onnx
from modnet_prune.deploy.runtime import OnnxRuntime
from modnet_prune.model.arch import HEAD_CONVS
from helpers import randomise_bn, tiny_arch

SIZES = [(1, 64, 64), (2, 96, 160), (1, 160, 96)]  # odd valid sizes: 96 and 160 are 3x, 5x 32


def uneven_arch():
    """Tiny widths with every IBNorm case: only BN, only IN, and uneven splits; conv_enc2x
    reads 8 feature channels (image concatenated), conv_hr4x.0 24 (image convolved apart)."""
    arch = tiny_arch()
    heads = dict.fromkeys(HEAD_CONVS, 8)
    heads.update({"hr_branch.conv_hr4x.0": 24,
                  "lr_branch.conv_lr8x": 16})
    bn = {name: int(width / 2) for name, width in heads.items()}
    bn.update({"hr_branch.conv_hr2x.0": 8,             # only BN
               "hr_branch.conv_hr2x.1": 0,             # only IN
               "f_branch.conv_f.0": 0,                 # only IN, before the output conv
               "lr_branch.conv_lr16x": 8,              # only BN
               "hr_branch.conv_hr4x.0": 5, "f_branch.conv_f2x": 3, "lr_branch.conv_lr8x": 11})
    return dataclasses.replace(arch, heads=heads, ibn_bn=bn)


def forward_both(model, shapes, atol=1e-4):
    fused = InferenceMODNet(model)
    rng = np.random.default_rng(5)
    worst = 0.0
    for n, h, w in shapes:
        x = torch.from_numpy(rng.uniform(-1, 1, (n, 3, h, w)).astype(np.float32))
        with torch.no_grad():
            expected, got = model(x), fused(x)
        assert got.shape == expected.shape == (n, 1, h, w)
        worst = max(worst, float((got - expected).abs().max()))
    assert worst <= atol, worst
    return fused


def test_official_architecture_same_matte():
    torch.manual_seed(2)
    fused = forward_both(randomise_bn(MODNet()), SIZES[:2])
    # the official widths convolve the raw image apart where it enters at 1/2 and 1/4
    assert fused.conv_enc2x.image_apart and fused.hr4x[0].image_apart
    assert 0 < fused.tail.split < fused.tail.channels


def test_pruned_widths_with_one_kind_ibnorms_same_matte():
    torch.manual_seed(3)
    model = randomise_bn(MODNet(uneven_arch()))
    fused = forward_both(model, SIZES)
    assert not fused.conv_enc2x.image_apart and fused.hr4x[0].image_apart  # both paths ran
    assert fused.tail.split == 0 and fused.hr2x[0].split == fused.hr2x[0].channels and fused.hr2x[1].split == 0


def _rms(rows: torch.Tensor) -> float:
    return float(rows.double().pow(2).sum(dim=(1, 2, 3)).mean().sqrt())


def test_in_rows_take_the_bn_rows_range_and_the_matte_stays():
    """As in trained teachers, the raw IN rows of a head conv output far more than the
    folded BN rows: the rewrite scales them to the BN rows' weight norm (one range for int8's
    one scale per tensor) and InstanceNorm's eps by the square of that factor."""
    torch.manual_seed(4)
    model = randomise_bn(MODNet(uneven_arch()))
    expected_scale = {}
    for name, block in model.named_modules():
        ibn = block.layers[1] if isinstance(block, Conv2dIBNormReLU) and len(block.layers) > 1 else None
        if isinstance(ibn, IBNorm) and 0 < ibn.bn_channels < ibn.channels:
            conv = block.layers[0]
            split = ibn.bn_channels
            with torch.no_grad():
                conv.weight[split:] *= 50
            bn = ibn.bnorm
            gain = (bn.weight / torch.sqrt(bn.running_var + bn.eps)).detach().double()
            folded_bn = conv.weight.detach().double()[:split] * gain.view(-1, 1, 1, 1)
            expected_scale[name] = _rms(folded_bn) / _rms(conv.weight.detach()[split:])
    assert len(expected_scale) >= 4
    fused = forward_both(model, SIZES)
    balanced = [m for m in fused.modules() if isinstance(m, FoldedIBNormConv) and 0 < m.split < m.channels]
    assert len(balanced) == len(expected_scale) - 1  # conv_hr.0 feeds only the training detail head
    for m in balanced:
        a = (m.eps / 1e-5) ** 0.5  # IBNorm's InstanceNorm eps is torch's default, 1e-5
        assert any(a == pytest.approx(s, rel=1e-5) for s in expected_scale.values())
        conv = m.conv.conv if isinstance(m.conv, UpsampledConv) else m.conv  # tiny: no mixing
        w = conv.weight.detach()
        if m.image_apart:
            w = torch.cat((w, m.image_conv.weight.detach()), dim=1)
        assert _rms(w[m.split:]) == pytest.approx(_rms(w[:m.split]), rel=1e-5)


def _up(x):
    return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)


def test_phase_kernels_against_full_resolution_convs():
    torch.manual_seed(7)
    x, img = torch.randn(2, 5, 8, 10, dtype=torch.float64), torch.randn(2, 3, 16, 20, dtype=torch.float64)
    w, wi = torch.randn(4, 5, 3, 3, dtype=torch.float64), torch.randn(4, 3, 3, 3, dtype=torch.float64)
    expected = F.conv2d(_up(x), w, padding=1)
    got = F.pixel_shuffle(F.conv2d(x, upsample_conv_kernel(w), padding=1), 2)
    inner = (slice(None), slice(None), slice(2, -2), slice(2, -2))
    torch.testing.assert_close(got[inner], expected[inner], rtol=0, atol=1e-12)
    ring = (got - expected).abs()
    ring[inner] = 0
    assert ring.amax(dim=(0, 1))[[0, 1, -2, -1]].min() > 1e-3  # the two outer rows differ
    got = F.pixel_shuffle(F.conv2d(img, phase_conv_kernel(wi), stride=2, padding=1), 2)
    torch.testing.assert_close(got, F.conv2d(img, wi, padding=1), rtol=0, atol=1e-12)


@pytest.mark.parametrize("kernel", [5, 3])
def test_upsampled_conv_mixes_first_and_is_exact(kernel):
    """conv(up(x)) with the channels mixed before the upsample, against the conv run on the
    upsampled tensor, in float64 (weights rounded to float32 as the module stores them): the
    same at every pixel, the border included, down to a 1x1 input."""
    torch.manual_seed(9)
    cin = MIX_FIRST_MIN_CHANNELS
    weight, bias = torch.randn(3, cin, kernel, kernel) / cin, torch.randn(3)
    like = torch.nn.Conv2d(cin, 3, kernel, padding=kernel // 2)
    module = UpsampledConv(like, weight, bias).double()
    assert module.mix_first and not hasattr(module, "conv")
    for h, w in [(1, 1), (2, 3), (5, 4)]:
        x = torch.randn(2, cin, h, w, dtype=torch.float64)
        expected = F.conv2d(_up(x), weight.double(), bias.double(), padding=kernel // 2)
        with torch.no_grad():
            torch.testing.assert_close(module(x), expected, rtol=0, atol=1e-12)
    narrow = UpsampledConv(torch.nn.Conv2d(cin - 1, 3, kernel, padding=kernel // 2),
                           weight[:, 1:], bias)
    assert not narrow.mix_first  # fewer channels: the conv on the upsampled tensor


def test_fused_export_with_a_mixing_lr16x_runs_at_every_size(tmp_path):
    """lr16x reading 1024 channels mixes first; the dynamic export stays dynamic (a Reshape
    there once fixed the tail's shapes to the traced size)."""
    torch.manual_seed(10)
    model = randomise_bn(MODNet(dataclasses.replace(tiny_arch(), last=MIX_FIRST_MIN_CHANNELS)))
    fused = InferenceMODNet(model)
    assert fused.lr16x.conv.mix_first and not fused.lr8x.conv.mix_first
    export_onnx(model, tmp_path / "m.onnx")  # its parity check: 256x256 and 2x128x192
    rt = OnnxRuntime(tmp_path / "m.onnx")
    x = np.random.default_rng(11).uniform(-1, 1, (1, 3, 96, 160)).astype(np.float32)
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(rt(x), expected, atol=1e-4, rtol=0)


def _tail_arch(bn_channels):
    arch = tiny_arch()
    return dataclasses.replace(arch, ibn_bn={**arch.ibn_bn, "f_branch.conv_f.0": bn_channels})


@pytest.mark.parametrize("bn_channels", [4, 0, 8])  # conv_f.0: both kinds, only IN, only BN
def test_tail_is_exact_on_the_ring_and_needs_its_correction(bn_channels, monkeypatch):
    torch.manual_seed(8)
    model = randomise_bn(MODNet(_tail_arch(bn_channels)))
    fused = forward_both(model, SIZES, atol=2e-5)
    assert fused.tail.split == bn_channels
    x = torch.rand(1, 3, 64, 96) * 2 - 1
    with torch.no_grad():
        expected = model(x)
        ring = HalfResolutionTail._ring
        monkeypatch.setattr(HalfResolutionTail, "_ring", lambda self, f2x, img: [
            (phase, phase) for _, phase in ring(self, f2x, img)])
        uncorrected = (fused(x) - expected).abs()[0, 0]
    assert uncorrected[[0, 1, -2, -1]].max() > 1e-3 and uncorrected[:, [0, 1, -2, -1]].max() > 1e-3
    if bn_channels < 8:  # InstanceNorm's statistics: the ring moves the whole matte
        assert uncorrected[2:-2, 2:-2].max() > 1e-5


class _Shapes(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.shapes = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.shapes += [tuple(t.shape) for t in torch.utils._pytree.tree_leaves(out)
                        if isinstance(t, torch.Tensor)]
        return out


def test_no_full_resolution_tensor_wider_than_the_image():
    fused = InferenceMODNet(randomise_bn(MODNet(tiny_arch())))
    with torch.no_grad(), _Shapes() as seen:
        fused(torch.rand(1, 3, 64, 96))
    full = {s for s in seen.shapes if len(s) == 4 and s[2:] == (64, 96)}
    assert full == {(1, 3, 64, 96), (1, 1, 64, 96)}  # the image (and views of it), the matte
    assert any(s[2:] == (32, 48) and s[1] == 4 * 8 for s in seen.shapes)  # the phase conv ran


def test_rewrite_copies_weights():
    model = randomise_bn(MODNet(tiny_arch()))
    fused = InferenceMODNet(model)
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        before = fused(x)
        for p in model.parameters():
            p.zero_()
        assert torch.equal(fused(x), before)
    with pytest.raises(TypeError, match="rewrites a MODNet"):
        InferenceMODNet(torch.nn.Conv2d(3, 1, 1))


def _ops(path):
    """Node counts by op type, of float-valued nodes (not the exporter's shape arithmetic)
    outside the half-resolution tail, whose ring strips are small by design."""
    graph = onnx.shape_inference.infer_shapes(onnx.load(str(path))).graph
    types = {v.name: v.type.tensor_type.elem_type for v in (*graph.value_info, *graph.output)}
    return collections.Counter(n.op_type for n in graph.node if not n.name.startswith("/tail/")
                               and types.get(n.output[0]) == onnx.TensorProto.FLOAT)


def _resizes_of_one_tensor(path):
    """Resize nodes whose input and scales another Resize already has (work done twice)."""
    graph = onnx.load(str(path)).graph
    constants = {t.name: tuple(onnx.numpy_helper.to_array(t).ravel()) for t in graph.initializer}
    seen, repeats = set(), 0
    for node in graph.node:
        if node.op_type == "Resize":
            key = (node.input[0], *(constants.get(name, name) for name in node.input[1:]))
            repeats += key in seen
            seen.add(key)
    return repeats


def test_fused_export_removes_nodes_and_matches_torch(tmp_path):
    # Random tiny models with IN-only layers are ill-conditioned: for some seeds float32
    # ORT and torch differ by ~1e-4 on the plain graph already (and the fused one alike).
    torch.manual_seed(2)
    model = randomise_bn(MODNet(uneven_arch()))
    plain = export_onnx(model, tmp_path / "plain.onnx", graph="plain")
    fused = export_onnx(model, tmp_path / "fused.onnx")
    assert fused.graph == "fused" and plain.graph == "plain"
    before, after = _ops(tmp_path / "plain.onnx"), _ops(tmp_path / "fused.onnx")
    assert after["BatchNormalization"] == 0 < before["BatchNormalization"]
    assert after["Concat"] < before["Concat"]
    assert after["Slice"] + after["Split"] < before["Slice"] + before["Split"]
    # the tail's InstanceNorm (conv_f.0) is written out: its statistics are corrected on the ring
    assert after["InstanceNormalization"] == before["InstanceNormalization"] - 1
    assert _resizes_of_one_tensor(tmp_path / "fused.onnx") == 0
    assert _resizes_of_one_tensor(tmp_path / "plain.onnx") == 1  # up(lr8x), twice
    # independent of the exporter's own check: ORT on the saved file vs the plain forward
    rt = OnnxRuntime(tmp_path / "fused.onnx")
    rng = np.random.default_rng(6)
    for n, h, w in SIZES:
        x = rng.uniform(-1, 1, (n, 3, h, w)).astype(np.float32)
        with torch.no_grad():
            expected = model(torch.from_numpy(x)).numpy()
        np.testing.assert_allclose(rt(x), expected, atol=1e-4, rtol=0)


def test_cli_graph_option(tmp_path, capsys):
    model = randomise_bn(MODNet(tiny_arch()))
    save(model, tmp_path / "m.safetensors")
    for graph in ("plain", "fused"):
        out = tmp_path / f"{graph}.onnx"
        assert main(["export", "--checkpoint", str(tmp_path / "m.safetensors"), "--out", str(out),
                     "--graph", graph]) == 0
        assert f"({graph} graph)" in capsys.readouterr().out
        meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
        assert meta["graph"] == graph
    with pytest.raises(UserError, match="choose from fused, plain"):
        export_onnx(model, tmp_path / "x.onnx", graph="other")
