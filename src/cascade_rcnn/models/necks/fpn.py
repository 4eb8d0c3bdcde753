"""Feature pyramid: C2..C5 -> P2..P6, P6 = stride-2 subsampling of P5 (MMDetection's ``FPN`` with
``num_outs=5`` and no extra convs)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class FPNConfig:
    """``ModelConfig.neck``: one output level per backbone map (``config.fpn_channels`` wide) plus
    a subsampled top level for the RPN."""

    def build(self, config, in_channels: list[int], in_strides: tuple[int, ...]) -> "FPN":
        return FPN(list(in_channels), tuple(in_strides), config.fpn_channels)


class ConvWrapper(nn.Module):
    """A bare conv under the attribute ``conv``: MMDetection's ConvModule key layout."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class FPN(nn.Module):
    """Lateral 1x1 convs, nearest-neighbour top-down sums, 3x3 output convs (no norm, no ReLU)."""

    def __init__(self, in_channels: list[int], in_strides: tuple[int, ...] = (4, 8, 16, 32), channels: int = 256):
        super().__init__()
        self.out_channels = channels
        self.strides = tuple(in_strides) + (2 * in_strides[-1],)
        self.lateral_convs = nn.ModuleList(ConvWrapper(c, channels, 1) for c in in_channels)
        self.fpn_convs = nn.ModuleList(ConvWrapper(channels, channels, 3) for _ in in_channels)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        laterals = [conv(f) for conv, f in zip(self.lateral_convs, features)]
        for i in range(len(laterals) - 1, 0, -1):
            laterals[i - 1] = laterals[i - 1] + F.interpolate(
                laterals[i], size=laterals[i - 1].shape[2:], mode="nearest")
        outputs = [conv(x) for conv, x in zip(self.fpn_convs, laterals)]
        # P6 for the RPN only: MMDetection's max_pool2d with kernel 1, i.e. every other pixel.
        outputs.append(F.max_pool2d(outputs[-1], 1, stride=2))
        return outputs
