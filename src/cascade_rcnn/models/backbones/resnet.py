"""ResNet / ResNeXt backbones with MMDetection's module names (== torchvision's): the spec
(``ResNetConfig``) and the module (``ResNet``).

Two styles decide where a bottleneck's stride goes: ``pytorch`` on the 3x3 conv (conv2),
``caffe`` on the first 1x1 conv (conv1). BatchNorm always uses its running statistics
(``norm_eval``); the stem and ``layer1`` never train (``frozen_stages=1``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from ...ops.compute_path import ComputePath
from ..conv_bn import conv_bn, drop_folded
from ..input_norm import CAFFE_NORM, PYTORCH_NORM, InputNorm
from .hooks import ImageNetKeys


@dataclass(frozen=True)
class ResNetConfig:
    """depth 18/34 use basic blocks, 50/101 bottlenecks; groups > 1 makes it a ResNeXt."""

    depth: int = 50
    style: str = "pytorch"  # or "caffe"
    groups: int = 1
    width_per_group: int = 64
    base_channels: int = 64
    train_bn_affine: bool = True  # caffe-style checkpoints keep BN scale/shift frozen too
    # ImageNet-initialised backbones (the zoo) freeze the stem + layer1 and keep BN statistics
    # fixed; a backbone trained from scratch must learn all of them (frozen_stages=0,
    # norm_eval=False), or its activations are never normalised.
    frozen_stages: int = 1
    norm_eval: bool = True
    # A frozen (eval-mode) BatchNorm whose input needs a gradient computes x * scale + shift
    # (scale = weight * rsqrt(var + eps), shift = bias - mean * scale), as Detectron2's
    # FrozenBatchNorm2d in training, which rounds differently from F.batch_norm (MMDetection's,
    # and both frameworks' elsewhere). The fast path folds BatchNorm either way.
    frozen_bn_affine_with_grad: bool = False
    # The ImageNet checkpoint MMDetection initialises this backbone from when training without
    # detector weights (its init_cfg); None = none published (train from scratch).
    imagenet_url: str | None = None
    # torchvision's classifier (fc.*) and the stem bias of the MSRA caffe files have no slot in a
    # detection ResNet (MMDetection drops them too; hooks.py).
    imagenet_keys: ClassVar[ImageNetKeys] = ImageNetKeys(unused=("fc.weight", "fc.bias", "conv1.bias"))

    @property
    def stage_blocks(self) -> tuple[int, int, int, int]:
        return {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}[self.depth]

    @property
    def expansion(self) -> int:
        return 1 if self.depth < 50 else 4

    @property
    def out_channels(self) -> list[int]:
        """Channels of C2..C5."""
        return [self.base_channels * 2 ** i * self.expansion for i in range(4)]

    @property
    def label(self) -> str:
        """The backbone as the zoo tables name it: R-50, X-101-32x4d; caffe style adds -caffe (R-50-caffe)."""
        name = f"X-{self.depth}-{self.groups}x{self.width_per_group}d" if self.groups > 1 else f"R-{self.depth}"
        return f"{name}-caffe" if self.style == "caffe" else name

    @property
    def input_norm(self) -> InputNorm:
        """Caffe-style weights were trained on BGR images without std scaling."""
        return CAFFE_NORM if self.style == "caffe" else PYTORCH_NORM

    def build(self) -> "ResNet":
        return ResNet(self)



class AffineFrozenBatchNorm2d(nn.BatchNorm2d):
    """``ResNetConfig.frozen_bn_affine_with_grad``: in eval mode, where the input needs a gradient,
    ``x * scale + shift`` instead of ``F.batch_norm`` (the same parameters and state-dict keys)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training or not x.requires_grad:
            return super().forward(x)
        scale = self.weight * (self.running_var + self.eps).rsqrt()
        shift = self.bias - self.running_mean * scale
        return x * scale.reshape(1, -1, 1, 1).to(x.dtype) + shift.reshape(1, -1, 1, 1).to(x.dtype)


def batch_norm(channels: int, config: ResNetConfig) -> nn.BatchNorm2d:
    return AffineFrozenBatchNorm2d(channels) if config.frozen_bn_affine_with_grad else nn.BatchNorm2d(channels)


class _Block(nn.Module):
    """A residual block; ``path.fold_batchnorm`` folds its conv + BatchNorm pairs into one conv."""

    def _shortcut(self, x: torch.Tensor, path: ComputePath) -> torch.Tensor:
        return x if self.downsample is None else conv_bn(x, self.downsample[0], self.downsample[1], path)


