"""LVIS's federated box and mask AP (with APr / APc / APf), by faster-coco-eval's LVIS mode.

LVIS's rules (Gupta et al. 2019; its ``lvis`` package, which no longer runs on numpy 2): at most
300 detections per image (the highest scoring); a category is scored on an image only if the image
has an annotation of it or lists it in ``neg_category_ids`` (other predictions are dropped, not
false positives); unmatched predictions of a category in the image's
``not_exhaustive_category_ids`` are ignored; APr / APc / APf average AP over the rare, common and
frequent categories. faster-coco-eval (``COCOeval_faster(..., lvis_style=True)``, maxDets [300])
applies the per-category rules; the per-image cap is applied here, as the ``lvis`` package's
results loader does.
"""
from __future__ import annotations

import contextlib
import io
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from ..data.lvis import lvis_problem, with_file_names
from ..errors import UserInputError
from .evaluate import PER_IOU, _iou_types, _load_gt, _load_predictions, _read_json, ap_at_iou, results_for

MAX_DETECTIONS_PER_IMAGE = 300  # LVIS's rule
# Our metric names -> faster-coco-eval's ``stats_as_dict`` labels (AR at 300 detections).
LIBRARY_LABELS = {"AP": "AP_all", "AP50": "AP_50", "AP75": "AP_75", "APs": "AP_small", "APm": "AP_medium",
                  "APl": "AP_large", "APr": "APr", "APc": "APc", "APf": "APf",
                  "AR300": "AR_all", "ARs": "AR_small", "ARm": "AR_medium", "ARl": "AR_large"}
LVIS_METRIC_NAMES = tuple(LIBRARY_LABELS)


def evaluate_lvis(gt: str | Path | dict, predictions: str | Path | list[dict],
                  iou_types: Sequence[str] | None = None, verbose: bool = False,
                  source: str | None = None) -> dict[str, dict[str, float]]:
    """``{iou_type: {metric: value}}`` for LVIS_METRIC_NAMES + PER_IOU, as fractions (-1 where
    there is nothing to evaluate, e.g. no rare category annotated).

    ``gt``: an LVIS annotation file or dict (never modified); images may be named by ``coco_url``
    alone. ``predictions`` and ``iou_types`` as for ``evaluate.evaluate_coco``. ``source`` names
    the ground truth in error messages (default: its path). Prints are silenced unless ``verbose``.
    """
    source = source or (str(gt) if isinstance(gt, (str, Path)) else "the ground truth")
    data = _read_json(gt) if isinstance(gt, (str, Path)) else gt
    problem = lvis_problem(data)
    if problem:
        raise UserInputError(f"{source}: not an LVIS annotation file: {problem}")
    quiet = contextlib.nullcontext() if verbose else contextlib.redirect_stdout(io.StringIO())
    with quiet:
        coco_gt = _load_gt({**data, "images": with_file_names(data["images"])})
        records = top_per_image(_load_predictions(predictions, coco_gt), MAX_DETECTIONS_PER_IMAGE)
        return {iou_type: _evaluate(coco_gt.dataset, records, iou_type, verbose)
                for iou_type in _iou_types(iou_types, records, coco_gt)}


def top_per_image(records: list[dict], limit: int) -> list[dict]:
    """The ``limit`` highest-scoring records of each image (ties: the earlier first)."""
    by_image = defaultdict(list)
    for record in records:
        by_image[record["image_id"]].append(record)
    return [record for group in by_image.values()
            for record in sorted(group, key=lambda r: -r["score"])[:limit]]


def _evaluate(dataset: dict, records: list[dict], iou_type: str, verbose: bool) -> dict[str, float]:
    try:
        from faster_coco_eval import COCO, COCOeval_faster
    except ImportError:
        raise UserInputError("LVIS evaluation needs faster-coco-eval: pip install 'cascade_rcnn[lvis]'") from None
    coco_gt = COCO(dataset, use_deepcopy=True)  # the evaluator adds fields to the annotations
    coco_dt = coco_gt.loadRes(results_for(records, iou_type))
    evaluator = COCOeval_faster(coco_gt, coco_dt, iou_type, lvis_style=True,
                                print_function=print if verbose else _silent)
    evaluator.params.maxDets = [MAX_DETECTIONS_PER_IMAGE]
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    stats = evaluator.stats_as_dict
    metrics = {name: float(stats[label]) for name, label in LIBRARY_LABELS.items()}
    metrics.update({name: ap_at_iou(evaluator, int(name[2:]) / 100) for name in PER_IOU})
    return metrics


def _silent(*args, **kwargs) -> None:
    pass
