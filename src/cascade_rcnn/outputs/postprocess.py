"""From the network's raw output to what users get: the step shared by the PyTorch model and the
ONNX runtime (one implementation, so both write the same files)."""
from __future__ import annotations

import torch

from ..data.transforms import ResizedImage
from ..models.detections import ImageDetections
from ..ops.paste_masks import paste_masks
from .detections import Detections


def original_boxes(raw: ImageDetections, record: ResizedImage) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, 4) float boxes in the original image's pixels (``ResizedImage.boxes_to_original``,
    unless the network already returned them so: ``boxes_in_original``) and the (N,) bool mask
    of the detections kept."""
    boxes = raw.boxes.float()
    if raw.boxes_in_original:
        return boxes, boxes.new_ones(len(boxes), dtype=torch.bool)
    return record.boxes_to_original(boxes)


def to_original_pixels(raw: ImageDetections, record: ResizedImage, class_names: tuple[str, ...],
                       mask_threshold: float = 0.5) -> Detections:
    """Boxes in the original image's pixels, masks pasted into it (a pixel is the object where its
    probability is at least ``mask_threshold``)."""
    raw = unpasted_in_original_pixels(raw, record)
    masks = None if raw.mask_probs is None else paste_masks(raw.mask_probs, raw.boxes, record.original_size,
                                                            mask_threshold)
    return Detections(raw.boxes, raw.scores, raw.labels, class_names, record.original_size, masks)


def unpasted_in_original_pixels(raw: ImageDetections, record: ResizedImage) -> ImageDetections:
    """``to_original_pixels`` without the paste, on the CPU: boxes in the original image's pixels
    (``boxes_in_original``), masks still the (N, 28, 28) probabilities inside their boxes. What
    tiling and test-time augmentation merge before pasting once (``inference/merging.py``)."""
    boxes, kept = original_boxes(raw, record)
    probs = None if raw.mask_probs is None else raw.mask_probs.float()[kept].cpu()
    return ImageDetections(boxes[kept].cpu(), raw.scores.float()[kept].cpu(), raw.labels[kept].cpu(), probs,
                           boxes_in_original=True)
