"""DETR's training augmentation ("ms-crop"), as MMDetection's ConvNeXt and Swin Cascade rows train:
with probability 1/2 a resize to a short side drawn from 480..800 (step 32); otherwise a resize to
a short side of 400, 500 or 600, a random crop 384..600 px on each side (objects cut to nothing
dropped; a crop without objects is allowed), then the same multi-scale resize. Long sides <= 1333.
"""
from __future__ import annotations

import torch

from .transforms import crop_window, resize_sample

LONG_SIDE = 1333
SHORT_SIDES = tuple(range(480, 801, 32))
PRE_CROP_SHORT_SIDES = (400, 500, 600)
CROP_SIDES = (384, 600)


def resize_crop(sample: dict, generator: torch.Generator) -> tuple[dict, tuple[int, int]]:
    """The sample to hand to ``train_transform`` (cropped or not) and the (long, short) scale
    that resizes it, drawn with ``generator``."""
    cropping = bool(torch.rand((), generator=generator) < 0.5)
    if cropping:
        sample = random_crop(resize_sample(sample, (LONG_SIDE, _choice(PRE_CROP_SHORT_SIDES, generator))), generator)
    return sample, (LONG_SIDE, _choice(SHORT_SIDES, generator))


def random_crop(sample: dict, generator: torch.Generator) -> dict:
    """A random window of ``resize_sample``'s output, each side drawn from ``CROP_SIDES`` (capped at
    the image's): ``crop_window``."""
    height, width = sample["image"].shape[:2]
    crop_h = _randint(min(height, CROP_SIDES[0]), min(height, CROP_SIDES[1]), generator)
    crop_w = _randint(min(width, CROP_SIDES[0]), min(width, CROP_SIDES[1]), generator)
    top, left = _randint(0, height - crop_h, generator), _randint(0, width - crop_w, generator)
    return crop_window(sample, top, left, crop_h, crop_w)


def _randint(low: int, high: int, generator: torch.Generator) -> int:
    """Uniform in [low, high], both included."""
    return int(torch.randint(low, high + 1, (), generator=generator))


def _choice(values: tuple[int, ...], generator: torch.Generator) -> int:
    return values[_randint(0, len(values) - 1, generator)]
