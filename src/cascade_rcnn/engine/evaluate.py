"""COCO box and mask AP of predictions against a COCO ground truth, with pycocotools' COCOeval.

Besides COCOeval's 12 summary numbers, AP at the single IoU thresholds 0.5 ... 0.9 (Table 1 of the
Cascade R-CNN paper): the view in which the later, higher-IoU stages of the cascade gain most.
"""
from __future__ import annotations

import contextlib
import copy
import functools
import io
import json
import os
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path, PurePath

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from ..errors import UserInputError

METRIC_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl",
                "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")  # COCOeval.stats, in order
PER_IOU = ("AP50", "AP60", "AP70", "AP80", "AP90")  # Cascade R-CNN paper, Table 1
IOU_TYPES = ("bbox", "segm")
FREQUENCY_GROUP_AP = ("APr", "APc", "APf")  # LVIS: AP over its rare, common, frequent categories


def evaluate_coco(gt: str | Path | dict, predictions: str | Path | list[dict],
                  iou_types: Sequence[str] | None = None,
                  verbose: bool = False) -> dict[str, dict[str, float]]:
    """``{iou_type: {metric: value}}`` for METRIC_NAMES + PER_IOU, as fractions (-1 where COCOeval
    gives -1: nothing to evaluate, e.g. no small objects).

    ``gt``: a COCO annotation file or dict (never modified). ``predictions``: COCO result records
    (a list or a JSON file) naming their image by ``image_id`` or by ``file_name``, matched against
    the ground truth's file names (exactly, else by basename, else by the longest common path
    suffix). ``iou_types`` None: "bbox", plus "segm" when every prediction and every ground-truth
    annotation carries a ``segmentation`` (so also for an empty list). pycocotools' prints are
    silenced unless ``verbose``.
    """
    quiet = contextlib.nullcontext() if verbose else contextlib.redirect_stdout(io.StringIO())
    with quiet:
        coco_gt = _load_gt(gt)
        records = _load_predictions(predictions, coco_gt)
        return {iou_type: _evaluate(coco_gt, records, iou_type)
                for iou_type in _iou_types(iou_types, records, coco_gt)}


def ap_at_iou(evaluator: COCOeval, iou: float) -> float:
    """AP at one IoU threshold (area "all", the most detections: COCO's 100, LVIS's 300) of an
    accumulated ``evaluator`` (pycocotools' or faster-coco-eval's), averaged over recall thresholds
    and categories as COCOeval.summarize does: -1 entries skipped, -1 if none is left."""
    params = evaluator.params
    index = np.flatnonzero(np.isclose(params.iouThrs, iou))
    if index.size != 1:
        raise ValueError(f"IoU {iou} is not one of COCOeval's thresholds {params.iouThrs.tolist()}")
    precision = evaluator.eval["precision"][index[0], :, :, params.areaRngLbl.index("all"),
                                            len(params.maxDets) - 1]
    valid = precision[precision > -1]
    return float(np.mean(valid)) if valid.size else -1.0


def format_table(metrics: dict[str, dict[str, float]]) -> str:
    """An ``evaluate_coco`` (or ``evaluate_lvis``) result as text: AP .. APl per IoU type (and
    LVIS's APr, APc, APf when given), then "AP by IoU threshold"."""
    columns = METRIC_NAMES[:6] + tuple(name for name in FREQUENCY_GROUP_AP
                                       if all(name in values for values in metrics.values()))
    return (f"{_table('iou type', columns, metrics)}\n\n"
            f"AP by IoU threshold\n{_table('iou type', PER_IOU, metrics)}")


def format_stage_table(per_stage: dict[str, dict[str, dict[str, float]]]) -> str:
    """AP and AP50 .. AP90 of each stage (e.g. "stage 1" .. "stage 3", "ensemble"; each value an
    ``evaluate_coco`` result), one table per IoU type."""
    iou_types = dict.fromkeys(t for metrics in per_stage.values() for t in metrics)
    return "\n\n".join(_table(iou_type, ("AP", *PER_IOU),
                              {stage: metrics[iou_type] for stage, metrics in per_stage.items()
                               if iou_type in metrics})
                       for iou_type in iou_types)


