"""ViTDet's simple feature pyramid: P2..P6 from the backbone's LAST map alone (Detectron2's
``SimpleFeaturePyramid`` with ``LastLevelMaxPool``).

From the (B, C, H, W) map at stride s (16 for a ViT), one level per scale factor:

- 4: 2x2 transposed conv at stride 2 to C/2, channel LayerNorm, GELU, another to C/4 (stride s/4);
- 2: one 2x2 transposed conv to C/2 (stride s/2);
- 1: the map itself; 0.5: 2x2 max pool at stride 2 (stride 2 s);

then per level a 1x1 conv and a 3x3 conv to ``fpn_channels``, each followed by a channel
LayerNorm (no bias, no activation); P6 = P5 subsampled (1x1 max pool at stride 2).

Keys: ``simfp_{log2 stride}.{i}`` in Detectron2's numbering (its ``backbone.simfp_*`` under our
``neck.``): the key map is one row.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..channel_norm import ChannelLayerNorm, NormedConv2d


@dataclass(frozen=True)
class SimplePyramidConfig:
    """``ModelConfig.neck``: ViTDet's pyramid of ``scale_factors`` (finest first) plus P6."""

    scale_factors: tuple[float, ...] = (4.0, 2.0, 1.0, 0.5)
    norm_eps: float = 1e-6

    def build(self, config, in_channels: list[int], in_strides: tuple[int, ...]) -> "SimpleFeaturePyramid":
        return SimpleFeaturePyramid(in_channels[-1], in_strides[-1], config.fpn_channels, self)


def _resample(channels: int, scale: float, eps: float) -> tuple[list[nn.Module], int]:
    """The layers that bring a map to ``scale`` times its resolution, and their output width."""
    if scale == 4.0:
        return [nn.ConvTranspose2d(channels, channels // 2, 2, stride=2), ChannelLayerNorm(channels // 2, eps),
                nn.GELU(), nn.ConvTranspose2d(channels // 2, channels // 4, 2, stride=2)], channels // 4
    if scale == 2.0:
        return [nn.ConvTranspose2d(channels, channels // 2, 2, stride=2)], channels // 2
    if scale == 1.0:
        return [], channels
    if scale == 0.5:
        return [nn.MaxPool2d(2, stride=2)], channels
    raise ValueError(f"scale factor {scale} is not one of ViTDet's (4, 2, 1, 0.5)")


class SimpleFeaturePyramid(nn.Module):
    """[..., (B, C, H, W) at stride s] -> [P2, ..., P6], each (B, channels, s H / stride, ...)."""

    def __init__(self, in_channels: int, in_stride: int, channels: int, spec: SimplePyramidConfig):
        super().__init__()
        self.out_channels = channels
        strides = [int(in_stride / scale) for scale in spec.scale_factors]
        self.level_names = []
        for scale, stride in zip(spec.scale_factors, strides):
            layers, width = _resample(in_channels, scale, spec.norm_eps)
            layers += [NormedConv2d(width, channels, 1, eps=spec.norm_eps),
                       NormedConv2d(channels, channels, 3, eps=spec.norm_eps)]
            name = f"simfp_{int(math.log2(stride))}"
            self.add_module(name, nn.Sequential(*layers))
            self.level_names.append(name)
        self.strides = tuple(strides) + (2 * strides[-1],)

    def forward(self, maps: list[torch.Tensor]) -> list[torch.Tensor]:
        levels = [getattr(self, name)(maps[-1]) for name in self.level_names]
        return levels + [F.max_pool2d(levels[-1], kernel_size=1, stride=2)]
