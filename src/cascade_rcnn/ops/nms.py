"""NMS as MMDetection runs it (mmcv's output order), its fast form, and the one place that
chooses between them.

| caller               | case (first that applies)  | kernel                       | vs MMDetection             |
|----------------------|----------------------------|------------------------------|----------------------------|
| RPN, per level       | always                     | ``batched_nms``              | same boxes, same order     |
| (``level_nms``)      |                            |                              |                            |
| detections, per class| ``path.best_candidate_nms``| ``best_batched_nms`` over the best 10 x max_per_image candidates | same detections unless scores tie |
| (``multiclass_nms``) | otherwise (exact)          | ``batched_nms``              | same detections, same order|

mmcv sorts scores with the unstable ``at::sort`` before its NMS and shifts each group's boxes by
``group * (largest coordinate + 1)`` so that one NMS suppresses within groups only; above 10000
boxes it loops over the groups instead. ``batched_nms`` does the same on the same numbers.
The ONNX graph has its own forms of both, for a whole batch at once (``onnx_forms.exported_proposals``
and ``onnx_forms.exported_multiclass_nms``), chosen where ``ComputePath.exporting`` is set
(``RPNHead.proposals``, ``models/detections.py`` ``select_detections``).
"""
from __future__ import annotations

import torch
from torchvision.ops import batched_nms as torchvision_batched_nms
from torchvision.ops import nms

from .compute_path import ComputePath

# mmcv switches to a per-group loop above this many boxes; one NMS over 80 classes x 1000 boxes
# would be quadratic in the total.
SPLIT_THRESHOLD = 10_000


def batched_nms(boxes: torch.Tensor, scores: torch.Tensor, groups: torch.Tensor,
                iou_threshold: float) -> torch.Tensor:
    """Indices of the boxes kept by NMS run separately within each group, by descending score.

    boxes (N, 4) xyxy, scores (N,), groups (N,) integer ids (class or pyramid level).
    Boxes of different groups never suppress each other: each group is shifted by
    ``group * (max coordinate + 1)``, as mmcv does, so the IoUs are computed on the same numbers.
    """
    if boxes.numel() == 0:
        return torch.empty(0, dtype=torch.long, device=boxes.device)
    shifted = _shifted_apart(boxes, groups, boxes.max())
    if boxes.shape[0] < SPLIT_THRESHOLD:
        return _nms_in_mmcv_order(shifted, scores, iou_threshold)
    keep_mask = torch.zeros_like(scores, dtype=torch.bool)
    for group in torch.unique(groups):
        members = torch.nonzero(groups == group).squeeze(1)
        keep_mask[members[_nms_in_mmcv_order(shifted[members], scores[members], iou_threshold)]] = True
    kept = torch.nonzero(keep_mask).squeeze(1)
    return kept[scores[kept].sort(descending=True).indices]


def best_batched_nms(boxes: torch.Tensor, scores: torch.Tensor, groups: torch.Tensor, iou_threshold: float,
                     count: int) -> torch.Tensor:
    """The first ``count`` indices of ``batched_nms``, found from the best-scored boxes only.

    Greedy NMS keeps or drops a box because of the higher-scored boxes of its group alone, so
    NMS over the ``k`` best boxes decides their fate exactly as NMS over all of them; ``k``
    starts at 10 x ``count`` and grows x4 until ``count`` boxes survive. With 80 classes x 1000
    boxes at a low ``score_thr`` this is one NMS over ~1000 boxes instead of 80 over 1000 each.
    When ``k`` would reach all boxes or mmcv's split size, ``batched_nms`` itself runs. The
    groups are shifted by the same offsets as in ``batched_nms``, so the IoUs are the same
    numbers; only where scores tie may another box of the tie be kept.
    """
    if boxes.numel() == 0 or count <= 0:
        return torch.empty(0, dtype=torch.long, device=boxes.device)
    shifted = _shifted_apart(boxes, groups, boxes.max())
    order = scores.sort(descending=True).indices
    k = 10 * count
    while k < order.shape[0] and k < SPLIT_THRESHOLD:
        best = order[:k]
        kept = best[nms(shifted[best], scores[best], iou_threshold)]
        if kept.shape[0] >= count:
            return kept[:count]
        k *= 4
    return batched_nms(boxes, scores, groups, iou_threshold)[:count]


def _shifted_apart(boxes: torch.Tensor, groups: torch.Tensor, largest: torch.Tensor) -> torch.Tensor:
    """(N, 4) boxes moved by ``group * (largest coordinate + 1)``: boxes of different groups never
    overlap, so one NMS over all of them suppresses within groups only (mmcv's trick)."""
    return boxes + (groups.to(boxes) * (largest + 1))[:, None]


def _nms_in_mmcv_order(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    # mmcv orders by the (unstable) ``at::sort``; torchvision sorts stably, so pre-ordering with
    # the same sort makes tied scores come out in mmcv's order.
    order = scores.sort(descending=True).indices
    return order[nms(boxes[order], scores[order], iou_threshold)]


# Grouped NMS as each framework runs it (a rule named by the RPN and RoI head specs): mmcv's
# shifted-groups form (MMDetection), torchvision's ``batched_nms`` (Detectron2 calls it as it is).
GROUPED_NMS = {"mmcv": batched_nms, "torchvision": torchvision_batched_nms}


def level_nms(boxes: torch.Tensor, scores: torch.Tensor, levels: torch.Tensor, iou_threshold: float,
              path: ComputePath, rule: str = "mmcv") -> torch.Tensor:
    """The RPN's NMS within each pyramid level: kept indices by descending score."""
    return GROUPED_NMS[rule](boxes, scores, levels, iou_threshold)


def multiclass_nms(boxes: torch.Tensor, class_scores: torch.Tensor, score_thr: float, iou_threshold: float,
                   max_detections: int, path: ComputePath, rule: str = "mmcv"
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """MMDetection's multiclass NMS: every (box, class) pair scoring > ``score_thr`` is a
    candidate, NMS runs per class, the best ``max_detections`` are kept, by descending score.

    boxes (K, 4) shared by all classes (class-agnostic regression) or (K, C, 4), one per class;
    class_scores (K, C). Returns the box index (N,), class (N,) and score (N,) of each detection.
    ``rule`` names the grouped NMS of the exact path (``GROUPED_NMS``).
    """
    num_classes = class_scores.shape[1]
    scores = class_scores.reshape(-1)
    candidates = torch.nonzero(scores > score_thr).squeeze(1)
    box_index, labels = candidates // num_classes, candidates % num_classes
    candidate_boxes = boxes[box_index] if boxes.dim() == 2 else boxes[box_index, labels]
    if path.best_candidate_nms:
        keep = best_batched_nms(candidate_boxes, scores[candidates], labels, iou_threshold, max_detections)
    else:
        keep = GROUPED_NMS[rule](candidate_boxes, scores[candidates], labels, iou_threshold)[:max_detections]
    return box_index[keep], labels[keep], scores[candidates[keep]]