def write_metrics(path: str | Path, metrics: dict) -> Path:
    """Write ``metrics`` as JSON, atomically (a temporary file beside ``path``, then os.replace)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(metrics, indent=2) + "\n")
    os.replace(temporary, path)
    return path


def results_for(records: list[dict], iou_type: str) -> list[dict]:
    """Copies of ``records`` for loadRes (which edits them) when scoring ``iou_type``. loadRes takes
    the box area as a result's area when it has a box: for mask AP the box is dropped so that the
    small/medium/large split uses the mask area (as LVIS's own results loader does)."""
    dropped = "segmentation" if iou_type == "bbox" else "bbox"
    return [{k: v for k, v in record.items() if k != dropped} for record in records]


def _evaluate(coco_gt: COCO, records: list[dict], iou_type: str) -> dict[str, float]:
    results = results_for(records, iou_type)
    coco_dt = coco_gt.loadRes(results) if results else _no_results(coco_gt)
    evaluator = COCOeval(coco_gt, coco_dt, iou_type)
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    metrics = {name: float(value) for name, value in zip(METRIC_NAMES, evaluator.stats)}
    metrics.update({name: ap_at_iou(evaluator, int(name[2:]) / 100) for name in PER_IOU})
    return metrics


def _no_results(coco_gt: COCO) -> COCO:
    """What loadRes would give for no predictions (it fails on an empty list)."""
    coco = COCO()
    coco.dataset = {"images": coco_gt.dataset["images"], "categories": coco_gt.dataset["categories"],
                    "annotations": []}
    coco.createIndex()
    return coco


def _load_gt(gt: str | Path | dict) -> COCO:
    """A COCO index over a completed copy of ``gt``: ``info``, ``iscrowd`` (0) and ``area`` (of the
    mask, else of the box) filled in where missing, annotation ids renumbered 1..N (COCOeval
    indexes annotations by id and reads id 0 as "unmatched")."""
    dataset = _read_json(gt) if isinstance(gt, (str, Path)) else copy.deepcopy(gt)
    missing = [key for key in ("images", "categories") if key not in dataset]
    if missing:
        raise UserInputError(f"the ground truth has no {' and no '.join(map(repr, missing))}")
    dataset.setdefault("info", {})
    dataset.setdefault("annotations", [])
    for number, annotation in enumerate(dataset["annotations"], 1):
        annotation["id"] = number
        annotation.setdefault("iscrowd", 0)
    coco = COCO()
    coco.dataset = dataset
    coco.createIndex()
    for annotation in dataset["annotations"]:
        if "area" not in annotation:
            annotation["area"] = (float(mask_utils.area(coco.annToRLE(annotation)))
                                  if annotation.get("segmentation")
                                  else float(annotation["bbox"][2] * annotation["bbox"][3]))
    return coco


def _load_predictions(predictions: str | Path | list[dict], coco_gt: COCO) -> list[dict]:
    """Copies of the prediction records, each with the ``image_id`` of its ground-truth image."""
    records = _read_json(predictions) if isinstance(predictions, (str, Path)) else predictions
    if not isinstance(records, list):
        raise UserInputError("predictions must be a list of COCO result records")
    match_file_name = _file_name_matcher(coco_gt.dataset["images"])
    category_ids = set(coco_gt.getCatIds())
    loaded = []
    for record in records:
        missing = [key for key in ("category_id", "bbox", "score") if key not in record]
        if missing:
            raise UserInputError(f"a prediction has no {', '.join(missing)}: {_short(record)}")
        record = dict(record)
        if "image_id" in record:
            if record["image_id"] not in coco_gt.imgs:
                raise UserInputError(f"a prediction is for image_id {record['image_id']!r}, "
                                     "which is not in the ground truth")
        elif "file_name" in record:
            record["image_id"] = match_file_name(str(record["file_name"]))
        else:
            raise UserInputError(f"a prediction has neither image_id nor file_name: {_short(record)}")
        if record["category_id"] not in category_ids:
            raise UserInputError(f"a prediction has category_id {record['category_id']!r}, not one of the "
                                 f"ground truth's {sorted(category_ids)}")
        if "segmentation" in record and not isinstance(record["segmentation"], dict):
            raise UserInputError("a prediction's segmentation is not RLE ({'size', 'counts'})")
        loaded.append(record)
    return loaded


def _file_name_matcher(images: list[dict]) -> Callable[[str], int]:
    """file_name -> id of the ground-truth image with that file name, else of the only one with its
    basename, else of the only one sharing the longest path suffix with it."""
    by_name, by_basename = defaultdict(list), defaultdict(list)
    for image in images:
        if "file_name" in image:
            by_name[image["file_name"]].append(image)
            by_basename[PurePath(image["file_name"]).name].append(image)

    @functools.cache
    def match(file_name: str) -> int:
        candidates = by_name.get(file_name) or by_basename.get(PurePath(file_name).name, [])
        if len(candidates) > 1:
            shared = [_common_suffix(file_name, image["file_name"]) for image in candidates]
            candidates = [image for image, n in zip(candidates, shared) if n == max(shared)]
        if not candidates:
            raise UserInputError(f"a prediction is for {file_name!r}, which matches no file_name of the "
                                 "ground truth")
        if len(candidates) > 1:
            names = ", ".join(repr(image["file_name"]) for image in candidates)
            raise UserInputError(f"a prediction is for {file_name!r}, which matches several ground-truth "
                                 f"images equally well: {names}")
        return candidates[0]["id"]

    return match


def _common_suffix(first: str, second: str) -> int:
    """How many trailing path components the two paths share."""
    count = 0
    for a, b in zip(reversed(PurePath(first).parts), reversed(PurePath(second).parts)):
        if a != b:
            break
        count += 1
    return count


def _iou_types(asked: Sequence[str] | None, records: list[dict], coco_gt: COCO) -> tuple[str, ...]:
    without_masks = sum(not record.get("segmentation") for record in records)
    gt_without_masks = sum(not a.get("segmentation") for a in coco_gt.dataset["annotations"])
    if asked is None:
        return IOU_TYPES if not without_masks and not gt_without_masks else ("bbox",)
    asked = (asked,) if isinstance(asked, str) else tuple(dict.fromkeys(asked))
    unknown = [t for t in asked if t not in IOU_TYPES]
    if unknown:
        raise ValueError(f"unknown iou type(s) {unknown}: use {IOU_TYPES}")
    if "segm" in asked and without_masks:
        raise ValueError(f"segm evaluation asked for, but {without_masks} of {len(records)} "
                         "predictions carry no segmentation (a box-only model?)")
    if "segm" in asked and gt_without_masks:
        raise ValueError(f"segm evaluation asked for, but {gt_without_masks} ground-truth "
                         "annotations carry no segmentation")
    return asked


def _table(corner: str, columns: Sequence[str], rows: dict[str, dict[str, float]]) -> str:
    width = max([len(corner), *map(len, rows)])
    lines = [f"{corner:<{width}}" + "".join(f"{column:>7}" for column in columns)]
    lines += [f"{name:<{width}}" + "".join(f"{_percent(values[c]):>7}" for c in columns)
              for name, values in rows.items()]
    return "\n".join(lines)


def _percent(value: float) -> str:
    return "-" if value < 0 else f"{100 * value:.1f}"


def _read_json(path: str | Path):
    try:
        return json.loads(Path(path).read_text())
    except OSError as error:
        raise UserInputError(f"{path}: {error.strerror}") from None
    except json.JSONDecodeError as error:
        raise UserInputError(f"{path}: not valid JSON ({error})") from error


def _short(record: dict) -> str:
    text = json.dumps(record, default=str)
    return text if len(text) <= 120 else text[:117] + "..."
