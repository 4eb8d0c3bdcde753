"""Predict over files, folders and videos, streamed to disk: resumable, and shardable over
torchrun ranks.

Each image's detections are appended to ``DIR/predictions.jsonl`` (rank r of N under torchrun:
``DIR/predictions.rank{r}.jsonl``) as one JSON object per image, flushed, as soon as they exist:
``{"file_name": ..., "detections": [COCO result records without file_name]}``. At the end, rank
0 writes ``DIR/predictions.json`` (COCO results with ``file_name``, in input order) atomically from
those files, reading one line at a time. A bad input is reported by name and skipped; the others
are still processed.

A video file (``data.video.is_video``) streams one line per processed frame to the same file,
``{"file_name": ..., "frame": ..., "timestamp": ..., "detections": [...]}``, and is drawn to
``DIR/<stem>.annotated.mp4`` (``engine.predict_video``); its frames are not in predictions.json.
Under torchrun each video goes whole to one rank (round-robin over the videos).
"""
from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..data.images import ImageError, list_images
from ..data.read_ahead import read_images
from ..data.video import VideoError, is_video
from ..errors import UserInputError
from ..inference.predictor import CascadeRCNN
from ..outputs.overwrite_guard import refuse_existing, refuse_inputs_in
from ..outputs.visualize import draw
from . import distributed
from .distributed import Context
from .predict_video import predict_frames

PREDICTIONS = "predictions.json"
STREAMS = "predictions*.jsonl"  # every rank's stream file: the mark of a predict output folder
# Read-ahead threads by default, {on CPU, on a GPU}: on the CPU torch's OpenMP threads already take
# every core, and decoding beside them made the model ~8x slower (BENCHMARKS.md); beside a GPU the
# CPU is free to decode the next images.
AUTO_READ_WORKERS = {False: 0, True: 2}
_NAME_PREFIX = '{"file_name": '  # how every stream line starts (json.dumps of our dict)
_FRAME_KEY = ', "frame": '  # what follows the name in a video frame's line
ANNOTATED_SUFFIX = ".annotated.mp4"  # DIR/<stem>.annotated.mp4 per video (.avi where OpenCV cannot write mp4)


@dataclass
class PredictReport:
    """What a run produced (over all ranks): images predicted now, images found already done
    (``--resume``), video frames predicted now and found done, the failures (path, reason), the
    COCO results file (None when the inputs were videos only), the annotated videos written."""

    done: int = 0
    resumed: int = 0
    frames: int = 0
    frames_resumed: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)
    json_path: Path | None = None
    videos: list[Path] = field(default_factory=list)


def expand_inputs(inputs: list[str | Path]
                  ) -> tuple[list[Path], list[Path], list[tuple[str, str]], list[Path]]:
    """Image paths from files and folders (searched for images only), video files, (path,
    reason) for inputs that do not exist, and the predict output folders found inside the input
    folders and left out: a previous run's drawings are never read back as inputs."""
    paths, videos, failures, left_out = [], [], [], []
    for item in inputs:
        item = Path(item)
        found = _input_images(item, left_out) if item.exists() else []
        if not item.exists():
            failures.append((str(item), "no such file or folder"))
        elif item.is_file() and is_video(item):
            videos.append(item)
        elif not found:
            failures.append((str(item), "folder holds no images"))
        else:
            paths.extend(found)
    return paths, videos, failures, left_out


def _input_images(path: Path, left_out: list[Path]) -> list[Path]:
    """``list_images(path)`` without the images under a predict output folder below ``path``
    (appended to ``left_out``)."""
    outputs: dict[Path, bool] = {}

    def in_an_output(image: Path) -> bool:
        folders = [path / parent for parent in image.relative_to(path).parents][:-1]  # below path
        return any(outputs.setdefault(folder, is_predict_output(folder)) for folder in folders)

    found = [image for image in list_images(path) if not in_an_output(image)]
    left_out += sorted(folder for folder, output in outputs.items() if output)
    return found


def is_predict_output(folder: Path) -> bool:
    """Whether ``folder`` holds a predict run's stream file."""
    return bool(_stream_files(folder))


