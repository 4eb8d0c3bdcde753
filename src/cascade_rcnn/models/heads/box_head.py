"""One cascade stage's box head: two shared FCs, then class logits and class-agnostic deltas."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class SharedFCBoxHeadConfig:
    """MMDetection's ``Shared2FCBBoxHead`` (``ModelConfig.box_head``): built once per stage from
    the config's class count, FPN width and ``fc_channels``."""

    def build(self, config) -> "BoxHead":
        return BoxHead(config.num_classes, config.fpn_channels, hidden=config.fc_channels)


class BoxHead(nn.Module):
    """RoI features (K, C, 7, 7) -> logits (K, num_classes + 1) and deltas (K, 4).

    The background class is the LAST logit (MMDetection v2 order). Regression is class-agnostic:
    one box per RoI, which the next stage takes as its input.
    """

    def __init__(self, num_classes: int, in_channels: int = 256, roi_size: int = 7, hidden: int = 1024):
        super().__init__()
        self.num_classes = num_classes
        self.shared_fcs = nn.ModuleList([nn.Linear(in_channels * roi_size * roi_size, hidden),
                                         nn.Linear(hidden, hidden)])
        self.fc_cls = nn.Linear(hidden, num_classes + 1)
        self.fc_reg = nn.Linear(hidden, 4)
        for fc in self.shared_fcs:
            nn.init.xavier_uniform_(fc.weight)
            nn.init.zeros_(fc.bias)
        nn.init.normal_(self.fc_cls.weight, std=0.01)
        nn.init.normal_(self.fc_reg.weight, std=0.001)
        nn.init.zeros_(self.fc_cls.bias)
        nn.init.zeros_(self.fc_reg.bias)

    def forward(self, roi_features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = roi_features.flatten(1)
        for fc in self.shared_fcs:
            x = fc(x).relu_()  # in place: a linear layer's backward never needs its output
        return self.fc_cls(x), self.fc_reg(x)
