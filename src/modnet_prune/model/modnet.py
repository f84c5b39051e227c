"""MODNet (Ke et al., AAAI 2022) with every channel width taken from an `Arch`."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .arch import BLOCKS, ENC2X_BLOCK, ENC4X_BLOCK, Arch
from .layers import Conv2dIBNormReLU, InvertedResidual, SEBlock, conv_bn_relu6


def _resize(x: torch.Tensor, scale: float) -> torch.Tensor:
    return F.interpolate(x, scale_factor=scale, mode="bilinear", align_corners=False)


class MobileNetV2(nn.Module):
    """The feature extractor; classifier dropped. Returns the enc2x, enc4x, enc32x taps."""

    def __init__(self, arch: Arch):
        super().__init__()
        features: list[nn.Module] = [nn.Sequential(*conv_bn_relu6(3, arch.stem, 3, 2))]
        for index, (_, stride, residual) in enumerate(BLOCKS, start=1):
            cin, hidden, cout = arch.block_io(index)
            features.append(InvertedResidual(cin, hidden, cout, stride, residual, expand=index > 1))
        features.append(nn.Sequential(*conv_bn_relu6(arch.stages[-1], arch.last, 1)))
        self.features = nn.Sequential(*features)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i == ENC2X_BLOCK:
                enc2x = x
            elif i == ENC4X_BLOCK:
                enc4x = x
        return enc2x, enc4x, x


class Backbone(nn.Module):
    """Wrapper that gives the official `backbone.model.features.*` key prefix."""

    def __init__(self, arch: Arch):
        super().__init__()
        self.model = MobileNetV2(arch)

    def forward(self, x: torch.Tensor):
        return self.model(x)


def _head(arch: Arch, name: str, cin: int, kernel: int, stride: int = 1) -> Conv2dIBNormReLU:
    return Conv2dIBNormReLU(cin, arch.heads[name], kernel, stride, arch.ibn_bn[name])


class LRBranch(nn.Module):
    """Semantic branch: backbone, SE, two 5x5 convs up to 1/8 (lr8x), semantic head."""

    def __init__(self, arch: Arch, backbone: Backbone):
        super().__init__()
        h = arch.heads
        self.backbone = backbone  # shared with MODNet.backbone: its keys appear under both
        self.se_block = SEBlock(arch.last, arch.se_hidden)
        self.conv_lr16x = _head(arch, "lr_branch.conv_lr16x", arch.last, 5)
        self.conv_lr8x = _head(arch, "lr_branch.conv_lr8x", h["lr_branch.conv_lr16x"], 5)
        self.conv_lr = Conv2dIBNormReLU(h["lr_branch.conv_lr8x"], 1, 3, 2, norm_relu=False)

    def forward(self, img: torch.Tensor, inference: bool):
        enc2x, enc4x, enc32x = self.backbone(img)
        lr16x = self.conv_lr16x(_resize(self.se_block(enc32x), 2))
        lr8x = self.conv_lr8x(_resize(lr16x, 2))
        semantic = None if inference else torch.sigmoid(self.conv_lr(lr8x))
        return semantic, lr8x, enc2x, enc4x


class HRBranch(nn.Module):
    """Detail branch at 1/4 and 1/2 resolution, fed by the image and the backbone taps."""

    def __init__(self, arch: Arch):
        super().__init__()
        w = {name.removeprefix("hr_branch."): width for name, width in arch.heads.items()}

        def conv(name: str, cin: int, kernel: int, stride: int = 1) -> Conv2dIBNormReLU:
            return _head(arch, "hr_branch." + name, cin, kernel, stride)

        self.tohr_enc2x = conv("tohr_enc2x", arch.enc2x, 1)
        self.conv_enc2x = conv("conv_enc2x", 3 + w["tohr_enc2x"], 3, 2)
        self.tohr_enc4x = conv("tohr_enc4x", arch.enc4x, 1)
        self.conv_enc4x = conv("conv_enc4x", w["conv_enc2x"] + w["tohr_enc4x"], 3)
        self.conv_hr4x = nn.Sequential(
            conv("conv_hr4x.0", w["conv_enc4x"] + w["lr_branch.conv_lr8x"] + 3, 3),
            conv("conv_hr4x.1", w["conv_hr4x.0"], 3),
            conv("conv_hr4x.2", w["conv_hr4x.1"], 3))
        self.conv_hr2x = nn.Sequential(
            conv("conv_hr2x.0", w["conv_hr4x.2"] + w["tohr_enc2x"], 3),
            conv("conv_hr2x.1", w["conv_hr2x.0"], 3),
            conv("conv_hr2x.2", w["conv_hr2x.1"], 3),
            conv("conv_hr2x.3", w["conv_hr2x.2"], 3))
        self.conv_hr = nn.Sequential(
            conv("conv_hr.0", w["conv_hr2x.3"] + 3, 3),
            Conv2dIBNormReLU(w["conv_hr.0"], 1, 1, norm_relu=False))

    def forward(self, img, enc2x, enc4x, lr8x, inference: bool):
        img2x, img4x = _resize(img, 1 / 2), _resize(img, 1 / 4)
        enc2x = self.tohr_enc2x(enc2x)
        hr4x = self.conv_enc2x(torch.cat((img2x, enc2x), dim=1))
        enc4x = self.tohr_enc4x(enc4x)
        hr4x = self.conv_enc4x(torch.cat((hr4x, enc4x), dim=1))
        hr4x = self.conv_hr4x(torch.cat((hr4x, _resize(lr8x, 2), img4x), dim=1))
        hr2x = self.conv_hr2x(torch.cat((_resize(hr4x, 2), enc2x), dim=1))
        if inference:
            return None, hr2x
        detail = self.conv_hr(torch.cat((_resize(hr2x, 2), img), dim=1))
        return torch.sigmoid(detail), hr2x


class FusionBranch(nn.Module):
    """Fuses lr8x and hr2x into the full-resolution matte."""

    def __init__(self, arch: Arch):
        super().__init__()
        w = arch.heads
        self.conv_lr4x = _head(arch, "f_branch.conv_lr4x", w["lr_branch.conv_lr8x"], 5)
        self.conv_f2x = _head(arch, "f_branch.conv_f2x",
                              w["f_branch.conv_lr4x"] + w["hr_branch.conv_hr2x.3"], 3)
        self.conv_f = nn.Sequential(
            _head(arch, "f_branch.conv_f.0", w["f_branch.conv_f2x"] + 3, 3),
            Conv2dIBNormReLU(w["f_branch.conv_f.0"], 1, 1, norm_relu=False))

    def forward(self, img, lr8x, hr2x):
        lr2x = _resize(self.conv_lr4x(_resize(lr8x, 2)), 2)
        f2x = self.conv_f2x(torch.cat((lr2x, hr2x), dim=1))
        return torch.sigmoid(self.conv_f(torch.cat((_resize(f2x, 2), img), dim=1)))


class MODNet(nn.Module):
    """Trimap-free portrait matting.

    `model(img)` -> matte (N,1,H,W); `model(img, inference=False)` -> (semantic at 1/16,
    detail, matte). `img` is RGB normalised to [-1, 1]; H and W must be multiples of 32.
    `inference` is a Python bool, so fx tracing and ONNX export see a static graph.
    """

    def __init__(self, arch: Arch | None = None):
        super().__init__()
        self.arch = arch or Arch()
        self.backbone = Backbone(self.arch)
        self.lr_branch = LRBranch(self.arch, self.backbone)
        self.hr_branch = HRBranch(self.arch)
        self.f_branch = FusionBranch(self.arch)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_uniform_(m.weight, a=0, mode="fan_in", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, img: torch.Tensor, inference: bool = True):
        semantic, lr8x, enc2x, enc4x = self.lr_branch(img, inference)
        detail, hr2x = self.hr_branch(img, enc2x, enc4x, lr8x, inference)
        matte = self.f_branch(img, lr8x, hr2x)
        return matte if inference else (semantic, detail, matte)
