"""The cascade: three box stages at rising IoU, each refining the previous stage's boxes.

At test time (MMDetection's CascadeRoIHead, spec §2.8-2.9):
  proposals -> stage 1 -> refined boxes -> stage 2 -> refined boxes -> stage 3
  scores = softmax(mean of the three stages' logits); boxes = stage 3's regression;
  per-class NMS; masks = mean of the three mask heads' sigmoids on the final boxes.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..ops.box_coder import BoxCoder
from ..ops.nms import batched_nms
from .box_head import BoxHead
from .mask_head import MaskHead
from .roi_features import MultiLevelRoIAlign

# Each stage's targets are normalised more tightly: its inputs are already better boxes.
STAGE_STDS = ((0.1, 0.1, 0.2, 0.2), (0.05, 0.05, 0.1, 0.1), (0.033, 0.033, 0.067, 0.067))
STAGE_IOUS = (0.5, 0.6, 0.7)  # training IoU threshold of each stage
STAGE_LOSS_WEIGHTS = (1.0, 0.5, 0.25)


@dataclass
class DetectionSettings:
    """Final filtering: keep class scores > ``score_thr``, NMS per class, best ``max_per_image``."""

    score_thr: float = 0.05
    nms_iou: float = 0.5
    max_per_image: int = 100


@dataclass
class ImageDetections:
    """One image's raw output in RESIZED-image pixels (and masks still as 28x28 probabilities)."""

    boxes: torch.Tensor  # (N, 4) xyxy
    scores: torch.Tensor  # (N,)
    labels: torch.Tensor  # (N,) 0-based class index
    mask_probs: torch.Tensor | None = None  # (N, 28, 28) probability of the predicted class


def rois_from_boxes(boxes_per_image: list[torch.Tensor]) -> torch.Tensor:
    """(K, 5) RoIs = (image index, x1, y1, x2, y2) from a list of (N_i, 4) boxes."""
    return torch.cat([torch.cat([b.new_full((b.shape[0], 1), i), b], dim=1)
                      for i, b in enumerate(boxes_per_image)])


class CascadeRoIHead(nn.Module):
    """Three ``BoxHead`` stages (+ three ``MaskHead`` stages for Cascade Mask R-CNN)."""

    def __init__(self, num_classes: int, with_mask: bool, channels: int = 256, fc_channels: int = 1024,
                 stage_stds: tuple[tuple[float, ...], ...] = STAGE_STDS):
        super().__init__()
        self.num_classes = num_classes
        self.coders = [BoxCoder(tuple(stds)) for stds in stage_stds]
        self.box_roi_align = MultiLevelRoIAlign(7)
        self.bbox_head = nn.ModuleList(BoxHead(num_classes, channels, hidden=fc_channels) for _ in stage_stds)
        self.mask_roi_align = MultiLevelRoIAlign(14)
        self.mask_head = nn.ModuleList(MaskHead(num_classes, channels, channels) for _ in stage_stds) if with_mask else None

    @property
    def with_mask(self) -> bool:
        return self.mask_head is not None

    def forward_stage(self, stage: int, features: list[torch.Tensor], rois: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits (K, num_classes + 1) and deltas (K, 4) of one stage for (K, 5) RoIs."""
        return self.bbox_head[stage](self.box_roi_align(features, rois))

    def predict_boxes(self, features: list[torch.Tensor], proposals: list[torch.Tensor],
                      image_sizes: list[tuple[int, int]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Run all stages on (P_i, 4) proposals of each image.

        Returns the final boxes (K, 4), class probabilities (K, num_classes + 1) and the (K,)
        image index of each row, in resized-image pixels.
        """
        rois = rois_from_boxes(proposals)
        image_index = rois[:, 0].long()
        max_shapes = torch.tensor(image_sizes, dtype=rois.dtype, device=rois.device)[image_index]
        stage_logits = []
        for stage, coder in enumerate(self.coders):
            logits, deltas = self.forward_stage(stage, features, rois)
            stage_logits.append(logits)
            boxes = coder.decode(rois[:, 1:], deltas, max_shapes)
            rois = torch.cat([rois[:, :1], boxes], dim=1)
        # MMDetection averages LOGITS and applies softmax afterwards (sum(...) / 3, same order).
        mean_logits = sum(stage_logits) / float(len(stage_logits))
        return boxes, mean_logits.softmax(dim=-1), image_index

    def predict_masks(self, features: list[torch.Tensor], boxes: list[torch.Tensor],
                      labels: list[torch.Tensor]) -> list[torch.Tensor]:
        """(N_i, 28, 28) probabilities of each detection's class: mean of the stages' sigmoids."""
        rois = rois_from_boxes(boxes)
        roi_features = self.mask_roi_align(features, rois)
        probs = torch.stack([head(roi_features).sigmoid() for head in self.mask_head]).mean(dim=0)
        label_probs = probs[torch.arange(rois.shape[0], device=rois.device), torch.cat(labels)]
        return list(label_probs.split([b.shape[0] for b in boxes]))


def select_detections(boxes: torch.Tensor, class_probs: torch.Tensor, settings: DetectionSettings
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """MMDetection's multiclass NMS for one image.

    boxes (K, 4) are class-agnostic, so every box is a candidate for every foreground class;
    class_probs (K, C + 1) with background last. Returns boxes (N, 4), scores (N,), labels (N,).
    """
    num_classes = class_probs.shape[1] - 1
    scores = class_probs[:, :num_classes].reshape(-1)
    candidates = torch.nonzero(scores > settings.score_thr).squeeze(1)
    box_index, labels = candidates // num_classes, candidates % num_classes
    boxes, scores = boxes[box_index], scores[candidates]
    keep = batched_nms(boxes, scores, labels, settings.nms_iou)[:settings.max_per_image]
    return boxes[keep], scores[keep], labels[keep]
