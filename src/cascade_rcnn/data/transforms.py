"""Test-time transform: resize to fit a scale, normalise, pad to a multiple of 32 (spec §2.1)."""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F

SIZE_DIVISOR = 32


@dataclass(frozen=True)
class ResizedImage:
    """An image resized for the network, and how to map its pixels back to the original."""

    image: np.ndarray  # (h, w, 3) uint8, RGB
    original_size: tuple[int, int]  # (H, W)
    scale_factor: tuple[float, float]  # (w / W, h / H), two factors as MMDetection

    @property
    def size(self) -> tuple[int, int]:
        return self.image.shape[0], self.image.shape[1]


def fit_size(height: int, width: int, scale: tuple[int, int]) -> tuple[int, int]:
    """(new_h, new_w) keeping the aspect ratio inside ``scale`` = (long side, short side) limits.

    MMDetection rounds with ``int(x * s + 0.5)``.
    """
    factor = min(max(scale) / max(height, width), min(scale) / min(height, width))
    return int(height * factor + 0.5), int(width * factor + 0.5)


def resize(image: np.ndarray, scale: tuple[int, int]) -> ResizedImage:
    """Bilinear resize of the uint8 image with OpenCV (bit-exact with MMDetection's input)."""
    height, width = image.shape[:2]
    new_h, new_w = fit_size(height, width, scale)
    resized = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    return ResizedImage(resized, (height, width), (new_w / width, new_h / height))


def normalize(image: np.ndarray, mean: tuple[float, ...], std: tuple[float, ...], bgr: bool) -> torch.Tensor:
    """(3, h, w) float32 ``(x - mean) / std`` of an RGB uint8 image, in BGR order if ``bgr``."""
    tensor = torch.from_numpy(image).permute(2, 0, 1)
    if bgr:
        tensor = tensor.flip(0)
    tensor = tensor.float()
    return (tensor - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)


def pad_batch(images: list[torch.Tensor]) -> torch.Tensor:
    """(B, 3, H, W): zero-pad each (3, h, w) image at the bottom/right to a common multiple of 32."""
    height = max(i.shape[1] for i in images)
    width = max(i.shape[2] for i in images)
    height = -(-height // SIZE_DIVISOR) * SIZE_DIVISOR
    width = -(-width // SIZE_DIVISOR) * SIZE_DIVISOR
    return torch.stack([F.pad(i, (0, width - i.shape[2], 0, height - i.shape[1])) for i in images])


def padded_size(size: tuple[int, int]) -> tuple[int, int]:
    """The (H, W) a single (h, w) image is padded to."""
    return tuple(-(-s // SIZE_DIVISOR) * SIZE_DIVISOR for s in size)
