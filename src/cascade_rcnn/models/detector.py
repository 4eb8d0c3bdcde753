"""Cascade (Mask) R-CNN as a network composed of four parts, each built from its spec in the
``ModelConfig``:

    image batch -> backbone -> neck -> RPN head -> proposals -> RoI heads -> detections / losses
                   (maps)      (pyramid)                         (the cascade: roi_heads/cascade.py)

Module attribute names (backbone, neck, rpn_head, roi_head) are MMDetection's checkpoint keys,
so a published ``.pth`` loads with ``strict=True``. Which computation runs is ``self.path``
(``ops/compute_path.py``), passed down to every part that has a choice. Images from files and
arrays, and results in original-image pixels, are the inference layer's (``inference/``).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..ops.compute_path import EXACT, FAST, ComputePath
from .channel_norm import fused_layer_norms
from .config import ModelConfig
from .detections import BatchDetections, DetectionSettings
from .low_precision import at_precision


class CascadeNetwork(nn.Module):
    """The detector's network: losses of a training batch (``loss``), detections of a test batch
    (``detect_batch``: the one inference function of eager prediction, tiling, TTA and ONNX)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.backbone = config.backbone.build()
        self.neck = config.neck.build(config, self.backbone.out_channels, tuple(self.backbone.strides))
        if self.neck.out_channels != config.fpn_channels:
            raise ValueError(f"{config.name}: the neck gives {self.neck.out_channels} channels; the heads are built "
                             f"for fpn_channels={config.fpn_channels}")
        self.rpn_head = config.rpn_head.build(config, self.neck.out_channels, self.neck.strides)
        self.roi_head = config.roi_heads.build(config, self.neck.out_channels, self.neck.strides)
        self.test_detections = DetectionSettings(config.test_score_thr, config.test_nms_iou, config.test_max_per_image)
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
        """(B, 3, H, W) normalised, padded images -> the neck's pyramid (P2..P6 for the FPN)."""
        return self.neck(self.backbone(batch, path))

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
            losses = self.rpn_head.loss(logits, deltas, anchors, targets, image_sizes)
            rois = self.rpn_head.proposals(logits, deltas, anchors, image_sizes, path, training=True)
            losses.update(self.roi_head.loss(features, rois, targets, image_sizes, tuple(batch.shape[-2:]), path))
        return losses

    def forward(self, batch: torch.Tensor, targets: list[dict], image_sizes: torch.Tensor
                ) -> dict[str, torch.Tensor]:
        """Training forward pass = ``loss`` (what DistributedDataParallel calls)."""
        return self.loss(batch, targets, image_sizes)

    def detect_batch(self, batch: torch.Tensor, image_sizes: torch.Tensor, settings: DetectionSettings,
                     stage: int | None = None, box_scales: torch.Tensor | None = None,
                     path: ComputePath | None = None) -> BatchDetections:
        """The network at inference: (B, 3, H, W) normalised padded images and their (B, 2)
        unpadded (h, w) -> the batch's detections, flat (``BatchDetections``): boxes, scores,
        labels, image index (and mask probabilities of the detected class).

        Boxes are in resized-image pixels, or multiplied by ``box_scales`` (B, 4) before the NMS.
        ``stage=k`` scores with cascade stage k alone. ``path`` defaults to ``self.path``; the
        ONNX export traces this very function with ``exporting`` set. At bf16/fp16 the network
        runs in that dtype and the detections come back in float32 (``low_precision.py``).
        """
        return self.detect_stages(batch, image_sizes, settings, (stage,), box_scales, path)[0]

    def detect_stages(self, batch: torch.Tensor, image_sizes: torch.Tensor, settings: DetectionSettings,
                      stages: Sequence[int | None], box_scales: torch.Tensor | None = None,
                      path: ComputePath | None = None) -> list[BatchDetections]:
        """``detect_batch`` for each of ``stages`` (None: the cascade's output; k: stage k alone),
        from one run of the backbone, the RPN and the stages."""
        path = path or self.path
        with at_precision(self, path), fused_layer_norms(path.fused_layer_norm):
            features = self.features(batch.to(path.dtype), path)
            logits, deltas = self.rpn_head(features)
            rois = self.rpn_head.proposals([level.float() for level in logits], [level.float() for level in deltas],
                                           self.rpn_head.anchors(features), image_sizes, path, training=False)
            if hasattr(self.roi_head, "predict_stages"):  # optional in the RoI head contract
                return self.roi_head.predict_stages(features, rois, image_sizes, settings, path, stages, box_scales)
            return [self.roi_head.predict(features, rois, image_sizes, settings, path, stage, box_scales)
                    for stage in stages]
