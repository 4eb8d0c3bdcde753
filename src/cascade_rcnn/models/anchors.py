"""RPN anchors: one set of base anchors per pyramid level, repeated at every feature-map cell."""
from __future__ import annotations

import math

import torch


def base_anchors(stride: int, scales: tuple[float, ...], ratios: tuple[float, ...]) -> torch.Tensor:
    """(len(ratios) * len(scales), 4) anchors centred on (0, 0); ratio = height / width.

    MMDetection's recipe, in float32 and in its operation order: ``h_ratio = sqrt(r)``,
    ``w_ratio = 1 / h_ratio``, side = ``stride * ratio * scale``. The centre offset is 0.
    """
    ratios_t = torch.tensor(ratios, dtype=torch.float32)
    scales_t = torch.tensor(scales, dtype=torch.float32)
    h_ratios = torch.sqrt(ratios_t)
    w_ratios = 1 / h_ratios
    widths = (stride * w_ratios[:, None] * scales_t[None, :]).reshape(-1)
    heights = (stride * h_ratios[:, None] * scales_t[None, :]).reshape(-1)
    return torch.stack([-0.5 * widths, -0.5 * heights, 0.5 * widths, 0.5 * heights], dim=1)


def area_kept_anchors(stride: int, scales: tuple[float, ...], ratios: tuple[float, ...]) -> torch.Tensor:
    """The same anchors as Detectron2 computes them (its ``DefaultAnchorGenerator``, offset 0): for
    each size ``stride * scale`` and ratio r = h / w, ``w = sqrt(size**2 / r)``, ``h = r * w``, in
    Python floats, then float32; sizes outer, ratios inner (one size per level: the same order)."""
    anchors = []
    for scale in scales:
        area = float(stride * scale) ** 2.0
        for ratio in ratios:
            width = math.sqrt(area / ratio)
            height = ratio * width
            anchors.append([-width / 2.0, -height / 2.0, width / 2.0, height / 2.0])
    return torch.tensor(anchors, dtype=torch.float32)


# How the base anchors are computed: ``RPNHeadConfig.anchor_rule`` names one.
ANCHOR_RULES = {"side_ratios": base_anchors, "area_kept": area_kept_anchors}


def grid_anchors(base: torch.Tensor, feature_size: tuple[int, int], stride: int) -> torch.Tensor:
    """(H * W * A, 4) anchors for an H x W feature map, ordered (y, x, anchor), anchor fastest.

    That order equals ``head_output.permute(1, 2, 0).reshape(-1, ...)`` for an (A, H, W) output.
    """
    height, width = feature_size
    shift_x = torch.arange(width, dtype=torch.float32, device=base.device) * stride
    shift_y = torch.arange(height, dtype=torch.float32, device=base.device) * stride
    xx = shift_x.repeat(height)
    yy = shift_y[:, None].repeat(1, width).reshape(-1)
    shifts = torch.stack([xx, yy, xx, yy], dim=1)
    return (base[None, :, :] + shifts[:, None, :]).reshape(-1, 4)


def inside_image(anchors: torch.Tensor, image_size: torch.Tensor, border: float = 0.0) -> torch.Tensor:
    """(N,) bool: anchors reaching at most ``border`` px outside the image of (2,) size (h, w)
    (0: fully inside; MMDetection's RPN trains on these only)."""
    height, width = image_size
    return ((anchors[:, 0] >= -border) & (anchors[:, 1] >= -border)
            & (anchors[:, 2] < width + border) & (anchors[:, 3] < height + border))
