"""One cascade stage's mask head: 4 convs, a 2x deconv, per-class 28x28 mask logits."""
from __future__ import annotations

import torch
from torch import nn

from .fpn import ConvWrapper


class MaskHead(nn.Module):
    """RoI features (K, C, 14, 14) -> mask logits (K, num_classes, 28, 28)."""

    def __init__(self, num_classes: int, in_channels: int = 256, channels: int = 256, num_convs: int = 4):
        super().__init__()
        self.convs = nn.ModuleList(
            ConvWrapper(in_channels if i == 0 else channels, channels, 3) for i in range(num_convs))
        self.upsample = nn.ConvTranspose2d(channels, channels, 2, stride=2)
        self.conv_logits = nn.Conv2d(channels, num_classes, 1)
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(module.bias)

    def forward(self, roi_features: torch.Tensor) -> torch.Tensor:
        x = roi_features
        for conv in self.convs:
            x = torch.relu(conv(x))
        return self.conv_logits(torch.relu(self.upsample(x)))
