"""CocoDataset: masks from every segmentation format, crowd regions, fixes and skips counted in the
report, contiguous labels, errors naming the file, and a real COCO file (Debian's labelme-examples)."""
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_utils

from cascade_rcnn.data.coco import CocoDataset, DatasetError
from cascade_rcnn.outputs.visualize import draw_ground_truth

H, W = 40, 50
LABELME_COCO = Path("/usr/share/doc/labelme-examples/examples/instance_segmentation/data_dataset_coco")


def _image(seed: int, height: int = H, width: int = W) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _write(tmp_path: Path, annotations: list[dict], images: list[dict] | None = None,
           categories: list[dict] | None = None, files: dict[str, np.ndarray] | None = None) -> Path:
    """annotations.json in tmp_path and RGB images (written as BGR by cv2) in tmp_path/images."""
    images = images if images is not None else [{"id": 1, "file_name": "a.png", "height": H, "width": W}]
    categories = categories if categories is not None else [{"id": 1, "name": "thing"}, {"id": 2, "name": "other"}]
    files = files if files is not None else {image["file_name"]: _image(image["id"], image["height"], image["width"])
                                             for image in images}
    (tmp_path / "images").mkdir(exist_ok=True)
    for name, rgb in files.items():
        cv2.imwrite(str(tmp_path / "images" / name), rgb[:, :, ::-1])
    path = tmp_path / "annotations.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return path


def _ann(ann_id: int, bbox, category_id: int = 1, image_id: int = 1, **extra) -> dict:
    return {"id": ann_id, "image_id": image_id, "category_id": category_id, "bbox": bbox, **extra}


def _uncompressed_rle(mask: np.ndarray) -> dict:
    """COCO's uncompressed RLE: run lengths of the column-major pixels, starting with a 0-run."""
    flat = mask.flatten(order="F")
    changes = np.flatnonzero(np.diff(flat)) + 1
    runs = np.diff(np.concatenate([[0], changes, [flat.size]])).tolist()
    return {"size": list(mask.shape), "counts": ([0] if flat[0] else []) + runs}


def test_masks_from_polygons_compressed_and_uncompressed_rle_and_boxes(tmp_path):
    rle_mask = np.zeros((H, W), np.uint8)
    rle_mask[22:35, 3:15] = 1
    rle_mask[26:30, 6:10] = 0  # a hole
    list_mask = np.zeros((H, W), np.uint8)
    list_mask[0:5, 30:50] = 1  # touches the right edge
    list_mask[5:12, 44:50] = 1
    compressed = mask_utils.encode(np.asfortranarray(rle_mask))
    annotations = [
        _ann(1, [10, 10, 10, 10], segmentation=[[10, 10, 20, 10, 20, 20, 10, 20]]),
        _ann(2, [3, 22, 12, 13], category_id=2,
             segmentation={"size": [H, W], "counts": compressed["counts"].decode("ascii")}),
        _ann(3, [30, 0, 20, 12], segmentation=_uncompressed_rle(list_mask)),
        _ann(4, [25.0, 20.0, 5.0, 8.0]),  # box only: the box is the mask
    ]
    path = _write(tmp_path, annotations)
    dataset = CocoDataset(path, tmp_path / "images")
    sample = dataset[0]

    assert len(dataset) == 1 and sample["image_id"] == 1 and sample["file_name"] == "a.png"
    assert sample["image"].dtype == np.uint8 and np.array_equal(sample["image"], _image(1))  # RGB kept
    assert sample["boxes"].dtype == np.float32 and sample["labels"].dtype == np.int64
    np.testing.assert_array_equal(sample["boxes"], [[10, 10, 20, 20], [3, 22, 15, 35], [30, 0, 50, 12],
                                                    [25, 20, 30, 28]])
    np.testing.assert_array_equal(sample["labels"], [0, 1, 0, 0])
    masks = sample["masks"]
    assert masks.shape == (4, H, W) and masks.dtype == np.uint8
    square = np.zeros((H, W), np.uint8)
    square[10:20, 10:20] = 1
    box = np.zeros((H, W), np.uint8)
    box[20:28, 25:30] = 1
    for got, expected in zip(masks, [square, rle_mask, list_mask, box]):
        np.testing.assert_array_equal(got, expected)
    assert sample["crowd_boxes"].shape == (0, 4)
    assert dataset.report.annotations == 4 and dataset.report.count("clipped_box") == 0


def test_with_masks_false_decodes_no_masks(tmp_path):
    path = _write(tmp_path, [_ann(1, [1, 1, 5, 5], segmentation=[[1, 1, 6, 1, 6, 6]])])
    sample = CocoDataset(path, tmp_path / "images", with_masks=False)[0]
    assert "masks" not in sample and sample["boxes"].shape == (1, 4)