class BasicBlock(_Block):
    """Two 3x3 convs (ResNet-18/34)."""

    def __init__(self, inplanes: int, planes: int, stride: int, downsample: nn.Module | None,
                 config: ResNetConfig):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = batch_norm(planes, config)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = batch_norm(planes, config)
        self.downsample = downsample

    def forward(self, x: torch.Tensor, path: ComputePath) -> torch.Tensor:
        identity = self._shortcut(x, path)
        out = conv_bn(x, self.conv1, self.bn1, path, relu=True)
        return conv_bn(out, self.conv2, self.bn2, path, residual=identity, relu=True)


class Bottleneck(_Block):
    """1x1 -> 3x3 (grouped for ResNeXt) -> 1x1, expansion 4."""

    def __init__(self, inplanes: int, planes: int, stride: int, downsample: nn.Module | None,
                 config: ResNetConfig):
        super().__init__()
        # ResNeXt width: floor(planes * width_per_group / 64) * groups; plain ResNet: planes.
        width = planes if config.groups == 1 else planes * config.width_per_group // 64 * config.groups
        conv1_stride, conv2_stride = (stride, 1) if config.style == "caffe" else (1, stride)
        self.conv1 = nn.Conv2d(inplanes, width, 1, conv1_stride, bias=False)
        self.bn1 = batch_norm(width, config)
        self.conv2 = nn.Conv2d(width, width, 3, conv2_stride, 1, groups=config.groups, bias=False)
        self.bn2 = batch_norm(width, config)
        self.conv3 = nn.Conv2d(width, planes * 4, 1, bias=False)
        self.bn3 = batch_norm(planes * 4, config)
        self.downsample = downsample

    def forward(self, x: torch.Tensor, path: ComputePath) -> torch.Tensor:
        identity = self._shortcut(x, path)
        out = conv_bn(x, self.conv1, self.bn1, path, relu=True)
        out = conv_bn(out, self.conv2, self.bn2, path, relu=True)
        return conv_bn(out, self.conv3, self.bn3, path, residual=identity, relu=True)


class ResNet(nn.Module):
    """Image (B, 3, H, W) -> [C2, C3, C4, C5] at strides 4, 8, 16, 32."""

    strides = (4, 8, 16, 32)

    def __init__(self, config: ResNetConfig):
        super().__init__()
        self.config = config
        self.out_channels = config.out_channels
        block = BasicBlock if config.expansion == 1 else Bottleneck
        stem = config.base_channels
        self.conv1 = nn.Conv2d(3, stem, 7, 2, 3, bias=False)
        self.bn1 = batch_norm(stem, config)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        inplanes = stem
        for index, num_blocks in enumerate(config.stage_blocks):
            planes = config.base_channels * 2 ** index
            stride = 1 if index == 0 else 2
            blocks = []
            for block_index in range(num_blocks):
                downsample = None
                if block_index == 0 and (stride != 1 or inplanes != planes * config.expansion):
                    downsample = nn.Sequential(
                        nn.Conv2d(inplanes, planes * config.expansion, 1, stride, bias=False),
                        batch_norm(planes * config.expansion, config))
                blocks.append(block(inplanes, planes, stride if block_index == 0 else 1, downsample, config))
                inplanes = planes * config.expansion
            # Attribute names layer1..layer4 are the checkpoints' keys.
            self.add_module(f"layer{index + 1}", nn.Sequential(*blocks))
        self._init_weights()
        self._freeze()

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def _frozen_modules(self) -> list[nn.Module]:
        """The stem and the first ``frozen_stages`` stages (none when frozen_stages is 0)."""
        if self.config.frozen_stages == 0:
            return []
        return [self.conv1, self.bn1] + [getattr(self, f"layer{i}") for i in range(1, self.config.frozen_stages + 1)]

    def _freeze(self) -> None:
        for module in self._frozen_modules():
            for parameter in module.parameters():
                parameter.requires_grad_(False)
        if not self.config.train_bn_affine:
            for module in self.modules():
                if isinstance(module, nn.BatchNorm2d):
                    for parameter in module.parameters():
                        parameter.requires_grad_(False)

    def train(self, mode: bool = True) -> "ResNet":
        """With ``norm_eval`` BatchNorm stays in eval mode: detection batches are too small to
        re-estimate the pretrained statistics; frozen stages stay in eval mode as well.
        Also drops the folded-BatchNorm cache: weights may have changed since it was made."""
        drop_folded(self)
        super().train(mode)
        for module in self._frozen_modules():
            module.eval()
        if self.config.norm_eval:
            for module in self.modules():
                if isinstance(module, nn.BatchNorm2d):
                    module.eval()
        return self

    def _apply(self, fn, *args, **kwargs):
        drop_folded(self)  # .to() / .half(): the folded weights must follow
        return super()._apply(fn, *args, **kwargs)

    def forward(self, images: torch.Tensor, path: ComputePath) -> list[torch.Tensor]:
        x = self.maxpool(conv_bn(images, self.conv1, self.bn1, path, relu=True))
        features = []
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            for block in layer:
                x = block(x, path)
            features.append(x)
        return features
