"""RoIAlign from the pyramid level that matches each RoI's size."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import torch
from torch import nn
from torchvision.ops import roi_align

from ..ops.gathered_roi_align import gathered_multilevel_roi_align
from ..ops.separable_roi_align import SEPARABLE_MAX_PIXELS, separable_roi_align

# A 224 px RoI reads P4 (canonical ImageNet size); MMDetection states it as finest_scale=56 on P2.
FINEST_SCALE = 56


def roi_levels(rois: torch.Tensor, num_levels: int) -> torch.Tensor:
    """(K,) pyramid index: floor(log2(sqrt(area) / 56 + 1e-6)) clamped to [0, num_levels - 1].

    rois (K, 5) = (batch index, x1, y1, x2, y2): < 112 px -> P2, < 224 -> P3, < 448 -> P4, else P5.
    """
    scale = torch.sqrt((rois[:, 3] - rois[:, 1]) * (rois[:, 4] - rois[:, 2]))
    levels = torch.floor(torch.log2(scale / FINEST_SCALE + 1e-6))
    return levels.clamp(min=0, max=num_levels - 1).long()


class MultiLevelRoIAlign(nn.Module):
    """(K, 5) RoIs + P2..P5 -> (K, C, size, size) features.

    torchvision's ``roi_align`` with ``sampling_ratio=0`` (adaptive) and ``aligned=True`` equals
    mmcv's RoIAlign bit for bit (spec §2.6). When training on the CPU, small levels use
    ``separable_roi_align`` instead: the same sampling up to float rounding, with a backward
    several times faster than torchvision's single-threaded one. With ``gathered`` (the fast
    path), CPU inference uses ``gathered_multilevel_roi_align``: the same sampling up to float
    rounding, as multi-threaded weighted gathers from the channels-last maps.
    """

    def __init__(self, output_size: int, strides: tuple[int, ...] = (4, 8, 16, 32)):
        super().__init__()
        self.output_size = output_size
        self.strides = strides
        self.gathered = False

    def readable(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        """The maps in the layout this module reads, converted once per image batch rather than
        on every call: as they are for the gathers (channels-last is free), contiguous for
        torchvision's kernel (it would copy a channels-last map on each of its calls)."""
        return features if self._gathers(features) else [f.contiguous() for f in features]

    def _gathers(self, features: list[torch.Tensor]) -> bool:
        return self.gathered and features[0].device.type == "cpu" and not torch.is_grad_enabled()

    def forward(self, features: list[torch.Tensor], rois: torch.Tensor) -> torch.Tensor:
        features = features[:len(self.strides)]
        levels = roi_levels(rois, len(self.strides))
        if torch.onnx.is_in_onnx_export():  # the graph must not depend on RoI counts
            return exported_multilevel_roi_align(features, rois, levels, self.output_size, self.strides)
        if self._gathers(features):
            return gathered_multilevel_roi_align(features, rois, levels, self.output_size, self.strides)
        out = features[0].new_zeros(
            (rois.shape[0], features[0].shape[1], self.output_size, self.output_size))
        if rois.shape[0] == 0:
            return out
        for level, (feature, stride) in enumerate(zip(features, self.strides)):
            index = torch.nonzero(levels == level).squeeze(1)
            if index.numel():
                out[index] = self._align(feature, rois[index], 1.0 / stride).to(out.dtype)
        return out

    def _align(self, feature: torch.Tensor, rois: torch.Tensor, scale: float) -> torch.Tensor:
        # Non-finite RoIs (a diverging run) go to torchvision, whose NaN output the training loop reports.
        separable = (feature.requires_grad and torch.is_grad_enabled() and feature.device.type == "cpu"
                     and feature.shape[-2] * feature.shape[-1] <= SEPARABLE_MAX_PIXELS
                     and bool(torch.isfinite(rois).all()))
        if separable:
            return separable_roi_align(feature, rois, self.output_size, scale)
        if feature.device.type == "cpu":
            # Under autocast the maps may be half precision: RoIAlign samples in the RoIs' float32
            # (torchvision's autocast rule does this on CUDA, not on the CPU).
            return threaded_roi_align(feature.to(rois.dtype), rois, self.output_size, scale)
        return roi_align(feature, rois, self.output_size, scale, sampling_ratio=0, aligned=True)


def exported_multilevel_roi_align(features: list[torch.Tensor], rois: torch.Tensor, levels: torch.Tensor,
                                  output_size: int, strides: tuple[int, ...]) -> torch.Tensor:
    """``MultiLevelRoIAlign`` as the ONNX graph holds it: RoiAlign (opset >= 16 for ``aligned``)
    on each level's RoIs, the pieces concatenated and put back in RoI order with a gather
    (a scatter's shapes would be fixed at tracing time).

    onnxruntime divides by a sample count of zero for a zero-width or zero-height RoI (NaN),
    where torchvision and mmcv give zeros: the NaNs are replaced by those zeros.
    """
    pieces, order = [], []
    for level, (feature, stride) in enumerate(zip(features, strides)):
        index = torch.nonzero(levels == level).squeeze(1)
        pieces.append(roi_align(feature.to(rois.dtype), rois[index], output_size, 1.0 / stride,
                                sampling_ratio=0, aligned=True))
        order.append(index)
    return torch.nan_to_num(torch.cat(pieces)[torch.argsort(torch.cat(order))], nan=0.0)


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
