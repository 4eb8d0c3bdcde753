"""Export a detector to ONNX: the network's parts as the PyTorch path runs them, traced once, with
the whole batch in one graph.

The graph (format ``cascade_rcnn-onnx-2``; B, H, W and K dynamic):
  inputs   image        float32 (B, 3, H, W)  normalised (see the metadata), zero-padded at the
                                               bottom and right so that H and W are multiples of 32
           image_sizes  int64 (B, 2)           (h, w) of each resized image inside the padding
  outputs  boxes        float32 (K, 4)         x1 y1 x2 y2 in the resized image's pixels
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
float noise. Format 1 (batch size 1, input ``image_size`` (2,), no ``batch_index``) is refused
by ``OnnxDetector`` with a line saying to export again.

Image decoding, resize, normalisation and padding, and mapping back to the original image with
mask pasting, stay outside the graph and are shared with the PyTorch path (``OnnxDetector``).
What the graph computes differently from eager PyTorch (one NMS node for all images, the slot
layout between the stages) is ``ops/onnx_forms.py``.
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
from ..models.rpn import RPN_CODER
from ..models.settings import settings_text
from ..ops.onnx_forms import exported_multiclass_nms, exported_proposals, filled_slots

MIN_OPSET = 16  # RoiAlign's half-pixel coordinates (``aligned=True``) arrive in opset 16
DEFAULT_OPSET = 17
FORMAT = "cascade_rcnn-onnx-2"  # 2: batch dimension, image_sizes (B, 2), batch_index
INPUTS = ("image", "image_sizes")


class _Graph(nn.Module):
    """What is traced: a padded batch and its unpadded sizes -> the flat detections of all images.

    ``CascadeNetwork.detect_resized``'s steps on the same parts (backbone, FPN, RPN head, the
    cascade's box and mask heads), with the two per-image steps, proposals and the final
    multiclass NMS, in their batched export forms (``ops/onnx_forms.py``).
    """

    def __init__(self, model: CascadeNetwork):
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor, image_sizes: torch.Tensor) -> tuple[torch.Tensor, ...]:
        model = self.model
        path = replace(model.path, exporting=True)
        proposal, detection = model.test_proposals, model.test_detections
        features = model.features(image, path)
        logits, deltas = model.rpn_head(features)
        proposals, proposal_scores = exported_proposals(
            [level.float() for level in logits], [level.float() for level in deltas], model.rpn_head.anchors(features),
            image_sizes, RPN_CODER, proposal.pre_nms_per_level, proposal.nms_iou, proposal.max_proposals)
        slots = filled_slots(proposal_scores)  # (R, 2) image, position: the RoIs, image by image
        rois = torch.cat([slots[:, :1].to(proposals.dtype), proposals[slots[:, 0], slots[:, 1]]], dim=1)
        features = model.roi_head.box_roi_align.readable(features, path)
        boxes, class_probs, _ = model.roi_head.predict_boxes(features, rois, image_sizes, path)
        batch_index, row, labels, scores = exported_multiclass_nms(
            boxes, class_probs[:, :-1], slots, proposal_scores, detection.score_thr, detection.nms_iou,
            detection.max_per_image)
        boxes = boxes[row] if boxes.dim() == 2 else boxes[row, labels]
        if not model.config.with_mask:
            return boxes, scores, labels, batch_index
        mask_rois = torch.cat([batch_index[:, None].to(boxes.dtype), boxes], dim=1)
        return boxes, scores, labels, batch_index, model.roi_head.predict_masks(features, mask_rois, labels, path)


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
    if model.path.precision != "fp32":
        raise ValueError(f"ONNX export runs at fp32; the model's precision is {model.path.precision}: "
                         "export it at fp32")
    overrides = {k: v for k, v in dict(score_thr=score_thr, nms_iou=nms_iou, max_per_image=max_per_image).items()
                 if v is not None}
    settings = replace(model.test_detections, **overrides)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    was_training, saved_settings = model.training, model.test_detections
    model.eval()
    model.test_detections = settings
    image, image_sizes = _example_input(model)
    names = list(output_names(model.config.with_mask))
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    os.close(descriptor)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=DeprecationWarning)  # "legacy exporter": chosen on purpose
            warnings.filterwarnings("ignore", message=".*advanced indexing.*")  # our indices are never negative
            # torchvision's RoI shape assertion is fixed by design; every other tracer warning
            # would mean a data-dependent Python branch (or a frozen batch size), and is kept.
            warnings.filterwarnings("ignore", message="Using len to get tensor shape")
            warnings.filterwarnings("ignore", message="Converting a tensor to a Python boolean",
                                    module="torch")
            torch.onnx.export(_Graph(model), (image, image_sizes), temporary, dynamo=False, opset_version=opset,
                              input_names=list(INPUTS), output_names=names,
                              dynamic_axes={"image": {0: "batch", 2: "height", 3: "width"},
                                            "image_sizes": {0: "batch"},
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


def output_names(with_mask: bool) -> tuple[str, ...]:
    """The graph's outputs, in order (see the module docstring)."""
    return ("boxes", "scores", "labels", "batch_index") + (("mask_probs",) if with_mask else ())


def _example_input(model: CascadeNetwork) -> tuple[torch.Tensor, torch.Tensor]:
    """A small padded batch of two images of different sizes to trace with (the graph's batch
    and image sizes stay dynamic)."""
    generator = torch.Generator().manual_seed(0)
    image = torch.randn(2, 3, 2 * SIZE_DIVISOR * 4, 3 * SIZE_DIVISOR * 4, generator=generator)
    height, width = image.shape[2:]
    sizes = torch.tensor([[height - 5, width - 9], [height - 40, width - 27]])
    return image.to(model.device), sizes.to(model.device)


class MissingPackageError(ImportError):
    """An optional package (onnx, onnxruntime) is not installed."""


def require_package(module: str):
    """The imported optional ``module``, or a ``MissingPackageError`` saying how to install it."""
    try:
        return __import__(module)
    except ImportError:
        raise MissingPackageError(f"ONNX support needs the {module!r} package: "
                                  "pip install \"cascade_rcnn[onnx]\"") from None
