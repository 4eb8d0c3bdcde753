"""Predict every image of a COCO data set and score the predictions with the COCO metrics."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from tqdm import tqdm

from ..data.coco import CocoDataset
from ..inference.predictor import CascadeRCNN
from .distributed import Context, gather_lists, on_main
from .scoring import evaluate_predictions


def predict_dataset(model: CascadeRCNN, dataset: CocoDataset, context: Context = Context(),
                    stage: int | None = None, show_progress: bool = True) -> list[dict]:
    """COCO result records (with ``image_id`` and the data set's category ids) for this rank's
    share of ``dataset``, gathered from all ranks. Every prediction is kept (score > 0.05)."""
    return predict_dataset_stages(model, dataset, (stage,), context, show_progress)[0]


def predict_dataset_stages(model: CascadeRCNN, dataset: CocoDataset, stages: Sequence[int | None],
                           context: Context = Context(), show_progress: bool = True) -> list[list[dict]]:
    """``predict_dataset`` for each of ``stages`` (None: the cascade's output; k: stage k alone),
    from one run of the network per image."""
    records = [[] for _ in stages]
    indices = range(context.rank, len(dataset), context.world_size)
    category_ids = list(dataset.category_ids)
    for index in tqdm(indices, desc="evaluate", unit="img", disable=not (show_progress and context.is_main)):
        sample = dataset[index]
        for stage_records, detections in zip(records, model.predict_stages(sample["image"], stages)):
            stage_records.extend(detections.to_coco({"image_id": sample["image_id"]}, category_ids))
    return [gather_lists(stage_records, context) for stage_records in records]


def evaluate_dataset(model: CascadeRCNN, dataset: CocoDataset, gt_json: str | Path,
                     context: Context = Context(), per_stage: bool = False, protocol: str = "auto") -> dict:
    """COCO metrics of ``model`` on ``dataset`` (``{"bbox": {...}, "segm": {...}}``; LVIS's for an
    LVIS file: ``scoring.evaluate_predictions`` with ``protocol``); with
    ``per_stage`` a dict {"stage 1": ..., "stage 2": ..., "stage 3": ..., "ensemble": ...}
    (ensemble = the cascade's output, all stages' scores and the last stage's boxes), all from one
    run of the network per image."""
    stages = [(f"stage {i + 1}", i) for i in range(model.config.num_stages)] if per_stage else []
    stages.append(("ensemble", None))
    records = predict_dataset_stages(model, dataset, [stage for _, stage in stages], context)
    # bbox, plus segm when the predictions and the ground truth both carry masks.
    results = {name: on_main(lambda: evaluate_predictions(gt_json, stage_records, protocol), context)
               for (name, _), stage_records in zip(stages, records)}
    return results if per_stage else results["ensemble"]
