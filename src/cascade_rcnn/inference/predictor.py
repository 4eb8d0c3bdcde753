"""``CascadeRCNN``: the network plus ``predict`` on images (paths, PIL, numpy, tensors).

The network (``models.detector.CascadeNetwork``) sees only normalised, padded batches; this
layer decodes and resizes each input, batches images of equal padded size, runs the network and
maps its raw detections back to the original images' pixels.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Sequence

import torch

from ..data.images import ImageInput
from ..data.transforms import ResizedImage, pad_batch, padded_size, prepare_image
from ..models.cascade import DetectionSettings
from ..models.detector import CascadeNetwork
from ..ops.compute_path import AMP_DTYPES
from ..outputs.detections import Detections
from ..outputs.postprocess import to_original_pixels


class CascadeRCNN(CascadeNetwork):
    """The whole detector; ``predict`` is the user-facing entry point."""

    def preprocess(self, image: ImageInput, name: str = "image") -> tuple[ResizedImage, torch.Tensor]:
        """Any input -> (resize record, normalised (3, h, w) tensor)."""
        return prepare_image(image, name, self.config.image_scale, self.config.pixel_mean, self.config.pixel_std,
                             self.config.bgr_input)

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

    def predict(self, images: ImageInput | Sequence[ImageInput], score_thr: float | None = None,
                nms_iou: float | None = None, max_per_image: int | None = None,
                batch_size: int = 1, stage: int | None = None, amp: str | None = None) -> list[Detections]:
        """Detect objects in images: paths, PIL images, numpy (H, W, 3) RGB uint8, or torch
        (3, H, W) uint8 / float in [0, 1]. One ``Detections`` per image, in input order.

        ``score_thr``, ``nms_iou`` and ``max_per_image`` override the test settings (0.05, 0.5,
        100) for this call. Images are batched only with images of the same padded size, so a
        batch gives the same detections as one image at a time (up to float noise). ``stage=k``
        (0-based) uses cascade stage k alone instead of the ensemble of all stages.
        ``amp="fp16"|"bf16"`` runs the network under autocast (meant for CUDA; detections close to
        float32's, not equal).
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
