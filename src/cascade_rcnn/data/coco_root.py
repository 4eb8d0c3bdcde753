"""``--coco-root DIR``: the files of the official COCO 2017 layout, found by name."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import UserInputError


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
            raise UserInputError(f"--coco-root {self.root}: not the COCO 2017 layout, missing {', '.join(missing)}")


def coco_root_paths(root: str | None, given: dict[str, str | None], require_given: bool = False
                    ) -> dict[str, str | None]:
    """``given`` (keyed by :class:`Coco2017` file names: train_json, train_images, val_json,
    val_images) with each path left empty taken from the layout under ``root``: explicit paths
    win; no ``root``, ``given`` as it is. Raises ValueError naming every missing file: of the
    layout's files for ``given``'s keys, or with ``require_given`` of the paths returned."""
    if not root:
        return given
    coco = Coco2017(Path(root))
    paths = {name: path or str(getattr(coco, name)) for name, path in given.items()}
    coco.require(*([Path(path) for path in paths.values()] if require_given else
                   [getattr(coco, name) for name in given]))
    return paths
