"""Video files: their frames as RGB uint8 (H, W, 3) arrays, and writing a video atomically.

Any container and codec this OpenCV build decodes (its FFmpeg backend: .mp4, .avi, .mov, .mkv,
.webm, ...). A problem is one ``VideoError`` naming the file: not a readable video, no frame at
all, or decoding that stops before the frame count the file's header announces (a truncated
download, a damaged frame), in which case the frames before it are still delivered.
"""
from __future__ import annotations

import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..errors import CascadeRCNNError
from .images import IMAGE_SUFFIXES

# FFmpeg logs its own lines for a damaged file ("moov atom not found", "overread 8") beside the
# one line we print; quiet it unless the user set a level. Read when OpenCV first opens a video.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")

VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv", ".flv", ".ts",
                  ".mts", ".m2ts", ".3gp", ".ogv")
# Frames per second written when the file states none (some streams): a common camera rate.
FALLBACK_FPS = 30.0
# What ``VideoFileWriter`` tries, in order: MPEG-4 Part 2 in .mp4 (every player reads it, and
# OpenCV's FFmpeg writes it without extra libraries), then Motion-JPEG in .avi, which OpenCV
# writes even without FFmpeg.
WRITE_FORMATS = ((".mp4", "mp4v"), (".avi", "MJPG"))


class VideoError(CascadeRCNNError, ValueError):
    """A video that cannot be read, or stopped decoding; the message names the file."""


@dataclass(frozen=True)
class VideoInfo:
    """What a video's header says: frames per second (``FALLBACK_FPS`` if it states none) and
    the frame count (0 when it states none; an estimate for some containers)."""

    fps: float
    frame_count: int


@dataclass(frozen=True)
class Frame:
    """One frame: ``index`` (0-based, in decoding order), ``timestamp`` (seconds from the start,
    as the file states it), ``image`` RGB uint8 (H, W, 3), or None for a frame skipped undecoded."""

    index: int
    timestamp: float
    image: np.ndarray | None


def is_video(path: str | Path) -> bool:
    """Whether a file is to be read as a video: by its suffix, or, for a suffix that is neither
    an image's nor a video's, when OpenCV has no image reader for it but opens it as a video."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in VIDEO_SUFFIXES:
        return True
    if suffix in IMAGE_SUFFIXES or not path.is_file() or cv2.haveImageReader(str(path)):
        return False
    capture = cv2.VideoCapture(str(path))
    try:
        return capture.isOpened()
    finally:
        capture.release()


def video_info(path: str | Path) -> VideoInfo:
    """The header's fps and frame count; raises VideoError naming the file if it cannot be opened."""
    capture = _open(Path(path))
    try:
        return _info(capture)
    finally:
        capture.release()


def frames(path: str | Path, decode_every: int = 1) -> Iterator[Frame | VideoError]:
    """Every frame of the video at ``path``, in order; a frame whose index is not a multiple of
    ``decode_every`` is skipped undecoded (``image`` None). The last item is a VideoError when the
    file cannot be opened, holds no frame, or stops decoding before the frame count its header
    announces (after the frames decoded before that point)."""
    path = Path(path)
    try:
        capture = _open(path)
    except VideoError as error:
        yield error
        return
    index, announced, failure = 0, _info(capture).frame_count, None
    try:
        fps = capture.get(cv2.CAP_PROP_FPS)
        while capture.grab():
            image = None
            if index % decode_every == 0:
                ok, bgr = capture.retrieve()
                if not ok or bgr is None:
                    break
                image = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB) if bgr.ndim == 3 else cv2.cvtColor(bgr, cv2.COLOR_GRAY2RGB)
            yield Frame(index, _timestamp(capture, index, fps), image)
            index += 1
    except cv2.error as error:
        failure = VideoError(f"{path}: decoding failed at frame {index} ({_short(error)})")
    finally:
        capture.release()
    if failure is not None:
        yield failure
    elif index == 0:
        yield VideoError(f"{path}: holds no frames" if announced <= 0 else
                         f"{path}: no frame could be decoded (corrupt, or a codec this OpenCV lacks)")
    elif index < announced:
        yield VideoError(f"{path}: decoding stopped at frame {index} of the {announced} its header announces "
                         f"(truncated or corrupt)")


