"""Export a detector to ONNX: the same ``detect_resized`` the PyTorch path runs, traced once.

The graph (batch size 1):
  inputs   image       float32 (1, 3, H, W)  normalised (see the metadata), zero-padded so that
                                              H and W are multiples of 32 (dynamic)
           image_size  int64 (2,)             (h, w) of the resized image inside the padding
  outputs  boxes       float32 (K, 4)         x1 y1 x2 y2 in the resized image's pixels
           scores      float32 (K,)           by descending score, K <= max_per_image
           labels      int64 (K,)             0-based class index
           mask_probs  float32 (K, 28, 28)    mask models only: the detected class's probability
                                              inside the box (paste, then threshold at 0.5)
Image decoding, resize, normalisation and padding, and mapping back to the original image with
mask pasting, stay outside the graph and are shared with the PyTorch path (``OnnxDetector``).
"""
from __future__ import annotations

import json
import os
import tempfile
import warnings
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from ..data.transforms import SIZE_DIVISOR
from ..models.detector import CascadeNetwork
from ..models.settings import settings_text

MIN_OPSET = 16  # RoiAlign's half-pixel coordinates (``aligned=True``) arrive in opset 16
DEFAULT_OPSET = 17
FORMAT = "cascade_rcnn-onnx-1"


class _Graph(nn.Module):
    """What is traced: one padded image and its unpadded size -> detections."""

    def __init__(self, model: CascadeNetwork):
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor, image_size: torch.Tensor) -> tuple[torch.Tensor, ...]:
        path = replace(self.model.path, exporting=True)
        raw = self.model.detect_resized(image, image_size[None], self.model.test_detections, path=path)[0]
        outputs = (raw.boxes, raw.scores, raw.labels)
        return outputs + (raw.mask_probs,) if raw.mask_probs is not None else outputs


def export_onnx(model: CascadeNetwork, path: str | os.PathLike, opset: int = DEFAULT_OPSET,
                score_thr: float | None = None, nms_iou: float | None = None,
                max_per_image: int | None = None) -> Path:
    """Write ``model`` as an ONNX file (atomically) with its preprocessing facts as metadata.

    ``score_thr``, ``nms_iou`` and ``max_per_image`` override the test settings (0.05, 0.5, 100)
    baked into the graph; a runtime can raise the score threshold later, not lower it.
    """
    onnx = require_package("onnx")
    if opset < MIN_OPSET:
        raise ValueError(f"opset {opset} cannot express RoIAlign with aligned=True; use {MIN_OPSET} or newer")
    overrides = {k: v for k, v in dict(score_thr=score_thr, nms_iou=nms_iou, max_per_image=max_per_image).items()
                 if v is not None}
    settings = replace(model.test_detections, **overrides)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    was_training, saved_settings = model.training, model.test_detections
    model.eval()
    model.test_detections = settings
    image, image_size = _example_input(model)
    names = ["boxes", "scores", "labels"] + (["mask_probs"] if model.config.with_mask else [])
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    os.close(descriptor)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=DeprecationWarning)  # "legacy exporter": chosen on purpose
            warnings.filterwarnings("ignore", message=".*advanced indexing.*")  # our indices are never negative
            # The batch size (1) and torchvision's RoI shape assertion are fixed by design; every
            # other tracer warning would mean a data-dependent Python branch, and is kept.
            warnings.filterwarnings("ignore", message="Using len to get tensor shape")
            warnings.filterwarnings("ignore", message="Converting a tensor to a Python boolean",
                                    module="torch")
            torch.onnx.export(_Graph(model), (image, image_size), temporary, dynamo=False, opset_version=opset,
                              input_names=["image", "image_size"], output_names=names,
                              dynamic_axes={"image": {2: "height", 3: "width"},
                                            **{name: {0: "detections"} for name in names}})
        graph = onnx.load(temporary)
        for key, value in metadata(model).items():
            graph.metadata_props.add(key=key, value=value)
        onnx.save(graph, temporary)
        os.replace(temporary, path)
    finally:
        model.test_detections = saved_settings
        model.train(was_training)
        if os.path.exists(temporary):
            os.unlink(temporary)
    return path


def metadata(model: CascadeNetwork) -> dict[str, str]:
    """The facts a consumer needs to feed the graph and read its outputs (all values are text;
    lists and tables are JSON)."""
    config, settings = model.config, model.test_detections
    return {
        "format": FORMAT,
        "config_name": config.name,
        "with_mask": json.dumps(config.with_mask),
        "class_names": json.dumps(list(config.class_names)),
        "category_ids": json.dumps([config.category_id(label) for label in range(config.num_classes)]),
        # Preprocessing: RGB uint8 -> resize to fit image_scale (long side, short side) keeping
        # the aspect ratio -> channel order -> (x - mean) / std -> zero-pad to size_divisor.
        "channel_order": "BGR" if config.bgr_input else "RGB",
        "mean": json.dumps(list(config.pixel_mean)),
        "std": json.dumps(list(config.pixel_std)),
        "image_scale": json.dumps(list(config.image_scale)),
        "size_divisor": str(SIZE_DIVISOR),
        "score_thr": repr(settings.score_thr),
        "nms_iou": repr(settings.nms_iou),
        "max_per_image": str(settings.max_per_image),
        "mask_threshold": "0.5",
        "model_settings": json.dumps(settings_text(config)),
    }


def _example_input(model: CascadeNetwork) -> tuple[torch.Tensor, torch.Tensor]:
    """A small padded image to trace with (the graph's shapes stay dynamic)."""
    generator = torch.Generator().manual_seed(0)
    image = torch.randn(1, 3, 2 * SIZE_DIVISOR * 4, 3 * SIZE_DIVISOR * 4, generator=generator)
    return image.to(model.device), torch.tensor([image.shape[2] - 5, image.shape[3] - 9], device=model.device)


class MissingPackageError(ImportError):
    """An optional package (onnx, onnxruntime) is not installed."""


def require_package(module: str):
    """The imported optional ``module``, or a ``MissingPackageError`` saying how to install it."""
    try:
        return __import__(module)
    except ImportError:
        raise MissingPackageError(f"ONNX support needs the {module!r} package: "
                                  "pip install \"cascade_rcnn[onnx]\"") from None
