"""COCO evaluation: pycocotools' numbers, AP by IoU threshold, crowd regions, image matching, tables."""
from __future__ import annotations

import copy
import json

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from cascade_rcnn.engine.evaluate import (
    METRIC_NAMES,
    PER_IOU,
    ap_at_iou,
    evaluate_coco,
    format_stage_table,
    format_table,
    write_metrics,
)

ALL_METRICS = (*METRIC_NAMES, *PER_IOU[1:])
AP_METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl", *PER_IOU)


def rect(x0: float, y0: float, x1: float, y1: float) -> list[float]:
    return [x0, y0, x1, y0, x1, y1, x0, y1]


def uncompressed_rle(mask: np.ndarray) -> dict:
    """COCO's crowd format: column-major run lengths, starting with a (possibly empty) run of 0s."""
    flat = mask.flatten(order="F").astype(np.int8)
    counts = np.diff([0, *(np.flatnonzero(np.diff(flat)) + 1), flat.size]).tolist()
    return {"size": list(mask.shape), "counts": [0, *counts] if flat[0] else counts}


def compressed_rle(segmentation, image: dict) -> dict:
    rle = mask_utils.frPyObjects(segmentation, image["height"], image["width"])
    return mask_utils.merge(rle) if isinstance(segmentation, list) else rle


def annotation(image: dict, category: int, segmentation, iscrowd: int = 0) -> dict:
    rle = compressed_rle(segmentation, image)
    return {"image_id": image["id"], "category_id": category, "segmentation": segmentation,
            "bbox": mask_utils.toBbox(rle).tolist(), "area": float(mask_utils.area(rle)),
            "iscrowd": iscrowd}


def detection(image: dict, category: int, box: list[float], score: float) -> dict:
    """A prediction record with ``box`` (x, y, w, h) and the box as its mask."""
    x, y, w, h = box
    rle = compressed_rle([rect(x, y, x + w, y + h)], image)
    return {"image_id": image["id"], "category_id": category, "bbox": list(box), "score": score,
            "segmentation": {"size": rle["size"], "counts": rle["counts"].decode("ascii")}}


def finish(images: list[dict], categories: list[dict], annotations: list[dict]) -> dict:
    for number, ann in enumerate(annotations, 1):
        ann["id"] = number
    return {"info": {"description": "test"}, "images": images, "categories": categories,
            "annotations": annotations}


def small_gt() -> dict:
    """3 images (the third without annotations), categories 1 and 3, polygons of every size range
    (small < 32², medium, large > 96²) and one crowd region (uncompressed RLE)."""
    street = {"id": 1, "file_name": "images/street.jpg", "width": 240, "height": 200}
    park = {"id": 2, "file_name": "images/park.jpg", "width": 160, "height": 120}
    empty = {"id": 3, "file_name": "other/street.jpg", "width": 100, "height": 80}
    crowd = np.zeros((200, 240), np.uint8)
    crowd[120:195, 180:235] = 1
    annotations = [
        annotation(street, 1, [rect(10, 20, 130, 120)]),                       # large
        annotation(street, 3, [[150, 30, 210, 30, 180, 90]]),                  # medium
        annotation(street, 1, [rect(150, 150, 170, 170)]),                     # small
        annotation(street, 3, uncompressed_rle(crowd), iscrowd=1),
        annotation(park, 1, [[40, 20, 70, 20, 85, 50, 70, 80, 40, 80, 25, 50]]),  # medium
        annotation(park, 3, [[100, 60, 125, 60, 112, 85]]),                    # small
    ]
    return finish([street, park, empty], [{"id": 1, "name": "person"}, {"id": 3, "name": "car"}],
                  annotations)


def gt_as_predictions(gt: dict, score: float = 1.0) -> list[dict]:
    """Every non-crowd ground-truth object as a prediction: its box, its mask as compressed RLE."""
    images = {image["id"]: image for image in gt["images"]}
    predictions = []
    for ann in gt["annotations"]:
        if not ann["iscrowd"]:
            rle = compressed_rle(ann["segmentation"], images[ann["image_id"]])
            predictions.append({"image_id": ann["image_id"], "category_id": ann["category_id"],
                                "bbox": ann["bbox"], "score": score,
                                "segmentation": {"size": rle["size"],
                                                 "counts": rle["counts"].decode("ascii")}})
    return predictions


