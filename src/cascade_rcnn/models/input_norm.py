"""How a backbone expects its input: channel order, mean and std (what its ImageNet weights saw)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class InputNorm:
    """``(x - mean) / std`` per channel, on RGB uint8 pixels turned to BGR first when ``bgr``."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    bgr: bool = False


PYTORCH_NORM = InputNorm((123.675, 116.28, 103.53), (58.395, 57.12, 57.375))  # torchvision's ImageNet weights
CAFFE_NORM = InputNorm((103.53, 116.28, 123.675), (1.0, 1.0, 1.0), bgr=True)  # MSRA's caffe weights
