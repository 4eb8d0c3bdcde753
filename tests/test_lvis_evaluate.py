"""LVIS evaluation: faster-coco-eval's LVIS numbers, LVIS's federated rules, the 300 cap, bad files."""
from __future__ import annotations

import copy
import json

import pytest
from pycocotools import mask as mask_utils

from cascade_rcnn.data.lvis import is_lvis, with_file_names
from cascade_rcnn.engine.evaluate import PER_IOU, format_table
from cascade_rcnn.engine.lvis_evaluate import LIBRARY_LABELS, LVIS_METRIC_NAMES, MAX_DETECTIONS_PER_IMAGE, evaluate_lvis
from cascade_rcnn.engine.scoring import evaluate_predictions
from cascade_rcnn.errors import UserInputError

faster_coco_eval = pytest.importorskip("faster_coco_eval")

URL = "http://images.cocodataset.org/val2017/{:012d}.jpg"
# id, name, frequency
CATEGORIES = [(1, "apple", "f"), (2, "bolt", "c"), (3, "cup", "r"), (4, "drum", "f"), (5, "egg", "c")]
# id, width, height, neg_category_ids, not_exhaustive_category_ids
IMAGES = [(1, 120, 90, [3], [2]), (2, 100, 100, [1], []), (3, 140, 80, [2, 4], [5]), (4, 64, 64, [1, 5], [])]
# image, category, x0, y0, x1, y1 (a rectangle; "rle": stored as compressed RLE instead of a polygon)
OBJECTS = [(1, 1, 10, 10, 50, 40), (1, 1, 60, 20, 110, 80), (1, 2, 5, 50, 30, 85, "rle"),
           (2, 3, 20, 20, 70, 90), (2, 4, 0, 0, 30, 25),
           (3, 5, 40, 10, 130, 75), (3, 1, 2, 2, 20, 20, "rle")]


def rect(x0, y0, x1, y1) -> list[float]:
    return [x0, y0, x1, y0, x1, y1, x0, y1]


def rle_of(polygon: list[float], image: dict) -> dict:
    rle = mask_utils.merge(mask_utils.frPyObjects([polygon], image["height"], image["width"]))
    return {"size": rle["size"], "counts": rle["counts"].decode("ascii")}


def lvis_gt() -> dict:
    images = [{"id": i, "width": w, "height": h, "coco_url": URL.format(i), "neg_category_ids": list(neg),
               "not_exhaustive_category_ids": list(not_exhaustive)} for i, w, h, neg, not_exhaustive in IMAGES]
    by_id = {image["id"]: image for image in images}
    annotations = []
    for number, (image_id, category, *rest) in enumerate(OBJECTS, 1):
        polygon = rect(*rest[:4])
        rle = rle_of(polygon, by_id[image_id])
        annotations.append({"id": number, "image_id": image_id, "category_id": category,
                            "segmentation": rle if rest[4:] == ["rle"] else [polygon],
                            "bbox": mask_utils.toBbox(rle).tolist(), "area": float(mask_utils.area(rle))})
    categories = [{"id": i, "name": name, "frequency": frequency, "image_count": 1}
                  for i, name, frequency in CATEGORIES]
    return {"images": images, "annotations": annotations, "categories": categories}


def prediction(gt: dict, image_id: int, category: int, box: list[float], score: float) -> dict:
    """A prediction with box (x0, y0, x1, y1) and the box as its mask."""
    image = next(image for image in gt["images"] if image["id"] == image_id)
    x0, y0, x1, y1 = box
    return {"image_id": image_id, "category_id": category, "bbox": [x0, y0, x1 - x0, y1 - y0], "score": score,
            "segmentation": rle_of(rect(x0, y0, x1, y1), image)}


def perfect(gt: dict) -> list[dict]:
    return [prediction(gt, image_id, category, list(rest[:4]), 0.9) for image_id, category, *rest in OBJECTS]


