"""The one way our benchmarks time code: a warm-up, then the median of repeated runs."""
from __future__ import annotations

import statistics
import time
from typing import Callable

import torch


def median_seconds(run: Callable[[], object], repeats: int, device: str) -> float:
    """Median wall time of ``run()`` over ``repeats`` runs after one warm-up (CUDA synchronised)."""
    run()
    times = []
    for _ in range(repeats):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        run()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)
