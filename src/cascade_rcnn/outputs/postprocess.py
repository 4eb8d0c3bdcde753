"""From the network's raw output to what users get: the step shared by the PyTorch model and the
ONNX runtime (one implementation, so both write the same files)."""
from __future__ import annotations

import torch

from ..data.transforms import ResizedImage
from ..models.detector import ImageDetections
from ..ops.paste_masks import paste_masks
from .detections import Detections


def to_original_pixels(raw: ImageDetections, record: ResizedImage, class_names: tuple[str, ...]) -> Detections:
    """Boxes divided by the resize's scale factor, masks pasted into the original image."""
    boxes = raw.boxes.float()
    if not raw.boxes_in_original:
        boxes = boxes / boxes.new_tensor(record.scale_factor).repeat(2)
    masks = None if raw.mask_probs is None else paste_masks(raw.mask_probs.float(), boxes, record.original_size)
    return Detections(boxes.cpu(), raw.scores.float().cpu(), raw.labels.cpu(), class_names, record.original_size,
                      None if masks is None else masks.cpu())
