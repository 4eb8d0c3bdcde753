"""One cascade stage's mask head: 4 convs, a 2x deconv, per-class 28x28 mask logits."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..channel_norm import ConvNorm
from ..necks.fpn import ConvWrapper


@dataclass(frozen=True)
class FCNMaskHeadConfig:
    """MMDetection's ``FCNMaskHead`` (``ModelConfig.mask_head``): ``num_convs`` 3x3 convs of the
    config's ``mask_channels`` (default: the FPN width), built once per stage. ``conv_norm="ln"``:
    each conv without bias, followed by a channel LayerNorm (keys ``convs.i.conv.weight``,
    ``convs.i.norm.*``), then ReLU: ViTDet's ``MaskRCNNConvUpsampleHead(conv_norm="LN")``."""

    num_convs: int = 4
    conv_norm: str | None = None  # None: conv with bias (keys ``convs.i.conv.*``); "ln": channel LayerNorm

    def build(self, config) -> "MaskHead":
        return MaskHead(config.num_classes, config.fpn_channels, config.mask_channels or config.fpn_channels,
                        self.num_convs, self.conv_norm)


VITDET_MASK_HEAD = FCNMaskHeadConfig(conv_norm="ln")


class MaskHead(nn.Module):
    """RoI features (K, C, 14, 14) -> mask logits (K, num_classes, 28, 28)."""

    def __init__(self, num_classes: int, in_channels: int = 256, channels: int = 256, num_convs: int = 4,
                 conv_norm: str | None = None):
        super().__init__()
        if conv_norm not in (None, "ln"):
            raise ValueError(f"mask head conv_norm must be None or 'ln', got {conv_norm!r}")
        layer = (lambda cin: ConvNorm(cin, channels)) if conv_norm else (lambda cin: ConvWrapper(cin, channels, 3))
        self.convs = nn.ModuleList(layer(in_channels if i == 0 else channels) for i in range(num_convs))
        self.upsample = nn.ConvTranspose2d(channels, channels, 2, stride=2)
        self.conv_logits = nn.Conv2d(channels, num_classes, 1)
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def features(self, roi_features: torch.Tensor) -> torch.Tensor:
        """(K, C, 14, 14) -> (K, channels, 28, 28), the input of the class logits."""
        x = roi_features
        for conv in self.convs:
            x = conv(x).relu_()  # in place: a conv's backward never needs its output
        return self.upsample(x).relu_()

    def forward(self, roi_features: torch.Tensor) -> torch.Tensor:
        return self.conv_logits(self.features(roi_features))

    def class_logits(self, roi_features: torch.Tensor, labels: torch.Tensor, rows: torch.Tensor | None = None
                     ) -> torch.Tensor:
        """(K, 28, 28) logits of class ``labels[k]`` for RoI ``rows[k]`` of ``roi_features``
        (default: RoI k). Equal to ``forward`` up to float rounding.

        One RoI per detection: the 1x1 logit conv reduced to the one channel each RoI needs
        (num_classes times less work). RoIs shared by several detections: every class's logits
        once per RoI, then each detection's pick (cheaper than copying the features per detection).
        """
        features = self.features(roi_features)
        if rows is not None:
            return self.conv_logits(features)[rows, labels]
        weight = self.conv_logits.weight[labels, :, 0, 0]  # (K, channels)
        return torch.einsum("kchw,kc->khw", features, weight) + self.conv_logits.bias[labels][:, None, None]
