"""Any ``timm`` model that offers ``features_only`` as a cascade's backbone: its last four feature
levels feed the FPN (they must be at strides 4, 8, 16, 32). For training new models; ``timm`` is
an optional extra (``pip install "cascade_rcnn[timm]"``). ``--set backbone=timm:NAME`` on the CLI.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ...ops.compute_path import ComputePath
from ..input_norm import InputNorm

PREFIX = "timm:"


def _timm():
    try:
        import timm
    except ImportError:
        raise ImportError('timm backbones need the timm package: pip install "cascade_rcnn[timm]"') from None
    return timm


@dataclass(frozen=True)
class TimmBackboneConfig:
    name: str  # a timm model name, e.g. "convnext_atto", "resnet50", "efficientnet_b3"
    pretrained: bool = False  # timm's ImageNet weights (downloaded by timm: needs network or its cache)
    imagenet_url: str | None = None  # for --backbone-weights; timm's own weights come with pretrained
    frozen_stages: int = 0
    norm_eval: bool = False

    @property
    def label(self) -> str:
        return f"{PREFIX}{self.name}"

    @property
    def input_norm(self) -> InputNorm:
        """The mean and std of timm's pretrained configuration of the model, on 0..255 RGB pixels."""
        cfg = _timm().get_pretrained_cfg(self.name)
        mean, std = (cfg.mean, cfg.std) if cfg is not None else ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
        return InputNorm(tuple(255 * m for m in mean), tuple(255 * s for s in std))

    def build(self) -> "TimmBackbone":
        return TimmBackbone(self)


class TimmBackbone(nn.Module):
    """Image (B, 3, H, W) -> the timm model's last four feature maps."""

    def __init__(self, config: TimmBackboneConfig):
        super().__init__()
        self.config = config
        try:
            self.body = _timm().create_model(config.name, features_only=True, pretrained=config.pretrained)
        except RuntimeError as error:  # e.g. a model without features_only, an unknown name
            raise ValueError(f"timm model {config.name!r}: {str(error).splitlines()[0]}") from None
        info = self.body.feature_info
        if len(info.channels()) < 4:
            raise ValueError(f"timm model {config.name!r} returns {len(info.channels())} feature levels; "
                             "a cascade needs four (strides 4, 8, 16, 32)")
        self.out_channels = list(info.channels()[-4:])
        self.strides = tuple(info.reduction()[-4:])

    def forward(self, images: torch.Tensor, path: ComputePath) -> list[torch.Tensor]:
        return list(self.body(images)[-4:])