def test_crowd_regions_go_to_crowd_boxes_only(tmp_path):
    crowd = np.zeros((H, W), np.uint8)
    crowd[5:15, 30:45] = 1
    path = _write(tmp_path, [_ann(1, [2, 2, 8, 8]),
                             _ann(2, [30, 5, 15, 10], iscrowd=1, segmentation=_uncompressed_rle(crowd))])
    dataset = CocoDataset(path, tmp_path / "images")
    sample = dataset[0]
    np.testing.assert_array_equal(sample["boxes"], [[2, 2, 10, 10]])
    np.testing.assert_array_equal(sample["crowd_boxes"], [[30, 5, 45, 15]])
    assert sample["crowd_boxes"].dtype == np.float32
    assert sample["labels"].tolist() == [0] and sample["masks"].shape == (1, H, W)
    assert dataset.report.crowd_annotations == 1 and dataset.report.annotations == 1


def test_images_without_annotations_kept_by_default_left_out_with_filter_empty_gt(tmp_path):
    images = [{"id": i, "file_name": f"{i}.png", "height": H, "width": W} for i in (1, 2, 3, 4)]
    annotations = [_ann(1, [1, 1, 5, 5], image_id=1), _ann(2, [1, 1, 5, 5], image_id=3, iscrowd=1),
                   _ann(3, [1, 1, 0.5, 5], image_id=4), _ann(4, [1, 1, 5, 5], image_id=2, category_id=9)]
    path = _write(tmp_path, annotations, images)

    kept = CocoDataset(path, tmp_path / "images")
    assert [kept[i]["image_id"] for i in range(len(kept))] == [1, 2, 3, 4]
    empty = kept[1]
    assert empty["boxes"].shape == (0, 4) and empty["labels"].shape == (0,) and empty["masks"].shape == (0, H, W)
    assert kept.report.images_without_annotations == 3 and kept.report.filtered_empty == 0  # crowd-only is empty

    # MMDetection's filter_empty_gt: an image is empty when no annotation of a known category names
    # it, so the crowd-only image and the one whose only box is dropped as too small stay.
    filtered = CocoDataset(path, tmp_path / "images", filter_empty_gt=True)
    assert [filtered[i]["image_id"] for i in range(len(filtered))] == [1, 3, 4]
    assert filtered.report.filtered_empty == 1 and filtered.report.images == 3


def test_min_size_leaves_out_images_with_a_short_side_below_it(tmp_path):
    images = [{"id": 1, "file_name": "wide.png", "height": 31, "width": 90},
              {"id": 2, "file_name": "ok.png", "height": 32, "width": 32}]
    path = _write(tmp_path, [_ann(1, [1, 1, 5, 5], image_id=1), _ann(2, [1, 1, 5, 5], image_id=2)], images)
    dataset = CocoDataset(path, tmp_path / "images", min_size=32)
    assert [record.file_name for record in dataset.records] == ["ok.png"]
    assert dataset.report.filtered_small == 1
    assert len(CocoDataset(path, tmp_path / "images")) == 2


def test_boxes_clipped_and_degenerate_boxes_dropped_and_counted(tmp_path):
    annotations = [
        _ann(1, [-5, 2, 20, 10]),  # reaches out on the left: clipped
        _ann(2, [45, 30, 10, 20]),  # out at the right and bottom: clipped
        _ann(3, [49.5, 0, 5, 5]),  # 0.5 px wide once clipped: dropped
        _ann(4, [3, 3, 0.5, 10]),  # under 1 px wide: dropped
        _ann(5, [60, 60, 5, 5]),  # wholly outside: dropped
        _ann(6, [10, 10, -4, 5]),  # negative width: dropped
        _ann(7, [0, 0, W, H]),  # exactly the image: untouched
    ]
    dataset = CocoDataset(_write(tmp_path, annotations), tmp_path / "images")
    sample = dataset[0]
    np.testing.assert_array_equal(sample["boxes"], [[0, 2, 15, 12], [45, 30, 50, 40], [0, 0, W, H]])
    assert sample["masks"].shape == (3, H, W)
    report = dataset.report
    assert [report.count(kind) for kind in ("clipped_box", "zero_size_box", "outside_box", "negative_box")] == [2, 2, 1, 1]
    assert report.offenders["zero_size_box"] == ["annotation id 3 (a.png): [49.5, 0, 5, 5]",
                                                 "annotation id 4 (a.png): [3, 3, 0.5, 10]"]
    assert report.annotations == 3


