"""One cascade stage's box head: optional shared 3x3 convs with BatchNorm (or channel LayerNorm), shared FCs, then class
logits and box deltas (class-agnostic: one box per RoI; or one box per class)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ...ops.compute_path import ComputePath
from ..channel_norm import ConvNorm
from ..conv_bn import conv_bn


@dataclass(frozen=True)
class SharedFCBoxHeadConfig:
    """MMDetection's ``Shared2FCBBoxHead`` (``ModelConfig.box_head``): two FCs of the config's
    ``fc_channels``, class-agnostic deltas; built once per stage."""

    def build(self, config) -> "BoxHead":
        return BoxHead(config.num_classes, config.fpn_channels, config.roi_heads.box_roi_size,
                       hidden=config.fc_channels)


@dataclass(frozen=True)
class ConvFCBoxHeadConfig:
    """MMDetection's ``Shared4Conv1FCBBoxHead`` of its ConvNeXt / Swin cascades: ``num_convs`` 3x3
    convs (conv -> BatchNorm -> ReLU) of ``conv_channels``, one FC of the config's
    ``fc_channels``, and one box per class (``class_agnostic=False``). Trained with a GIoU loss
    on the decoded boxes of weight ``giou_loss_weight`` (MMDetection: 10) instead of smooth L1 on
    the deltas. ``conv_norm="ln"``: each conv (no bias) followed by a channel LayerNorm instead
    (``ConvLNReLU``; ViTDet's ``FastRCNNConvFCHead(conv_norm="LN")``: ``VITDET_BOX_HEAD``)."""

    num_convs: int = 4
    conv_channels: int = 256
    class_agnostic: bool = False
    giou_loss_weight: float | None = 10.0
    conv_norm: str = "bn"  # models/channel_norm.py CHANNEL_NORMS

    def build(self, config) -> "BoxHead":
        return BoxHead(config.num_classes, config.fpn_channels, config.roi_heads.box_roi_size,
                       hidden=config.fc_channels, num_fcs=1, num_convs=self.num_convs,
                       conv_channels=self.conv_channels, class_agnostic=self.class_agnostic,
                       giou_loss_weight=self.giou_loss_weight, conv_norm=self.conv_norm)


# ViTDet's box heads (Detectron2's FastRCNNConvFCHead, conv_norm "LN"): 4 convs with a channel
# LayerNorm, one FC (the config's fc_channels), class-agnostic boxes trained with smooth L1.
VITDET_BOX_HEAD = ConvFCBoxHeadConfig(num_convs=4, class_agnostic=True, giou_loss_weight=None, conv_norm="ln")


class ConvBNReLU(nn.Module):
    """A 3x3 conv without bias, BatchNorm, ReLU (MMDetection's ConvModule key layout: conv, bn)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)
        nn.init.kaiming_normal_(self.conv.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor, path: ComputePath) -> torch.Tensor:
        return conv_bn(x, self.conv, self.bn, path, relu=True)


class ConvLNReLU(ConvNorm):
    """A 3x3 conv without bias, channel LayerNorm, ReLU (keys ``conv``, ``norm``)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(in_channels, out_channels)
        nn.init.kaiming_normal_(self.conv.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor, path: ComputePath) -> torch.Tensor:
        return F.relu(super().forward(x))


CONV_LAYERS = {"bn": ConvBNReLU, "ln": ConvLNReLU}


class BoxHead(nn.Module):
    """RoI features (K, C, 7, 7) -> logits (K, num_classes + 1) and deltas (K, 4), or (K,
    num_classes * 4) with ``class_agnostic=False`` (class c's box in columns 4c..4c+3).

    The background class is the LAST logit (MMDetection v2 order). The next stage takes one box
    per RoI: the class-agnostic one, or that of the RoI's best class (``CascadeRoIHead``).
    ``giou_loss_weight``: train the boxes with a GIoU loss on decoded boxes; None: smooth L1 on
    the deltas.
    """

    def __init__(self, num_classes: int, in_channels: int = 256, roi_size: int = 7, hidden: int = 1024,
                 num_fcs: int = 2, num_convs: int = 0, conv_channels: int = 256, class_agnostic: bool = True,
                 giou_loss_weight: float | None = None, conv_norm: str = "bn"):
        super().__init__()
        self.num_classes = num_classes
        self.class_agnostic = class_agnostic
        self.giou_loss_weight = giou_loss_weight
        self.shared_convs = nn.ModuleList(CONV_LAYERS[conv_norm](in_channels if i == 0 else conv_channels, conv_channels)
                                          for i in range(num_convs))
        flat = (conv_channels if num_convs else in_channels) * roi_size * roi_size
        self.shared_fcs = nn.ModuleList(nn.Linear(flat if i == 0 else hidden, hidden) for i in range(num_fcs))
        self.fc_cls = nn.Linear(hidden, num_classes + 1)
        self.fc_reg = nn.Linear(hidden, 4 if class_agnostic else 4 * num_classes)
        for fc in self.shared_fcs:
            nn.init.xavier_uniform_(fc.weight)
            nn.init.zeros_(fc.bias)
        nn.init.normal_(self.fc_cls.weight, std=0.01)
        nn.init.normal_(self.fc_reg.weight, std=0.001)
        nn.init.zeros_(self.fc_cls.bias)
        nn.init.zeros_(self.fc_reg.bias)

    def forward(self, roi_features: torch.Tensor, path: ComputePath) -> tuple[torch.Tensor, torch.Tensor]:
        x = roi_features
        if self.shared_convs and path.channels_last:  # 3x3 convs on 7x7 RoIs: ~20 % faster on the CPU
            x = x.contiguous(memory_format=torch.channels_last)
        for conv in self.shared_convs:
            x = conv(x, path)
        x = x.flatten(1)
        for fc in self.shared_fcs:
            x = fc(x).relu_()  # in place: a linear layer's backward never needs its output
        return self.fc_cls(x), self.fc_reg(x)
