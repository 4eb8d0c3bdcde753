"""ConvNeXt (Liu et al., 2022) with mmpretrain's key layout, as MMDetection's ConvNeXt Cascade
Mask R-CNN rows use it: the spec (``ConvNeXtConfig``) and the module (``ConvNeXt``).

Keys: ``downsample_layers.0`` = stem (4x4 conv at stride 4, LayerNorm), ``downsample_layers.i``
(i >= 1) = LayerNorm then a 2x2 conv at stride 2; ``stages.i.j`` = blocks (7x7 depthwise conv,
LayerNorm over channels, Linear 4x wider, GELU, Linear back, layer scale ``gamma``, residual);
``norm0..3`` = a LayerNorm on each returned map. No BatchNorm: nothing to fold; every part trains.

Training (MMDetection's ``LearningRateDecayOptimizerConstructor``, 'layer_wise'): AdamW where the
backbone's early layers learn slower. With ``lr_decay_layers`` = 6 (ConvNeXt-T; 12 for -S), a
parameter of layer id ``i`` (0 = stem .. 6 = the last stage, 7 = everything after the backbone)
gets ``lr_scale = lr_decay_rate ** (7 - i)`` (MMDetection's paramwise_cfg num_layers, decay_rate);
biases and one-dimensional parameters (norms, layer scale) get no weight decay.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ...ops.compute_path import ComputePath
from ..input_norm import PYTORCH_NORM, InputNorm
from .drop_path import drop_path, drop_path_rates
from .hooks import ImageNetKeys

# mmpretrain's archs: (blocks per stage, channels per stage); "atto" (3.7M parameters) for small experiments.
ARCHS = {"atto": ((2, 2, 6, 2), (40, 80, 160, 320)), "tiny": ((3, 3, 9, 3), (96, 192, 384, 768)),
         "small": ((3, 3, 27, 3), (96, 192, 384, 768))}
LAYER_NORM_EPS = 1e-6
LR_DECAY_RATE = 0.7  # MMDetection's ConvNeXt rows: decay_rate 0.7, num_layers 6 (T) / 12 (S)


def layer_id(name: str, num_layers: int) -> int:
    """The layer id of parameter ``name`` (a key of the detector's state dict) for the lr decay."""
    parts = name.split(".")
    if name.startswith("backbone.downsample_layers."):
        return {0: 0, 1: 2, 2: 3}.get(int(parts[2]), num_layers)
    if name.startswith("backbone.stages."):
        stage, block = int(parts[2]), int(parts[3])
        return {0: 1, 1: 2, 2: 3 + block // 3}.get(stage, num_layers)
    return num_layers + 1


@dataclass(frozen=True)
class ConvNeXtConfig:
    arch: str = "tiny"  # a key of ARCHS
    drop_path_rate: float = 0.4  # stochastic depth at the last block (training), linear from 0
    layer_scale_init: float = 1e-6
    imagenet_url: str | None = None
    # Layer-wise lr decay in training: layers (3 + the third stage's blocks / 3) and factor.
    lr_decay_layers: int = 6
    lr_decay_rate: float = LR_DECAY_RATE
    # What the training engine asks of every backbone: nothing frozen, no BatchNorm statistics.
    frozen_stages: int = 0
    norm_eval: bool = False
    input_norm: InputNorm = PYTORCH_NORM
    # mmpretrain's classifier files have no per-output norms: they keep their initialisation (hooks.py).
    imagenet_keys: ClassVar[ImageNetKeys] = ImageNetKeys(not_in_classifier=("norm[0-3].*",))

    @property
    def depths(self) -> tuple[int, ...]:
        return ARCHS[self.arch][0]

    @property
    def out_channels(self) -> list[int]:
        return list(ARCHS[self.arch][1])

    @property
    def label(self) -> str:
        return f"ConvNeXt-{self.arch[0].upper()}"

    def build(self) -> "ConvNeXt":
        return ConvNeXt(self)

    def lr_scale(self, name: str) -> float:
        """The layer-wise lr factor of the detector's parameter ``name`` (hooks.py)."""
        return self.lr_decay_rate ** (self.lr_decay_layers + 1 - layer_id(name, self.lr_decay_layers))

    def weight_decays(self, name: str, parameter: torch.Tensor) -> bool:
        """Weight decay on the matrices and kernels, not on biases, norms and layer scales (hooks.py)."""
        return parameter.dim() > 1 and not name.endswith(".bias")


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of a (B, C, H, W) map (mmpretrain's LN2d), returned in the
    input's memory format: contiguous for a contiguous map (as mmpretrain's, so that the next
    convolution runs the same kernel: the exact path), channels-last for a channels-last one (the
    fast path; no copy)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        layout = torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
        return F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias,
                            self.eps).permute(0, 3, 1, 2).contiguous(memory_format=layout)


class ConvNeXtBlock(nn.Module):
    """(B, C, H, W) -> same: x + gamma * MLP(LayerNorm(depthwise 7x7 conv(x)))."""

    def __init__(self, channels: int, drop_path: float, layer_scale_init: float):
        super().__init__()
        self.depthwise_conv = nn.Conv2d(channels, channels, 7, padding=3, groups=channels)
        self.norm = nn.LayerNorm(channels, eps=LAYER_NORM_EPS)
        self.pointwise_conv1 = nn.Linear(channels, 4 * channels)
        self.pointwise_conv2 = nn.Linear(4 * channels, channels)
        self.gamma = nn.Parameter(torch.full((channels,), layer_scale_init))
        self.drop_path = drop_path

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.depthwise_conv(x).permute(0, 2, 3, 1)  # channels last for the norm and the MLP
        out = self.pointwise_conv2(F.gelu(self.pointwise_conv1(self.norm(out))))
        out = out.permute(0, 3, 1, 2) * self.gamma.view(1, -1, 1, 1)
        return x + drop_path(out, self.drop_path, self.training)


class ConvNeXt(nn.Module):
    """Image (B, 3, H, W) -> four LayerNorm-ed maps at strides 4, 8, 16, 32."""

    strides = (4, 8, 16, 32)

    def __init__(self, config: ConvNeXtConfig):
        super().__init__()
        self.config = config
        self.out_channels = config.out_channels
        dims = config.out_channels
        rates = drop_path_rates(config.drop_path_rate, sum(config.depths))
        self.downsample_layers = nn.ModuleList([nn.Sequential(nn.Conv2d(3, dims[0], 4, stride=4),
                                                              LayerNorm2d(dims[0], eps=LAYER_NORM_EPS))])
        self.downsample_layers.extend(nn.Sequential(LayerNorm2d(dims[i - 1], eps=LAYER_NORM_EPS),
                                                    nn.Conv2d(dims[i - 1], dims[i], 2, stride=2))
                                      for i in range(1, 4))
        starts = [sum(config.depths[:i]) for i in range(4)]
        self.stages = nn.ModuleList(
            nn.Sequential(*(ConvNeXtBlock(dims[i], rates[starts[i] + j], config.layer_scale_init)
                            for j in range(depth)))
            for i, depth in enumerate(config.depths))
        for i, channels in enumerate(dims):
            self.add_module(f"norm{i}", LayerNorm2d(channels, eps=LAYER_NORM_EPS))
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)

    def forward(self, images: torch.Tensor, path: ComputePath) -> list[torch.Tensor]:
        x, maps = images, []
        for i, (downsample, stage) in enumerate(zip(self.downsample_layers, self.stages)):
            x = stage(downsample(x))
            maps.append(getattr(self, f"norm{i}")(x))
        return maps
