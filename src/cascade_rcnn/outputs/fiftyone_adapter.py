"""``Detections`` as FiftyOne labels, and a detector FiftyOne's ``apply_model`` runs (optional
extra ``fiftyone``).

    import fiftyone as fo
    from cascade_rcnn.outputs.fiftyone_adapter import fiftyone_model

    model = cascade_rcnn.build_model("cascade_mask_rcnn_r50_fpn_1x_coco", weights="zoo")
    dataset.apply_model(fiftyone_model(model), label_field="cascade", confidence_thresh=0.3)

FiftyOne reads each image (RGB, HWC uint8) and calls ``predict``; the detections come back as
``fo.Detections``: ``label`` = class name, ``bounding_box`` = [x, y, w, h] relative to the
image, ``confidence``, and for mask models ``mask`` = the instance mask cropped to the box (the
crop FiftyOne's own torchvision adapter makes: rows round(y1):round(y2), columns round(x1):round(x2)).
"""
from __future__ import annotations

import functools
from types import SimpleNamespace
from typing import Any

from .detections import Detections


def to_fiftyone(detections: Detections) -> Any:
    """The detections of one image as ``fiftyone.Detections``."""
    labels = _require_fiftyone().labels
    height, width = detections.image_size
    masks = None if detections.masks is None else detections.masks.cpu().numpy()
    found = []
    for index, ((x1, y1, x2, y2), score, label) in enumerate(zip(
            detections.boxes.tolist(), detections.scores.tolist(), detections.labels.tolist())):
        mask = None
        if masks is not None:
            mask = masks[index, round(y1):round(y2), round(x1):round(x2)]
        found.append(labels.Detection(label=detections.class_names[label], confidence=score, mask=mask,
                                      bounding_box=[x1 / width, y1 / height, (x2 - x1) / width, (y2 - y1) / height]))
    return labels.Detections(detections=found)


def fiftyone_model(detector: Any, score_thr: float | None = None) -> Any:
    """A ``fiftyone.core.models.Model`` running ``detector`` (a ``CascadeRCNN``, or anything with
    its ``predict``) for ``dataset.apply_model``. ``score_thr`` defaults to the model's (0.05);
    ``apply_model(..., confidence_thresh=t)`` sets it."""
    return _model_class()(detector, score_thr)


@functools.cache
def _model_class() -> type:
    base = _require_fiftyone().models.Model

    class CascadeRCNNModel(base):
        """FiftyOne's model interface around a detector: image in, ``fo.Detections`` out."""

        media_type = "image"
        ragged_batches = True  # images of any size; ``predict_all`` batches equal sizes itself
        transforms = None  # FiftyOne hands over the decoded image; ``predict`` does the rest
        has_logits = False

        def __init__(self, detector: Any, score_thr: float | None) -> None:
            self.detector = detector
            # apply_model(confidence_thresh=...) sets config.confidence_thresh when it exists.
            self.config = SimpleNamespace(confidence_thresh=score_thr)
            self._preprocess = False

        @property
        def preprocess(self) -> bool:
            return self._preprocess

        @preprocess.setter
        def preprocess(self, value: bool) -> None:
            self._preprocess = value

        def predict(self, image: Any) -> Any:
            return self.predict_all([image])[0]

        def predict_all(self, images: Any) -> list:
            found = self.detector.predict(list(images), score_thr=self.config.confidence_thresh)
            return [to_fiftyone(detections) for detections in found]

    return CascadeRCNNModel


def _require_fiftyone() -> SimpleNamespace:
    try:
        from fiftyone.core import labels, models
    except ImportError:
        raise ImportError("the FiftyOne adapter needs the fiftyone package: pip install \"cascade_rcnn[fiftyone]\"") from None
    return SimpleNamespace(labels=labels, models=models)