def test_missing_image_file_counted_and_skipped(tmp_path):
    images = [{"id": 1, "file_name": "a.png", "height": H, "width": W},
              {"id": 2, "file_name": "gone.png", "height": H, "width": W}]
    annotations = [_ann(1, [1, 1, 5, 5], image_id=1), _ann(2, [1, 1, 5, 5], image_id=2)]
    path = _write(tmp_path, annotations, images, files={"a.png": _image(1)})
    dataset = CocoDataset(path, tmp_path / "images")
    assert len(dataset) == 1 and dataset[0]["file_name"] == "a.png"
    assert dataset.report.count("missing_image") == 1 and dataset.report.annotations == 1
    assert dataset.report.offenders["missing_image"] == ["gone.png"]
    unchecked = CocoDataset(path, tmp_path / "images", check_files=False)
    assert len(unchecked) == 2 and unchecked.report.count("missing_image") == 0


def test_unknown_category_counted_and_skipped(tmp_path):
    path = _write(tmp_path, [_ann(1, [1, 1, 5, 5], category_id=2), _ann(2, [1, 1, 5, 5], category_id=99)])
    dataset = CocoDataset(path, tmp_path / "images")
    assert dataset[0]["labels"].tolist() == [1]
    assert dataset.report.count("unknown_category") == 1 and dataset.report.annotations == 1
    assert dataset.report.offenders["unknown_category"] == ["annotation id 2 (a.png)"]


def test_category_ids_starting_at_zero_with_gaps_map_to_contiguous_labels_and_back(tmp_path):
    categories = [{"id": 7, "name": "seven"}, {"id": 0, "name": "zero"}, {"id": 3, "name": "three"}]
    annotations = [_ann(1, [1, 1, 5, 5], category_id=7), _ann(2, [1, 1, 5, 5], category_id=0),
                   _ann(3, [1, 1, 5, 5], category_id=3)]
    dataset = CocoDataset(_write(tmp_path, annotations, categories=categories), tmp_path / "images")
    assert dataset.class_names == ("zero", "three", "seven") and dataset.category_ids == (0, 3, 7)
    labels = dataset[0]["labels"].tolist()
    assert labels == [2, 0, 1]
    assert [dataset.category_ids[label] for label in labels] == [7, 0, 3]


