"""One video through the model: a JSON line per processed frame into an open stream file, and an
annotated copy of the video.

A frame's line: ``{"file_name": VIDEO, "frame": INDEX, "timestamp": SECONDS, "detections": [COCO
result records without file_name]}``. The annotated video has every frame of the input at its
fps and size, drawn from those records (not from the model's raw output), so that a resumed run,
which draws its finished frames from the stream file, writes the same video as an uninterrupted
one. With ``every`` > 1, the frames between two processed frames carry the detections of the
processed frame before them.
"""
from __future__ import annotations

import json
import math
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import numpy as np
import torch
from pycocotools import mask as mask_utils
from tqdm import tqdm

from ..data.read_ahead import read_frames
from ..data.video import Frame, VideoError, VideoFileWriter, video_info
from ..inference.predictor import CascadeRCNN
from ..outputs.detections import Detections
from ..outputs.visualize import draw


@dataclass
class VideoReport:
    """One video's run: frames through the model now, frames found done in the stream already,
    the problems (one line each, naming the file), the annotated video written."""

    done: int = 0
    resumed: int = 0
    failures: list[str] = field(default_factory=list)
    annotated: Path | None = None


def frame_line(path: Path, frame: Frame, records: list[dict]) -> str:
    """The stream line of one frame (``file_name`` first: ``predict.index_streams`` reads it)."""
    return json.dumps({"file_name": str(path), "frame": frame.index, "timestamp": frame.timestamp,
                       "detections": records}) + "\n"


def detections_from_records(records: list[dict], image_size: tuple[int, int], label_of: dict[int, int],
                            class_names: tuple[str, ...]) -> Detections:
    """``Detections`` back from COCO result records (``Detections.to_coco``'s inverse, up to its
    rounding): ``label_of`` maps category id -> 0-based label; image_size (H, W)."""
    boxes = torch.tensor([[x, y, x + w, y + h] for x, y, w, h in (r["bbox"] for r in records)],
                         dtype=torch.float32).reshape(-1, 4)
    masks = None
    if records and "segmentation" in records[0]:
        masks = torch.from_numpy(mask_utils.decode([r["segmentation"] for r in records])).permute(2, 0, 1).bool()
    return Detections(boxes, torch.tensor([r["score"] for r in records], dtype=torch.float32),
                      torch.tensor([label_of[r["category_id"]] for r in records], dtype=torch.int64),
                      tuple(class_names), image_size, masks)


@dataclass
class _Pending:
    """A decoded frame on its way to the annotated video: ``records`` None until its batch ran
    (``wanted``: a frame the model sees; the others take the records before them)."""

    frame: Frame
    wanted: bool
    records: list[dict] | None = None


def predict_frames(model: CascadeRCNN, path: Path, sink: TextIO, annotated: Path | None,
                   finished: dict[int, tuple[Path, int]], score_thr: float = 0.3, batch_size: int = 1,
                   every: int = 1, read_workers: int = 0, show_progress: bool = True,
                   predict_options: dict | None = None) -> VideoReport:
    """Run ``model`` on every ``every``-th frame of the video at ``path`` (frames 0, every, 2 every,
    ...), ``batch_size`` frames per call, appending each frame's line to ``sink`` (flushed) as soon
    as it exists; frames in ``finished`` (index -> (stream file, byte offset of its line)) are not
    run again. ``annotated``: where to write the annotated video (None: none), atomically: a
    temporary file beside it replaces it at the end, or is removed if the run is interrupted.
    ``predict_options``: more keyword arguments of ``model.predict`` (``tile=``, ``tta=``, ...).

    A video that cannot be read, holds no frame, or breaks mid-way is a failure naming it; the
    frames before a break are kept (their lines, and the annotated video up to there).
    """
    report = VideoReport()
    try:
        info = video_info(path)
    except VideoError as error:
        report.failures.append(str(error))
        return report
    category_ids = [model.config.category_id(label) for label in range(model.config.num_classes)]
    label_of = {category: label for label, category in enumerate(category_ids)}
    writer = VideoFileWriter(annotated, info.fps) if annotated is not None else None
    recorded = _StreamLines()
    pending: deque[_Pending] = deque()  # frames waiting for a batch before (or including) them, in order
    batch: list[_Pending] = []
    held: list[dict] = []  # the records of the last processed frame written
    progress = tqdm(total=math.ceil(info.frame_count / every) or None, unit="frame", desc=path.name,
                    disable=not show_progress)

    def run_batch() -> None:
        images = [entry.frame.image for entry in batch]
        found = model.predict(images, score_thr=score_thr, batch_size=batch_size, **(predict_options or {}))
        for entry, detections in zip(batch, found, strict=True):
            entry.records = detections.to_coco({}, category_ids)
            sink.write(frame_line(path, entry.frame, entry.records))
            sink.flush()
            report.done += 1
            progress.update(1)
        batch.clear()

    def write_ready() -> None:
        nonlocal held, writer
        while pending and not (pending[0].wanted and pending[0].records is None):
            entry = pending.popleft()
            held = entry.records if entry.records is not None else held
            image = entry.frame.image
            if held:
                image = np.asarray(draw(image, detections_from_records(held, image.shape[:2], label_of,
                                                                       model.class_names)))
            try:
                writer.write(image)
            except VideoError as error:  # cannot write any video here: keep predicting without one
                report.failures.append(str(error))
                writer.discard()
                writer = None
                pending.clear()

    seen = 0
    items = read_frames(path, read_workers, decode_every=1 if writer else every)
    try:
        for item in items:
            if isinstance(item, VideoError):
                report.failures.append(f"{item}; the frames before it are kept" if seen else str(item))
                break
            seen += 1
            entry = _Pending(item, item.index % every == 0)
            if entry.wanted and item.index in finished:
                if writer:
                    entry.records = recorded.detections(*finished[item.index])
                report.resumed += 1
                progress.update(1)
            elif entry.wanted:
                batch.append(entry)
            if writer:
                pending.append(entry)
            if len(batch) == batch_size:
                run_batch()
            if writer:
                write_ready()
        if batch:
            run_batch()
        if writer:
            write_ready()
            report.annotated = writer.finish()
    except BaseException:
        if writer:
            writer.discard()
        raise
    finally:
        items.close()  # stops the decoding thread now, not when an exception's traceback is freed
        progress.close()
        recorded.close()
    return report


class _StreamLines:
    """Reads finished lines back from the stream files, keeping each file open."""

    def __init__(self):
        self._handles: dict[Path, TextIO] = {}

    def detections(self, stream: Path, offset: int) -> list[dict]:
        handle = self._handles.get(stream) or self._handles.setdefault(stream, open(stream, encoding="utf-8"))
        handle.seek(offset)
        return json.loads(handle.readline())["detections"]

    def close(self) -> None:
        for handle in self._handles.values():
            handle.close()
