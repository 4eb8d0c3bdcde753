"""Predict over files and folders, streamed to disk: resumable, and shardable over torchrun ranks.

Each image's detections are appended to ``DIR/predictions.jsonl`` (rank r of N under torchrun:
``DIR/predictions.rank{r}.jsonl``) as one JSON object per image, flushed, as soon as they exist:
``{"file_name": ..., "detections": [COCO result records without file_name]}``. At the end, rank
0 writes ``DIR/predictions.json`` (COCO results with ``file_name``, in input order) atomically from
those files, reading one line at a time. A bad input is reported by name and skipped; the others
are still processed.
"""
from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..data.images import ImageError, list_images
from ..data.read_ahead import read_images
from ..inference.predictor import CascadeRCNN
from ..outputs.visualize import draw
from . import distributed
from .distributed import Context

PREDICTIONS = "predictions.json"
# Read-ahead threads by default, {on CPU, on a GPU}: on the CPU torch's OpenMP threads already take
# every core, and decoding beside them made the model ~8x slower (BENCHMARKS.md); beside a GPU the
# CPU is free to decode the next images.
AUTO_READ_WORKERS = {False: 0, True: 2}
_NAME_PREFIX = '{"file_name": '  # how every stream line starts (json.dumps of our dict)


@dataclass
class PredictReport:
    """What a run produced (over all ranks): images predicted now, images found already done
    (``--resume``), the failures (path, reason), the output."""

    done: int = 0
    resumed: int = 0
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


def stream_path(out_dir: Path, context: Context) -> Path:
    """This process's JSON-lines file."""
    return out_dir / (f"predictions.rank{context.rank}.jsonl" if context.distributed else "predictions.jsonl")


