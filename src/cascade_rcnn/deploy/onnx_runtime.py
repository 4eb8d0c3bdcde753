"""Run an exported detector with onnxruntime, with the PyTorch path's preprocessing, batching
and post-processing (so ``predict --onnx`` writes the same files)."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..data.images import ImageInput
from ..data.transforms import pad_batch, prepare_image
from ..inference.predictor import batches_by_size, named_inputs
from ..models.config import ModelConfig
from ..models.detector import ImageDetections
from ..models.input_norm import InputNorm
from ..outputs.detections import Detections
from ..outputs.postprocess import to_original_pixels
from .export import FORMAT, INPUTS, output_names, require_package

REQUIRED_METADATA = ("format", "config_name", "with_mask", "class_names", "category_ids", "channel_order", "mean",
                     "std", "image_scale", "score_thr")


class OnnxDetector:
    """An exported ``.onnx`` file behind the same ``predict`` as ``CascadeRCNN``, batched the same way.

    ``config`` holds what the file's metadata says: name, classes, category ids, mask or box
    only, image scale, channel order (the architecture itself is in the graph).
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
            raise ValueError(f"{self.path}: not a readable ONNX model ({str(error).splitlines()[0]})") from None
        meta = self.session.get_modelmeta().custom_metadata_map
        found = meta.get("format", "")
        if found.startswith(FORMAT.rsplit("-", 1)[0] + "-") and found != FORMAT:
            raise ValueError(f"{self.path}: ONNX format {found} of another cascade_rcnn version (this one reads "
                             f"{FORMAT}, the batched graph): export it again with `cascade-rcnn export`")
        missing = [key for key in REQUIRED_METADATA if key not in meta]
        if missing or found != FORMAT:
            raise ValueError(f"{self.path}: not exported by cascade_rcnn (metadata {', '.join(missing) or 'format'} "
                             "missing or different); export it with `cascade-rcnn export`")
        self.metadata = meta
        self.score_thr = float(meta["score_thr"])
        norm = InputNorm(tuple(json.loads(meta["mean"])), tuple(json.loads(meta["std"])),
                         bgr=meta["channel_order"] == "BGR")
        self.config = ModelConfig(
            name=meta["config_name"], input_norm=norm,
            with_mask=json.loads(meta["with_mask"]), class_names=tuple(json.loads(meta["class_names"])),
            category_ids=tuple(json.loads(meta["category_ids"])), image_scale=tuple(json.loads(meta["image_scale"])))

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
        ``batch_size`` (``batches_by_size``), so a batch gives each image's batch-1 detections up
        to float noise. ``score_thr`` can only raise the threshold the file was exported with."""
        if score_thr is not None and score_thr < self.score_thr:
            raise ValueError(f"{self.path} was exported with score_thr={self.score_thr}; it cannot return "
                             f"detections scoring {score_thr} or less (export again with --score-thr)")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        prepared = [prepare_image(image, name, self.config.image_scale, self.config.pixel_mean,
                                  self.config.pixel_std, self.config.bgr_input) for image, name in named_inputs(images)]
        results: list[Detections | None] = [None] * len(prepared)
        for group in batches_by_size([record.size for record, _ in prepared], batch_size):
            for index, raw in zip(group, self.run_batch([prepared[i][1] for i in group],
                                                        [prepared[i][0].size for i in group])):
                detections = to_original_pixels(raw, prepared[index][0], self.class_names)
                results[index] = detections if score_thr is None else detections.above(score_thr)
        return results

    def run_batch(self, tensors: list[torch.Tensor], sizes: list[tuple[int, int]]) -> list[ImageDetections]:
        """The graph on normalised (3, h, w) images of one padded size, with their (h, w): each
        image's raw detections (boxes in resized pixels, (N, 28, 28) mask probabilities)."""
        outputs = self.session.run(list(output_names(self.config.with_mask)),
                                   dict(zip(INPUTS, (pad_batch(tensors).numpy(), np.array(sizes, np.int64)))))
        found = dict(zip(output_names(self.config.with_mask), (torch.from_numpy(np.ascontiguousarray(o))
                                                               for o in outputs)))
        images = []
        for index in range(len(tensors)):
            mine = torch.nonzero(found["batch_index"] == index).squeeze(1)
            images.append(ImageDetections(found["boxes"][mine], found["scores"][mine], found["labels"][mine],
                                          mask_probs=found["mask_probs"][mine] if self.config.with_mask else None))
        return images