def mixed(gt: dict) -> list[dict]:
    """Right ones (some shifted), wrong classes, predictions on negative and not-exhaustive categories."""
    return [
        prediction(gt, 1, 1, [11, 10, 52, 42], 0.95), prediction(gt, 1, 1, [66, 28, 112, 80], 0.5),
        prediction(gt, 1, 4, [60, 20, 110, 80], 0.8),   # wrong class, neither annotated nor negative: dropped
        prediction(gt, 1, 3, [60, 20, 110, 80], 0.7),   # wrong class, negative in image 1: false positive
        prediction(gt, 1, 2, [5, 52, 31, 85], 0.6), prediction(gt, 1, 2, [80, 5, 110, 15], 0.9),  # 2nd: not exhaustive
        prediction(gt, 2, 3, [22, 18, 70, 85], 0.4), prediction(gt, 2, 1, [20, 20, 70, 90], 0.85),  # apple: negative
        prediction(gt, 2, 4, [0, 0, 20, 25], 0.3),
        prediction(gt, 3, 5, [40, 10, 100, 75], 0.6), prediction(gt, 3, 5, [0, 40, 30, 79], 0.9),  # not exhaustive
        prediction(gt, 3, 2, [40, 10, 130, 75], 0.7),   # negative in image 3
        prediction(gt, 3, 1, [2, 2, 21, 19], 0.2),
        prediction(gt, 4, 5, [5, 5, 40, 40], 0.5), prediction(gt, 4, 2, [5, 5, 40, 40], 0.5),  # neg / dropped
    ]


def library_stats(gt_path, records: list[dict], iou_type: str):
    """faster-coco-eval's LVIS mode on the files, called directly (its documented LVIS use:
    lvis_style, maxDets [300]); for segm the results without their boxes, so that a result's
    area is its mask's (as in the lvis package's results loader)."""
    from faster_coco_eval import COCO, COCOeval_faster

    dropped = "segmentation" if iou_type == "bbox" else "bbox"
    coco_gt = COCO(str(gt_path))
    coco_dt = coco_gt.loadRes([{k: v for k, v in r.items() if k != dropped} for r in records])
    evaluator = COCOeval_faster(coco_gt, coco_dt, iou_type, lvis_style=True, print_function=lambda *a: None)
    evaluator.params.maxDets = [300]
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    return evaluator.stats_as_dict


@pytest.mark.parametrize("make", [perfect, mixed])
def test_numbers_are_faster_coco_evals_lvis_mode(tmp_path, make):
    gt = lvis_gt()
    gt_path, predictions_path = tmp_path / "lvis.json", tmp_path / "predictions.json"
    gt_path.write_text(json.dumps(gt))
    predictions_path.write_text(json.dumps(make(gt)))
    ours = evaluate_lvis(gt_path, predictions_path)
    assert set(ours) == {"bbox", "segm"}
    for iou_type, metrics in ours.items():
        assert set(metrics) == set(LVIS_METRIC_NAMES) | set(PER_IOU)
        stats = library_stats(gt_path, json.loads(predictions_path.read_text()), iou_type)
        assert {name: metrics[name] for name in LIBRARY_LABELS} == {n: stats[k] for n, k in LIBRARY_LABELS.items()}
        assert metrics["AP50"] == stats["AP_50"]  # ap_at_iou agrees with the library's AP50
    if make is mixed:
        assert 0 < ours["bbox"]["AP"] < 1 and ours["bbox"]["APr"] != ours["bbox"]["APf"]


def test_perfect_predictions_give_ap_one():
    gt = lvis_gt()
    for metrics in evaluate_lvis(gt, perfect(gt)).values():
        assert all(metrics[name] == pytest.approx(1.0) for name in ("AP", "AP50", "AP75", "APr", "APc", "APf", "AR300"))


def group_ap(gt: dict, extra: list[dict]) -> dict[str, float]:
    box = evaluate_lvis(gt, perfect(gt) + extra, iou_types=["bbox"])["bbox"]
    return {name: box[name] for name in ("APr", "APc", "APf")}


def test_a_negative_category_prediction_is_a_false_positive():
    gt = lvis_gt()
    # apple (frequent) is in image 2's neg_category_ids: a confident apple there costs APf
    hurt = group_ap(gt, [prediction(gt, 2, 1, [0, 0, 50, 50], 0.99)])
    assert hurt["APf"] < 1 and hurt["APr"] == hurt["APc"] == pytest.approx(1.0)
    # drum (frequent) is neither annotated nor negative in image 1: not evaluated there
    assert group_ap(gt, [prediction(gt, 1, 4, [0, 0, 50, 50], 0.99)])["APf"] == pytest.approx(1.0)


