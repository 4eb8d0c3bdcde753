"""From the network's raw output to what users get: the step shared by the PyTorch model and the
ONNX runtime (one implementation, so both write the same files)."""
from __future__ import annotations

import torch

from ..data.transforms import ResizedImage
from ..models.detections import ImageDetections
from ..ops.paste_masks import paste_masks
from .detections import Detections


def original_boxes(raw: ImageDetections, record: ResizedImage) -> torch.Tensor:
    """(N, 4) float boxes in the original image's pixels: divided by the resize's scale factor,
    unless the network already returned them so (``boxes_in_original``)."""
    boxes = raw.boxes.float()
    if not raw.boxes_in_original:
        boxes = boxes / boxes.new_tensor(record.scale_factor).repeat(2)
    return boxes


def to_original_pixels(raw: ImageDetections, record: ResizedImage, class_names: tuple[str, ...],
                       mask_threshold: float = 0.5) -> Detections:
    """Boxes divided by the resize's scale factor, masks pasted into the original image (a pixel is
    the object where its probability is at least ``mask_threshold``)."""
    boxes = original_boxes(raw, record)
    masks = None if raw.mask_probs is None else paste_masks(raw.mask_probs.float(), boxes, record.original_size,
                                                            mask_threshold)
    return Detections(boxes.cpu(), raw.scores.float().cpu(), raw.labels.cpu(), class_names, record.original_size,
                      None if masks is None else masks.cpu())


def unpasted_in_original_pixels(raw: ImageDetections, record: ResizedImage) -> ImageDetections:
    """``to_original_pixels`` without the paste, on the CPU: boxes in the original image's pixels
    (``boxes_in_original``), masks still the (N, 28, 28) probabilities inside their boxes. What
    tiling and test-time augmentation merge before pasting once (``inference/merging.py``)."""
    return ImageDetections(original_boxes(raw, record).cpu(), raw.scores.float().cpu(), raw.labels.cpu(),
                           None if raw.mask_probs is None else raw.mask_probs.float().cpu(), boxes_in_original=True)
