"""Cascade (Mask) R-CNN as a network: normalised image batch -> backbone -> FPN -> RPN proposals
-> cascade -> raw detections (inference) or losses (training).

Module attribute names (backbone, neck, rpn_head, roi_head) are MMDetection's checkpoint keys,
so a published ``.pth`` loads with ``strict=True``. Which computation runs is ``self.path``
(``ops/compute_path.py``), passed down to every part that has a choice. Images from files and
arrays, and results in original-image pixels, are the inference layer's (``inference/``).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..ops.assign_sample import SamplerSettings
from ..ops.compute_path import EXACT, FAST, ComputePath
from .cascade import CascadeRoIHead, DetectionSettings, select_detections
from .config import ModelConfig
from .fpn import FPN
from .low_precision import at_precision
from .rpn import ProposalSettings, RPNHead, propose, rpn_loss

FPN_STRIDES = (4, 8, 16, 32)  # of the backbone's maps C2..C5 (P6 is a subsampled P5)


@dataclass
class ImageDetections:
    """One image's raw detections, as the network (or the exported graph) returns them."""

    boxes: torch.Tensor  # (N, 4) xyxy, resized-image pixels (original pixels if boxes_in_original)
    scores: torch.Tensor  # (N,)
    labels: torch.Tensor  # (N,) 0-based class index
    mask_probs: torch.Tensor | None = None  # (N, 28, 28) probability of the detected class
    boxes_in_original: bool = False


