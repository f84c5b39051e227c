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
  students) the joint conv already runs blocked, and a second conv measured slower
  (conv_f.0 of a 25 %-MACs student, when it ran at full resolution: 90 ms apart vs 35 ms);
- lr16x, a 5x5 conv on the upsampled 1280 channels of the SE block, mixes the channels
  first, at 1/32, and upsamples its 25 taps per output channel (`UpsampledConv`): the
  teacher's costliest conv runs in a third of its time;
- up(lr8x), which the detail and fusion branches both read, is computed once; the SE
  block's Linear layers become 1x1 convs on the pooled tensor (no Flatten/Unsqueeze);
- the last two layers (conv_f.0 on cat(up(f2x), img), conv_f.1, sigmoid) run on the
  half-resolution grid (`HalfResolutionTail`): no full-resolution tensor but the image and
  the matte, where the official widths upsampled 32 channels and convolved them to 16.

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
MIX_FIRST_MIN_CHANNELS = 1024  # see UpsampledConv


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
    they are concatenated to the features here. `upsampled`: the block reads the bilinear x2
    upsample of the input it is given (`UpsampledConv`).
    """

    def __init__(self, block: Conv2dIBNormReLU, image_first: bool = False,
                 image_last: bool = False, upsampled: bool = False):
        super().__init__()
        conv, ibn = block.layers[0], block.layers[1]
        assert isinstance(ibn, IBNorm), "only a conv followed by an IBNorm is folded"
        self.split, self.channels = ibn.bn_channels, ibn.channels
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
        elif upsampled:
            self.conv = UpsampledConv(conv, weight, bias)
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


class UpsampledConv(nn.Module):
    """conv(up(x)) for a conv (stride 1, padding k // 2) on the bilinear x2 upsample of x.

    With many input channels it mixes them before the upsample: a 1x1 conv gives, at x's
    resolution, each output channel's k*k taps (tap (t, u): its C -> 1 weights), the upsample
    runs on those O k^2 channels instead of the C, a depthwise conv with one-hot kernels moves
    each tap into place and the k^2 taps are summed. Exact in real arithmetic: the upsample is
    linear and per channel, so it commutes with mixing channels, and the depthwise conv
    zero-pads where the conv did. The mixing, nearly all the MACs, runs on a quarter of the
    pixels. Alone, at a 512^2 image's sizes (ONNX Runtime, 2 threads,
    benchmarks/upsampled_conv.py): lr16x 1280 -> 96 fp32 31.5 -> 10.0 ms, int8 9.1 -> 5.3 ms;
    1280 -> 8 fp32 7.7 -> 1.3 ms, int8 6.9 -> 0.9 ms. With fewer input channels int8 lost
    (512 -> 96: 3.6 -> 4.1 ms; the 96 -> 32 lr8x 1.3 -> 3.6 ms, and fp32 3.3 -> 3.7 ms): below
    MIX_FIRST_MIN_CHANNELS the conv runs on up(x).
    """

    def __init__(self, like: nn.Conv2d, weight: torch.Tensor, bias: torch.Tensor,
                 mix_first: bool | None = None):
        """`mix_first`: None decides by the number of input channels (MIX_FIRST_MIN_CHANNELS)."""
        super().__init__()
        out, cin, k = weight.shape[0], weight.shape[1], weight.shape[-1]
        assert like.stride == (1, 1) and weight.shape[-2] == k and like.padding == (k // 2,) * 2
        self.mix_first = cin >= MIX_FIRST_MIN_CHANNELS if mix_first is None else mix_first
        if not self.mix_first:
            self.conv = _conv(like, weight, bias)
            return
        taps = out * k * k  # channel o k^2 + t k + u
        self.mix = nn.Conv2d(cin, taps, 1, bias=False)
        self.mix.weight.data.copy_(weight.permute(0, 2, 3, 1).reshape(taps, cin, 1, 1))
        self.shift = nn.Conv2d(taps, taps, k, padding=k // 2, groups=taps, bias=False)
        one_hot = torch.zeros(out, k, k, k, k)
        for t in range(k):
            for u in range(k):
                one_hot[:, t, u, t, u] = 1
        self.shift.weight.data.copy_(one_hot.reshape(taps, 1, k, k))
        # a 1x1 conv per output channel sums its taps: no Reshape, whose unknown output shape
        # would make the exporter write the tail's reshapes for the traced size only
        self.sum = nn.Conv2d(taps, out, 1, groups=out)
        self.sum.weight.data.fill_(1)
        self.sum.bias.data.copy_(bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.mix_first:
            return self.conv(_resize(x, 2))
        return self.sum(self.shift(_resize(self.mix(x), 2)))


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


# Bilinear x2 upsampling (align_corners=False) seen from the half-resolution grid: output
# pixel 2i+p (phase p) of a 3x3 conv on the upsampled map reads upsampled pixels
# 2i+p-1 .. 2i+p+1, each a blend of half-resolution pixels i-1 .. i+1. _BLEND[p][t, d] is the
# weight of pixel i+d-1 in the upsampled pixel that kernel tap t of phase p reads.
_BLEND = torch.tensor([[[.75, .25, 0], [.25, .75, 0], [0, .75, .25]],
                       [[.25, .75, 0], [0, .75, .25], [0, .25, .75]]], dtype=torch.float64)


def upsample_conv_kernel(weight: torch.Tensor) -> torch.Tensor:
    """(O, C, 3, 3) of a conv on up(x) -> (4 O, C, 3, 3) of a conv on x itself, output channel
    4 o + 2 py + px being output o at phase (py, px): F.pixel_shuffle's order. Exact away from
    the border, where the upsample clamps and the conv pads with zeros."""
    kernel = torch.einsum("octu,ptd,que->opqcde", weight.double(), _BLEND, _BLEND)
    return kernel.reshape(4 * weight.shape[0], weight.shape[1], 3, 3)


def phase_conv_kernel(weight: torch.Tensor) -> torch.Tensor:
    """(O, C, 3, 3) of a full-resolution conv (padding 1) -> (4 O, C, 4, 4) of a stride-2 conv
    (padding 1) whose output channel 4 o + 2 py + px is output o at phase (py, px). Exact:
    phase p at row i reads rows 2i+p-1 .. 2i+p+1, taps p .. p+2 of the 4 rows 2i-1 .. 2i+2."""
    out, cin = weight.shape[:2]
    kernel = weight.new_zeros(out, 2, 2, cin, 4, 4, dtype=torch.float64)
    for py in range(2):
        for px in range(2):
            kernel[:, py, px, :, py:py + 3, px:px + 3] = weight.double()
    return kernel.reshape(4 * out, cin, 4, 4)


def _ends(x: torch.Tensor, dim: int, length: int) -> torch.Tensor:
    """The first and the last `length` rows (dim 2) or columns (dim 3) of x, stacked; static
    slices (in an int8 graph, the Shape of a quantized tensor costs a DequantizeLinear)."""
    index = (slice(None),) * dim
    return torch.cat((x[index + (slice(0, length),)], x[index + (slice(-length, None),)]), dim)


class HalfResolutionTail(nn.Module):
    """sigmoid(conv_f.1(conv_f.0(cat(up(f2x), img)))) for the training graph's last two
    layers, computed on the half-resolution grid: the same matte, without the
    full-resolution upsample of f2x (32 channels in the official widths) or the conv output
    (16): in int8 these were the costliest tensors of the graph (benchmarks/deploy_graph.md).

    conv_f.0 on up(f2x) is a conv on f2x with four outputs per channel, one per output phase
    (`upsample_conv_kernel`); its image part a stride-2 conv (`phase_conv_kernel`), and the
    1x1 conv_f.1 runs per phase before the one-channel pixel shuffle. That is exact but on
    the outermost two full-resolution rows and columns, where the upsample clamps and the conv
    pads with zeros: those (one half-resolution row or column per side) are recomputed as
    the training graph does, on two-pixel strips of f2x and four-pixel strips of the image,
    their difference from the phase conv corrects InstanceNorm's statistics, and their mattes
    replace the phase conv's on that ring. Sizes must be even (MODNet's are multiples of 32).
    """

    def __init__(self, block: Conv2dIBNormReLU, last: nn.Conv2d):
        super().__init__()
        conv, ibn = block.layers[0], block.layers[1]
        assert isinstance(ibn, IBNorm) and conv.kernel_size == (3, 3) and conv.padding == (1, 1)
        assert last.kernel_size == (1, 1) and last.out_channels == 1, "a 1x1 conv to 1 channel"
        weight, bias, in_scale = _fold_batchnorm(conv, ibn)
        self.channels, self.split = ibn.channels, ibn.bn_channels
        self.eps = ibn.inorm.eps * in_scale ** 2  # as FoldedIBNormConv
        features, image = weight[:, :-IMAGE_CHANNELS], weight[:, -IMAGE_CHANNELS:]
        self.conv = _conv(conv, features, None)  # the training graph's conv, for the ring
        self.phase_conv = _conv(conv, upsample_conv_kernel(features).float(),
                                bias.repeat_interleave(4))
        self.image_conv = nn.Conv2d(IMAGE_CHANNELS, 4 * self.channels, 4, 2, 1, bias=False)
        self.image_conv.weight.data.copy_(phase_conv_kernel(image))
        self.project = nn.Conv2d(self.channels, 1, 1)  # conv_f.1, as weights for the MatMuls
        self.project.load_state_dict(last.state_dict())
        self.requires_grad_(False)

    def forward(self, f2x: torch.Tensor, img: torch.Tensor) -> torch.Tensor:
        # sizes from the input image: in an int8 graph a Shape of a quantized tensor costs a
        # DequantizeLinear of all of it
        n, h, w = img.shape[0], img.shape[2] // 2, img.shape[3] // 2
        z = self.phase_conv(f2x) + self.image_conv(img)  # N, 4 O, h, w
        # N, O, pixels: channel o's 4 phases one after another; the ring's end rows and columns
        # (exact values, as z has them) flattened alike and split as z
        z = z.reshape(n, self.channels, 4 * h * w)
        ring = [tuple(self._split(v.reshape(n, self.channels, -1)) for v in pair)
                for pair in self._ring(f2x, img)]  # ((BN, IN) exact, (BN, IN) phase) each
        bn, zi = self._split(z)
        mean, rstd, centred = self._in_stats(zi, [(e[1], p[1]) for e, p in ring], 4 * h * w)
        matte = self._matte(bn, centred, rstd).view(n, 4, h, w)
        rows, cols = (self._matte(ring_bn, None if ring_in is None else ring_in - mean, rstd)
                      for (ring_bn, ring_in), _ in ring)
        rows, cols = rows.view(n, 4, 2, w), cols.view(n, 4, h - 2, 2)
        top, bottom, left, right = rows[:, :, :1], rows[:, :, 1:], cols[..., :1], cols[..., 1:]
        middle = torch.cat((left, matte[:, :, 1:-1, 1:-1], right), dim=3)
        matte = F.pixel_shuffle(torch.cat((top, middle, bottom), dim=2), 2)
        # the image's own sizes: a shape the exporter can name (N x 1 x H x W)
        return torch.sigmoid(matte.view(n, 1, img.shape[2], img.shape[3]))

    def _ring(self, f2x: torch.Tensor, img: torch.Tensor) -> list[tuple[torch.Tensor, ...]]:
        """z's first and last rows, and first and last columns without the corners: (exact
        values, the phase conv's), each pair two rows or columns of z."""
        (rows, rows_phase), (cols, cols_phase) = (self._end_values(f2x, img, dim)
                                                  for dim in (2, 3))
        return [(rows, rows_phase), (cols[:, :, 1:-1], cols_phase[:, :, 1:-1])]

    def _end_values(self, f2x: torch.Tensor, img: torch.Tensor, dim: int):
        """Both ends of z along `dim`: the training graph's values from its own conv of the
        upsampled end strips of f2x (stacked, 4 wide: the upsample blends across the seam
        only where no kept output reads it), and the phase conv's; the image conv is shared."""
        strip = _ends(f2x, dim, 2)
        exact = F.pixel_unshuffle(_ends(self.conv(_resize(strip, 2)), dim, 2), 2)
        phase = _ends(F.conv2d(strip, self.phase_conv.weight, padding=1), dim, 1)
        shared = _ends(self.image_conv(_ends(img, dim, 4)), dim, 1)
        shared = shared + self.phase_conv.bias.view(1, -1, 1, 1)
        return exact + shared, phase + shared

    def _split(self, z: torch.Tensor):
        """(BN channels, IN channels) of z, None where there are none; one Split node: in an
        int8 graph each further slice of a quantized tensor costs a DequantizeLinear of it."""
        if self.split in (0, self.channels):
            return (z, None) if self.split else (None, z)
        bn, zi = torch.split(z, [self.split, self.channels - self.split], dim=1)
        return bn, zi

    def _in_stats(self, zi: torch.Tensor | None, ring, count: int):
        """(mean, 1/std, zi centred) of InstanceNorm's channels over the full-resolution map
        (N, C, 1 each but the last): zi's values with the ring's exact ones in place of the
        phase conv's (`ring`: their IN channels, pairs). Centred sums, as float32 needs; all
        None without IN channels."""
        if zi is None:
            return None, None, None
        total = zi.sum(dim=2, keepdim=True) + sum((e - p).sum(dim=2, keepdim=True)
                                                  for e, p in ring)
        mean = total / count
        centred = zi - mean
        squares = (centred * centred).sum(dim=2, keepdim=True) + sum(
            ((e - mean) ** 2 - (p - mean) ** 2).sum(dim=2, keepdim=True) for e, p in ring)
        return mean, torch.rsqrt(squares / count + self.eps), centred

    def _matte(self, bn: torch.Tensor | None, in_centred: torch.Tensor | None,
               rstd) -> torch.Tensor:
        """conv_f.1 of ReLU(IBNorm) -> N, 1, pixels (before the sigmoid), from the BN channels
        and the IN channels minus their mean (N, C, pixels); MatMuls: a 1x1 conv would pad its
        one output channel to ONNX Runtime's 16."""
        parts = [] if bn is None else [F.relu(bn)]
        if in_centred is not None:
            parts.append(F.relu(in_centred * rstd))
        weights = torch.split(self.project.weight[:, :, 0, 0], [p.shape[1] for p in parts], dim=1)
        out = self.project.bias.view(1, 1, 1)
        for weight, part in zip(weights, parts):
            out = out + torch.matmul(weight, part)
        return out

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
        self.lr16x = fold(lr.conv_lr16x, upsampled=True)
        self.lr8x = fold(lr.conv_lr8x, upsampled=True)
        self.tohr_enc2x, self.tohr_enc4x = fold(hr.tohr_enc2x), fold(hr.tohr_enc4x)
        self.conv_enc2x = fold(hr.conv_enc2x, image_first=True)  # cat(img/2, enc2x')
        self.conv_enc4x = fold(hr.conv_enc4x)
        self.hr4x = nn.ModuleList([fold(hr.conv_hr4x[0], image_last=True),  # (.., img/4)
                                   *(fold(block) for block in hr.conv_hr4x[1:])])
        self.hr2x = nn.ModuleList(fold(block) for block in hr.conv_hr2x)
        self.lr4x, self.f2x = fold(f.conv_lr4x), fold(f.conv_f2x)
        self.tail = HalfResolutionTail(f.conv_f[0], f.conv_f[1].layers[0])
        self.eval()

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        enc2x, enc4x, enc32x = self.backbone(img)
        lr8x_up = _resize(_join(self.lr8x(self.lr16x([self.se(enc32x)]))), 2)  # read twice below

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
        return self.tail(_join(self.f2x(lr2x + hr2x)), img)
