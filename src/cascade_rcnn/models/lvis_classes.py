"""The 1203 LVIS v1 classes in category-id order (ids 1..1203), each with its frequency group
("r" rare, "c" common, "f" frequent: LVIS's APr / APc / APf) and the number of training images
annotated with it (the federated loss's class weights). Read from ``lvis_v1_classes.json``."""
from __future__ import annotations

import json
from pathlib import Path

_ROWS = json.loads(Path(__file__).with_name("lvis_v1_classes.json").read_text(encoding="utf-8"))["classes"]

LVIS_CLASSES = tuple(name for name, _, _ in _ROWS)
LVIS_CATEGORY_IDS = tuple(range(1, len(_ROWS) + 1))
LVIS_FREQUENCIES = tuple(frequency for _, frequency, _ in _ROWS)
LVIS_IMAGE_COUNTS = tuple(count for _, _, count in _ROWS)
