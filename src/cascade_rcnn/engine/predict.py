"""Predict over files and folders: COCO-format JSON + one drawn picture per image.

A bad input is reported by name and skipped; the others are still processed.
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from ..data.images import ImageError, list_images, read_image
from ..models.detector import CascadeRCNN
from ..visualize import draw


@dataclass
class PredictReport:
    """What a run produced: number of images done, the failures (path, reason), the outputs."""

    done: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)
    json_path: Path | None = None


def expand_inputs(inputs: list[str | Path]) -> tuple[list[Path], list[tuple[str, str]]]:
    """Image paths from files and folders, plus (path, reason) for inputs that do not exist."""
    paths, failures = [], []
    for item in inputs:
        item = Path(item)
        found = list_images(item) if item.exists() else []
        if not item.exists():
            failures.append((str(item), "no such file or folder"))
        elif not found:
            failures.append((str(item), "folder holds no images"))
        else:
            paths.extend(found)
    return paths, failures


def predict_files(model: CascadeRCNN, inputs: list[str | Path], out_dir: str | Path,
                  score_thr: float = 0.3, batch_size: int = 1, draw_pictures: bool = True,
                  show_progress: bool = True) -> PredictReport:
    """Run ``model`` on every image under ``inputs``; write ``out_dir/predictions.json`` (COCO
    results with ``file_name``) and ``out_dir/<stem>.png`` drawings."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths, failures = expand_inputs(inputs)
    report = PredictReport(failures=failures)
    for path, reason in failures:
        print(f"error: {path}: {reason}", file=sys.stderr)
    records: list[dict] = []
    used_names: set[str] = set()
    category_ids = [model.config.category_id(label) for label in range(model.config.num_classes)]
    progress = tqdm(total=len(paths), unit="img", disable=not show_progress, desc="predict")
    for start in range(0, len(paths), max(batch_size, 1)):
        chunk, images = [], []
        for path in paths[start:start + batch_size]:
            try:
                images.append(read_image(path))
                chunk.append(path)
            except ImageError as error:
                report.failures.append((str(path), str(error)))
                tqdm.write(f"error: {error}", file=sys.stderr)
                progress.update(1)
        if not chunk:
            continue
        for path, image, detections in zip(chunk, images, model.predict(images, score_thr=score_thr,
                                                                         batch_size=batch_size)):
            records.extend(detections.to_coco({"file_name": str(path)}, category_ids))
            if draw_pictures:
                draw(image, detections).save(out_dir / _unique_name(path, used_names))
            report.done += 1
            progress.update(1)
    progress.close()
    report.json_path = out_dir / "predictions.json"
    temporary = report.json_path.with_suffix(".json.tmp")
    temporary.write_text(json.dumps(records))
    temporary.replace(report.json_path)
    return report


def _unique_name(path: Path, used: set[str]) -> str:
    name, counter = f"{path.stem}.png", 1
    while name in used:
        name, counter = f"{path.stem}_{counter}.png", counter + 1
    used.add(name)
    return name
