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
    if boxes.numel() == 0:
        return torch.empty(0, dtype=torch.long, device=boxes.device)
    offsets = groups.to(boxes) * (boxes.max() + 1)
    shifted = boxes + offsets[:, None]
    if boxes.shape[0] < SPLIT_THRESHOLD:
        return _nms_in_mmcv_order(shifted, scores, iou_threshold)
    keep_mask = torch.zeros_like(scores, dtype=torch.bool)
    for group in torch.unique(groups):
        members = torch.nonzero(groups == group).squeeze(1)
        keep_mask[members[_nms_in_mmcv_order(shifted[members], scores[members], iou_threshold)]] = True
    kept = torch.nonzero(keep_mask).squeeze(1)
    return kept[scores[kept].sort(descending=True).indices]


def _nms_in_mmcv_order(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    # mmcv orders by the (unstable) ``at::sort``; torchvision sorts stably, so pre-ordering with
    # the same sort makes tied scores come out in mmcv's order.
    order = scores.sort(descending=True).indices
    return order[nms(boxes[order], scores[order], iou_threshold)]
