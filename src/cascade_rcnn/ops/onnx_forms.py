"""Every export-only form, in one file: what the ONNX graph computes where eager PyTorch does
something else. Each replaces one op of the one inference function (``CascadeNetwork.detect_batch``)
while ``deploy.export`` traces it (``ComputePath.exporting``), as torchvision's ``_is_tracing()``:
``RPNHead.proposals``, ``models/detections.py`` ``select_detections`` and ``ops/roi_align.py``
choose them.

An eager forward decides sizes from the data (how many RoIs per level, how many candidates) and
loops over the images of a batch; a traced graph must do neither, as its batch size and image
size are dynamic. These forms keep every shape symbolic and handle a whole batch at once:

- ``exported_proposals``: ``rpn.propose`` for every image of the batch together; the per-level
  NMS of all images is one NonMaxSuppression node (its batch axis is the images).
- ``exported_multiclass_nms``: the final per-class NMS of every image as one NonMaxSuppression
  node over the (image, class) score rows, then the best ``max_detections`` of each image.
- ``exported_multilevel_roi_align``: RoiAlign per level, reassembled by a gather.

Inside the proposal step each image's candidates occupy positions 0, 1, ... of its row in a (B, P)
table (P: the most any image of the batch has), the empty slots scored -1, which no runtime keeps;
it hands the RoI heads the filled slots as flat (R, 5) RoIs, as eager PyTorch does. The final NMS
gives each image a row of all R RoIs, the other images' scored -1. ``models/roi_heads/cascade.py``
``predict_masks`` reads ``exporting`` as well: it skips grouping detections by distinct box
(data-dependent).
"""
from __future__ import annotations

import torch
from torchvision.ops import batched_nms, roi_align

from .box_coder import BoxCoder

EMPTY = -1.0  # the score of an empty slot: below every sigmoid or softmax score
KEEP_ABOVE = -0.5  # scores above this are filled slots


def exported_proposals(logits: list[torch.Tensor], deltas: list[torch.Tensor], anchors: list[torch.Tensor],
                       image_sizes: torch.Tensor, coder: BoxCoder, pre_nms_per_level: int, nms_iou: float,
                       max_proposals: int) -> torch.Tensor:
    """``rpn.propose`` for a batch of images of one padded size, from per-level (B, N_l) logits,
    (B, N_l, 4) deltas, the shared (N_l, 4) anchors and the (B, 2) unpadded (h, w).

    Returns (R, 5) RoIs (image index, box), image by image, each image's by descending score
    (``RPNHead.proposals``' eager form). The same steps on the same numbers as ``propose``: the top
    ``pre_nms_per_level`` of each level (always sorted: the image size is dynamic), decoded and
    clipped to each image,
    boxes of zero width or height out, NMS within each level (levels shifted apart by
    ``level * (largest coordinate of the image + 1)``, as ``nms.batched_nms``), the best
    ``max_proposals``.
    """
    level_boxes, level_scores, level_ids = [], [], []
    for level, (level_logits, level_deltas, level_anchors) in enumerate(zip(logits, deltas, anchors)):
        scores = level_logits.sigmoid()
        if pre_nms_per_level > 0:
            scores, order = scores.sort(dim=1, descending=True)
            scores, order = scores[:, :pre_nms_per_level], order[:, :pre_nms_per_level]
            level_deltas = level_deltas.gather(1, order[..., None].expand(-1, -1, 4))
            level_anchors = level_anchors[order]
        else:
            level_anchors = level_anchors.expand_as(level_deltas)
        sizes = image_sizes[:, None, :].expand_as(level_deltas[..., :2])
        level_boxes.append(coder.decode(level_anchors.reshape(-1, 4), level_deltas.reshape(-1, 4),
                                        sizes.reshape(-1, 2)).reshape_as(level_deltas))
        level_scores.append(scores)
        level_ids.append(torch.full_like(scores, level))
    boxes, scores, levels = torch.cat(level_boxes, dim=1), torch.cat(level_scores, dim=1), torch.cat(level_ids, dim=1)
    valid = (boxes[..., 2] - boxes[..., 0] > 0) & (boxes[..., 3] - boxes[..., 1] > 0)
    scores = torch.where(valid, scores, torch.full_like(scores, EMPTY))
    # Coordinates are clipped to >= 0, so the 0 of the dropped boxes never exceeds the largest kept one.
    largest = torch.where(valid[..., None], boxes, torch.zeros_like(boxes)).amax(dim=(1, 2))
    shifted = boxes + (levels * (largest[:, None] + 1))[..., None]
    selected = _NonMaxSuppression.apply(shifted, scores[:, None, :], nms_iou, KEEP_ABOVE)
    image, box = selected[:, 0], selected[:, 2]
    kept = torch.full_like(scores, EMPTY).index_put((image, box), scores[image, box])
    kept, order = kept.sort(dim=1, descending=True)
    kept, order = kept[:, :max_proposals], order[:, :max_proposals]
    proposals = boxes.gather(1, order[..., None].expand(-1, -1, 4))
    slots = filled_slots(kept)  # (R, 2) image, position: the RoIs, image by image
    return torch.cat([slots[:, :1].to(proposals.dtype), proposals[slots[:, 0], slots[:, 1]]], dim=1)


