"""RoIAlign from the pyramid level that matches each RoI's size, and the one place that chooses
which RoIAlign kernel computes it.

Every kernel samples as torchvision's ``roi_align(..., sampling_ratio=0, aligned=True)``, which
equals mmcv's RoIAlign bit for bit: ceil(roi_size / bins) bilinear samples per bin along each
axis, half-pixel coordinates, zeros for samples more than a pixel outside the map.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass

import torch
from torchvision.ops import roi_align

from .compute_path import ComputePath
from .gathered_roi_align import gathered_multilevel_roi_align
from .onnx_forms import exported_multilevel_roi_align
from .separable_roi_align import SEPARABLE_MAX_PIXELS, separable_roi_align
from .threaded_roi_align import threaded_roi_align



class Kernel(enum.Enum):
    EXPORTED = "onnx_forms.exported_multilevel_roi_align"
    GATHERED = "gathered_roi_align.gathered_multilevel_roi_align"
    SEPARABLE = "separable_roi_align.separable_roi_align"
    THREADED = "threaded_roi_align.threaded_roi_align"
    TORCHVISION = "torchvision.ops.roi_align"


def roi_align_kernel(path: ComputePath, feature: torch.Tensor, rois: torch.Tensor) -> Kernel:
    """The kernel that pools ``rois`` (K, 5) from one level's (B, C, H, W) ``feature``.

    | case (first that applies)               | kernel      | why                                    | vs torchvision (tests)        |
    |-----------------------------------------|-------------|----------------------------------------|-------------------------------|
    | ``path.exporting``                      | EXPORTED    | ONNX RoiAlign per level + a gather: no | onnxruntime's kernel; NaN of  |
    |                                         |             | shape depends on the RoI counts        | empty RoIs set to torchvision's 0 |
    | map not on the CPU                      | TORCHVISION | CUDA kernel: fast, autocast-aware      | itself                        |
    | CPU, training (map needs gradients),    | SEPARABLE   | two matrix products; its backward is   | 1e-10 in float64, values and  |
    |   ``path.gathered_roi_align`` (the fast |             | several x faster than torchvision's    | gradients                     |
    |   path), map <= 100x100 px, RoIs finite |             |                                        |                               |
    | CPU, training, the exact path, a larger | THREADED    | torchvision's kernel on all threads    | forward bit-equal; gradients  |
    |   map or non-finite RoIs (a diverging   |             | (its CPU kernel runs on one): the      | 1e-12 in float64 (sum order)  |
    |   run: NaN reported)                    |             | frameworks' training losses bit for bit|                               |
    | CPU, no gradients,                      | GATHERED    | weighted gathers (embedding_bag) from  | 1e-10 in float64; RoIs over 64|
    |   ``path.gathered_roi_align``           |             | the channels-last map, multi-threaded  | samples per bin: torchvision  |
    | CPU, otherwise (the exact path)         | THREADED    | MMDetection's numbers, bit for bit     | bit-equal                     |
    """
    if path.exporting:
        return Kernel.EXPORTED
    if feature.device.type != "cpu":
        return Kernel.TORCHVISION
    if torch.is_grad_enabled() and feature.requires_grad and path.gathered_roi_align:
        small = feature.shape[-2] * feature.shape[-1] <= SEPARABLE_MAX_PIXELS
        return Kernel.SEPARABLE if small and bool(torch.isfinite(rois).all()) else Kernel.THREADED
    if path.gathered_roi_align and not torch.is_grad_enabled():
        return Kernel.GATHERED
    return Kernel.THREADED


@dataclass(frozen=True)
class RoILevelRule:
    """Which pyramid level pools a RoI: ``floor(canonical_level + log2(sqrt(area) / canonical_size + eps))``,
    clamped to the levels read, counted from ``first_level``. MMDetection's (the defaults) states it
    as ``finest_scale=56`` on P2; Detectron2's as a 224 px RoI on level 4 with eps 1e-8, which puts a
    few sizes just below 112 px on another level."""

    canonical_size: float = 56.0
    canonical_level: float = 0.0
    first_level: int = 0
    eps: float = 1e-6


MMDETECTION_LEVELS = RoILevelRule()
DETECTRON2_LEVELS = RoILevelRule(canonical_size=224.0, canonical_level=4.0, first_level=2, eps=1e-8)


def roi_levels(rois: torch.Tensor, num_levels: int, rule: RoILevelRule = MMDETECTION_LEVELS) -> torch.Tensor:
    """(K,) pyramid index of (K, 5) RoIs (batch index, x1, y1, x2, y2) under ``rule``, in
    [0, num_levels - 1]; MMDetection's: < 112 px -> P2, < 224 -> P3, < 448 -> P4, else P5."""
    scale = torch.sqrt((rois[:, 3] - rois[:, 1]) * (rois[:, 4] - rois[:, 2]))
    levels = torch.floor(rule.canonical_level + torch.log2(scale / rule.canonical_size + rule.eps))
    return (levels.clamp(min=rule.first_level, max=rule.first_level + num_levels - 1) - rule.first_level).long()


@dataclass(frozen=True)
class MultiLevelRoIAlign:
    """(K, 5) RoIs + P2..P5 -> (K, C, output_size, output_size) features."""

    output_size: int
    strides: tuple[int, ...] = (4, 8, 16, 32)
    level_rule: RoILevelRule = MMDETECTION_LEVELS

    def readable(self, features: list[torch.Tensor], path: ComputePath) -> list[torch.Tensor]:
        """The maps in the layout the chosen kernel reads, converted once per image batch rather
        than on every call: as they are for the gathers (channels-last is free), contiguous for
        torchvision's kernel (it would copy a channels-last map on each of its calls)."""
        gathers = roi_align_kernel(path, features[0], features[0].new_zeros(0, 5)) is Kernel.GATHERED
        return features if gathers else [f.contiguous() for f in features]

    def __call__(self, features: list[torch.Tensor], rois: torch.Tensor, path: ComputePath) -> torch.Tensor:
        features = features[:len(self.strides)]
        levels = roi_levels(rois, len(self.strides), self.level_rule)
        whole_pyramid = roi_align_kernel(path, features[0], rois)
        if whole_pyramid is Kernel.EXPORTED:
            return exported_multilevel_roi_align(features, rois, levels, self.output_size, self.strides)
        if whole_pyramid is Kernel.GATHERED:
            return gathered_multilevel_roi_align(features, rois, levels, self.output_size, self.strides)
        out = features[0].new_zeros((rois.shape[0], features[0].shape[1], self.output_size, self.output_size))
        for level, (feature, stride) in enumerate(zip(features, self.strides)):
            index = torch.nonzero(levels == level).squeeze(1)
            if index.numel():
                out[index] = _align_level(roi_align_kernel(path, feature, rois[index]), feature, rois[index],
                                          self.output_size, 1.0 / stride).to(out.dtype)
        return out


def _align_level(kernel: Kernel, feature: torch.Tensor, rois: torch.Tensor, output_size: int, scale: float
                 ) -> torch.Tensor:
    if kernel is Kernel.SEPARABLE:
        return separable_roi_align(feature, rois, output_size, scale)
    # bf16/fp16 maps (autocast training, low-precision inference) are sampled in the RoIs' float32:
    # torchvision's kernels take maps of the RoIs' dtype only.
    if kernel is Kernel.THREADED:
        return threaded_roi_align(feature.to(rois.dtype), rois, output_size, scale)
    return roi_align(feature.to(rois.dtype), rois, output_size, scale, sampling_ratio=0, aligned=True)
