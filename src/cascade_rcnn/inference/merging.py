"""Detections of several passes over one image (tiles, test-time views) merged into one result.

Between the network and the final paste, the detections of one pass are an ``ImageDetections``
in the ORIGINAL image's pixels (``boxes_in_original=True``), on the CPU, whose masks are still the
(N, 28, 28) probabilities inside their boxes (``CascadeRCNN.detect_unpasted``): merging costs
memory in the number of detections, never in passes x image size. Masks are pasted once, at the
end, for the detections that survive.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ..models.detections import ImageDetections
from ..ops.nms import batched_nms
from ..ops.paste_masks import paste_masks
from ..outputs.detections import Detections


def concatenate(parts: Sequence[ImageDetections]) -> ImageDetections:
    """One ``ImageDetections`` holding every detection of the (at least one) ``parts``, in order (all
    in original pixels)."""
    with_mask = parts[0].mask_probs is not None
    return ImageDetections(torch.cat([p.boxes for p in parts]), torch.cat([p.scores for p in parts]),
                           torch.cat([p.labels for p in parts]),
                           torch.cat([p.mask_probs for p in parts]) if with_mask else None, boxes_in_original=True)


def select(detections: ImageDetections, index: torch.Tensor) -> ImageDetections:
    """The detections at ``index`` (a (K,) long or (N,) bool tensor), in that order."""
    return ImageDetections(detections.boxes[index], detections.scores[index], detections.labels[index],
                           None if detections.mask_probs is None else detections.mask_probs[index],
                           boxes_in_original=detections.boxes_in_original)


def class_nms(detections: ImageDetections, iou_threshold: float, max_count: int) -> ImageDetections:
    """NMS within each class over all passes, then the best ``max_count`` by descending score.

    mmcv's ``batched_nms`` (``ops.nms.batched_nms``: its order, its per-class shift): the merge of
    MMDetection 3's ``DetTTAModel``. Detections that one pass already separated stay separated
    (their IoU is at most the threshold, up to the rounding of the mapping to original pixels), so
    merging a single pass changes nothing.
    """
    keep = batched_nms(detections.boxes, detections.scores, detections.labels, iou_threshold)[:max_count]
    return select(detections, keep)


def resample_masks(probs: torch.Tensor, boxes: torch.Tensor, target_boxes: torch.Tensor) -> torch.Tensor:
    """(K, M, M) probabilities inside ``boxes`` (K, 4) resampled onto the M x M grids of
    ``target_boxes`` (K, 4).

    Bilinear at the target cells' centres, as ``paste_masks`` samples pixel centres; 0 outside
    the source box. Used to combine the pieces of an object cut by tile borders in its whole box.
    """
    size = probs.shape[-1]
    cells = (torch.arange(size, dtype=torch.float32) + 0.5) / size
    xs = target_boxes[:, 0:1] + cells * (target_boxes[:, 2:3] - target_boxes[:, 0:1])  # (K, M)
    ys = target_boxes[:, 1:2] + cells * (target_boxes[:, 3:4] - target_boxes[:, 1:2])
    gx = (xs - boxes[:, 0:1]) / (boxes[:, 2:3] - boxes[:, 0:1]).clamp(min=1e-6) * 2 - 1
    gy = (ys - boxes[:, 1:2]) / (boxes[:, 3:4] - boxes[:, 1:2]).clamp(min=1e-6) * 2 - 1
    grid = torch.stack([gx[:, None, :].expand(-1, size, -1), gy[:, :, None].expand(-1, -1, size)], dim=3)
    return F.grid_sample(probs[:, None].float(), grid, align_corners=False, padding_mode="zeros")[:, 0]


def to_detections(detections: ImageDetections, image_size: tuple[int, int], class_names: tuple[str, ...],
                  mask_threshold: float = 0.5) -> Detections:
    """The final ``Detections``: masks pasted into the (H, W) image once, for the survivors only."""
    masks = None if detections.mask_probs is None else paste_masks(detections.mask_probs, detections.boxes,
                                                                   image_size, mask_threshold)
    return Detections(detections.boxes, detections.scores, detections.labels, class_names, image_size, masks)
