"""What the network's inference returns: raw detections in resized-image pixels (or original
pixels for box-only models), before masks are pasted (``outputs/postprocess.py``)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..ops.compute_path import ComputePath
from ..ops.nms import multiclass_nms
from ..ops.onnx_forms import exported_multiclass_nms


@dataclass(frozen=True)
class DetectionSettings:
    """Final filtering: keep class scores > ``score_thr`` (of ``classes`` only, if given), NMS per
    class, best ``max_per_image``."""

    score_thr: float = 0.05
    nms_iou: float = 0.5
    max_per_image: int = 100
    classes: tuple[int, ...] | None = None  # only these labels are candidates; None: every class


@dataclass
class ImageDetections:
    """One image's raw detections."""

    boxes: torch.Tensor  # (N, 4) xyxy, resized-image pixels (original pixels if boxes_in_original)
    scores: torch.Tensor  # (N,)
    labels: torch.Tensor  # (N,) 0-based class index
    mask_probs: torch.Tensor | None = None  # (N, S, S) probability of the detected class inside its box
    boxes_in_original: bool = False


@dataclass
class BatchDetections:
    """A batch's raw detections, flat: image 0's first, then image 1's, ..., each image's by
    descending score (the layout of the exported graph's outputs)."""

    boxes: torch.Tensor  # (N, 4) xyxy, as in ImageDetections
    scores: torch.Tensor  # (N,)
    labels: torch.Tensor  # (N,)
    image_index: torch.Tensor  # (N,) which image of the batch
    mask_probs: torch.Tensor | None = None  # (N, S, S)
    boxes_in_original: bool = False

    def per_image(self, num_images: int) -> list[ImageDetections]:
        """One ``ImageDetections`` per image of the batch."""
        images = []
        for index in range(num_images):
            mine = torch.nonzero(self.image_index == index).squeeze(1)
            images.append(ImageDetections(self.boxes[mine], self.scores[mine], self.labels[mine],
                                          None if self.mask_probs is None else self.mask_probs[mine],
                                          self.boxes_in_original))
        return images


def select_detections(boxes: torch.Tensor, class_probs: torch.Tensor, image_index: torch.Tensor,
                      image_sizes: torch.Tensor, settings: DetectionSettings, path: ComputePath,
                      box_scales: torch.Tensor | None = None, nms_rule: str = "mmcv") -> BatchDetections:
    """MMDetection's multiclass NMS (``nms_rule``: ops/nms.py GROUPED_NMS), per image, for RoI-head outputs of a whole batch.

    boxes (K, 4) are class-agnostic, so every box is a candidate for every foreground class, or
    (K, C, 4), one per class; class_probs (K, C + 1) with background last; image_index (K,) of
    the (B, 2) ``image_sizes``. ``box_scales`` (B, 4) multiplies each image's boxes before the
    NMS (box-only models map to original pixels there, as MMDetection). Exporting, one batched
    form for all images (``onnx_forms.exported_multiclass_nms``).
    """
    if box_scales is not None:
        scales = box_scales[image_index]
        boxes = boxes * (scales if boxes.dim() == 2 else scales[:, None, :])
    foreground = class_probs[:, :-1]
    if settings.classes is not None:  # the other classes' scores never pass score_thr (>= 0)
        kept = torch.zeros(foreground.shape[1], dtype=torch.bool, device=foreground.device)
        kept[list(settings.classes)] = True
        foreground = torch.where(kept, foreground, torch.zeros((), dtype=foreground.dtype, device=foreground.device))
    if path.exporting:
        image, row, labels, scores = exported_multiclass_nms(boxes, foreground, image_index, image_sizes,
                                                             settings.score_thr, settings.nms_iou,
                                                             settings.max_per_image)
    else:
        kept = []
        for index in range(image_sizes.shape[0]):
            mine = torch.nonzero(image_index == index).squeeze(1)
            box_index, labels, scores = multiclass_nms(boxes[mine], foreground[mine], settings.score_thr,
                                                       settings.nms_iou, settings.max_per_image, path, nms_rule)
            kept.append((torch.full_like(labels, index), mine[box_index], labels, scores))
        image, row, labels, scores = (torch.cat(parts) for parts in zip(*kept))
    return BatchDetections(boxes[row] if boxes.dim() == 2 else boxes[row, labels], scores, labels, image,
                           boxes_in_original=box_scales is not None)