class VideoFileWriter:
    """RGB frames written to a video through a temporary file beside it, which replaces the
    final file only in ``finish()``; ``discard()`` removes it. The writer opens on the first
    frame (its size is the video's; a later frame of another size is resized to it).

    ``path``'s suffix is the preferred container; where OpenCV cannot write ``WRITE_FORMATS[0]``,
    the next format is used and ``path`` changes its suffix (read it after the first frame).
    """

    def __init__(self, path: str | Path, fps: float):
        self.path = Path(path)
        self.fps = fps
        self._writer: cv2.VideoWriter | None = None
        self._temporary: Path | None = None
        self._size: tuple[int, int] | None = None  # (width, height)
        self.frames = 0

    def write(self, image: np.ndarray) -> None:
        """Append one RGB uint8 (H, W, 3) frame."""
        if self._writer is None:
            self._open((image.shape[1], image.shape[0]))
        if (image.shape[1], image.shape[0]) != self._size:
            image = cv2.resize(image, self._size, interpolation=cv2.INTER_AREA)
        self._writer.write(cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        self.frames += 1

    def finish(self) -> Path | None:
        """Close and move the video into place; the final path, or None if no frame was written."""
        if self._writer is None:
            return None
        self._writer.release()
        self._writer = None
        os.replace(self._temporary, self.path)
        return self.path

    def discard(self) -> None:
        """Close and remove the temporary file (after an interruption)."""
        if self._writer is not None:
            self._writer.release()
            self._writer = None
        if self._temporary is not None:
            self._temporary.unlink(missing_ok=True)

    def _open(self, size: tuple[int, int]) -> None:
        for suffix, codec in WRITE_FORMATS:
            final = self.path.with_suffix(suffix)
            temporary = final.with_name(f"{final.stem}.partial{suffix}")  # FFmpeg picks the container by suffix
            with _quiet_opencv():
                writer = cv2.VideoWriter(str(temporary), cv2.VideoWriter_fourcc(*codec), self.fps, size)
            if writer.isOpened():
                self.path, self._temporary, self._writer, self._size = final, temporary, writer, size
                return
            writer.release()
            temporary.unlink(missing_ok=True)
        raise VideoError(f"{self.path}: OpenCV cannot write a video here "
                         f"({' or '.join(f'{codec} in {suffix}' for suffix, codec in WRITE_FORMATS)})")


def _open(path: Path) -> cv2.VideoCapture:
    if not path.is_file():
        raise VideoError(f"{path}: no such file")
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        capture.release()
        raise VideoError(f"{path}: not a readable video (corrupt, empty or unsupported format)")
    return capture


def _info(capture: cv2.VideoCapture) -> VideoInfo:
    fps = capture.get(cv2.CAP_PROP_FPS)
    count = capture.get(cv2.CAP_PROP_FRAME_COUNT)
    return VideoInfo(fps if math.isfinite(fps) and fps > 0 else FALLBACK_FPS,
                     int(count) if math.isfinite(count) and count > 0 else 0)


def _timestamp(capture: cv2.VideoCapture, index: int, fps: float) -> float:
    """Seconds: the decoded frame's own time stamp, or index / fps where the backend has none."""
    milliseconds = capture.get(cv2.CAP_PROP_POS_MSEC)
    if math.isfinite(milliseconds) and milliseconds >= 0:
        return round(milliseconds / 1000, 6)
    return round(index / fps, 6) if fps > 0 else 0.0


def _short(error: cv2.error) -> str:
    """OpenCV's own message, without the source file and function it carries."""
    return getattr(error, "err", None) or str(error).strip().splitlines()[-1]


@contextmanager
def _quiet_opencv():
    """OpenCV's log lines off (a writer that fails to open logs why; we try the next format)."""
    logging = getattr(getattr(cv2, "utils", None), "logging", None)
    if logging is None:
        yield
        return
    level = logging.getLogLevel()
    logging.setLogLevel(logging.LOG_LEVEL_SILENT)
    try:
        yield
    finally:
        logging.setLogLevel(level)