def stream_path(out_dir: Path, context: Context) -> Path:
    """This process's JSON-lines file."""
    return out_dir / (f"predictions.rank{context.rank}.jsonl" if context.distributed else "predictions.jsonl")


def predict_files(model: CascadeRCNN, inputs: list[str | Path], out_dir: str | Path,
                  score_thr: float = 0.3, batch_size: int = 1, draw_pictures: bool = True,
                  show_progress: bool = True, resume: bool = False, read_workers: int | None = None,
                  every: int = 1, context: Context = Context(),
                  predict_options: dict | None = None) -> PredictReport:
    """Run ``model`` on every image under ``inputs`` and every ``every``-th frame of each video
    among them, streaming to ``out_dir`` (see the module docstring); write
    ``out_dir/predictions.json`` (images only), ``out_dir/<stem>.png`` drawings and
    ``out_dir/<stem>.annotated.mp4`` videos (``draw_pictures``).

    ``resume``: skip the images and video frames already in any stream file of ``out_dir`` (the
    final JSON is then the one an uninterrupted run writes; annotated videos are rebuilt from the
    start, the finished frames drawn from their lines). ``read_workers`` threads decode images
    ahead of the model (0: none; None: ``AUTO_READ_WORKERS``); for a video, any number > 0 means
    one thread. Under torchrun (``context`` of several ranks) the images left to do are dealt out
    round-robin over the ranks, the videos likewise, and rank 0 merges. ``predict_options``: more
    keyword arguments of ``model.predict`` for the images and video frames (``tile=``, ``tta=``, ...).

    Refused before anything is written (``WouldOverwrite``): an ``out_dir`` that is or holds an
    input, or one that holds no predict run but a file of the names this run writes.
    """
    if every < 1:
        raise UserInputError(f"every must be at least 1, got {every}")
    if batch_size < 1:
        raise UserInputError(f"batch_size must be at least 1, got {batch_size}")
    out_dir = Path(out_dir)
    paths, videos, failures, left_out = expand_inputs(inputs)
    pictures = picture_names(paths)
    annotated_names = picture_names(videos, ANNOTATED_SUFFIX)
    stream = stream_path(out_dir, context)
    refuse_inputs_in(out_dir, [("", path) for path in [*inputs, *paths, *videos]], "--out")
    if not is_predict_output(out_dir):  # files there are someone else's: never written over
        drawn = [*pictures, *annotated_names] if draw_pictures else []
        refuse_existing([out_dir / name for name in (PREDICTIONS, stream.name, *drawn)],
                        "it is not from a predict run; give a new or empty --out folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    report = PredictReport(failures=failures if context.is_main else [])
    if context.is_main:
        for folder in left_out:
            print(f"note: {folder} left out: a predict output folder (it holds {STREAMS})", file=sys.stderr)
    for path, reason in report.failures:
        print(f"error: {path}: {reason}", file=sys.stderr)
    finished = set(index_streams(out_dir)) if resume else set()
    frames_finished = index_frames(out_dir) if resume else {}
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
    progress = tqdm(total=len(mine), unit="img", desc="predict",
                    disable=not (show_progress and context.is_main and (paths or not videos)))
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
                found = model.predict([image for _, image in batch], score_thr=score_thr, batch_size=batch_size,
                                      **(predict_options or {}))
                for (index, image), detections in zip(batch, found):
                    records = detections.to_coco({}, category_ids)
                    sink.write(json.dumps({"file_name": str(paths[index]), "detections": records}) + "\n")
                    sink.flush()
                    if draw_pictures:
                        draw(image, detections).save(out_dir / pictures[index])
                    done += 1
                    progress.update(1)
                batch = []
        progress.close()
        frames = frames_resumed = 0
        for index in range(context.rank, len(videos), context.world_size):
            video = predict_frames(model, videos[index], sink,
                                   out_dir / annotated_names[index] if draw_pictures else None,
                                   frames_finished.get(str(videos[index]), {}), score_thr=score_thr,
                                   batch_size=batch_size, every=every, read_workers=read_workers,
                                   show_progress=show_progress and context.is_main,
                                   predict_options=predict_options)
            for failure in video.failures:
                report.failures.append((str(videos[index]), failure))
                tqdm.write(f"error: {failure}", file=sys.stderr)
            frames, frames_resumed = frames + video.done, frames_resumed + video.resumed
            report.videos += [video.annotated] if video.annotated else []
    report.done, report.frames, report.frames_resumed = distributed.sum_ints([done, frames, frames_resumed], context)
    report.resumed = len(paths) - len(left)
    report.failures = distributed.gather_lists(report.failures, context)
    report.videos = distributed.gather_lists(report.videos, context)
    distributed.barrier(context)  # every rank's stream is complete
    if paths or not videos:
        report.json_path = out_dir / PREDICTIONS
        if context.is_main:
            write_predictions(out_dir, paths, report.json_path)
    distributed.barrier(context)
    return report


def predict_video(model: CascadeRCNN, path: str | Path, out_dir: str | Path, score_thr: float = 0.3,
                  batch_size: int = 1, every: int = 1, draw_video: bool = True, show_progress: bool = True,
                  resume: bool = False, read_workers: int | None = None) -> PredictReport:
    """Run ``model`` on every ``every``-th frame of one video: ``out_dir/predictions.jsonl``, one
    line per processed frame (frame index, timestamp in seconds, COCO detections), and
    ``out_dir/<stem>.annotated.mp4`` (``draw_video``); ``resume`` as in ``predict_files``.

    A video that cannot be read, holds no frame or breaks mid-way is not raised: it is in the
    report's ``failures`` (after a break the frames before it are kept).
    """
    if Path(path).is_file() and not is_video(path):
        raise VideoError(f"{path}: not a video file")
    return predict_files(model, [path], out_dir, score_thr=score_thr, batch_size=batch_size,
                         draw_pictures=draw_video, show_progress=show_progress, resume=resume,
                         read_workers=read_workers, every=every)


def picture_names(paths: list[Path], suffix: str = ".png") -> list[str]:
    """``<stem><suffix>`` per path, ``<stem>_1<suffix>`` ... for repeated stems (a function of the
    whole list, so every rank and every resumed run names a picture the same)."""
    used: set[str] = set()
    names = []
    for path in paths:
        name, counter = f"{path.stem}{suffix}", 1
        while name in used:
            name, counter = f"{path.stem}_{counter}{suffix}", counter + 1
        used.add(name)
        names.append(name)
    return names


def index_streams(out_dir: Path) -> dict[str, tuple[Path, int]]:
    """Image file_name -> (stream file, byte offset of its line), over every stream file of
    ``out_dir``. A line cut short by a kill (no final newline) is not counted; the first line of
    a name wins."""
    index: dict[str, tuple[Path, int]] = {}
    for name, frame, stream, offset in _stream_lines(out_dir):
        if frame is None:
            index.setdefault(name, (stream, offset))
    return index


def index_frames(out_dir: Path) -> dict[str, dict[int, tuple[Path, int]]]:
    """Video file_name -> {frame index -> (stream file, byte offset of its line)}, as
    ``index_streams`` for images."""
    index: dict[str, dict[int, tuple[Path, int]]] = {}
    for name, frame, stream, offset in _stream_lines(out_dir):
        if frame is not None:
            index.setdefault(name, {}).setdefault(frame, (stream, offset))
    return index


def _stream_lines(out_dir: Path) -> Iterator[tuple[str, int | None, Path, int]]:
    """(file_name, frame index or None for an image, stream file, byte offset) of every complete
    line of every stream file, read from the start of the line only."""
    decoder = json.JSONDecoder()
    for stream in _stream_files(out_dir):
        with open(stream, "rb") as lines:
            offset = 0
            for raw in lines:
                if raw.endswith(b"\n") and raw.startswith(_NAME_PREFIX.encode()):
                    text = raw.decode("utf-8")
                    name, end = decoder.raw_decode(text, len(_NAME_PREFIX))
                    is_frame = text.startswith(_FRAME_KEY, end)
                    frame = decoder.raw_decode(text, end + len(_FRAME_KEY))[0] if is_frame else None
                    yield name, frame, stream, offset
                offset += len(raw)


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
    return sorted(out_dir.glob(STREAMS))


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
