"""torchvision's CPU RoIAlign split over threads, forward and backward (bit-equal forward)."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import torch
from torchvision.ops import roi_align

_POOL: tuple[int, ThreadPoolExecutor] | None = None  # (workers, pool)


def threaded_roi_align(feature: torch.Tensor, rois: torch.Tensor, output_size: int, scale: float
                       ) -> torch.Tensor:
    """torchvision's ``roi_align`` (aligned, adaptive sampling) with the RoIs split over
    ``torch.get_num_threads()`` threads, forward and backward.

    Its CPU kernels run on one thread (and release the GIL), so chunks of RoIs run in parallel.
    Forward: every RoI is computed by the same kernel, bit for bit the single call's values.
    Backward: each chunk's gradient of the map is computed in its thread and the chunks are
    summed in order (equal to the single call's up to float summation order).
    """
    workers = torch.get_num_threads()
    if workers < 2 or rois.shape[0] < 2 * workers:
        return roi_align(feature, rois, output_size, scale, sampling_ratio=0, aligned=True)
    return _ThreadedRoIAlign.apply(feature, rois, output_size, scale, workers)


def _thread_pool(workers: int) -> ThreadPoolExecutor:
    global _POOL
    if _POOL is None or _POOL[0] != workers:
        if _POOL is not None:
            _POOL[1].shutdown(wait=False)
        _POOL = (workers, ThreadPoolExecutor(workers, thread_name_prefix="roi_align"))
    return _POOL[1]


class _ThreadedRoIAlign(torch.autograd.Function):
    @staticmethod
    def forward(ctx, feature: torch.Tensor, rois: torch.Tensor, output_size: int, scale: float, workers: int
                ) -> torch.Tensor:
        ctx.save_for_backward(rois)
        ctx.settings = (output_size, scale, workers, tuple(feature.shape))

        def align(part: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():  # worker threads start with gradients on; this graph is ours
                return torch.ops.torchvision.roi_align(feature, part, scale, output_size, output_size, 0, True)

        return torch.cat(list(_thread_pool(workers).map(align, rois.chunk(workers))))

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        rois, = ctx.saved_tensors
        output_size, scale, workers, shape = ctx.settings
        chunks = rois.chunk(workers)
        grads = grad.split([chunk.shape[0] for chunk in chunks])

        def align_backward(pair: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
            part, part_grad = pair
            return torch.ops.torchvision._roi_align_backward(part_grad.contiguous(), part, scale, output_size,
                                                             output_size, *shape, 0, True)

        pieces = list(_thread_pool(workers).map(align_backward, zip(chunks, grads)))
        total = pieces[0]
        for piece in pieces[1:]:
            total += piece
        return total, None, None, None, None
