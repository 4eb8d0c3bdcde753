"""The synthetic shapes set: deterministic, valid COCO, pixel-exact non-overlapping masks, all
classes and a wide range of sizes."""
import json

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from cascade_rcnn.data.coco import CocoDataset
from cascade_rcnn.data.shapes import SHAPE_CLASSES, generate_shapes

SIZE = 320


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    """50 images of 320 px, generated once for the module."""
    return generate_shapes(tmp_path_factory.mktemp("shapes"), num_images=50, size=SIZE, seed=0)


def test_same_seed_same_bytes_and_images_independent_of_count(tmp_path):
    first = generate_shapes(tmp_path / "a", num_images=3, size=96, seed=5)
    second = generate_shapes(tmp_path / "b", num_images=3, size=96, seed=5)
    assert first.read_bytes() == second.read_bytes()
    for name in ("000000.png", "000001.png", "000002.png"):
        assert (first.parent / "images" / name).read_bytes() == (second.parent / "images" / name).read_bytes()
    fewer = generate_shapes(tmp_path / "c", num_images=2, size=96, seed=5)
    assert (fewer.parent / "images" / "000001.png").read_bytes() == (first.parent / "images" / "000001.png").read_bytes()
    other = generate_shapes(tmp_path / "d", num_images=1, size=96, seed=6)
    assert (other.parent / "images" / "000000.png").read_bytes() != (first.parent / "images" / "000000.png").read_bytes()


def test_json_loads_with_pycocotools_and_matches_the_data_set(shapes):
    coco = COCO(str(shapes))
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == list(SHAPE_CLASSES)
    assert coco.getCatIds() == [1, 2, 3, 4, 5] and len(coco.getImgIds()) == 50
    assert min(coco.getAnnIds()) >= 1  # COCOeval treats id 0 as "unmatched"

    dataset = CocoDataset(shapes, shapes.parent / "images")
    report = dataset.report
    assert dataset.class_names == SHAPE_CLASSES and dataset.category_ids == (1, 2, 3, 4, 5)
    assert len(dataset) == 50 and report.annotations == len(coco.getAnnIds())
    assert sum(report.defects.values()) == 0, report.summary()
    for index in (0, 7):
        sample = dataset[index]
        assert sample["image"].shape == (SIZE, SIZE, 3)
        annotations = coco.loadAnns(coco.getAnnIds(imgIds=sample["image_id"]))
        expected = np.stack([coco.annToMask(a) for a in annotations])
        np.testing.assert_array_equal(sample["masks"], expected)
        assert sample["labels"].tolist() == [a["category_id"] - 1 for a in annotations]


def test_bbox_is_the_tight_box_of_the_mask_and_masks_do_not_overlap(shapes):
    data = json.loads(shapes.read_text())
    by_image = {}
    for annotation in data["annotations"]:
        mask = mask_utils.decode(annotation["segmentation"])
        ys, xs = np.nonzero(mask)
        x, y, w, h = annotation["bbox"]
        assert [x, y, x + w - 1, y + h - 1] == [xs.min(), ys.min(), xs.max(), ys.max()]
        assert annotation["area"] == mask.sum() and annotation["iscrowd"] == 0
        by_image.setdefault(annotation["image_id"], []).append(mask)
    for masks in by_image.values():
        assert np.stack(masks).sum(axis=0).max() == 1  # occlusion applied: one owner per pixel


def test_sizes_span_small_and_large_and_all_classes_appear(shapes):
    data = json.loads(shapes.read_text())
    sides = np.array([max(a["bbox"][2], a["bbox"][3]) for a in data["annotations"]])
    assert sides.min() <= 10 and sides.max() >= SIZE // 4
    assert (sides < 32).mean() > 0.2 and (sides > 64).mean() > 0.05  # COCO-like small/large mix
    counts = np.bincount([a["category_id"] for a in data["annotations"]], minlength=6)[1:]
    assert (counts >= 20).all(), counts
    per_image = np.bincount([a["image_id"] for a in data["annotations"]], minlength=50)
    assert per_image.mean() > 3