def predict_files(model: CascadeRCNN, inputs: list[str | Path], out_dir: str | Path,
                  score_thr: float = 0.3, batch_size: int = 1, draw_pictures: bool = True,
                  show_progress: bool = True, resume: bool = False, read_workers: int | None = None,
                  context: Context = Context()) -> PredictReport:
    """Run ``model`` on every image under ``inputs``, streaming to ``out_dir`` (see the module
    docstring); write ``out_dir/predictions.json`` and ``out_dir/<stem>.png`` drawings.

    ``resume``: skip the images already in any stream file of ``out_dir`` (the final JSON is then
    the one an uninterrupted run writes). ``read_workers`` threads decode images ahead of the model
    (0: none; None: ``AUTO_READ_WORKERS``). Under torchrun (``context`` of several ranks) the
    images left to do are dealt out round-robin over the ranks and rank 0 merges.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths, failures = expand_inputs(inputs)
    report = PredictReport(failures=failures if context.is_main else [])
    for path, reason in report.failures:
        print(f"error: {path}: {reason}", file=sys.stderr)
    pictures = picture_names(paths)
    stream = stream_path(out_dir, context)
    finished = set(index_streams(out_dir)) if resume else set()
    distributed.barrier(context)  # every rank has read the same finished set before anyone writes
    if resume:
        _drop_partial_line(stream)
    elif context.is_main:
        for stale in _stream_files(out_dir):
            if stale.name != stream.name and not _owned_by_a_rank(stale.name, context.world_size):
                stale.unlink()
    left = [i for i, path in enumerate(paths) if str(path) not in finished]
    mine = left[context.rank::context.world_size]
    category_ids = [model.config.category_id(label) for label in range(model.config.num_classes)]
    if read_workers is None:
        read_workers = AUTO_READ_WORKERS[model.device.type == "cuda"]
    progress = tqdm(total=len(mine), unit="img", disable=not (show_progress and context.is_main), desc="predict")
    with open(stream, "a" if resume else "w", encoding="utf-8") as sink:
        done = 0
        batch: list[tuple[int, np.ndarray]] = []  # (index into paths, RGB image)
        for position, (path, image) in enumerate(read_images((paths[i] for i in mine), read_workers)):
            if isinstance(image, ImageError):
                report.failures.append((str(path), str(image)))
                tqdm.write(f"error: {image}", file=sys.stderr)
                progress.update(1)
            else:
                batch.append((mine[position], image))
            if batch and (len(batch) == batch_size or position == len(mine) - 1):
                for (index, image), detections in zip(batch, model.predict([image for _, image in batch],
                                                                           score_thr=score_thr, batch_size=batch_size)):
                    records = detections.to_coco({}, category_ids)
                    sink.write(json.dumps({"file_name": str(paths[index]), "detections": records}) + "\n")
                    sink.flush()
                    if draw_pictures:
                        draw(image, detections).save(out_dir / pictures[index])
                    done += 1
                    progress.update(1)
                batch = []
    progress.close()
    report.done, report.resumed = sum(distributed.sum_ints([done], context)), len(paths) - len(left)
    report.failures = distributed.gather_lists(report.failures, context)
    distributed.barrier(context)  # every rank's stream is complete
    report.json_path = out_dir / PREDICTIONS
    if context.is_main:
        write_predictions(out_dir, paths, report.json_path)
    distributed.barrier(context)
    return report


def picture_names(paths: list[Path]) -> list[str]:
    """``<stem>.png`` per path, ``<stem>_1.png`` ... for repeated stems (a function of the whole
    list, so every rank and every resumed run names a picture the same)."""
    used: set[str] = set()
    names = []
    for path in paths:
        name, counter = f"{path.stem}.png", 1
        while name in used:
            name, counter = f"{path.stem}_{counter}.png", counter + 1
        used.add(name)
        names.append(name)
    return names


def index_streams(out_dir: Path) -> dict[str, tuple[Path, int]]:
    """file_name -> (stream file, byte offset of its line), over every stream file of ``out_dir``.
    A line cut short by a kill (no final newline) is not counted; the first line of a name wins."""
    index: dict[str, tuple[Path, int]] = {}
    decoder = json.JSONDecoder()
    for stream in _stream_files(out_dir):
        with open(stream, "rb") as lines:
            offset = 0
            for raw in lines:
                if raw.endswith(b"\n") and raw.startswith(_NAME_PREFIX.encode()):
                    name = decoder.raw_decode(raw.decode("utf-8"), len(_NAME_PREFIX))[0]
                    index.setdefault(name, (stream, offset))
                offset += len(raw)
    return index


def write_predictions(out_dir: Path, paths: list[Path], json_path: Path) -> None:
    """The COCO results of ``paths`` (in that order) from the stream files, written atomically
    one image at a time."""
    index = index_streams(out_dir)
    temporary = json_path.with_name(json_path.name + ".tmp")
    handles: dict[Path, object] = {}
    try:
        with open(temporary, "w", encoding="utf-8") as out:
            out.write("[")
            first = True
            for path in paths:
                if str(path) not in index:
                    continue  # failed to read
                stream, offset = index[str(path)]
                handle = handles.get(stream) or handles.setdefault(stream, open(stream, encoding="utf-8"))
                handle.seek(offset)
                line = json.loads(handle.readline())
                for record in line["detections"]:
                    out.write(("" if first else ", ") + json.dumps({"file_name": line["file_name"], **record}))
                    first = False
            out.write("]")
    finally:
        for handle in handles.values():
            handle.close()
    os.replace(temporary, json_path)


def _stream_files(out_dir: Path) -> list[Path]:
    return sorted(out_dir.glob("predictions*.jsonl"))


def _owned_by_a_rank(name: str, world_size: int) -> bool:
    return world_size > 1 and name in {f"predictions.rank{r}.jsonl" for r in range(world_size)}


def _drop_partial_line(stream: Path) -> None:
    """Cut a last line left unfinished by a kill, so that appending starts on a fresh line."""
    if not stream.is_file():
        return
    with open(stream, "rb+") as f:
        data_end = f.seek(0, os.SEEK_END)
        if data_end == 0:
            return
        position = data_end
        while position > 0:
            step = min(65536, position)
            f.seek(position - step)
            chunk = f.read(step)
            newline = chunk.rfind(b"\n")
            if newline >= 0:
                f.truncate(position - step + newline + 1)
                return
            position -= step
        f.truncate(0)
