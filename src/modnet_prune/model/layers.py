"""Building blocks of MODNet, named so that state-dict keys match the official release."""
from __future__ import annotations

import torch
from torch import nn

from ..graph.kinds import LayerKind, Removed, register
from ..graph.torch_layers import norm_rule, norm_scales, shrink_norm, zero_norm


class IBNorm(nn.Module):
    """BatchNorm on the first `bn_channels` channels, InstanceNorm on the rest.

    The split is stored per layer: after pruning the two parts are generally unequal, and
    int(C/2) of a pruned width is not the number of BN channels that survived.
    """

    def __init__(self, channels: int, bn_channels: int | None = None):
        super().__init__()
        self.bn_channels = int(channels / 2) if bn_channels is None else bn_channels
        self.bnorm = nn.BatchNorm2d(self.bn_channels, affine=True)
        self.inorm = nn.InstanceNorm2d(channels - self.bn_channels, affine=False)

    @property
    def channels(self) -> int:
        return self.bnorm.num_features + self.inorm.num_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # A pruned layer may keep channels of one kind only; the norms reject empty input.
        if self.bn_channels == 0:
            return self.inorm(x)
        if self.bn_channels == self.channels:
            return self.bnorm(x)
        bn_x = self.bnorm(x[:, : self.bn_channels].contiguous())
        in_x = self.inorm(x[:, self.bn_channels :].contiguous())
        return torch.cat((bn_x, in_x), dim=1)


# --- IBNorm as a layer kind: registered like any user's layer (graph/kinds.py) -----------
def _on_halves(ibn: IBNorm, removed: Removed, action) -> set[int]:
    """Apply a norm's shrink or zero to each half; returns the BatchNorm part's positions."""
    split, positions = ibn.bn_channels, removed.get("norm", set())
    bn_part = {p for p in positions if p < split}
    action(ibn.bnorm, bn_part)
    action(ibn.inorm, {p - split for p in positions if p >= split})
    return bn_part


def _shrink_ibnorm(ibn: IBNorm, removed: Removed) -> None:
    ibn.bn_channels -= len(_on_halves(ibn, removed, shrink_norm))


def _zero_ibnorm(ibn: IBNorm, removed: Removed) -> None:
    _on_halves(ibn, removed, zero_norm)


def _ibnorm_scales(ibn: IBNorm, role: str, weight: torch.Tensor | None) -> torch.Tensor:
    """gamma on the BatchNorm part; the affine-free InstanceNorm part has an implicit 1."""
    return torch.cat([norm_scales(ibn.bnorm).cpu(), norm_scales(ibn.inorm).cpu()])[:, None]


# Both halves keep a channel: a pruned IBNorm may not lose its BatchNorm or InstanceNorm part.
register(IBNorm, LayerKind(
    "ibnorm", norm_rule("ibnorm", ndims=lambda m: (4,), splits=lambda m: (m.bn_channels,)),
    ("norm",), _shrink_ibnorm, _zero_ibnorm, _ibnorm_scales))


class Conv2dIBNormReLU(nn.Sequential):
    """conv -> IBNorm -> ReLU under `.layers`, the official key layout; bias always on."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1,
                 bn_channels: int | None = None, norm_relu: bool = True):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=True)]
        if norm_relu:
            layers += [IBNorm(cout, bn_channels), nn.ReLU(inplace=True)]
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def conv_bn_relu6(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
            nn.BatchNorm2d(cout), nn.ReLU6(inplace=True)]


class InvertedResidual(nn.Module):
    """MobileNetV2 block. `residual` is structural (fixed by position), not inferred."""

    def __init__(self, cin: int, hidden: int, cout: int, stride: int, residual: bool, expand: bool):
        super().__init__()
        self.residual = residual
        layers = conv_bn_relu6(cin, hidden, 1) if expand else []
        layers += conv_bn_relu6(hidden, hidden, 3, stride, groups=hidden)
        layers += [nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.residual else self.conv(x)


class SEBlock(nn.Module):
    """Squeeze-and-excitation: channel-wise scaling of enc32x."""

    def __init__(self, channels: int, hidden: int):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Sequential(nn.Linear(channels, hidden, bias=False), nn.ReLU(inplace=True),
                                nn.Linear(hidden, channels, bias=False), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.fc(self.pool(x).flatten(1))
        return x * w.unsqueeze(-1).unsqueeze(-1)
