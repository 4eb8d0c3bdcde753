"""How closely one set of detections reproduces another: matched pairs and their largest
differences (fast path vs exact, ONNX vs PyTorch, ours vs MMDetection)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torchvision.ops import box_iou

from ..outputs.detections import Detections


@dataclass
class Agreement:
    """How closely ``other`` reproduces ``reference`` (see ``agreement``); None where nothing matched."""

    reference: int  # detections
    other: int
    matched: int
    max_box_diff: float | None  # px, largest coordinate difference of a matched pair
    min_box_iou: float | None
    max_score_diff: float | None
    min_mask_iou: float | None  # masks empty on both sides count as IoU 1
    min_mask_iou_pixels: int | None  # size of that reference mask: small masks flip first


def agreement(reference: Detections, other: Detections, min_iou: float = 0.9) -> Agreement:
    """Match each reference detection to the other side's best-overlapping box of the same
    label (greedily, by reference score; box IoU >= ``min_iou``) and measure the differences."""
    pairs = []
    if len(reference) and len(other):
        overlap = box_iou(reference.boxes.double(), other.boxes.double())
        overlap[reference.labels[:, None] != other.labels[None, :]] = 0
        for row in range(len(reference)):
            best, column = overlap[row].max(dim=0)
            if best >= min_iou:
                pairs.append((row, int(column), float(best)))
                overlap[:, column] = 0
    if not pairs:
        return Agreement(len(reference), len(other), 0, None, None, None, None, None)
    rows, columns, ious = (list(values) for values in zip(*pairs))
    mask_iou = mask_pixels = None
    if reference.masks is not None and other.masks is not None:
        mine, theirs = reference.masks[rows].flatten(1), other.masks[columns].flatten(1)
        union = (mine | theirs).sum(1)
        mask_ious = torch.where(union > 0, (mine & theirs).sum(1) / union.clamp(min=1), 1.0)
        worst = int(mask_ious.argmin())
        mask_iou, mask_pixels = float(mask_ious[worst]), int(mine[worst].sum())
    return Agreement(len(reference), len(other), len(pairs),
                     max_box_diff=float((reference.boxes[rows] - other.boxes[columns]).abs().max()),
                     min_box_iou=min(ious),
                     max_score_diff=float((reference.scores[rows] - other.scores[columns]).abs().max()),
                     min_mask_iou=mask_iou, min_mask_iou_pixels=mask_pixels)
