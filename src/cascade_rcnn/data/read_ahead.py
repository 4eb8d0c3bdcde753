"""Decode image files ahead of the model in a thread pool, and a video's frames in a thread
(OpenCV releases the GIL while it decodes), in order, with a bounded number in flight so memory
stays flat."""
from __future__ import annotations

import queue
import threading
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import numpy as np

from .images import ImageError, read_image
from .video import Frame, VideoError, frames

Item = TypeVar("Item")


def read_images(paths: Iterable[Path], workers: int, ahead: int = 8) -> Iterator[tuple[Path, np.ndarray | ImageError]]:
    """(path, RGB uint8 (H, W, 3) image or the ImageError naming it) for each path, in order.

    ``workers`` threads decode up to ``ahead`` images ahead of the consumer; 0 reads each image
    only when it is asked for, in the calling thread.
    """
    if workers == 0:
        yield from ((path, _read(path)) for path in paths)
        return
    with ThreadPoolExecutor(workers, thread_name_prefix="read-ahead") as pool:
        pending: deque = deque()
        for path in paths:
            pending.append((path, pool.submit(_read, path)))
            if len(pending) > max(ahead, workers):
                done_path, future = pending.popleft()
                yield done_path, future.result()
        while pending:
            done_path, future = pending.popleft()
            yield done_path, future.result()


def _read(path: Path) -> np.ndarray | ImageError:
    try:
        return read_image(path)
    except ImageError as error:
        return error
    except OSError as error:  # e.g. permission denied, an I/O error of the disk
        return ImageError(f"{path}: cannot be read ({error.strerror or error})")


def read_frames(path: Path, workers: int, decode_every: int = 1, ahead: int = 8) -> Iterator[Frame | VideoError]:
    """The items of ``video.frames(path, decode_every)``: with ``workers`` > 0, one thread decodes
    up to ``ahead`` frames ahead of the consumer (a video decodes in order, so one thread is all
    it can use); 0 decodes each frame when it is asked for, in the calling thread."""
    items = frames(path, decode_every)
    yield from items if workers == 0 else _in_thread(items, ahead)


class _Raised:
    def __init__(self, error: BaseException):
        self.error = error


def _in_thread(items: Iterator[Item], ahead: int) -> Iterator[Item]:
    """``items``, produced by a thread up to ``ahead`` ahead; stopping early stops the thread."""
    pending: queue.Queue = queue.Queue(maxsize=ahead)
    stop, end = threading.Event(), object()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                pending.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put(item):
                    break
        except BaseException as error:  # handed to the consumer, raised there
            put(_Raised(error))
        finally:
            if hasattr(items, "close"):
                items.close()  # in this thread: a generator's cleanup (the decoder's release)
            put(end)

    thread = threading.Thread(target=produce, name="read-ahead-video", daemon=True)
    thread.start()
    try:
        while (item := pending.get()) is not end:
            if isinstance(item, _Raised):
                raise item.error
            yield item
    finally:
        stop.set()
        thread.join()
