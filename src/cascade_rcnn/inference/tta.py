"""Test-time augmentation: horizontal flip and extra scales, merged as MMDetection 3 merges them.

MMDetection 3 (``mmdet/models/test_time_augs/det_tta.py``, ``DetTTAModel``) runs the detector on
every view of ``TestTimeAug`` (each ``Resize`` scale x ``RandomFlip`` on/off; the flip comes after
the resize), each view with the test settings (score > 0.05, NMS, 100 per image), maps every
view's boxes back to the original image (``bbox_flip`` on the original shape:
``x1' = W - x2``, ``x2' = W - x1``), concatenates all views' detections and runs mmcv's
``batched_nms`` per class at the NMS IoU, keeping ``max_per_img``. Scores are not averaged; a box
survives with the score its view gave it. ``predict_tta`` does exactly that.

Masks: ``DetTTAModel`` drops them (its merged ``InstanceData`` holds bboxes, scores and labels
only); MMDetection 2's cascade ``aug_test`` averaged mask logits over views of the same boxes, a
path MMDetection 3 no longer has. Here each surviving detection keeps its own view's 28 x 28
probabilities, mirrored back if that view was flipped, and is pasted once at the end: the mask
belongs to the box it was predicted for.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..data.transforms import ResizedImage, normalize, resize
from ..errors import UserInputError
from ..models.detections import DetectionSettings, ImageDetections
from ..models.input_norm import MMDETECTION_RESIZE, ResizeRule
from ..outputs.detections import Detections
from .merging import class_nms, concatenate, to_detections

if TYPE_CHECKING:
    from .predictor import CascadeRCNN

TTA_SYNTAX = "'flip', 'scales=0.75:1:1.25' or 'flip,scales=0.75:1:1.25'"


@dataclass(frozen=True)
class TestTimeAugmentation:
    """The views to run: every scale factor (x the config's ``image_scale``, both sides), each
    also mirrored left-right if ``flip``. ``parse("flip,scales=0.75:1:1.25")`` reads the text form."""

    __test__ = False  # not a pytest test class, whatever its name says

    flip: bool = False
    scales: tuple[float, ...] = (1.0,)

    def __post_init__(self) -> None:
        scales = tuple(self.scales)
        if not scales:
            raise UserInputError("tta needs at least one scale")
        for scale in scales:
            if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale) \
                    or scale <= 0:
                raise UserInputError(f"tta scales must be positive numbers, got {scale!r}")
        if len(set(scales)) != len(scales):
            raise UserInputError(f"tta scales repeat a value: {':'.join(f'{s:g}' for s in scales)}")
        object.__setattr__(self, "scales", tuple(float(s) for s in scales))

    @classmethod
    def parse(cls, text: str) -> TestTimeAugmentation:
        """``"flip"``, ``"scales=S1:S2..."`` or both, comma-separated (scales are factors of the
        config's image scale, e.g. 0.75:1:1.25)."""
        flip, scales = False, None
        items = [item.strip() for item in str(text).split(",")]
        for item in items:
            name, _, value = item.partition("=")
            if item == "flip" and not flip:
                flip = True
            elif name.strip() == "scales" and value and scales is None:
                try:
                    scales = tuple(float(v) for v in value.split(":"))
                except ValueError:
                    raise UserInputError(f"tta scales must be numbers separated by ':', got {value!r}") from None
            else:
                raise UserInputError(f"tta: cannot read {item!r} in {text!r}; expected {TTA_SYNTAX}")
        if not flip and scales is None:
            raise UserInputError(f"tta: nothing to do in {text!r}; expected {TTA_SYNTAX}")
        return cls(flip=flip, scales=scales or (1.0,))

    @property
    def views(self) -> list[tuple[float, bool]]:
        """(scale factor, flipped) per view, in MMDetection's order: scales outer, flip inner."""
        return [(scale, flip) for scale in self.scales for flip in ((False, True) if self.flip else (False,))]

    def __str__(self) -> str:
        parts = (["flip"] if self.flip else []) + ([f"scales={':'.join(f'{s:g}' for s in self.scales)}"]
                                                   if self.scales != (1.0,) else [])
        return ",".join(parts) or "scales=1"


def view_scale(image_scale: tuple[int, int], factor: float) -> tuple[int, int]:
    """The config's (long, short) resize limits times ``factor``, rounded as MMDetection rounds."""
    return tuple(max(int(side * factor + 0.5), 1) for side in image_scale)


def prepare_view(image: np.ndarray, scale: tuple[int, int], flip: bool, mean: tuple[float, ...],
                 std: tuple[float, ...], bgr: bool, rule: ResizeRule = MMDETECTION_RESIZE
                 ) -> tuple[ResizedImage, torch.Tensor]:
    """An RGB uint8 image resized to fit ``scale`` under the model's ``rule``, then mirrored if
    ``flip`` (MMDetection's order: ``Resize`` before ``RandomFlip``), and normalised. Scale 1
    without flip is exactly ``CascadeRCNN.preprocess``."""
    resized = resize(image, scale, rule)
    if flip:
        resized = replace(resized, image=np.ascontiguousarray(resized.image[:, ::-1]))
    return resized, normalize(resized.image, mean, std, bgr)


def flip_back(detections: ImageDetections, width: int) -> ImageDetections:
    """Detections of the mirrored image in the original image's frame: MMDetection's ``bbox_flip``
    (x1' = W - x2, x2' = W - x1) and each 28 x 28 mask mirrored inside its box."""
    boxes = detections.boxes
    unflipped = torch.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], dim=1)
    masks = None if detections.mask_probs is None else detections.mask_probs.flip(-1)
    return ImageDetections(unflipped, detections.scores, detections.labels, masks, boxes_in_original=True)


def predict_tta(model: CascadeRCNN, image: np.ndarray, tta: TestTimeAugmentation, settings: DetectionSettings,
                stage: int | None = None, batch_size: int = 1) -> Detections:
    """Detections of one RGB uint8 (H, W, 3) image from all views of ``tta``, merged (module docstring).

    Each view runs with ``settings`` (and ``stage``: cascade stage k alone); views of one size are
    batched (``batch_size``). The merge keeps ``settings.max_per_image`` detections.
    """
    config = model.config
    views = tta.views
    side = getattr(config.backbone, "square_pad", 0)  # ViTDet's fixed square input
    too_large = [scale for scale in tta.scales if side and max(view_scale(config.image_scale, scale)) > side]
    if too_large:
        raise UserInputError(f"tta scales {':'.join(f'{s:g}' for s in too_large)} resize past {config.name}'s "
                             f"{side}x{side} square input; use scales of at most "
                             f"{side / max(config.image_scale):g}")
    prepared = [prepare_view(image, view_scale(config.image_scale, scale), flip, config.pixel_mean,
                             config.pixel_std, config.bgr_input, config.resize_rule) for scale, flip in views]
    passes = model.detect_unpasted(prepared, settings, stage, batch_size)
    width = image.shape[1]
    passes = [flip_back(found, width) if flip else found for found, (_, flip) in zip(passes, views)]
    merged = class_nms(concatenate(passes), settings.nms_iou, settings.max_per_image)
    return to_detections(merged, image.shape[:2], model.class_names, config.mask_threshold)
