"""An inference-only MODNet that computes the same matte in fewer passes over memory.

`MODNet(img)` written for training costs a deployed graph memory-bound passes around each
head conv: its IBNorm slices the conv output in two, runs BatchNorm on one half (which no
runtime folds, since it does not follow the conv directly), InstanceNorm on the other,
concatenates the halves and runs ReLU as a pass of its own; the raw image is concatenated
to features before three convs. `InferenceMODNet` rewrites that for any widths, exactly in
real arithmetic (float32 parity ~1e-6):

- the BatchNorm of each IBNorm is folded into the rows of the conv that feeds it; the IN
  rows lose their bias (InstanceNorm subtracts every channel's mean anyway) and are scaled
  to the BN rows' weight norm, InstanceNorm's eps with them (`_fold_batchnorm`: one range
  for the conv output, which int8 quantizes with one scale). The conv output
  is split once, and each part gets its own ReLU (BN) or InstanceNorm + ReLU (IN); an
  IBNorm with channels of one kind only needs no split;
- a layer's output stays a list of parts, joined once: by the consumer's own concat where
  it has one (no concat of a concat); a bilinear resize, being per channel, runs on the
  parts when its result is concatenated and on the joined tensor when a conv reads it;
- a conv reading [features, image] with at least 16 feature channels becomes
  conv(features) + conv(image): ONNX Runtime's blocked (NCHWc) conv kernels take a multiple
  of 16 input channels or fewer than 16, so the official 35 or 99 fell back to im2col +
  GEMM, with layout reorders around the concat. With fewer feature channels (pruned
  students) the joint conv already runs blocked, and a second full-resolution conv measured
  slower (conv_f.0 of a 25 %-MACs student: 90 ms apart vs 35 ms joint);
- up(lr8x), which the detail and fusion branches both read, is computed once; the SE
  block's Linear layers become 1x1 convs on the pooled tensor (no Flatten/Unsqueeze);
- the last conv (1x1 to the one matte channel) reads conv_f.0's parts by MatMuls
  (`PartsProjection`), with no full-resolution concat before it.

Measured against the other obvious rewrite, two convs per IBNorm (BN rows fused with
their ReLU, IN rows apart): reading the input twice cost more than the Split it saves.
The backbone is kept as it is: the ONNX exporter already folds its BatchNorms into the convs.
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from ..model.layers import Conv2dIBNormReLU, IBNorm, SEBlock
from ..model.modnet import MODNet

Parts = list[torch.Tensor]  # one layer's output as channel blocks, in order
IMAGE_CHANNELS = 3
IMAGE_APART_MIN_FEATURES = 16  # see the module docstring


def _resize(x: torch.Tensor, scale: float) -> torch.Tensor:
    return F.interpolate(x, scale_factor=scale, mode="bilinear", align_corners=False)


def _join(parts: Parts) -> torch.Tensor:
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)


def _conv(like: nn.Conv2d, weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Conv2d:
    """A conv with `like`'s kernel, stride and padding and the given (float32) weights."""
    conv = nn.Conv2d(weight.shape[1], weight.shape[0], like.kernel_size, like.stride,
                     like.padding, like.dilation, bias=bias is not None)
    conv.weight.data.copy_(weight)
    if bias is not None:
        conv.bias.data.copy_(bias)
    return conv


@torch.no_grad()
def _fold_batchnorm(conv: nn.Conv2d, ibn: IBNorm) -> tuple[torch.Tensor, torch.Tensor, float]:
    """(weight, bias, a) of `conv` with IBNorm's eval-mode BatchNorm folded into its first rows
    (y = (x - mean) * gamma / sqrt(var + eps) + beta), computed in float64; the IN rows get a
    zero bias (InstanceNorm removes any per-channel constant) and are scaled by `a`, which
    gives them the RMS weight norm of the folded BN rows. InstanceNorm is blind to that scale
    when its eps becomes eps * a**2, so the matte is unchanged in real arithmetic; what it buys
    is one range for the conv's output: the raw IN rows reach +-300 where the BN rows stay
    within +-8 (lr16x of a trained teacher at 512x512), and int8, with one scale per tensor,
    kept ~5 levels for the BN rows (benchmarks/int8.md)."""
    weight, bias = conv.weight.detach().double(), conv.bias.detach().double().clone()
    scale, split, bn = torch.ones_like(bias), ibn.bn_channels, ibn.bnorm
    if split:
        scale[:split] = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
        bias[:split] = (bias[:split] - bn.running_mean.double()) * scale[:split] + bn.bias.double()
    bias[split:] = 0
    folded = weight * scale.view(-1, 1, 1, 1)
    a = 1.0
    if 0 < split < len(bias):
        rms = [float(rows.pow(2).sum(dim=(1, 2, 3)).mean().sqrt()) for rows in
               (folded[:split], folded[split:])]
        a = rms[0] / rms[1] if rms[0] > 0 and rms[1] > 0 else 1.0
        folded[split:] *= a
    return folded.float(), bias.float(), a


