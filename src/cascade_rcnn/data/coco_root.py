"""``--coco-root DIR``: the files of the official COCO 2017 layout, found by name."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Coco2017:
    """DIR/train2017/, DIR/val2017/, DIR/annotations/instances_{train,val}2017.json."""

    root: Path

    @property
    def train_json(self) -> Path:
        return self.root / "annotations" / "instances_train2017.json"

    @property
    def train_images(self) -> Path:
        return self.root / "train2017"

    @property
    def val_json(self) -> Path:
        return self.root / "annotations" / "instances_val2017.json"

    @property
    def val_images(self) -> Path:
        return self.root / "val2017"

    def require(self, *paths: Path) -> None:
        """Raise ValueError naming every one of ``paths`` that does not exist."""
        missing = [str(path) for path in paths if not path.exists()]
        if missing:
            raise ValueError(f"--coco-root {self.root}: not the COCO 2017 layout, missing {', '.join(missing)}")
