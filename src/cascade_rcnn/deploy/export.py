"""Export a detector to ONNX: ``CascadeNetwork.detect_batch``, the function eager prediction runs,
traced once with ``ComputePath.exporting`` set, the whole batch in one graph.

The graph (format ``cascade_rcnn-onnx-3``; B, H, W and K dynamic):
  inputs   image        float32 (B, 3, H, W)  normalised (see the metadata), zero-padded at the
                                               bottom and right so that H and W are multiples of 32
           image_sizes  int64 (B, 2)           (h, w) of each resized image inside the padding
           box_scales   float32 (B, 4)         box-only models only: (1/sx, 1/sy, 1/sx, 1/sy) of each
                                               image, its original size over its resized size
  outputs  boxes        float32 (K, 4)         x1 y1 x2 y2 in the resized image's pixels (mask
                                               models) or in the original image's (box-only models:
                                               mapped before the NMS, as MMDetection and ``predict``)
           scores       float32 (K,)           the detections of image 0 first, then image 1, ...;
                                               each image's by descending score, at most
                                               max_per_image of them
           labels       int64 (K,)             0-based class index
           batch_index  int64 (K,)             which image of the batch the detection is in
           mask_probs   float32 (K, 28, 28)    mask models only: the detected class's probability
                                               inside the box (paste, then threshold at 0.5)
The outputs are flat, as ONNX's own NonMaxSuppression gives them (one row per detection, with its
image): no padding and no count to read, and with B = 1 exactly the detections of that image.
The images of a batch share one padded size (``predict`` batches only images of equal padded
size, and so does ``OnnxDetector``): each image's detections are then those it has alone, up to
float noise. Older formats are refused by ``OnnxDetector`` with a line saying to export again.

Image decoding, resize, normalisation and padding, and mapping back to the original image with
mask pasting, stay outside the graph and are shared with the PyTorch path (``OnnxDetector``).
Which ops take another form in the graph (one NMS node for all images, RoiAlign per level) is
``ops/onnx_forms.py``.
"""
from __future__ import annotations

import json
import os
import warnings
from dataclasses import asdict, replace
from pathlib import Path

import torch
from torch import nn

from ..atomic_write import atomic_path
from ..data.transforms import SIZE_DIVISOR
from ..errors import CascadeRCNNError, UserInputError
from ..models.detections import DetectionSettings
from ..models.detector import CascadeNetwork
from ..models.settings import settings_text

MIN_OPSET = 16  # RoiAlign's half-pixel coordinates (``aligned=True``) arrive in opset 16
DEFAULT_OPSET = 17
FORMAT = "cascade_rcnn-onnx-3"  # 3: box-only graphs take box_scales and give original pixels


class _Traced(nn.Module):
    """What the tracer calls: ``detect_batch`` at fixed test settings, its outputs as a tuple."""

    def __init__(self, model: CascadeNetwork, settings: DetectionSettings):
        super().__init__()
        self.model, self.settings = model, settings

    def forward(self, image: torch.Tensor, image_sizes: torch.Tensor, box_scales: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, ...]:
        path = replace(self.model.path, exporting=True)
        found = self.model.detect_batch(image, image_sizes, self.settings, box_scales=box_scales, path=path)
        outputs = (found.boxes, found.scores, found.labels, found.image_index)
        return outputs if found.mask_probs is None else outputs + (found.mask_probs,)