class FoldedIBNormConv(nn.Module):
    """conv -> IBNorm -> ReLU with the BatchNorm folded into the conv; returns the parts.

    `image_first` / `image_last`: the conv's first / last 3 input channels are the raw
    image, given to `forward` apart; they get a conv of their own when `image_apart`, else
    they are concatenated to the features here.
    """

    def __init__(self, block: Conv2dIBNormReLU, image_first: bool = False,
                 image_last: bool = False):
        super().__init__()
        conv, ibn = block.layers[0], block.layers[1]
        assert isinstance(ibn, IBNorm), "only a conv followed by an IBNorm is folded"
        self.split, self.channels = ibn.bn_channels, ibn.channels
        self.part_sizes = [n for n in (self.split, self.channels - self.split) if n]
        weight, bias, in_scale = _fold_batchnorm(conv, ibn)
        self.eps = ibn.inorm.eps * in_scale ** 2  # IN(a z, eps a^2) == IN(z, eps)
        cin = weight.shape[1]
        self.image_first = image_first
        self.image_apart = (image_first or image_last) and (
            cin - IMAGE_CHANNELS >= IMAGE_APART_MIN_FEATURES)
        if self.image_apart:
            image = slice(0, IMAGE_CHANNELS) if image_first else slice(cin - IMAGE_CHANNELS, cin)
            features = slice(IMAGE_CHANNELS, cin) if image_first else slice(0, cin - IMAGE_CHANNELS)
            self.conv = _conv(conv, weight[:, features], bias)
            self.image_conv = _conv(conv, weight[:, image], None)
        else:
            self.conv = _conv(conv, weight, bias)

    def forward(self, x: Parts, image: torch.Tensor | None = None) -> Parts:
        """`x`: the input's parts (joined here, with the image unless it is convolved apart)."""
        if image is None:
            z = self.conv(_join(x))
        elif self.image_apart:
            z = self.conv(_join(x)) + self.image_conv(image)
        else:
            z = self.conv(torch.cat((image, *x) if self.image_first else (*x, image), dim=1))
        if self.split == self.channels:
            return [F.relu(z)]
        if self.split == 0:
            return [F.relu(F.instance_norm(z, eps=self.eps))]
        bn_part, in_part = torch.split(z, [self.split, self.channels - self.split], dim=1)
        return [F.relu(bn_part), F.relu(F.instance_norm(in_part, eps=self.eps))]


class ConvSE(nn.Module):
    """The SE block with its Linear layers as 1x1 convs on the pooled (N, C, 1, 1) tensor."""

    def __init__(self, se: SEBlock):
        super().__init__()
        squeeze, excite = se.fc[0], se.fc[2]
        self.squeeze = nn.Conv2d(squeeze.in_features, squeeze.out_features, 1, bias=False)
        self.excite = nn.Conv2d(excite.in_features, excite.out_features, 1, bias=False)
        self.squeeze.weight.data.copy_(squeeze.weight.detach()[:, :, None, None])
        self.excite.weight.data.copy_(excite.weight.detach()[:, :, None, None])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = F.adaptive_avg_pool2d(x, 1)
        return x * torch.sigmoid(self.excite(F.relu(self.squeeze(pooled))))