def jittered_case(seed: int = 0) -> tuple[dict, list[dict]]:
    """5 images of 320x240 (the last without annotations), 3 categories, boxes of 12 to 150 px
    as ground truth (log-uniform sizes), one crowd region; predictions: 85% of the objects found with jittered
    boxes (sometimes twice), plus false positives everywhere, with random scores."""
    rng = np.random.default_rng(seed)
    images = [{"id": i, "file_name": f"img{i}.jpg", "width": 320, "height": 240} for i in range(1, 6)]
    category_ids = (1, 2, 5)
    annotations, predictions = [], []

    def random_box(low: float, high: float) -> list[float]:
        w, h = np.exp(rng.uniform(np.log(low), np.log(high), 2))
        return [float(rng.uniform(0, 320 - w)), float(rng.uniform(0, 240 - h)), float(w), float(h)]

    for image in images[:4]:
        for _ in range(6):
            x, y, w, h = random_box(12, 150)
            category = int(rng.choice(category_ids))
            annotations.append(annotation(image, category, [rect(x, y, x + w, y + h)]))
            if rng.random() < 0.85:
                for _ in range(int(rng.integers(1, 3))):
                    dx, dy, dw, dh = rng.normal(0, 0.08, 4) * [w, h, w, h]
                    box = [round(x + dx, 2), round(y + dy, 2), round(w + dw, 2), round(h + dh, 2)]
                    predictions.append(detection(image, category, box, round(float(rng.random()), 4)))
    crowd = np.zeros((240, 320), np.uint8)
    crowd[10:90, 200:310] = 1
    annotations.append(annotation(images[0], 2, uncompressed_rle(crowd), iscrowd=1))
    for image in images:
        for _ in range(2):
            predictions.append(detection(image, int(rng.choice(category_ids)), random_box(10, 100),
                                         round(float(rng.random()) * 0.5, 4)))
    gt = finish(images, [{"id": c, "name": f"class{c}"} for c in category_ids], annotations)
    return gt, predictions


def pycocotools_eval(gt: dict, predictions: list[dict], iou_type: str) -> COCOeval:
    """COCOeval run directly (mask results without their box, as evaluate_coco does)."""
    coco_gt = COCO()
    coco_gt.dataset = copy.deepcopy(gt)
    coco_gt.createIndex()
    dropped = "segmentation" if iou_type == "bbox" else "bbox"
    results = [{k: v for k, v in p.items() if k != dropped} for p in copy.deepcopy(predictions)]
    evaluator = COCOeval(coco_gt, coco_gt.loadRes(results), iou_type)
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    return evaluator


def test_ground_truth_as_predictions_is_perfect():
    gt = small_gt()
    metrics = evaluate_coco(gt, gt_as_predictions(gt))
    assert list(metrics) == ["bbox", "segm"]
    for iou_type in ("bbox", "segm"):
        assert list(metrics[iou_type]) == list(ALL_METRICS)
        for name in AP_METRICS:  # 1 - 2**-52 where COCOeval's precision is 1 / (1 + eps)
            assert metrics[iou_type][name] == pytest.approx(1.0, abs=1e-12), (iou_type, name)


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_jittered_case_gives_pycocotools_stats(iou_type):
    gt, predictions = jittered_case()
    ours = evaluate_coco(gt, predictions)[iou_type]
    evaluator = pycocotools_eval(gt, predictions, iou_type)
    assert [ours[name] for name in METRIC_NAMES] == evaluator.stats.tolist()
    # AP at one IoU from the precision array, the way summarize averages it: exactly stats[1], [2]
    assert ap_at_iou(evaluator, 0.5) == evaluator.stats[1] == ours["AP50"]
    assert ap_at_iou(evaluator, 0.75) == evaluator.stats[2]
    assert 0.2 < ours["AP"] < 0.9  # a meaningful case, neither trivial nor empty


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ap_by_iou_falls_from_ap50_to_ap90(seed):
    gt, predictions = jittered_case(seed)
    for iou_type, metrics in evaluate_coco(gt, predictions).items():
        values = [metrics[name] for name in PER_IOU]
        assert values == sorted(values, reverse=True), (iou_type, values)
        assert values[0] > values[-1] + 0.2