def filled_slots(slot_scores: torch.Tensor) -> torch.Tensor:
    """(R, 2) (image, position) of the filled slots of a (B, P) table, image by image in order."""
    return torch.nonzero(slot_scores > KEEP_ABOVE)


def exported_multiclass_nms(boxes: torch.Tensor, class_scores: torch.Tensor, image_index: torch.Tensor,
                            image_sizes: torch.Tensor, score_thr: float, iou_threshold: float, max_detections: int
                            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``nms.multiclass_nms`` of every image of a batch at once.

    Rows r = 0..R-1 are RoIs of image ``image_index[r]`` (B images: the rows of the (B, 2)
    ``image_sizes``): boxes (R, 4) shared by the C score rows, or (R, C, 4), one per class;
    class_scores (R, C). Each image's NMS sees all R rows, those of the other images scored -1.
    Returns (image, row, class, score) of the kept detections, image by image, by descending
    score within each (at most ``max_detections`` per image). Ties and IoUs right at the
    threshold may resolve differently from torchvision's NMS.
    """
    num_classes = class_scores.shape[1]
    images = torch.ones_like(image_sizes[:, 0]).cumsum(0) - 1  # arange(B), with B symbolic
    mine = (image_index[None, :] == images[:, None])[..., None]  # (B, R, 1)
    # Pairs at or below the threshold get a score the operator always drops, whichever of > or >=
    # a runtime applies to its own score_threshold; so do the other images' rows.
    scores = torch.where(class_scores > score_thr, class_scores, torch.full_like(class_scores, EMPTY))
    table = torch.where(mine, scores[None], torch.full_like(scores, EMPTY)[None])  # (B, R, C)
    if boxes.dim() == 2:  # one NMS batch per image, one NMS class per class
        laid_out = boxes[None].expand(table.shape[0], -1, -1).contiguous()
        selected = _NonMaxSuppression.apply(laid_out, table.transpose(1, 2).contiguous(), iou_threshold, score_thr)
        kept_image, labels = selected[:, 0], selected[:, 1]
    else:  # one NMS batch per (image, class), each with its own boxes
        laid_out = boxes.transpose(0, 1)[None].expand(table.shape[0], -1, -1, -1)  # (B, C, R, 4)
        selected = _NonMaxSuppression.apply(laid_out.flatten(0, 1).contiguous(),
                                            table.transpose(1, 2).flatten(0, 1)[:, None, :].contiguous(),
                                            iou_threshold, score_thr)
        kept_image, labels = selected[:, 0] // num_classes, selected[:, 0] % num_classes
    kept_row = selected[:, 2]
    picked = table[kept_image, kept_row, labels]
    # Each image's best max_detections: its kept pairs scattered into one row, sorted.
    ranked = torch.full_like(table, EMPTY).index_put((kept_image, kept_row, labels), picked).flatten(1)
    ranked, order = ranked.sort(dim=1, descending=True)
    ranked, order = ranked[:, :max_detections], order[:, :max_detections]
    detection = filled_slots(ranked)
    image, rank = detection[:, 0], detection[:, 1]
    pair = order[image, rank]
    return image, pair // num_classes, pair % num_classes, ranked[image, rank]


class _NonMaxSuppression(torch.autograd.Function):
    """ONNX's NonMaxSuppression: boxes (B, N, 4), scores (B, C, N) -> (M, 3) [batch, class, box]
    of the boxes kept by NMS per batch and class, among those scoring above ``score_thr``. The
    eager body only gives the tracer example values."""

    @staticmethod
    def forward(ctx, boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float, score_thr: float
                ) -> torch.Tensor:
        selected = []
        for batch in range(boxes.shape[0]):  # (indexing, not iterating: no tracer warning)
            batch_boxes, batch_scores = boxes[batch], scores[batch]
            num_classes = batch_scores.shape[0]
            flat = batch_scores.t().reshape(-1)
            candidates = torch.nonzero(flat > score_thr).squeeze(1)
            box_index, labels = candidates // num_classes, candidates % num_classes
            keep = batched_nms(batch_boxes[box_index], flat[candidates], labels, iou_threshold)
            selected.append(torch.stack([torch.full_like(keep, batch), labels[keep], box_index[keep]], dim=1))
        return torch.cat(selected) if selected else torch.zeros(0, 3, dtype=torch.long, device=boxes.device)

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
