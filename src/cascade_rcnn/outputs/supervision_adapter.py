"""``Detections`` to and from Roboflow's ``supervision.Detections`` (optional extra ``supervision``).

    import supervision as sv
    from cascade_rcnn.outputs.supervision_adapter import from_supervision, to_supervision

    found = to_supervision(model.predict([image])[0])       # boxes, scores, class ids and names, masks
    sv.BoxAnnotator().annotate(image.copy(), found)           # then any supervision tool
    back = from_supervision(found[found.confidence > 0.5], model.class_names, image.shape[:2])

Field by field: ``boxes`` (N, 4) xyxy <-> ``xyxy`` (float32, original image pixels, both);
``scores`` <-> ``confidence``; ``labels`` (0-based) <-> ``class_id``; the class names <->
``data["class_name"]`` (supervision's own key, as its ``from_ultralytics`` fills it); ``masks``
(N, H, W) bool <-> ``mask`` (None for box-only models).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from .detections import Detections

CLASS_NAME = "class_name"  # supervision.config.CLASS_NAME_DATA_FIELD


def to_supervision(detections: Detections) -> Any:
    """A ``supervision.Detections`` holding the same boxes, scores, class ids, class names and masks."""
    sv = _require_supervision()
    labels = detections.labels.cpu().numpy().astype(int)
    names = np.array([detections.class_names[i] for i in labels], dtype=str)
    return sv.Detections(
        xyxy=detections.boxes.detach().cpu().numpy().astype(np.float32).reshape(-1, 4),
        confidence=detections.scores.detach().cpu().numpy().astype(np.float32),
        class_id=labels,
        mask=None if detections.masks is None else detections.masks.cpu().numpy().astype(bool),
        data={CLASS_NAME: names})


def from_supervision(detections: Any, class_names: Sequence[str], image_size: tuple[int, int] | None = None
                     ) -> Detections:
    """Our ``Detections`` from a ``supervision.Detections`` (e.g. after tracking or filtering).

    ``class_names``: the names ``class_id`` indexes (e.g. ``model.class_names``); where the
    detections carry ``data["class_name"]`` it must agree. ``image_size`` (H, W) of the image the
    boxes are in; it may be left out when there are masks (their size). Detections without
    ``confidence`` (e.g. annotations) get score 1.
    """
    class_names = tuple(class_names)
    if detections.class_id is None:
        raise ValueError("these supervision detections have no class_id; cannot map them to class names")
    mask = detections.mask
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)  # dense (N, H, W) also from supervision's CompactMask
        if image_size is not None and tuple(image_size) != mask.shape[1:]:
            raise ValueError(f"image_size {tuple(image_size)} differs from the masks' size {mask.shape[1:]}")
        image_size = mask.shape[1:]
    if image_size is None:
        raise ValueError("give image_size=(height, width): supervision detections without masks do not carry it")
    labels = np.asarray(detections.class_id).astype(np.int64)
    outside = labels[(labels < 0) | (labels >= len(class_names))]
    if outside.size:
        raise ValueError(f"class_id {int(outside[0])} is outside the {len(class_names)} class names")
    named = detections.data.get(CLASS_NAME) if detections.data else None
    if named is not None:
        for index, (label, name) in enumerate(zip(labels.tolist(), list(named))):
            if class_names[label] != name:
                raise ValueError(f"detection {index}: class_id {label} is {class_names[label]!r} in class_names "
                                 f"but data['class_name'] says {name!r}")
    count = len(labels)
    scores = (np.ones(count, np.float32) if detections.confidence is None
              else np.asarray(detections.confidence, dtype=np.float32))
    return Detections(boxes=torch.from_numpy(np.asarray(detections.xyxy, dtype=np.float32).reshape(-1, 4).copy()),
                      scores=torch.from_numpy(scores.copy()), labels=torch.from_numpy(labels.copy()),
                      class_names=class_names, image_size=(int(image_size[0]), int(image_size[1])),
                      masks=None if mask is None else torch.from_numpy(mask.copy()))


def _require_supervision():
    try:
        import supervision
    except ImportError:
        raise ImportError("the supervision adapter needs the supervision package: "
                          "pip install \"cascade_rcnn[supervision]\"") from None
    return supervision