def test_ap_at_iou_rejects_a_threshold_cocoeval_does_not_have():
    gt, predictions = jittered_case()
    with pytest.raises(ValueError, match="0.52"):
        ap_at_iou(pycocotools_eval(gt, predictions, "bbox"), 0.52)


def test_prediction_on_a_crowd_region_is_not_a_false_positive():
    gt = small_gt()
    street, _, empty = gt["images"]
    predictions = gt_as_predictions(gt, score=0.9)
    baseline = evaluate_coco(gt, predictions)
    # scored above every true positive: as a false positive it would cost precision at all recalls
    on_crowd = detection(street, 3, [190, 130, 30, 40], 0.95)
    with_crowd = evaluate_coco(gt, [*predictions, on_crowd])
    for iou_type in ("bbox", "segm"):
        # AR1 drops, as in pycocotools: the crowd match uses the image's one-detection budget
        assert {n: with_crowd[iou_type][n] for n in AP_METRICS} == \
               {n: baseline[iou_type][n] for n in AP_METRICS}
    # the same detection on the image without annotations is a false positive
    on_empty_image = detection(empty, 3, [10, 10, 30, 40], 0.95)
    with_false_positive = evaluate_coco(gt, [*predictions, on_empty_image])
    for iou_type in ("bbox", "segm"):
        assert baseline[iou_type]["AP"] == pytest.approx(1.0, abs=1e-12)
        assert with_false_positive[iou_type]["AP"] < 1.0


def test_ground_truth_without_info_iscrowd_area_or_ids():
    gt, predictions = jittered_case()
    bare = copy.deepcopy(gt)
    del bare["info"]
    for ann in bare["annotations"]:
        del ann["area"], ann["id"]
        if not ann["iscrowd"]:
            del ann["iscrowd"]
    assert evaluate_coco(bare, predictions) == evaluate_coco(gt, predictions)


def test_annotation_id_zero_still_matches():
    gt = small_gt()
    for ann in gt["annotations"]:
        ann["id"] -= 1  # pycocotools would read the match with id 0 as "unmatched"
    assert evaluate_coco(gt, gt_as_predictions(gt))["bbox"]["AP"] == 1.0


def test_predictions_by_file_name():
    gt = small_gt()
    by_id = gt_as_predictions(gt)
    names = {1: "/data/set/images/street.jpg",  # basename shared with other/street.jpg: suffix
             2: "park.jpg"}                      # unique basename
    by_name = [{**{k: v for k, v in p.items() if k != "image_id"}, "file_name": names[p["image_id"]]}
               for p in by_id]
    assert evaluate_coco(gt, by_name) == evaluate_coco(gt, by_id)
    # an exact match wins over the basename shared by images/street.jpg and other/street.jpg
    exact = [{**p, "file_name": "images/street.jpg"} for p in by_name if p["file_name"] != "park.jpg"]
    assert evaluate_coco(gt, exact)["bbox"]["AR100"] == pytest.approx((2 / 3 + 1 / 2) / 2)


@pytest.mark.parametrize("file_name, message", [("/data/nope.jpg", "nope.jpg.*matches no"),
                                                ("/data/street.jpg", "street.jpg.*several")])
def test_unmatched_or_ambiguous_file_name_errors(file_name, message):
    gt = small_gt()
    prediction = {**gt_as_predictions(gt)[0], "file_name": file_name}
    del prediction["image_id"]
    with pytest.raises(ValueError, match=message):
        evaluate_coco(gt, [prediction])


def test_bad_references_error():
    gt = small_gt()
    good = gt_as_predictions(gt)[0]
    with pytest.raises(ValueError, match="image_id 99"):
        evaluate_coco(gt, [{**good, "image_id": 99}])
    with pytest.raises(ValueError, match="neither image_id nor file_name"):
        evaluate_coco(gt, [{k: v for k, v in good.items() if k != "image_id"}])
    with pytest.raises(ValueError, match="category_id 2"):
        evaluate_coco(gt, [{**good, "category_id": 2}])
    with pytest.raises(ValueError, match="no score"):
        evaluate_coco(gt, [{k: v for k, v in good.items() if k != "score"}])


