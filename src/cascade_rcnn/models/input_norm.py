"""How a model expects its input: channel order, mean and std (what its ImageNet weights saw), and
how its framework resizes images and maps boxes back."""
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


@dataclass(frozen=True)
class ResizeRule:
    """How a framework resizes an image for its network and maps boxes back (``ModelConfig.resize_rule``).

    MMDetection (the defaults): fit inside (long, short) keeping the ratio, ``int(x * s + 0.5)``,
    OpenCV bilinear; boxes back divided by the (w / W, h / H) factors. Detectron2: its
    ``ResizeShortestEdge`` (short side = the short limit unless the long side would pass the long
    one), Pillow's bilinear on uint8; boxes back multiplied by (W / w, H / h), clipped to the image,
    and boxes left empty dropped (its ``detector_postprocess``).
    """

    shortest_edge: bool = False
    library: str = "cv2"  # "cv2" or "pil"
    multiply_back: bool = False


MMDETECTION_RESIZE = ResizeRule()
DETECTRON2_RESIZE = ResizeRule(shortest_edge=True, library="pil", multiply_back=True)