def test_unmatched_predictions_of_a_not_exhaustive_category_are_ignored():
    gt = lvis_gt()
    # bolt (common) is not exhaustively annotated in image 1: an unmatched bolt there costs nothing ...
    assert group_ap(gt, [prediction(gt, 1, 2, [80, 0, 119, 15], 0.99)])["APc"] == pytest.approx(1.0)
    # ... but is a false positive in image 3, which lists bolt as negative
    assert group_ap(gt, [prediction(gt, 3, 2, [80, 0, 119, 15], 0.99)])["APc"] < 1


def test_at_most_300_detections_per_image():
    gt = lvis_gt()
    # image 2: 300 confident apples (negative there) push its cup and drum out of the 300 kept
    flood = [prediction(gt, 2, 1, [i % 50, i // 50, i % 50 + 10, i // 50 + 10], 0.99)
             for i in range(MAX_DETECTIONS_PER_IMAGE)]
    box = evaluate_lvis(gt, perfect(gt) + flood, iou_types=["bbox"])["bbox"]
    assert box["APr"] == 0  # cup, the only rare category, is on image 2 alone
    one_less = evaluate_lvis(gt, perfect(gt) + flood[1:], iou_types=["bbox"])["bbox"]
    assert one_less["APr"] == pytest.approx(1.0)  # 299 + cup (score 0.9) + drum: cup is kept


def test_rare_group_without_annotations_is_minus_one_and_tables_show_it():
    gt = lvis_gt()
    gt["annotations"] = [a for a in gt["annotations"] if a["category_id"] != 3]
    metrics = evaluate_lvis(gt, perfect(gt)[:3])
    assert metrics["bbox"]["APr"] == -1
    table = format_table(metrics)
    assert table.splitlines()[0].split() == ["iou", "type", "AP", "AP50", "AP75", "APs", "APm", "APl",
                                             "APr", "APc", "APf"]
    assert "AP by IoU threshold" in table and " -" in table.splitlines()[1]


def test_auto_protocol_picks_lvis_for_lvis_files_only(tmp_path):
    gt = lvis_gt()
    assert is_lvis(gt) and "APr" in evaluate_predictions(gt, perfect(gt))["bbox"]
    assert "APr" not in evaluate_predictions(gt, perfect(gt), protocol="coco")["bbox"]
    coco = {key: gt[key] for key in ("annotations",)} | {
        "images": [{"id": i["id"], "width": i["width"], "height": i["height"], "file_name": f"{i['id']}.jpg"}
                   for i in gt["images"]],
        "categories": [{"id": c["id"], "name": c["name"]} for c in gt["categories"]]}
    assert not is_lvis(coco) and "APr" not in evaluate_predictions(coco, perfect(gt))["bbox"]
    path = tmp_path / "coco.json"
    path.write_text(json.dumps(coco))
    with pytest.raises(UserInputError, match=rf"^{path}: not an LVIS annotation file: category id 1 \('apple'\) "
                                             "has frequency None, not one of r/c/f$"):
        evaluate_predictions(path, perfect(gt), protocol="lvis")


@pytest.mark.parametrize("change, message", [
    (lambda gt: gt["categories"][2].update(frequency="x"), r"category id 3 \('cup'\) has frequency 'x'"),
    (lambda gt: gt["images"][1].pop("neg_category_ids"), "image id 2 has no neg_category_ids list"),
    (lambda gt: gt["images"][2]["not_exhaustive_category_ids"].append(99),
     "image id 3 lists 99 in not_exhaustive_category_ids, which is no category id"),
])
def test_bad_lvis_files_are_one_line_naming_the_file(tmp_path, change, message):
    gt = lvis_gt()
    change(gt)
    path = tmp_path / "lvis.json"
    path.write_text(json.dumps(gt))
    with pytest.raises(UserInputError, match=rf"^{path}: not an LVIS annotation file: {message}") as error:
        evaluate_predictions(path, [])
    assert "\n" not in str(error.value)


def test_predictions_by_url_file_name_and_bad_category():
    gt = lvis_gt()
    records = perfect(gt)
    for record in records:
        record["file_name"] = f"val2017/{int(record.pop('image_id')):012d}.jpg"
    assert evaluate_lvis(gt, records)["bbox"]["AP"] == pytest.approx(1.0)
    with pytest.raises(UserInputError, match="category_id 7, not one of"):
        evaluate_lvis(gt, [{**records[0], "category_id": 7}])


def test_inputs_unchanged_and_empty_predictions():
    gt = lvis_gt()
    records = mixed(gt)
    before = copy.deepcopy((gt, records))
    evaluate_lvis(gt, records)
    assert (gt, records) == before
    assert evaluate_lvis(gt, [], iou_types=["bbox"])["bbox"]["AP"] == 0


def test_file_names_from_coco_url(tmp_path):
    images = [{"id": 1, "coco_url": "http://images.cocodataset.org/train2017/000000000001.jpg"},
              {"id": 2, "file_name": "kept.jpg", "coco_url": "http://x/val2017/2.jpg"}]
    assert [i["file_name"] for i in with_file_names(images, tmp_path)] == ["000000000001.jpg", "kept.jpg"]
    (tmp_path / "train2017").mkdir()  # a COCO root: the URL's folder
    assert with_file_names(images, tmp_path)[0]["file_name"] == "train2017/000000000001.jpg"
    assert with_file_names(images)[0]["file_name"] == "000000000001.jpg" and "file_name" not in images[0]


def test_cli_scores_an_lvis_predictions_file(tmp_path, capsys):
    from cascade_rcnn.cli import main

    gt = lvis_gt()
    (tmp_path / "lvis.json").write_text(json.dumps(gt))
    (tmp_path / "p.json").write_text(json.dumps(mixed(gt)))
    assert main(["evaluate", "--gt-json", str(tmp_path / "lvis.json"), "--predictions", str(tmp_path / "p.json"),
                 "--out", str(tmp_path / "r.json")]) == 0
    assert "APr" in capsys.readouterr().out
    assert json.loads((tmp_path / "r.json").read_text()) == evaluate_lvis(gt, mixed(gt))
    gt["images"][0]["neg_category_ids"] = [42]
    (tmp_path / "lvis.json").write_text(json.dumps(gt))
    assert main(["evaluate", "--gt-json", str(tmp_path / "lvis.json"), "--predictions", str(tmp_path / "p.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"error: {tmp_path / 'lvis.json'}: not an LVIS annotation file: image id 1 lists 42 in "
                   "neg_category_ids, which is no category id")


def test_cli_evaluates_a_model_on_lvis_images_named_by_url(tmp_path, capsys):
    """A shapes set as LVIS (images by coco_url only, in a COCO root's val2017/), a tiny confident model."""
    import torch
    from conftest import make_confident

    import cascade_rcnn
    from cascade_rcnn.cli import main
    from cascade_rcnn.data.shapes import SHAPE_CLASSES, generate_shapes
    from cascade_rcnn.weights import checkpoint

    gt_path = generate_shapes(tmp_path / "data", num_images=2, size=64, seed=3)
    gt = json.loads(gt_path.read_text())
    (tmp_path / "coco").mkdir()
    (tmp_path / "data" / "images").rename(tmp_path / "coco" / "val2017")
    for image in gt["images"]:
        image.update(coco_url=f"http://images.cocodataset.org/val2017/{image.pop('file_name')}",
                     neg_category_ids=[], not_exhaustive_category_ids=[])
    for index, category in enumerate(gt["categories"]):
        category["frequency"] = "rcf"[index % 3]
    (tmp_path / "lvis.json").write_text(json.dumps(gt))
    torch.manual_seed(0)
    name = "cascade_rcnn_r18w32_fpn_256"
    model = cascade_rcnn.CascadeRCNN(cascade_rcnn.get_config(name).with_classes(SHAPE_CLASSES)).eval()
    make_confident(model, label=1)
    checkpoint.save(tmp_path / "model.pth", model)
    assert main(["evaluate", "--gt-json", str(tmp_path / "lvis.json"), "--images", str(tmp_path / "coco"),
                 "--model", name, "--weights", str(tmp_path / "model.pth"), "--out", str(tmp_path / "r.json")]) == 0
    metrics = json.loads((tmp_path / "r.json").read_text())
    assert set(metrics) == {"bbox"} and set(metrics["bbox"]) == set(LVIS_METRIC_NAMES) | set(PER_IOU)
    assert "APf" in capsys.readouterr().out
