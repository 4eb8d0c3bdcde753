"""``CascadeRCNN``: the network plus ``predict`` on images (paths, PIL, numpy, tensors).

The network (``models.detector.CascadeNetwork``) sees only normalised, padded batches; this
layer decodes and resizes each input, batches images of equal padded size, runs the network and
maps its raw detections back to the original images' pixels.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import replace
from typing import Callable, Iterator, Sequence, TypeVar

import torch

from ..data.images import ImageInput, to_rgb_uint8
from ..data.transforms import ResizedImage, pad_batch, padded_size, prepare_image
from ..errors import UserInputError, did_you_mean
from ..models.detections import DetectionSettings, ImageDetections
from ..models.detector import CascadeNetwork
from ..outputs.detections import Detections
from ..outputs.postprocess import to_original_pixels, unpasted_in_original_pixels
from .tiling import check_tiling, predict_tiled
from .tta import TestTimeAugmentation, predict_tta

Prepared = tuple[ResizedImage, torch.Tensor]  # an image's resize record and normalised (3, h, w) tensor
Result = TypeVar("Result")


class CascadeRCNN(CascadeNetwork):
    """The whole detector; ``predict`` is the user-facing entry point."""

    def preprocess(self, image: ImageInput, name: str = "image") -> Prepared:
        """Any input -> (resize record, normalised (3, h, w) tensor)."""
        return prepare_image(image, name, self.config.image_scale, self.config.pixel_mean, self.config.pixel_std,
                             self.config.bgr_input, self.config.resize_rule)

    @torch.no_grad()
    def detect_unpasted(self, prepared: Sequence[Prepared], settings: DetectionSettings,
                        stage: int | None = None, batch_size: int = 1) -> list[ImageDetections]:
        """Detections of preprocessed images without the mask paste, batched by padded size: per
        image, boxes in its original pixels and masks still (N, 28, 28) probabilities, on the CPU.
        What tiling and test-time augmentation merge before pasting once (``inference/merging.py``)."""
        return in_size_batches([record.size for record, _ in prepared], batch_size, lambda group: [
            unpasted_in_original_pixels(raw, prepared[i][0])
            for i, raw in zip(group, self.detect_raw([prepared[i] for i in group], settings, stage))])

    def detect_raw(self, prepared: Sequence[Prepared], settings: DetectionSettings,
                   stage: int | None = None) -> list[ImageDetections]:
        """``detect_batch`` on preprocessed images of one padded size: per image, boxes in resized
        pixels (box-only models: already in original pixels, ``boxes_in_original``) and (N, 28, 28)
        mask probabilities."""
        return self.detect_raw_stages(prepared, settings, (stage,))[0]

    @torch.no_grad()
    def detect_raw_stages(self, prepared: Sequence[Prepared], settings: DetectionSettings,
                          stages: Sequence[int | None]) -> list[list[ImageDetections]]:
        """``detect_raw`` for each of ``stages`` (None: the cascade's output; k: stage k alone), from
        one run of the network. A stage the model does not have is refused (``UserInputError``)."""
        count = self.config.num_stages
        if not stages or any(stage is not None and not 0 <= stage < count for stage in stages):
            raise UserInputError(f"stages {list(stages)}: {self.config.name} has {count} stages, 0 to {count - 1} "
                                 "(None: the cascade's output)")
        device = self.device
        batch = pad_batch([tensor for _, tensor in prepared]).to(device, memory_format=self.memory_format)
        sizes = torch.tensor([record.size for record, _ in prepared], device=device)
        # Box-only models map boxes to the original image BEFORE NMS (multiply by 1/s); mask
        # models AFTER NMS and the mask heads (divide by s): MMDetection's two paths.
        box_scales = None if self.config.with_mask else torch.tensor(
            [[1 / s for s in record.scale_factor] * 2 for record, _ in prepared], device=device)
        return [found.per_image(len(prepared))
                for found in self.detect_stages(batch, sizes, settings, stages, box_scales)]

    def predict(self, images: ImageInput | Sequence[ImageInput], score_thr: float | None = None,
                nms_iou: float | None = None, max_per_image: int | None = None,
                batch_size: int = 1, stage: int | None = None, tile: int | None = None,
                tile_overlap: float = 0.2, tile_full_image: bool = False,
                tta: str | TestTimeAugmentation | None = None,
                classes: Sequence[str] | None = None) -> list[Detections]:
        """Detect objects in images: paths, PIL images, numpy (H, W, 3) RGB uint8, or torch
        (3, H, W) uint8 / float in [0, 1]. One ``Detections`` per image, in input order.

        ``score_thr``, ``nms_iou`` and ``max_per_image`` override the test settings (0.05, 0.5,
        100) for this call; ``classes`` (names, e.g. ``["person"]``) keeps only those classes'
        detections, chosen before ``max_per_image`` (up to 100 persons, not the persons among the
        best 100 of all classes). Images are batched only with images of the same padded size, so a
        batch gives the same detections as one image at a time (up to float noise). ``stage=k``
        (0-based) uses cascade stage k alone instead of the ensemble of all stages. The network
        runs at ``self.path.precision`` (``build_model(..., precision="bf16")``; bf16/fp16 give
        detections close to float32's, not equal: BENCHMARKS.md measures how close).

        ``tile=T`` cuts each image into overlapping T x T tiles (``tile_overlap``: the fraction of T
        that neighbours share), runs them in batches and merges their detections
        (``inference/tiling.py``); ``tile_full_image`` adds one pass over the whole image. ``tta``
        (e.g. ``"flip"``, ``"flip,scales=0.75:1:1.25"``) merges the detections of augmented views
        as MMDetection 3's ``DetTTAModel`` does (``inference/tta.py``). Neither changes what a
        plain call computes.
        """
        if max_per_image is not None and max_per_image < 1:
            raise UserInputError(f"max_per_image must be at least 1, got {max_per_image}")
        if batch_size < 1:
            raise UserInputError(f"batch_size must be at least 1, got {batch_size}")
        settings = replace(self.test_detections, **{k: v for k, v in dict(
            score_thr=score_thr, nms_iou=nms_iou, max_per_image=max_per_image,
            classes=None if classes is None else self.class_indices(classes)).items() if v is not None})
        if tile is not None or tta is not None or tile_full_image:
            return self._predict_merged(images, settings, batch_size, stage, tile, tile_overlap,
                                        tile_full_image, tta)
        prepared = [self.preprocess(image, name) for image, name in named_inputs(images)]
        with self._evaluating():
            return in_size_batches([record.size for record, _ in prepared], batch_size, lambda group: [
                to_original_pixels(raw, prepared[i][0], self.class_names, self.config.mask_threshold)
                for i, raw in zip(group, self.detect_raw([prepared[i] for i in group], settings, stage))])

    def predict_stages(self, image: ImageInput, stages: Sequence[int | None], name: str = "image") -> list[Detections]:
        """``predict(image, stage=k)`` for each k of ``stages`` (None: the cascade's output), at the
        test settings, from one run of the network: what a per-stage evaluation needs."""
        prepared = [self.preprocess(image, name)]
        with self._evaluating():
            return [to_original_pixels(raw[0], prepared[0][0], self.class_names, self.config.mask_threshold)
                    for raw in self.detect_raw_stages(prepared, self.test_detections, stages)]

    @contextmanager
    def _evaluating(self) -> Iterator[None]:
        """Evaluation mode inside the block; the mode it was in afterwards."""
        was_training = self.training
        self.eval()
        try:
            yield
        finally:
            self.train(was_training)

    def class_indices(self, names: Sequence[str]) -> tuple[int, ...]:
        """The labels of class ``names``; a ``UserInputError`` naming an unknown one (and the closest)."""
        if isinstance(names, str):
            names = [names]
        unknown = [name for name in names if name not in self.class_names]
        if unknown:
            raise UserInputError(f"unknown class {unknown[0]!r}{did_you_mean(unknown[0], self.class_names)}; "
                                 f"{self.config.name} detects {len(self.class_names)} classes "
                                 f"({', '.join(self.class_names[:8])}{', ...' if len(self.class_names) > 8 else ''})")
        return tuple(sorted({self.class_names.index(name) for name in names}))

    def _predict_merged(self, images: ImageInput | Sequence[ImageInput], settings: DetectionSettings,
                        batch_size: int, stage: int | None, tile: int | None,
                        tile_overlap: float, tile_full_image: bool,
                        tta: str | TestTimeAugmentation | None) -> list[Detections]:
        """``predict`` with tiling or test-time augmentation: one image at a time, decoded once."""
        if tile is not None and tta is not None:
            raise UserInputError("tile and tta cannot be combined (yet): choose one")
        if tile is None and tile_full_image:
            raise UserInputError("tile_full_image needs tile")
        if tile is not None:
            check_tiling(tile, tile_overlap, tile_full_image)
        else:
            tta = TestTimeAugmentation.parse(tta) if isinstance(tta, str) else tta
            if not isinstance(tta, TestTimeAugmentation):
                raise UserInputError(f"tta must be a string such as 'flip,scales=0.75:1:1.25' or a "
                                     f"TestTimeAugmentation, got {type(tta).__name__}")
        results = []
        with self._evaluating():
            for image, name in named_inputs(images):
                pixels = to_rgb_uint8(image, name)
                if tile is not None:
                    results.append(predict_tiled(self, pixels, name, settings, tile, tile_overlap, tile_full_image,
                                                 stage, batch_size))
                else:
                    results.append(predict_tta(self, pixels, tta, settings, stage, batch_size))
        return results


def in_size_batches(sizes: list[tuple[int, int]], batch_size: int,
                    run: Callable[[list[int]], list[Result]]) -> list[Result]:
    """``run(indices)`` on each batch of ``batches_by_size``; its results back in input order."""
    results: list[Result | None] = [None] * len(sizes)
    for group in batches_by_size(sizes, batch_size):
        for index, result in zip(group, run(group)):
            results[index] = result
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
