"""Per-group NMS that keeps mmcv's output order (see spec §2.10)."""
from __future__ import annotations

import torch
from torchvision.ops import nms

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
    if torch.onnx.is_in_onnx_export():  # one NonMaxSuppression node, whatever the box count
        # Boxes are clipped to the image (>= 0): a 0 appended keeps the maximum and allows none.
        largest = torch.cat([boxes.reshape(-1), boxes.new_zeros(1)]).max()
        return _nms_in_mmcv_order(_shifted_apart(boxes, groups, largest), scores, iou_threshold)
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


def multiclass_nms(boxes: torch.Tensor, class_scores: torch.Tensor, score_thr: float, iou_threshold: float,
                   max_detections: int, exact: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """MMDetection's multiclass NMS: every (box, class) pair scoring > ``score_thr`` is a
    candidate, NMS runs per class, the best ``max_detections`` are kept, by descending score.

    boxes (K, 4) shared by all classes (class-agnostic regression), class_scores (K, C).
    Returns the box index (N,), class (N,) and score (N,) of each detection. ``exact=False``
    finds them from the best-scored candidates only (``best_batched_nms``: the same detections
    unless scores tie).
    """
    if torch.onnx.is_in_onnx_export():
        return _onnx_multiclass_nms(boxes, class_scores, score_thr, iou_threshold, max_detections)
    num_classes = class_scores.shape[1]
    scores = class_scores.reshape(-1)
    candidates = torch.nonzero(scores > score_thr).squeeze(1)
    box_index, labels = candidates // num_classes, candidates % num_classes
    if exact:
        keep = batched_nms(boxes[box_index], scores[candidates], labels, iou_threshold)[:max_detections]
    else:
        keep = best_batched_nms(boxes[box_index], scores[candidates], labels, iou_threshold, max_detections)
    return box_index[keep], labels[keep], scores[candidates[keep]]


def _onnx_multiclass_nms(boxes: torch.Tensor, class_scores: torch.Tensor, score_thr: float,
                         iou_threshold: float, max_detections: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The exported form of ``multiclass_nms``: ONNX's NonMaxSuppression takes the K boxes once
    with C score rows and runs per class natively (no K x C candidate boxes, no loop). Ties and
    IoUs right at the threshold may resolve differently from torchvision's NMS."""
    # Pairs at or below the threshold get a score the operator always drops, whichever of > or >=
    # a runtime applies to its own score_threshold.
    scores = torch.where(class_scores > score_thr, class_scores, torch.full_like(class_scores, -1.0))
    selected = _NonMaxSuppression.apply(boxes, scores.t().contiguous(), iou_threshold, score_thr)
    box_index, labels = selected[:, 2], selected[:, 1]
    picked = scores[box_index, labels]
    order = picked.sort(descending=True).indices[:max_detections]
    return box_index[order], labels[order], picked[order]


class _NonMaxSuppression(torch.autograd.Function):
    """(M, 3) [batch 0, class, box] of the boxes kept by per-class NMS; exported as ONNX's
    NonMaxSuppression. The eager body (run while tracing) computes the same selection."""

    @staticmethod
    def forward(ctx, boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float, score_thr: float
                ) -> torch.Tensor:
        num_classes = scores.shape[0]
        flat = scores.t().reshape(-1)
        candidates = torch.nonzero(flat > score_thr).squeeze(1)
        box_index, labels = candidates // num_classes, candidates % num_classes
        keep = batched_nms(boxes[box_index], flat[candidates], labels, iou_threshold)
        return torch.stack([torch.zeros_like(keep), labels[keep], box_index[keep]], dim=1)

    @staticmethod
    def symbolic(g, boxes, scores, iou_threshold: float, score_thr: float):
        max_per_class = g.op("Constant", value_t=torch.tensor([2**31 - 1], dtype=torch.long))
        iou = g.op("Constant", value_t=torch.tensor([iou_threshold], dtype=torch.float))
        threshold = g.op("Constant", value_t=torch.tensor([score_thr], dtype=torch.float))
        batch_boxes = g.op("Unsqueeze", boxes, g.op("Constant", value_t=torch.tensor([0])))
        batch_scores = g.op("Unsqueeze", scores, g.op("Constant", value_t=torch.tensor([0])))
        return g.op("NonMaxSuppression", batch_boxes, batch_scores, max_per_class, iou, threshold)
