"""Training targets: match boxes to ground truth by IoU (MaxIoUAssigner), then sample a fixed
number of them with a positive fraction (RandomSampler). MMDetection's semantics by default;
Detectron2's Matcher and ``subsample_labels`` differ in two settable rules
(``AssignerSettings.low_quality_own_match``, ``SamplerSettings.always_shuffle``)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torchvision.ops import box_area, box_iou

NEGATIVE = -1  # matched to background
IGNORED = -2  # neither positive nor negative (between thresholds, or inside a crowd region)


@dataclass(frozen=True)
class AssignerSettings:
    """Positive if max IoU >= ``pos_iou``; negative if max IoU < ``neg_iou``.

    ``low_quality_min_iou`` > 0 also makes, for every ground truth, the boxes with its highest
    IoU positive when that IoU >= the value (the RPN; all ties, as ``gt_max_assign_all``).
    """

    pos_iou: float
    neg_iou: float
    low_quality_min_iou: float = 0.0
    # MMDetection's ignore_iof_thr: a box more than this fraction inside a crowd region is ignored
    # (neither positive nor negative); <= 0 (the zoo's -1): crowd regions change nothing.
    crowd_iof: float = -1.0
    # Detectron2's Matcher (allow_low_quality_matches): for every ground truth, the boxes of its
    # highest IoU (ties included, whatever that IoU) become positive, each keeping ITS OWN best
    # ground truth (MMDetection: the ground truth it is best for, only at >= low_quality_min_iou,
    # which this rule ignores).
    low_quality_own_match: bool = False


def assign(boxes: torch.Tensor, gt_boxes: torch.Tensor, settings: AssignerSettings,
           crowd_boxes: torch.Tensor | None = None) -> torch.Tensor:
    """(N,) index of the matched ground truth (>= 0), ``NEGATIVE`` or ``IGNORED`` per box.

    boxes (N, 4), gt_boxes (G, 4), crowd_boxes (M, 4), all xyxy.
    """
    result = torch.full((boxes.shape[0],), IGNORED, dtype=torch.long, device=boxes.device)
    in_crowd = None  # MMDetection: without ground truth every box is negative, crowd regions or not
    if settings.crowd_iof > 0 and crowd_boxes is not None and crowd_boxes.shape[0] and boxes.shape[0] \
            and gt_boxes.shape[0]:
        in_crowd = intersection_over_box(boxes, crowd_boxes).max(dim=1).values > settings.crowd_iof
    if gt_boxes.shape[0] == 0:
        result[:] = NEGATIVE
    else:
        iou = box_iou(gt_boxes, boxes)  # (G, N)
        if in_crowd is not None:  # as MMDetection: their IoUs become -1 before any assignment
            iou[:, in_crowd] = -1
        max_iou, best_gt = iou.max(dim=0)
        result[(max_iou >= 0) & (max_iou < settings.neg_iou)] = NEGATIVE
        positive = max_iou >= settings.pos_iou
        result[positive] = best_gt[positive]
        if settings.low_quality_own_match:
            lifted = (iou == iou.max(dim=1, keepdim=True).values).any(dim=0)
            result[lifted] = best_gt[lifted]
        elif settings.low_quality_min_iou > 0:
            gt_max = iou.max(dim=1, keepdim=True).values
            best_for_gt = (iou == gt_max) & (gt_max >= settings.low_quality_min_iou)  # (G, N)
            # A box that is the best of several ground truths goes to the last one, as MMDetection.
            numbered = best_for_gt * torch.arange(1, gt_boxes.shape[0] + 1, device=boxes.device)[:, None]
            last_gt = numbered.max(dim=0).values
            result[last_gt > 0] = last_gt[last_gt > 0] - 1
    if in_crowd is not None:
        result[in_crowd] = IGNORED
    return result


def intersection_over_box(boxes: torch.Tensor, regions: torch.Tensor) -> torch.Tensor:
    """(N, M) fraction of each box's area that lies inside each region."""
    top_left = torch.maximum(boxes[:, None, :2], regions[None, :, :2])
    bottom_right = torch.minimum(boxes[:, None, 2:], regions[None, :, 2:])
    intersection = (bottom_right - top_left).clamp(min=0).prod(dim=2)
    return intersection / box_area(boxes).clamp(min=1e-6)[:, None]


@dataclass(frozen=True)
class SamplerSettings:
    """``num`` boxes per image, at most ``num * positive_fraction`` of them positive."""

    num: int
    positive_fraction: float
    # Detectron2's subsample_labels: the positives and then the negatives are always put in a
    # random order (torch.randperm on their device, drawn even when every candidate is taken), so
    # a seeded run draws the same numbers; MMDetection draws (on the CPU) only to choose a subset.
    always_shuffle: bool = False


def sample(assigned: torch.Tensor, settings: SamplerSettings,
           generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Random (positive indices, negative indices) into ``assigned``; negatives fill the rest."""
    positives = torch.nonzero(assigned >= 0).squeeze(1)
    negatives = torch.nonzero(assigned == NEGATIVE).squeeze(1)
    if settings.always_shuffle:
        num_positives = min(positives.numel(), int(settings.num * settings.positive_fraction))
        num_negatives = min(negatives.numel(), settings.num - num_positives)
        positive_order = torch.randperm(positives.numel(), generator=generator, device=positives.device)
        negative_order = torch.randperm(negatives.numel(), generator=generator, device=negatives.device)
        return positives[positive_order[:num_positives]], negatives[negative_order[:num_negatives]]
    positives = _random_subset(positives, int(settings.num * settings.positive_fraction), generator)
    negatives = _random_subset(negatives, settings.num - positives.numel(), generator)
    return positives, negatives


def _random_subset(indices: torch.Tensor, count: int, generator: torch.Generator | None) -> torch.Tensor:
    if indices.numel() <= count:
        return indices
    order = torch.randperm(indices.numel(), generator=generator, device="cpu")[:count]
    return indices[order.to(indices.device)]