class CascadeNetwork(nn.Module):
    """The detector's network: losses of a training batch, raw detections of a test batch."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.backbone = config.backbone.build()
        if tuple(self.backbone.strides) != FPN_STRIDES:
            raise ValueError(f"{config.name}: the backbone's maps have strides {tuple(self.backbone.strides)}; "
                             f"the FPN, RPN and RoIAlign expect {FPN_STRIDES}")
        self.neck = FPN(self.backbone.out_channels, config.fpn_channels)
        self.rpn_head = RPNHead(config.fpn_channels, scales=(config.anchor_scale,))
        self.roi_head = CascadeRoIHead(config)
        # Training: anchors sampled per image for the RPN loss (MMDetection: 256, half positive).
        self.rpn_sampler = SamplerSettings(num=config.rpn_samples_per_image, positive_fraction=0.5)
        self.train_proposals = ProposalSettings(pre_nms_per_level=config.train_proposals, nms_iou=0.7,
                                                max_proposals=config.train_proposals)
        self.test_proposals = ProposalSettings(pre_nms_per_level=config.test_proposals, nms_iou=0.7,
                                               max_proposals=config.test_proposals)
        self.test_detections = DetectionSettings(score_thr=0.05, nms_iou=0.5, max_per_image=100)
        self.path: ComputePath = FAST

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def exact(self) -> bool:
        """True: MMDetection's ops in MMDetection's order, bit for bit (``path = EXACT``).

        False (the default, ``path = FAST``): channels-last activations, each frozen BatchNorm
        folded into its conv (in training too), RoIAlign as weighted gathers on the CPU, NMS over
        the best-scored candidates, mask logits of the detected class only. Its detections equal
        the exact path's up to float rounding (BENCHMARKS.md measures it per step).
        """
        return self.path.exact

    @exact.setter
    def exact(self, exact: bool) -> None:
        self.path = EXACT if exact else FAST

    @property
    def memory_format(self) -> torch.memory_format:
        """Layout of the image batch (inference and training): channels-last on the fast path
        (convolutions run faster on the CPU, forward and backward), contiguous on the exact one."""
        return torch.channels_last if self.path.channels_last else torch.contiguous_format

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.config.class_names

    def features(self, batch: torch.Tensor, path: ComputePath) -> list[torch.Tensor]:
        """(B, 3, H, W) normalised, padded images -> P2..P6."""
        return self.neck(self.backbone(batch, path))

    def proposals(self, logits: list[torch.Tensor], deltas: list[torch.Tensor], anchors: list[torch.Tensor],
                  image_sizes: torch.Tensor, settings: ProposalSettings, path: ComputePath) -> list[torch.Tensor]:
        """Per image (P_i, 4) RPN proposals in resized-image pixels, from the RPN head's outputs;
        image_sizes (B, 2) unpadded (h, w)."""
        with torch.no_grad():
            return [propose([level[i] for level in logits], [level[i] for level in deltas], anchors,
                            image_sizes[i:i + 1], settings, path)[0]
                    for i in range(image_sizes.shape[0])]

    def loss(self, batch: torch.Tensor, targets: list[dict], image_sizes: torch.Tensor) -> dict[str, torch.Tensor]:
        """Training losses for (B, 3, H, W) padded images of (B, 2) unpadded (h, w) sizes.

        targets: per image ``boxes`` (G, 4) xyxy and ``labels`` (G,) in resized pixels, ``masks``
        (G, h, w) uint8 for mask models, optional ``crowd_boxes`` (M, 4) to ignore.
        """
        path = self.path
        image_sizes = image_sizes.to(batch.device)
        with at_precision(self, path):
            features = self.features(batch.contiguous(memory_format=self.memory_format), path)
            logits, deltas = self.rpn_head(features)
            anchors = self.rpn_head.anchors(features)
            losses = rpn_loss(logits, deltas, anchors, targets, image_sizes, self.rpn_sampler)
            proposals = self.proposals(logits, deltas, anchors, image_sizes, self.train_proposals, path)
            features = self.roi_head.box_roi_align.readable(features, path)
            losses.update(self.roi_head.loss(features, proposals, targets, image_sizes, tuple(batch.shape[-2:]),
                                             path))
        return losses

    def forward(self, batch: torch.Tensor, targets: list[dict], image_sizes: torch.Tensor
                ) -> dict[str, torch.Tensor]:
        """Training forward pass = ``loss`` (what DistributedDataParallel calls)."""
        return self.loss(batch, targets, image_sizes)

    def detect_resized(self, batch: torch.Tensor, image_sizes: torch.Tensor, settings: DetectionSettings,
                       stage: int | None = None, box_scales: torch.Tensor | None = None,
                       path: ComputePath | None = None) -> list[ImageDetections]:
        """The network at inference: (B, 3, H, W) normalised padded images and their (B, 2)
        unpadded (h, w) -> per image boxes, scores, labels (and 28x28 mask probabilities).

        Boxes are in resized-image pixels, or multiplied by ``box_scales`` (B, 4) before the NMS.
        ``stage=k`` scores with cascade stage k alone. ``path`` defaults to ``self.path``; the
        ONNX export traces this very function with ``exporting`` set. At bf16/fp16 the network
        runs in that dtype and the detections come back in float32 (``low_precision.py``).
        """
        path = path or self.path
        with at_precision(self, path):
            return self._detect(batch.to(path.dtype), image_sizes, settings, stage, box_scales, path)

    def _detect(self, batch: torch.Tensor, image_sizes: torch.Tensor, settings: DetectionSettings,
                stage: int | None, box_scales: torch.Tensor | None, path: ComputePath) -> list[ImageDetections]:
        features = self.features(batch, path)
        logits, deltas = self.rpn_head(features)
        proposals = self.proposals([level.float() for level in logits], [level.float() for level in deltas],
                                   self.rpn_head.anchors(features), image_sizes, self.test_proposals, path)
        features = self.roi_head.box_roi_align.readable(features, path)
        boxes, class_probs, image_index = self.roi_head.predict_boxes(features, proposals, image_sizes, path, stage)
        boxes, class_probs = boxes.float(), class_probs.float()
        outputs = []
        for i in range(batch.shape[0]):
            mine = torch.nonzero(image_index == i).squeeze(1)
            image_boxes = boxes[mine] if box_scales is None else boxes[mine] * box_scales[i]
            outputs.append(ImageDetections(*select_detections(image_boxes, class_probs[mine], settings, path),
                                           boxes_in_original=box_scales is not None))
        if self.config.with_mask:
            mask_probs = self.roi_head.predict_masks(features, [o.boxes for o in outputs],
                                                     [o.labels for o in outputs], path, stage)
            for output, probs in zip(outputs, mask_probs):
                output.mask_probs = probs
        return outputs
