"""Decode image files ahead of the model in a thread pool (OpenCV releases the GIL while it
decodes), in order, with a bounded number in flight so memory stays flat."""
from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from .images import ImageError, read_image


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