def export_onnx(model: CascadeNetwork, path: str | os.PathLike, opset: int = DEFAULT_OPSET,
                score_thr: float | None = None, nms_iou: float | None = None,
                max_per_image: int | None = None) -> Path:
    """Write ``model`` as an ONNX file (atomically) with its preprocessing facts as metadata.

    ``score_thr``, ``nms_iou`` and ``max_per_image`` override the test settings (0.05, 0.5, 100)
    baked into the graph; a runtime can raise the score threshold later, not lower it.
    """
    onnx = require_package("onnx")
    if opset < MIN_OPSET:
        raise UserInputError(f"opset {opset} cannot express RoIAlign with aligned=True; use {MIN_OPSET} or newer")
    if model.path.precision != "fp32":
        raise UserInputError(f"ONNX export runs at fp32; the model's precision is {model.path.precision}: "
                             "export it at fp32")
    overrides = {k: v for k, v in dict(score_thr=score_thr, nms_iou=nms_iou, max_per_image=max_per_image).items()
                 if v is not None}
    settings = replace(model.test_detections, **overrides)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    was_training = model.training
    model.eval()
    example = _example_input(model)
    inputs = list(input_names(model.config.with_mask))
    names = list(output_names(model.config.with_mask))
    try:
        with atomic_path(path) as temporary:
            with torch.no_grad(), warnings.catch_warnings():
                # the "legacy exporter" is chosen on purpose
                warnings.filterwarnings("ignore", category=DeprecationWarning)
                warnings.filterwarnings("ignore", message=".*advanced indexing.*")  # our indices are never negative
                # torchvision's RoI shape assertion is fixed by design; every other tracer warning
                # would mean a data-dependent Python branch (or a frozen batch size), and is kept.
                warnings.filterwarnings("ignore", message="Using len to get tensor shape")
                warnings.filterwarnings("ignore", message="Converting a tensor to a Python boolean",
                                        module="torch")
                torch.onnx.export(_Traced(model, settings), example, str(temporary), dynamo=False,
                                  opset_version=opset, input_names=inputs, output_names=names,
                                  dynamic_axes={"image": {0: "batch", 2: "height", 3: "width"},
                                                **{name: {0: "batch"} for name in inputs[1:]},
                                                **{name: {0: "detections"} for name in names}})
            graph = onnx.load(str(temporary))
            for key, value in metadata(model, settings).items():
                graph.metadata_props.add(key=key, value=value)
            onnx.save(graph, str(temporary))
    finally:
        model.train(was_training)
    return path


def metadata(model: CascadeNetwork, settings: DetectionSettings) -> dict[str, str]:
    """The facts a consumer needs to feed the graph and read its outputs (all values are text;
    lists and tables are JSON)."""
    config = model.config
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
        # How the framework resizes and maps boxes back (models/input_norm.py ResizeRule)
        "resize_rule": json.dumps(asdict(config.resize_rule)),
        "size_divisor": str(SIZE_DIVISOR),
        "score_thr": repr(settings.score_thr),
        "nms_iou": repr(settings.nms_iou),
        "max_per_image": str(settings.max_per_image),
        "mask_threshold": repr(config.mask_threshold),
        "model_settings": json.dumps(settings_text(config)),
    }


def input_names(with_mask: bool) -> tuple[str, ...]:
    """The graph's inputs, in order (see the module docstring)."""
    return ("image", "image_sizes") + (() if with_mask else ("box_scales",))


def output_names(with_mask: bool) -> tuple[str, ...]:
    """The graph's outputs, in order (see the module docstring)."""
    return ("boxes", "scores", "labels", "batch_index") + (("mask_probs",) if with_mask else ())


def _example_input(model: CascadeNetwork) -> tuple[torch.Tensor, ...]:
    """A small padded batch of two images of different sizes to trace with (the graph's batch
    and image sizes stay dynamic), and their box scales for a box-only model."""
    generator = torch.Generator().manual_seed(0)
    side = getattr(model.config.backbone, "square_pad", 0)  # ViTDet's: no input larger than its square
    shape = (side, side) if side else (2 * SIZE_DIVISOR * 4, 3 * SIZE_DIVISOR * 4)
    image = torch.randn(2, 3, *shape, generator=generator)
    height, width = image.shape[2:]
    sizes = torch.tensor([[height - 5, width - 9], [height - 40, width - 27]])
    example = (image.to(model.device), sizes.to(model.device))
    if model.config.with_mask:
        return example
    return example + (torch.tensor([[2.5, 2.4, 2.5, 2.4], [1.5, 1.6, 1.5, 1.6]], device=model.device),)


class MissingPackageError(CascadeRCNNError, ImportError):
    """An optional package (onnx, onnxruntime) is not installed."""


def require_package(module: str):
    """The imported optional ``module``, or a ``MissingPackageError`` saying how to install it."""
    try:
        return __import__(module)
    except ImportError:
        raise MissingPackageError(f"ONNX support needs the {module!r} package: "
                                  "pip install \"cascade_rcnn[onnx]\"") from None
