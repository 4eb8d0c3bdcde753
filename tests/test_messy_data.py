"""Messy training data: every defect found at start, reported by kind with its offenders, handled by
its rule; a run on all of them at once trains to the end; an image that breaks mid-run is skipped
(or, past the allowed fraction, stops the run with the last checkpoint intact)."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from test_train import TRAIN_SIZE, run_config, train_config

from cascade_rcnn.data.coco import CocoDataset, DatasetError
from cascade_rcnn.data.images import image_file_size, read_image
from cascade_rcnn.data.report import DEFECTS
from cascade_rcnn.data.shapes import generate_shapes
from cascade_rcnn.engine.train import TooManyFailedImages, train
from cascade_rcnn.weights import checkpoint

SIZE = 64
BROKEN_FILES = ("gone.png", "corrupt.png", "wrong_size.png")


def make_messy(root: Path) -> Path:
    """A shapes set of 3 good images plus one or more instances of every defect kind."""
    path = generate_shapes(root, num_images=3, size=SIZE, seed=5)
    data = json.loads(path.read_text())
    images, annotations, categories = data["images"], data["annotations"], data["categories"]
    (root / "images" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    cv2.imwrite(str(root / "images" / "wrong_size.png"), np.zeros((SIZE + 6, SIZE, 3), np.uint8))
    images += [{"id": 10, "file_name": "gone.png", "height": SIZE, "width": SIZE},
               {"id": 11, "file_name": "corrupt.png", "height": SIZE, "width": SIZE},
               {"id": 12, "file_name": "wrong_size.png", "height": SIZE, "width": SIZE},
               {"id": 13, "file_name": "no_size.png"},  # malformed
               {"id": 0, "file_name": "dup.png", "height": SIZE, "width": SIZE}]  # duplicate id
    good = annotations[0]
    extra = [
        "not an object", {"id": 900, "image_id": 0, "bbox": [1, 1, 5, 5]},  # malformed
        dict(good),  # exact copy of an earlier annotation (same id): dropped
        {**good, "bbox": [2, 2, 9, 9]},  # same id, another object: kept
        {"id": 901, "image_id": 999, "category_id": 1, "bbox": [1, 1, 5, 5]},
        {"id": 902, "image_id": 0, "category_id": 77, "bbox": [1, 1, 5, 5]},
        {"id": 903, "image_id": 0, "category_id": 1, "bbox": [1, 1, float("nan"), 5]},
        {"id": 904, "image_id": 0, "category_id": 1, "bbox": [1, 1, 5]},
        {"id": 905, "image_id": 1, "category_id": 1, "bbox": [20, 20, -3, 4]},
        {"id": 906, "image_id": 1, "category_id": 1, "bbox": [20, 20, 0, 4]},
        {"id": 907, "image_id": 1, "category_id": 1, "bbox": [200, 200, 5, 5]},
        {"id": 908, "image_id": 1, "category_id": 2, "bbox": [-4, -4, 20, 20],
         "segmentation": [[0, 0, 16, 0, 16, 16], [1, 1, 3, 3]]},  # clipped; one short polygon
        {"id": 909, "image_id": 2, "category_id": 2, "bbox": [4, 4, 20, 20], "segmentation": [[1, 1, 3, 3]]},
        {"id": 910, "image_id": 2, "category_id": 3, "bbox": [4, 4, 20, 20], "segmentation": []},
        {"id": 911, "image_id": 2, "category_id": 3, "bbox": [4, 4, 20, 20],
         "segmentation": {"size": [SIZE, SIZE], "counts": "0000"}},  # runs do not cover the image
        {"id": 912, "image_id": 2, "category_id": 3, "bbox": [4, 4, 20, 20],
         "segmentation": {"size": [SIZE + 1, SIZE], "counts": [SIZE * (SIZE + 1)]}},
        {"id": 913, "image_id": 2, "category_id": 3, "bbox": [4, 4, 20, 20], "segmentation": 7},
    ]
    annotations += extra
    categories += [{"id": "x", "name": "bad"}, {"id": 1, "name": "again"}]
    path.write_text(json.dumps(data))  # NaN is written as NaN, as json.load reads it
    return path


@pytest.fixture(scope="module")
def messy(tmp_path_factory) -> Path:
    return make_messy(tmp_path_factory.mktemp("messy"))


def test_every_defect_kind_is_found_counted_and_handled(messy):
    dataset = CocoDataset(messy, messy.parent / "images")
    report = dataset.report
    expected = {"malformed_category": 1, "duplicate_category_id": 1, "malformed_image": 1, "duplicate_image_id": 1,
                "missing_image": 1, "unreadable_image": 1, "size_mismatch": 1, "malformed_annotation": 2,
                "duplicate_annotation_id": 2, "unknown_image_id": 1, "unknown_category": 1, "bad_box": 2,
                "negative_box": 1, "outside_box": 1, "zero_size_box": 1, "clipped_box": 1, "short_polygon": 2,
                "bad_segmentation": 3}
    for kind, count in expected.items():
        assert report.count(kind) == count, (kind, report.summary())
    assert set(expected) | {"empty_segmentation"} == set(DEFECTS)
    assert report.count("empty_segmentation") >= 2  # the short-only polygon and the empty list
    assert [record.file_name for record in dataset.records] == ["000000.png", "000001.png", "000002.png"]
    assert report.offenders["missing_image"] == ["gone.png"]
    assert report.offenders["unreadable_image"][0].startswith("corrupt.png (")
    assert report.offenders["size_mismatch"] == ["wrong_size.png (file 64x70, JSON 64x64)"]
    assert report.offenders["duplicate_image_id"] == ["dup.png (id 0, first 000000.png)"]
    assert report.offenders["bad_box"][0] == "annotation id 903 (000000.png): [1, 1, nan, 5]"
    # the repeated annotation with another box is kept, the exact copy is not
    boxes = dataset[0]["boxes"].tolist()
    first = json.loads(messy.read_text(), parse_constant=float)["annotations"][0]["bbox"]
    assert boxes.count([first[0], first[1], first[0] + first[2], first[1] + first[3]]) == 1
    assert [2.0, 2.0, 11.0, 11.0] in boxes
    sample = dataset[1]
    clipped = sample["boxes"].tolist().index([0.0, 0.0, 16.0, 16.0])
    assert sample["masks"][clipped].sum() > 100  # the good polygon of 908 is its mask
    masks = dataset[2]["masks"]
    assert (masks[-5:].reshape(5, -1).sum(1) == 400).all()  # unusable segmentations: the 20x20 box
    assert "dup.png" in report.summary() and "no_size.png" in report.summary()


def test_evaluation_refuses_a_data_set_that_lost_images(messy):
    dataset = CocoDataset(messy, messy.parent / "images", with_masks=False)
    with pytest.raises(DatasetError) as error:
        dataset.require_every_image()
    for name in BROKEN_FILES + ("dup.png", "no_size.png"):
        assert name in str(error.value)
    assert "\n" not in str(error.value)


def test_nothing_usable_left_rejects_the_data_set_naming_it(tmp_path):
    root = tmp_path / "data"
    path = generate_shapes(root, num_images=2, size=SIZE, seed=1)
    for png in (root / "images").iterdir():
        png.write_bytes(b"not a picture")
    with pytest.raises(DatasetError, match=f"{path}: no usable training image left"):
        train(train_config(), run_config(root, tmp_path / "run", epochs=1))


def test_a_run_on_every_defect_at_once_trains_to_the_end_and_names_every_broken_file(messy, tmp_path, capsys):
    out = tmp_path / "run"
    train(train_config(), run_config(messy.parent, out, epochs=1, batch_size=2))
    assert (out / "final.pth").is_file()
    printed = capsys.readouterr().out
    for name in BROKEN_FILES + ("dup.png", "no_size.png", "annotation id 903", "annotation id 911"):
        assert name in printed, name


def test_image_header_size_applies_the_exif_rotation(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(np.zeros((20, 40, 3), np.uint8)).save(tmp_path / "turned.jpg", exif=exif.tobytes())
    assert image_file_size(tmp_path / "turned.jpg") == read_image(tmp_path / "turned.jpg").shape[:2] == (40, 20)


def corrupt_at(iteration: int, path: Path):
    def hook(done: int) -> None:
        if done == iteration:
            path.write_bytes(b"garbage")
    return hook


@pytest.fixture
def shapes4(tmp_path) -> Path:
    generate_shapes(tmp_path / "data", num_images=4, size=TRAIN_SIZE, seed=3)
    return tmp_path / "data"


def test_an_image_corrupted_mid_run_is_skipped_with_a_warning_and_counted(shapes4, tmp_path, capsys):
    out = tmp_path / "run"
    victim = shapes4 / "images" / "000001.png"
    train(train_config(), run_config(shapes4, out, epochs=2, workers=1, max_failed_fraction=0.5,
                                     on_iteration=corrupt_at(2, victim)))
    assert (out / "final.pth").is_file()
    errors = capsys.readouterr().err
    assert f"warning: skipped a training image: {victim}: not a readable image" in errors
    assert "Traceback" not in errors
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [(r["iteration"], r["failed_images"]) for r in rows if "loss" in r][-1] == (4, 1)


def test_too_many_failed_images_stop_the_run_keeping_the_last_checkpoint(shapes4, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(TooManyFailedImages, match=r"1 of the 4 training images failed to load in epoch 2"):
        train(train_config(), run_config(shapes4, out, epochs=2, on_iteration=corrupt_at(2, shapes4 / "images" / "000003.png")))
    assert not (out / "final.pth").exists()
    progress = checkpoint.read(out / "latest.pth")["progress"]
    assert (progress["epoch"], progress["batch"], progress["iteration"]) == (1, 0, 2)
