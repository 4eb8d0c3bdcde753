"""Which AP a ground truth gets: LVIS's federated AP for an LVIS file, COCO's otherwise."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ..data.lvis import is_lvis
from .evaluate import _read_json, evaluate_coco
from .lvis_evaluate import evaluate_lvis

PROTOCOLS = ("auto", "coco", "lvis")  # auto: "lvis" when data.lvis.is_lvis(the ground truth)


def evaluate_predictions(gt: str | Path | dict, predictions: str | Path | list[dict], protocol: str = "auto",
                         iou_types: Sequence[str] | None = None, verbose: bool = False) -> dict[str, dict[str, float]]:
    """``evaluate_lvis`` or ``evaluate_coco`` of ``predictions`` against ``gt`` (read once), as
    ``protocol`` says."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}: use one of {PROTOCOLS}")
    data = _read_json(gt) if isinstance(gt, (str, Path)) else gt
    if protocol == "lvis" or (protocol == "auto" and is_lvis(data)):
        source = str(gt) if isinstance(gt, (str, Path)) else None
        return evaluate_lvis(data, predictions, iou_types, verbose, source=source)
    return evaluate_coco(data, predictions, iou_types, verbose)
