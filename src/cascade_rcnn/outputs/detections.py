"""What a prediction returns for one image, and its COCO results-format records."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from pycocotools import mask as mask_utils


@dataclass
class Detections:
    """Detections of one image, in the ORIGINAL image's pixels.

    boxes (N, 4) float xyxy, scores (N,), labels (N,) 0-based indices into ``class_names``,
    masks (N, H, W) bool for mask models (None for box-only models), image_size (H, W).
    """

    boxes: torch.Tensor
    scores: torch.Tensor
    labels: torch.Tensor
    class_names: tuple[str, ...]
    image_size: tuple[int, int]
    masks: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    def above(self, score_thr: float) -> "Detections":
        """Only the detections scoring strictly more than ``score_thr``."""
        keep = self.scores > score_thr
        return Detections(self.boxes[keep], self.scores[keep], self.labels[keep], self.class_names,
                          self.image_size, None if self.masks is None else self.masks[keep])

    def to_coco(self, image_ref: dict, category_ids: list[int]) -> list[dict]:
        """COCO results records: ``image_ref`` (e.g. {"image_id": 3}) merged into each record,
        ``category_id`` = ``category_ids[label]``, ``bbox`` = [x, y, w, h], compressed-RLE
        ``segmentation`` for mask models."""
        records = []
        boxes = self.boxes.tolist()
        rles = self._rles() if self.masks is not None else None
        for i, (box, score, label) in enumerate(zip(boxes, self.scores.tolist(), self.labels.tolist())):
            record = {**image_ref, "category_id": int(category_ids[label]),
                      "bbox": [round(box[0], 3), round(box[1], 3),
                               round(box[2] - box[0], 3), round(box[3] - box[1], 3)],
                      "score": round(float(score), 5)}
            if rles is not None:
                record["segmentation"] = rles[i]
            records.append(record)
        return records

    def _rles(self) -> list[dict]:
        masks = np.asfortranarray(self.masks.cpu().numpy().transpose(1, 2, 0).astype(np.uint8))
        rles = mask_utils.encode(masks) if len(self) else []
        return [{"size": rle["size"], "counts": rle["counts"].decode("ascii")} for rle in rles]
