"""Run an exported detector with onnxruntime, with the PyTorch path's preprocessing, batching
and post-processing (so ``predict --onnx`` writes the same files)."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..data.images import ImageInput
from ..data.transforms import ResizedImage, pad_batch, prepare_image
from ..errors import UserInputError
from ..inference.predictor import in_size_batches, named_inputs
from ..models.detections import BatchDetections, ImageDetections
from ..models.input_norm import MMDETECTION_RESIZE, InputNorm, ResizeRule
from ..outputs.detections import Detections
from ..outputs.postprocess import to_original_pixels
from .export import FORMAT, input_names, output_names, require_package

REQUIRED_METADATA = ("format", "config_name", "with_mask", "class_names", "category_ids", "channel_order", "mean",
                     "std", "image_scale", "score_thr")


@dataclass(frozen=True)
class ExportedModel:
    """What an exported file's metadata says of its model (the architecture itself is in the
    graph): the part of ``ModelConfig`` that preprocessing and the outputs read."""

    name: str
    class_names: tuple[str, ...]
    category_ids: tuple[int, ...]
    with_mask: bool
    image_scale: tuple[int, int]
    normalization: InputNorm
    resize_rule: ResizeRule = MMDETECTION_RESIZE

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def category_id(self, label: int) -> int:
        return self.category_ids[label]


class OnnxDetector:
    """An exported ``.onnx`` file behind the same ``predict`` as ``CascadeRCNN``, batched the same way.

    ``config`` holds what the file's metadata says (``ExportedModel``).
    """

    def __init__(self, path: str | os.PathLike, providers: Sequence[str] = ("CPUExecutionProvider",),
                 threads: int | None = None):
        runtime = require_package("onnxruntime")
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path}: no such file")
        options = runtime.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        try:
            self.session = runtime.InferenceSession(str(self.path), options, providers=list(providers))
        except Exception as error:  # onnxruntime raises its own exception types for unreadable files
            raise UserInputError(f"{self.path}: not a readable ONNX model ({str(error).splitlines()[0]})") from None
        meta = self.session.get_modelmeta().custom_metadata_map
        found = meta.get("format", "")
        if found.startswith(FORMAT.rsplit("-", 1)[0] + "-") and found != FORMAT:
            raise UserInputError(f"{self.path}: ONNX format {found} of another cascade_rcnn version (this one reads "
                                 f"{FORMAT}, the batched graph): export it again with `cascade-rcnn export`")
        missing = [key for key in REQUIRED_METADATA if key not in meta]
        if missing or found != FORMAT:
            raise UserInputError(f"{self.path}: not exported by cascade_rcnn (metadata "
                                 f"{', '.join(missing) or 'format'} "
                             "missing or different); export it with `cascade-rcnn export`")
        self.metadata = meta
        self.score_thr = float(meta["score_thr"])
        self.mask_threshold = float(meta.get("mask_threshold", "0.5"))
        norm = InputNorm(tuple(json.loads(meta["mean"])), tuple(json.loads(meta["std"])),
                         bgr=meta["channel_order"] == "BGR")
        self.config = ExportedModel(
            name=meta["config_name"], class_names=tuple(json.loads(meta["class_names"])),
            category_ids=tuple(json.loads(meta["category_ids"])), with_mask=json.loads(meta["with_mask"]),
            image_scale=tuple(json.loads(meta["image_scale"])), normalization=norm,
            resize_rule=ResizeRule(**json.loads(meta["resize_rule"])) if "resize_rule" in meta else MMDETECTION_RESIZE)

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.config.class_names

    @property
    def device(self) -> torch.device:
        """Where the inputs go: onnxruntime's CPU provider."""
        return torch.device("cpu")

    def predict(self, images: ImageInput | Sequence[ImageInput], score_thr: float | None = None,
                batch_size: int = 1) -> list[Detections]:
        """As ``CascadeRCNN.predict``: images of equal padded size run in batches of up to
        ``batch_size`` (``in_size_batches``), so a batch gives each image's batch-1 detections up
        to float noise. ``score_thr`` can only raise the threshold the file was exported with."""
        if score_thr is not None and score_thr < self.score_thr:
            raise UserInputError(f"{self.path} was exported with score_thr={self.score_thr}; it cannot return "
                                 f"detections scoring {score_thr} or less (export again with --score-thr)")
        if batch_size < 1:
            raise UserInputError(f"batch_size must be at least 1, got {batch_size}")
        norm = self.config.normalization
        prepared = [prepare_image(image, name, self.config.image_scale, norm.mean, norm.std, norm.bgr,
                                  self.config.resize_rule)
                    for image, name in named_inputs(images)]

        def run(group: list[int]) -> list[Detections]:
            raw = self.run_batch([prepared[i][1] for i in group], [prepared[i][0] for i in group])
            found = [to_original_pixels(image, prepared[i][0], self.class_names, self.mask_threshold)
                     for i, image in zip(group, raw)]
            return found if score_thr is None else [detections.above(score_thr) for detections in found]

        return in_size_batches([record.size for record, _ in prepared], batch_size, run)

    def run_batch(self, tensors: list[torch.Tensor], records: list[ResizedImage]) -> list[ImageDetections]:
        """The graph on normalised (3, h, w) images of one padded size, with their resize records:
        each image's raw detections (boxes in resized pixels, or original pixels for box-only
        models; (N, 28, 28) mask probabilities)."""
        with_mask = self.config.with_mask
        inputs = [pad_batch(tensors).numpy(), np.array([record.size for record in records], np.int64)]
        if not with_mask:
            inputs.append(np.array([[1 / s for s in record.scale_factor] * 2 for record in records], np.float32))
        outputs = self.session.run(list(output_names(with_mask)), dict(zip(input_names(with_mask), inputs)))
        found = [torch.from_numpy(np.ascontiguousarray(output)) for output in outputs]
        return BatchDetections(*found[:4], mask_probs=found[4] if with_mask else None,
                               boxes_in_original=not with_mask).per_image(len(tensors))