def test_unused_background_category_dropped_unless_annotated_or_disabled(tmp_path):
    categories = [{"id": 0, "name": "_background_"}, {"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]
    path = _write(tmp_path, [_ann(1, [1, 1, 5, 5], category_id=1)], categories=categories)
    dataset = CocoDataset(path, tmp_path / "images")
    assert dataset.class_names == ("cat", "dog") and dataset[0]["labels"].tolist() == [0]
    kept = CocoDataset(path, tmp_path / "images", drop_unused_background=False)
    assert kept.class_names == ("_background_", "cat", "dog") and kept[0]["labels"].tolist() == [1]

    categories[0]["name"] = "background"  # annotated: a real class like any other
    used = _write(tmp_path, [_ann(1, [1, 1, 5, 5], category_id=0)], categories=categories)
    dataset = CocoDataset(used, tmp_path / "images")
    assert dataset.class_names == ("background", "cat", "dog") and dataset[0]["labels"].tolist() == [0]


@pytest.mark.parametrize("content, message", [
    ("{not json", "not a JSON file"),
    ("[]", "expected a COCO JSON object"),
    (json.dumps({"annotations": [], "categories": []}), '"images" is missing'),
    (json.dumps({"images": [], "categories": [{"id": 1, "name": "a"}]}), '"annotations" is missing'),
    (json.dumps({"images": [], "annotations": []}), '"categories" is missing'),
    (json.dumps({"images": [], "annotations": [], "categories": {"id": 1}}), '"categories" is not a list'),
    (json.dumps({"images": [], "annotations": [], "categories": [{"id": "1", "name": "a"}]}),
     "no usable category"),
])
def test_a_file_that_is_not_coco_json_is_rejected_naming_it(tmp_path, content, message):
    path = tmp_path / "broken.json"
    path.write_text(content)
    with pytest.raises(DatasetError) as error:
        CocoDataset(path, tmp_path)
    assert str(path) in str(error.value) and message in str(error.value)
    assert isinstance(error.value, ValueError)


def test_missing_annotation_file_raises_dataset_error(tmp_path):
    with pytest.raises(DatasetError, match="no such annotation file"):
        CocoDataset(tmp_path / "nope.json", tmp_path)


def test_class_names_must_match_the_categories(tmp_path):
    path = _write(tmp_path, [_ann(1, [1, 1, 5, 5])])
    assert CocoDataset(path, tmp_path / "images", class_names=["thing", "other"]).class_names == ("thing", "other")
    with pytest.raises(DatasetError) as error:
        CocoDataset(path, tmp_path / "images", class_names=["thing", "another"])
    text = str(error.value)
    assert str(path) in text and "first difference at label 1: expected 'another', found 'other'" in text
    with pytest.raises(DatasetError, match="expected 3 classes"):
        CocoDataset(path, tmp_path / "images", class_names=["thing", "other", "third"])


def test_image_size_different_from_the_json_skipped_at_start_or_raises_when_read(tmp_path):
    images = [{"id": 1, "file_name": "a.png", "height": H, "width": W},
              {"id": 2, "file_name": "b.png", "height": H, "width": W}]
    path = _write(tmp_path, [_ann(1, [1, 1, 5, 5], image_id=2)], images,
                  files={"a.png": _image(1, H + 1, W), "b.png": _image(2)})
    dataset = CocoDataset(path, tmp_path / "images")
    assert [record.file_name for record in dataset.records] == ["b.png"]
    assert dataset.report.offenders["size_mismatch"] == ["a.png (file 50x41, JSON 50x40)"]
    unchecked = CocoDataset(path, tmp_path / "images", check_files=False)  # e.g. changed after the check
    with pytest.raises(DatasetError, match=r"a\.png: the image is 50x41 .* says 50x40"):
        unchecked[0]


def test_report_summary_counts_then_one_line_per_defect(tmp_path):
    path = _write(tmp_path, [_ann(1, [-2, 1, 5, 5]), _ann(2, [1, 1, 0, 5]), _ann(3, [1, 1, 5, 5], category_id=9)])
    lines = CocoDataset(path, tmp_path / "images").report.summary().splitlines()
    assert lines[0] == "1 images, 1 instances, 0 crowd regions, 0 images without instances"
    assert lines[1:] == [
        "  1 annotations whose category_id is not a category: dropped; annotation id 3 (a.png)",
        "  1 boxes under 1 px wide or high (after clipping): dropped; annotation id 2 (a.png): [1, 1, 0, 5]",
        "  1 boxes reaching outside the image: clipped to the image; annotation id 1 (a.png): [-2, 1, 5, 5]",
        "  1 instances without a usable polygon or RLE (mask models): the filled box is the mask; "
        "annotation id 1 (a.png)"]
    clean = _write(tmp_path, [_ann(1, [1, 1, 5, 5], segmentation=[[1, 1, 6, 1, 6, 6]])])
    assert CocoDataset(clean, tmp_path / "images").report.summary().endswith("; no defects")


def test_ground_truth_drawing_marks_the_instances(tmp_path):
    path = _write(tmp_path, [_ann(1, [10, 10, 10, 10], segmentation=[[10, 10, 20, 10, 20, 20, 10, 20]])],
                  files={"a.png": np.zeros((H, W, 3), np.uint8)})
    dataset = CocoDataset(path, tmp_path / "images")
    picture = np.asarray(draw_ground_truth(dataset[0], dataset.class_names))
    assert picture.shape == (H, W, 3) and picture.dtype == np.uint8
    assert picture[15, 15].any() and not picture[35, 45].any()  # mask coloured, background untouched


@pytest.mark.skipif(not (LABELME_COCO / "annotations.json").is_file(),
                    reason="Debian package labelme-examples not installed (apt-get install labelme-examples)")
def test_labelme_examples_real_photos():
    dataset = CocoDataset(LABELME_COCO / "annotations.json", LABELME_COCO)
    assert len(dataset) == 3 and dataset.report.annotations == 12
    assert dataset.class_names[0] == "aeroplane" and "_background_" not in dataset.class_names
    assert len(dataset.class_names) == 20 and dataset.category_ids == tuple(range(1, 21))
    total = 0
    for i in range(len(dataset)):
        sample = dataset[i]
        height, width = sample["image"].shape[:2]
        boxes, masks = sample["boxes"], sample["masks"]
        total += len(boxes)
        assert masks.shape == (len(boxes), height, width) and (masks.sum(axis=(1, 2)) > 0).all()
        assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= width).all() and (boxes[:, 3] <= height).all()
        assert (boxes[:, 2:] > boxes[:, :2]).all()
        # the polygon masks lie inside their (labelme-rounded) boxes
        for box, mask in zip(boxes, masks):
            ys, xs = np.nonzero(mask)
            assert xs.min() >= box[0] - 1 and xs.max() <= box[2] and ys.min() >= box[1] - 1 and ys.max() <= box[3]
    assert total == 12
    people = dataset.class_names.index("person")
    assert (dataset[0]["labels"] == people).sum() == 2