def test_empty_predictions_give_zeros():
    metrics = evaluate_coco(small_gt(), [])
    assert list(metrics) == ["bbox", "segm"]
    for values in metrics.values():
        assert values == dict.fromkeys(ALL_METRICS, 0.0)
    assert list(evaluate_coco(small_gt(), [], iou_types=["bbox"])) == ["bbox"]


def test_segm_only_with_masks():
    gt = small_gt()
    boxes_only = [{k: v for k, v in p.items() if k != "segmentation"} for p in gt_as_predictions(gt)]
    assert list(evaluate_coco(gt, boxes_only)) == ["bbox"]
    with pytest.raises(ValueError, match="5 of 5 predictions carry no segmentation"):
        evaluate_coco(gt, boxes_only, iou_types=("bbox", "segm"))
    with pytest.raises(ValueError, match="unknown iou type"):
        evaluate_coco(gt, boxes_only, iou_types=("keypoints",))
    assert list(evaluate_coco(gt, gt_as_predictions(gt), iou_types="segm")) == ["segm"]


def test_missing_ap_stays_minus_one():
    gt = small_gt()
    gt["annotations"] = [ann for ann in gt["annotations"] if ann["area"] >= 32 ** 2]
    metrics = evaluate_coco(gt, gt_as_predictions(gt))["bbox"]
    assert metrics["APs"] == metrics["ARs"] == -1.0
    assert metrics["AP"] == pytest.approx(1.0, abs=1e-12)


def test_paths_quiet_and_inputs_unchanged(tmp_path, capsys):
    gt, predictions = jittered_case()
    gt_copy, predictions_copy = copy.deepcopy(gt), copy.deepcopy(predictions)
    in_memory = evaluate_coco(gt, predictions)
    assert (gt, predictions) == (gt_copy, predictions_copy)
    assert capsys.readouterr().out == ""
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "predictions.json").write_text(json.dumps(predictions))
    assert evaluate_coco(tmp_path / "gt.json", str(tmp_path / "predictions.json"),
                         verbose=True) == in_memory
    assert "Average Precision" in capsys.readouterr().out
    (tmp_path / "broken.json").write_text("[{")
    with pytest.raises(ValueError, match="broken.json: not valid JSON"):
        evaluate_coco(gt, tmp_path / "broken.json")


def test_tables():
    gt, predictions = jittered_case()
    metrics = evaluate_coco(gt, predictions)
    metrics["segm"]["APs"] = -1.0
    table = format_table(metrics)
    lines = table.splitlines()
    assert lines[0].split() == ["iou", "type", "AP", "AP50", "AP75", "APs", "APm", "APl"]
    assert lines[1].split() == ["bbox", *(f"{100 * metrics['bbox'][n]:.1f}" for n in METRIC_NAMES[:6])]
    assert lines[2].split()[4] == "-"
    assert lines[4] == "AP by IoU threshold"
    assert lines[5].split() == ["iou", "type", *PER_IOU]
    assert lines[6].split() == ["bbox", *(f"{100 * metrics['bbox'][n]:.1f}" for n in PER_IOU)]

    perfect = evaluate_coco(small_gt(), gt_as_predictions(small_gt()))
    stages = format_stage_table({"stage 1": metrics, "stage 2": metrics, "stage 3": metrics,
                                 "ensemble": perfect})
    bbox, segm = (block.splitlines() for block in stages.split("\n\n"))
    assert bbox[0].split() == ["bbox", "AP", *PER_IOU]
    assert segm[0].split() == ["segm", "AP", *PER_IOU]
    assert [line[:8].strip() for line in bbox[1:]] == ["stage 1", "stage 2", "stage 3", "ensemble"]
    assert bbox[4].split() == ["ensemble", *["100.0"] * 6]


def test_write_metrics(tmp_path):
    metrics = evaluate_coco(small_gt(), gt_as_predictions(small_gt()))
    path = write_metrics(tmp_path / "out" / "metrics.json", metrics)
    assert json.loads(path.read_text()) == metrics
    assert [p.name for p in path.parent.iterdir()] == ["metrics.json"]
