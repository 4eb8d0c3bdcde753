"""Every export-only form, in one file: what the ONNX graph computes where eager PyTorch does
something else. They run only while ``deploy.export`` traces (``ComputePath.exporting``).

An eager forward decides sizes from the data (how many RoIs per level, how many candidates); a
traced graph must not, so these forms keep every shape symbolic:

- ``exported_batched_nms``: the RPN's per-level NMS as one NonMaxSuppression node.
- ``exported_multiclass_nms``: the final per-class NMS as one NonMaxSuppression node over the K
  boxes with C score rows (no K x C candidate boxes, no loop).
- ``exported_multilevel_roi_align``: RoiAlign per level, reassembled by a gather.

Two model-level branches read ``exporting`` as well: ``models/rpn.py`` ``propose`` always sorts
and slices each level (the image size is dynamic), and ``models/cascade.py`` ``predict_masks``
skips grouping detections by distinct box (data-dependent).
"""
from __future__ import annotations

import torch
from torchvision.ops import batched_nms, nms, roi_align


def exported_batched_nms(boxes: torch.Tensor, scores: torch.Tensor, groups: torch.Tensor, iou_threshold: float
                         ) -> torch.Tensor:
    """Indices kept by NMS within each group, by descending score (``nms.batched_nms``'s
    exported form). Groups are shifted apart by ``group * (largest coordinate + 1)``; a 0
    appended to the coordinates keeps the maximum defined for zero boxes (boxes are clipped >= 0)."""
    largest = torch.cat([boxes.reshape(-1), boxes.new_zeros(1)]).max()
    shifted = boxes + (groups.to(boxes) * (largest + 1))[:, None]
    order = scores.sort(descending=True).indices
    return order[nms(shifted[order], scores[order], iou_threshold)]


def exported_multiclass_nms(boxes: torch.Tensor, class_scores: torch.Tensor, score_thr: float,
                            iou_threshold: float, max_detections: int
                            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``nms.multiclass_nms``'s exported form: (box index, class, score) of the kept detections.
    boxes (K, 4) are shared by the C score rows; (K, C, 4) boxes (one per class) go in as C
    batches of one class each. Ties and IoUs right at the threshold may resolve differently from
    torchvision's NMS."""
    # Pairs at or below the threshold get a score the operator always drops, whichever of > or >=
    # a runtime applies to its own score_threshold.
    scores = torch.where(class_scores > score_thr, class_scores, torch.full_like(class_scores, -1.0))
    if boxes.dim() == 2:
        selected = _NonMaxSuppression.apply(boxes[None], scores.t()[None].contiguous(), iou_threshold, score_thr)
        box_index, labels = selected[:, 2], selected[:, 1]
    else:
        selected = _NonMaxSuppression.apply(boxes.transpose(0, 1).contiguous(), scores.t()[:, None].contiguous(),
                                            iou_threshold, score_thr)
        box_index, labels = selected[:, 2], selected[:, 0]
    picked = scores[box_index, labels]
    order = picked.sort(descending=True).indices[:max_detections]
    return box_index[order], labels[order], picked[order]


class _NonMaxSuppression(torch.autograd.Function):
    """ONNX's NonMaxSuppression: boxes (B, N, 4), scores (B, C, N) -> (M, 3) [batch, class, box]
    of the boxes kept by NMS per batch and class. The eager body only gives the tracer example values."""

    @staticmethod
    def forward(ctx, boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float, score_thr: float
                ) -> torch.Tensor:
        selected = []
        for batch, (batch_boxes, batch_scores) in enumerate(zip(boxes, scores)):
            num_classes = batch_scores.shape[0]
            flat = batch_scores.t().reshape(-1)
            candidates = torch.nonzero(flat > score_thr).squeeze(1)
            box_index, labels = candidates // num_classes, candidates % num_classes
            keep = batched_nms(batch_boxes[box_index], flat[candidates], labels, iou_threshold)
            selected.append(torch.stack([torch.full_like(keep, batch), labels[keep], box_index[keep]], dim=1))
        return torch.cat(selected)

    @staticmethod
    def symbolic(g, boxes, scores, iou_threshold: float, score_thr: float):
        max_per_class = g.op("Constant", value_t=torch.tensor([2**31 - 1], dtype=torch.long))
        iou = g.op("Constant", value_t=torch.tensor([iou_threshold], dtype=torch.float))
        threshold = g.op("Constant", value_t=torch.tensor([score_thr], dtype=torch.float))
        return g.op("NonMaxSuppression", boxes, scores, max_per_class, iou, threshold)


def exported_multilevel_roi_align(features: list[torch.Tensor], rois: torch.Tensor, levels: torch.Tensor,
                                  output_size: int, strides: tuple[int, ...]) -> torch.Tensor:
    """``roi_align.MultiLevelRoIAlign`` as the graph holds it: RoiAlign (opset >= 16 for
    ``aligned``) on each level's RoIs, the pieces concatenated and put back in RoI order with a
    gather (a scatter's shapes would be fixed at tracing time).

    onnxruntime divides by a sample count of zero for a zero-width or zero-height RoI (NaN),
    where torchvision and mmcv give zeros: the NaNs are replaced by those zeros.
    """
    pieces, order = [], []
    for level, (feature, stride) in enumerate(zip(features, strides)):
        index = torch.nonzero(levels == level).squeeze(1)
        pieces.append(roi_align(feature.to(rois.dtype), rois[index], output_size, 1.0 / stride,
                                sampling_ratio=0, aligned=True))
        order.append(index)
    return torch.nan_to_num(torch.cat(pieces)[torch.argsort(torch.cat(order))], nan=0.0)
