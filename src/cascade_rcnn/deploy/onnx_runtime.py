"""Run an exported detector with onnxruntime, with the PyTorch path's preprocessing and
post-processing (so ``predict --onnx`` writes the same files)."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..data.images import ImageInput
from ..data.transforms import pad_batch, prepare_image
from ..inference.predictor import named_inputs
from ..models.config import ModelConfig
from ..models.detector import ImageDetections
from ..models.input_norm import InputNorm
from ..outputs.detections import Detections
from ..outputs.postprocess import to_original_pixels
from .export import FORMAT, require_package

REQUIRED_METADATA = ("format", "config_name", "with_mask", "class_names", "category_ids", "channel_order", "mean",
                     "std", "image_scale", "score_thr")


class OnnxDetector:
    """An exported ``.onnx`` file behind the same ``predict`` as ``CascadeRCNN`` (batch size 1).

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
        missing = [key for key in REQUIRED_METADATA if key not in meta]
        if missing or meta.get("format") != FORMAT:
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
        """As ``CascadeRCNN.predict``; images run one at a time (the graph's batch is 1).
        ``score_thr`` can only raise the threshold the file was exported with."""
        if score_thr is not None and score_thr < self.score_thr:
            raise ValueError(f"{self.path} was exported with score_thr={self.score_thr}; it cannot return "
                             f"detections scoring {score_thr} or less (export again with --score-thr)")
        results = []
        for image, name in named_inputs(images):
            record, tensor = prepare_image(image, name, self.config.image_scale, self.config.pixel_mean,
                                           self.config.pixel_std, self.config.bgr_input)
            padded = pad_batch([tensor]).numpy()
            outputs = self.session.run(None, {"image": padded, "image_size": np.array(record.size, np.int64)})
            raw = ImageDetections(*(torch.from_numpy(np.ascontiguousarray(o)) for o in outputs[:3]),
                                  mask_probs=torch.from_numpy(outputs[3]) if self.config.with_mask else None)
            detections = to_original_pixels(raw, record, self.class_names)
            results.append(detections if score_thr is None else detections.above(score_thr))
        return results