class PartsProjection(nn.Module):
    """The 1x1 conv to one channel at the end, over a layer's parts: a MatMul per part, summed.

    Reading the parts where they are saves a full-resolution concat, and a MatMul does not
    pad its one output channel to the 16 of a blocked conv (ONNX Runtime's NCHWc kernels).
    """

    def __init__(self, conv: nn.Conv2d, sizes: list[int]):
        super().__init__()
        assert conv.kernel_size == (1, 1) and conv.out_channels == 1, "a 1x1 conv to 1 channel"
        rows = torch.split(conv.weight.detach()[:, :, 0, 0].float(), sizes, dim=1)
        self.weights = nn.ParameterList(nn.Parameter(w.clone(), requires_grad=False) for w in rows)
        self.bias = nn.Parameter(conv.bias.detach().float().view(1, 1, 1).clone(),
                                 requires_grad=False)

    def forward(self, parts: Parts) -> torch.Tensor:
        n, _, h, w = parts[0].shape
        out = self.bias
        for weight, part in zip(self.weights, parts):
            # a MatMul: ONNX Runtime's Einsum measured 20x slower for the same product
            out = out + torch.matmul(weight, part.reshape(n, weight.shape[1], -1))  # N, 1, HW
        return out.view(n, 1, h, w)


class InferenceMODNet(nn.Module):
    """image -> matte, equal to `model(image)` (matte only), for a MODNet of any widths.

    The weights are copied (BatchNorm folded in float64, stored in float32); later changes
    to `model` do not reach this module.
    """

    def __init__(self, model: MODNet):
        super().__init__()
        if not isinstance(model, MODNet):
            raise TypeError(f"InferenceMODNet rewrites a MODNet, not {type(model).__name__}")
        model = copy.deepcopy(model).float().cpu().eval()
        lr, hr, f = model.lr_branch, model.hr_branch, model.f_branch
        fold = FoldedIBNormConv
        self.backbone = model.backbone
        self.se = ConvSE(lr.se_block)
        self.lr16x, self.lr8x = fold(lr.conv_lr16x), fold(lr.conv_lr8x)
        self.tohr_enc2x, self.tohr_enc4x = fold(hr.tohr_enc2x), fold(hr.tohr_enc4x)
        self.conv_enc2x = fold(hr.conv_enc2x, image_first=True)  # cat(img/2, enc2x')
        self.conv_enc4x = fold(hr.conv_enc4x)
        self.hr4x = nn.ModuleList([fold(hr.conv_hr4x[0], image_last=True),  # (.., img/4)
                                   *(fold(block) for block in hr.conv_hr4x[1:])])
        self.hr2x = nn.ModuleList(fold(block) for block in hr.conv_hr2x)
        self.lr4x, self.f2x = fold(f.conv_lr4x), fold(f.conv_f2x)
        self.f0 = fold(f.conv_f[0], image_last=True)  # cat(up(f2x), img)
        self.f1 = PartsProjection(f.conv_f[1].layers[0], self.f0.part_sizes)
        self.eval()

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        enc2x, enc4x, enc32x = self.backbone(img)
        lr16x = self.lr16x([_resize(self.se(enc32x), 2)])
        lr8x_up = _resize(_join(self.lr8x([_resize(_join(lr16x), 2)])), 2)  # read twice below

        enc2x = self.tohr_enc2x([enc2x])
        hr4x = self.conv_enc2x(enc2x, _resize(img, 1 / 2))
        hr4x = self.conv_enc4x(hr4x + self.tohr_enc4x([enc4x]))
        hr4x = self.hr4x[0](hr4x + [lr8x_up], _resize(img, 1 / 4))
        for layer in self.hr4x[1:]:
            hr4x = layer(hr4x)
        hr2x = [_resize(p, 2) for p in hr4x] + enc2x
        for layer in self.hr2x:
            hr2x = layer(hr2x)

        lr2x = [_resize(p, 2) for p in self.lr4x([lr8x_up])]
        f2x = self.f2x(lr2x + hr2x)
        if self.f0.image_apart:  # a conv reads up(f2x) alone: join at half resolution, then resize
            f2x_up = [_resize(_join(f2x), 2)]
        else:  # joined with the image at full resolution anyway
            f2x_up = [_resize(p, 2) for p in f2x]
        return torch.sigmoid(self.f1(self.f0(f2x_up, img)))
