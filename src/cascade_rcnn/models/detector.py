"""Cascade (Mask) R-CNN: image -> backbone -> FPN -> RPN proposals -> cascade -> detections.

Module attribute names (backbone, neck, rpn_head, roi_head) are MMDetection's checkpoint keys,
so a published ``.pth`` loads with ``strict=True``.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Sequence

import torch
from torch import nn

from ..config import ModelConfig
from ..data.images import ImageInput
from ..data.transforms import ResizedImage, pad_batch, padded_size, prepare_image
from ..ops.assign_sample import SamplerSettings
from ..postprocess import ImageDetections, to_original_pixels
from ..results import Detections
from .backbone import ResNet
from .cascade import CascadeRoIHead, DetectionSettings, select_detections
from .fpn import FPN
from .rpn import ProposalSettings, RPNHead, propose, rpn_loss

AMP_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


class CascadeRCNN(nn.Module):
    """The whole detector; ``predict`` is the user-facing entry point."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.backbone = ResNet(config.backbone)
        self.neck = FPN(config.backbone.out_channels, config.fpn_channels)
        self.rpn_head = RPNHead(config.fpn_channels, scales=(config.anchor_scale,))
        self.roi_head = CascadeRoIHead(config.num_classes, config.with_mask, config.stage_stds, config.stage_ious,
                                       config.stage_loss_weights, config.fpn_channels, config.fc_channels,
                                       config.rois_per_image, config.mask_channels)
        # Training: anchors sampled per image for the RPN loss (MMDetection: 256, half positive).
        self.rpn_sampler = SamplerSettings(num=config.rpn_samples_per_image, positive_fraction=0.5)
        self.train_proposals = ProposalSettings(pre_nms_per_level=config.train_proposals, nms_iou=0.7,
                                                max_proposals=config.train_proposals)
        self.test_proposals = ProposalSettings(pre_nms_per_level=config.test_proposals, nms_iou=0.7,
                                               max_proposals=config.test_proposals)
        self.test_detections = DetectionSettings(score_thr=0.05, nms_iou=0.5, max_per_image=100)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def exact(self) -> bool:
        """True: inference does MMDetection's ops in MMDetection's order, bit for bit (and
        training keeps BatchNorm and the contiguous layout).

        False (the default): the fast path - channels-last activations, each frozen BatchNorm
        folded into its conv (in training too), RoIAlign as weighted gathers on the CPU, NMS
        over the best-scored candidates, mask logits of the detected class only. Its
        detections equal the exact path's up to float rounding (measured: boxes within
        0.005 px, scores within 2.5e-4, same labels; BENCHMARKS.md).
        """
        return self.roi_head.exact

    @exact.setter
    def exact(self, exact: bool) -> None:
        self.roi_head.exact = exact
        self.backbone.fold_batchnorm = not exact

    @property
    def memory_format(self) -> torch.memory_format:
        """Layout of the image batch (inference and training): channels-last on the fast path
        (convolutions run faster on the CPU, forward and backward), contiguous on the exact one."""
        return torch.contiguous_format if self.exact else torch.channels_last

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.config.class_names

    def features(self, batch: torch.Tensor) -> list[torch.Tensor]:
        """(B, 3, H, W) normalised, padded images -> P2..P6."""
        return self.neck(self.backbone(batch))

    def proposals(self, logits: list[torch.Tensor], deltas: list[torch.Tensor], anchors: list[torch.Tensor],
                  image_sizes: list[tuple[int, int]] | torch.Tensor, settings: ProposalSettings
                  ) -> list[torch.Tensor]:
        """Per image (P_i, 4) RPN proposals in resized-image pixels, from the RPN head's outputs;
        image_sizes: (h, w) tuples, or a (B, 2) tensor (inference, the exported graph)."""
        with torch.no_grad():
            return [propose([level[i] for level in logits], [level[i] for level in deltas], anchors,
                            image_sizes[i] if isinstance(image_sizes, list) else image_sizes[i:i + 1], settings)[0]
                    for i in range(len(image_sizes))]

    def loss(self, batch: torch.Tensor, targets: list[dict], image_sizes: list[tuple[int, int]]
             ) -> dict[str, torch.Tensor]:
        """Training losses for (B, 3, H, W) padded images.

        targets: per image ``boxes`` (G, 4) xyxy and ``labels`` (G,) in resized pixels, ``masks``
        (G, h, w) uint8 for mask models, optional ``crowd_boxes`` (M, 4) to ignore.
        """
        features = self.features(batch.contiguous(memory_format=self.memory_format))
        logits, deltas = self.rpn_head(features)
        anchors = self.rpn_head.anchors(features)
        losses = rpn_loss(logits, deltas, anchors, targets, image_sizes, self.rpn_sampler)
        proposals = self.proposals(logits, deltas, anchors, image_sizes, self.train_proposals)
        features = self.roi_head.box_roi_align.readable(features)
        losses.update(self.roi_head.loss(features, proposals, targets, image_sizes, tuple(batch.shape[-2:])))
        return losses

    def preprocess(self, image: ImageInput, name: str = "image") -> tuple[ResizedImage, torch.Tensor]:
        """Any input -> (resize record, normalised (3, h, w) tensor)."""
        return prepare_image(image, name, self.config.image_scale, self.config.pixel_mean, self.config.pixel_std,
                             self.config.bgr_input)

    def forward(self, batch: torch.Tensor, targets: list[dict], image_sizes: list[tuple[int, int]]
                ) -> dict[str, torch.Tensor]:
        """Training forward pass = ``loss`` (what DistributedDataParallel calls)."""
        return self.loss(batch, targets, image_sizes)

    @torch.no_grad()
    def detect(self, resized: list[ResizedImage], tensors: list[torch.Tensor], settings: DetectionSettings,
               stage: int | None = None, amp: str | None = None) -> list[Detections]:
        """Detections of preprocessed images, mapped back to the original images' pixels.

        ``stage=k`` scores the detections with cascade stage k alone (for per-stage evaluation).
        ``amp="fp16"|"bf16"`` runs the network under autocast (boxes, scores and NMS stay float32).
        """
        device = self.device
        batch = pad_batch(tensors).to(device, memory_format=self.memory_format)
        sizes = torch.tensor([r.size for r in resized], device=device)
        # Box-only models map boxes to the original image BEFORE NMS (multiply by 1/s); mask
        # models AFTER NMS and the mask heads (divide by s): MMDetection's two paths.
        box_scales = None if self.config.with_mask else torch.tensor(
            [[1 / s for s in r.scale_factor] * 2 for r in resized], device=device)
        with torch.autocast(device.type, dtype=AMP_DTYPES.get(amp or ""), enabled=amp is not None):
            raw = self.detect_resized(batch, sizes, settings, stage, box_scales)
        return [to_original_pixels(image, record, self.class_names) for image, record in zip(raw, resized)]

    def detect_resized(self, batch: torch.Tensor, image_sizes: torch.Tensor, settings: DetectionSettings,
                       stage: int | None = None, box_scales: torch.Tensor | None = None) -> list[ImageDetections]:
        """The network at inference: (B, 3, H, W) normalised padded images and their (B, 2)
        unpadded (h, w) -> per image boxes, scores, labels (and 28x28 mask probabilities).

        Boxes are in resized-image pixels, or multiplied by ``box_scales`` (B, 4) before the NMS.
        The ONNX export traces this very function (batch of one, no ``box_scales``).
        """
        features = self.features(batch)
        logits, deltas = self.rpn_head(features)
        proposals = self.proposals([level.float() for level in logits], [level.float() for level in deltas],
                                   self.rpn_head.anchors(features), image_sizes, self.test_proposals)
        features = self.roi_head.box_roi_align.readable(features)
        boxes, class_probs, image_index = self.roi_head.predict_boxes(features, proposals, image_sizes, stage)
        boxes, class_probs = boxes.float(), class_probs.float()
        outputs = []
        for i in range(batch.shape[0]):
            mine = torch.nonzero(image_index == i).squeeze(1)
            image_boxes = boxes[mine] if box_scales is None else boxes[mine] * box_scales[i]
            outputs.append(ImageDetections(*select_detections(image_boxes, class_probs[mine], settings, self.exact),
                                           boxes_in_original=box_scales is not None))
        if self.config.with_mask:
            mask_probs = self.roi_head.predict_masks(features, [o.boxes for o in outputs],
                                                     [o.labels for o in outputs], stage)
            for output, probs in zip(outputs, mask_probs):
                output.mask_probs = probs
        return outputs

    def predict(self, images: ImageInput | Sequence[ImageInput], score_thr: float | None = None,
                nms_iou: float | None = None, max_per_image: int | None = None,
                batch_size: int = 1, stage: int | None = None, amp: str | None = None) -> list[Detections]:
        """Detect objects in images: paths, PIL images, numpy (H, W, 3) RGB uint8, or torch
        (3, H, W) uint8 / float in [0, 1]. One ``Detections`` per image, in input order.

        ``score_thr``, ``nms_iou`` and ``max_per_image`` override the test settings (0.05, 0.5,
        100) for this call. Images are batched only with images of the same padded size, so a
        batch gives the same detections as one image at a time (up to float noise). ``stage=k`` (0-based) uses cascade
        stage k alone instead of the ensemble of all stages. ``amp="fp16"|"bf16"`` runs the network
        under autocast (meant for CUDA; detections close to float32's, not equal).
        """
        if amp is not None and amp not in AMP_DTYPES:
            raise ValueError(f"amp must be one of {', '.join(AMP_DTYPES)} or None, got {amp!r}")
        if max_per_image is not None and max_per_image < 1:
            raise ValueError(f"max_per_image must be at least 1, got {max_per_image}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        settings = replace(self.test_detections, **{k: v for k, v in dict(
            score_thr=score_thr, nms_iou=nms_iou, max_per_image=max_per_image).items() if v is not None})
        prepared = [self.preprocess(image, name) for image, name in named_inputs(images)]
        was_training = self.training
        self.eval()
        try:
            results: list[Detections | None] = [None] * len(prepared)
            for group in batches_by_size([p[0].size for p in prepared], batch_size):
                detections = self.detect([prepared[i][0] for i in group], [prepared[i][1] for i in group],
                                         settings, stage, amp)
                for i, detection in zip(group, detections):
                    results[i] = detection
        finally:
            self.train(was_training)
        return results


def batches_by_size(sizes: list[tuple[int, int]], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of at most ``batch_size`` images with equal padded size.

    Padding is never shared across differently sized images, so results do not depend on
    which other images were in the batch.
    """
    groups: dict[tuple[int, int], list[int]] = {}
    for index, size in enumerate(sizes):
        groups.setdefault(padded_size(size), []).append(index)
    return [members[start:start + batch_size] for members in groups.values()
            for start in range(0, len(members), batch_size)]


def named_inputs(images: ImageInput | Sequence[ImageInput]) -> list[tuple[ImageInput, str]]:
    """One input or a list of them -> (input, name for error messages) pairs."""
    if isinstance(images, (str, torch.Tensor)) or not isinstance(images, Sequence):
        images = [images]
    return [(image, str(image) if isinstance(image, str) or hasattr(image, "__fspath__") else f"images[{index}]")
            for index, image in enumerate(images)]
