"""From the network's raw output to what users get: the step shared by the PyTorch model and the
ONNX runtime (one implementation, so both write the same files)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .data.transforms import ResizedImage
from .ops.paste_masks import paste_masks
from .results import Detections


@dataclass
class ImageDetections:
    """One image's raw detections, as the network (or the exported graph) returns them."""

    boxes: torch.Tensor  # (N, 4) xyxy, resized-image pixels (original pixels if boxes_in_original)
    scores: torch.Tensor  # (N,)
    labels: torch.Tensor  # (N,) 0-based class index
    mask_probs: torch.Tensor | None = None  # (N, 28, 28) probability of the detected class
    boxes_in_original: bool = False


def to_original_pixels(raw: ImageDetections, record: ResizedImage, class_names: tuple[str, ...]) -> Detections:
    """Boxes divided by the resize's scale factor, masks pasted into the original image."""
    boxes = raw.boxes.float()
    if not raw.boxes_in_original:
        boxes = boxes / boxes.new_tensor(record.scale_factor).repeat(2)
    masks = None if raw.mask_probs is None else paste_masks(raw.mask_probs.float(), boxes, record.original_size)
    return Detections(boxes.cpu(), raw.scores.float().cpu(), raw.labels.cpu(), class_names, record.original_size,
                      None if masks is None else masks.cpu())
