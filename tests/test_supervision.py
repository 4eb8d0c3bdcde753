"""Detections to and from supervision.Detections, with the real package (optional extra)."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import assert_detections_equal, make_confident, tiny_model

import cascade_rcnn
from cascade_rcnn.outputs.detections import Detections
from cascade_rcnn.outputs.supervision_adapter import from_supervision, to_supervision

sv = pytest.importorskip("supervision")


@pytest.fixture(scope="module")
def image():
    return np.random.default_rng(0).integers(0, 256, (70, 90, 3), dtype=np.uint8)


def predictions(with_mask: bool, image) -> Detections:
    model = tiny_model(with_mask, seed=1)
    make_confident(model, label=2, mask_logit=3.0)
    found = model.predict([image], score_thr=0.0)[0]
    assert len(found) > 0
    return found


def test_round_trip_keeps_every_field(with_mask, image):
    ours = predictions(with_mask, image)
    theirs = to_supervision(ours)
    assert isinstance(theirs, sv.Detections) and len(theirs) == len(ours)
    assert theirs.xyxy.dtype == np.float32 and np.array_equal(theirs.xyxy, ours.boxes.numpy())
    assert np.array_equal(theirs.confidence, ours.scores.numpy())
    assert np.array_equal(theirs.class_id, ours.labels.numpy())
    assert list(theirs.data["class_name"]) == [ours.class_names[i] for i in ours.labels.tolist()]
    if with_mask:
        assert theirs.mask.dtype == bool and np.array_equal(theirs.mask, ours.masks.numpy())
    else:
        assert theirs.mask is None
    back = from_supervision(theirs, ours.class_names, image_size=ours.image_size)
    assert_detections_equal(back, ours)
    assert back.class_names == ours.class_names


def test_supervision_tools_work_on_them_and_filtering_comes_back(image):
    ours = predictions(True, image)
    theirs = to_supervision(ours)
    picture = sv.MaskAnnotator().annotate(image.copy(), theirs)
    picture = sv.BoxAnnotator().annotate(picture, theirs)
    picture = sv.LabelAnnotator().annotate(picture, theirs)  # reads data["class_name"]
    assert picture.shape == image.shape and not np.array_equal(picture, image)

    threshold = float(np.median(theirs.confidence))
    kept = theirs[theirs.confidence > threshold]
    back = from_supervision(kept, ours.class_names)  # the masks give the image size
    assert_detections_equal(back, ours.above(threshold))
    records = back.to_coco({"image_id": 1}, [10, 20, 30])
    assert len(records) == len(back) and {r["category_id"] for r in records} == {30}


def test_no_detections(image):
    empty = Detections(torch.zeros((0, 4)), torch.zeros(0), torch.zeros(0, dtype=torch.int64), ("a", "b"),
                       (70, 90), torch.zeros((0, 70, 90), dtype=torch.bool))
    theirs = to_supervision(empty)
    assert len(theirs) == 0 and theirs.mask.shape == (0, 70, 90)
    assert_detections_equal(from_supervision(theirs, ("a", "b")), empty)
    assert len(from_supervision(sv.Detections.empty(), ("a", "b"), (5, 6))) == 0


def test_annotations_without_scores_and_errors():
    boxes = np.array([[1, 2, 30, 40], [5, 5, 9, 9]], dtype=np.float32)
    annotations = sv.Detections(xyxy=boxes, class_id=np.array([1, 0]))
    got = from_supervision(annotations, ("cat", "dog"), (50, 60))
    assert got.scores.tolist() == [1.0, 1.0] and got.labels.tolist() == [1, 0] and got.masks is None
    with pytest.raises(ValueError, match="give image_size"):
        from_supervision(annotations, ("cat", "dog"))
    with pytest.raises(ValueError, match="class_id 1 is outside the 1 class names"):
        from_supervision(annotations, ("cat",), (50, 60))
    with pytest.raises(ValueError, match="no class_id"):
        from_supervision(sv.Detections(xyxy=boxes), ("cat", "dog"), (50, 60))
    named = sv.Detections(xyxy=boxes, class_id=np.array([1, 0]), data={"class_name": np.array(["dog", "bird"])})
    with pytest.raises(ValueError, match="detection 1: class_id 0 is 'cat' in class_names but data"):
        from_supervision(named, ("cat", "dog"), (50, 60))


def test_the_adapters_are_importable_from_the_package_without_loading_their_packages():
    """``cascade_rcnn.to_supervision`` and friends are re-exported, and importing the package does
    not import supervision or fiftyone (each imports its package when called)."""
    code = ("import sys, cascade_rcnn; from cascade_rcnn.outputs import supervision_adapter as adapter; "
            "assert cascade_rcnn.to_supervision is adapter.to_supervision; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('supervision', 'fiftyone')))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
    for name in ("from_supervision", "to_supervision", "fiftyone_model", "to_fiftyone"):
        assert name in cascade_rcnn.__all__ and callable(getattr(cascade_rcnn, name))
