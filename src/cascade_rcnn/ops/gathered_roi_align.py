"""RoIAlign at inference as weighted gathers: ``F.embedding_bag`` over the channels-last map.

Same sampling as torchvision's ``roi_align(..., sampling_ratio=0, aligned=True)`` (= mmcv's), up
to float rounding (each corner's weight is multiplied out and averaged before the sum). Why:
torchvision's CPU kernel interpolates one channel at a time on one thread; here every output
vector of RoI k, bin (p, q) is

    out[k, p, q, :] = sum_t weight[k, p, q, t] * F[b, y_t, x_t, :]

over the bin's samples x 4 bilinear corners t: a weighted bag of rows of the channels-last map
viewed as a (B * H * W, C) table, which ``F.embedding_bag`` sums on all threads. RoIs are grouped
by their samples per bin (rows, columns), so every bag of a group has the same number of taps.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torchvision.ops import roi_align

from .separable_roi_align import axis_samples, samples_per_bin

# RoIs with more samples per bin than this (boxes far larger than the map) take torchvision's
# kernel: their taps would not fit in memory as a gather.
MAX_SAMPLES_PER_BIN = 64


def gathered_multilevel_roi_align(features: list[torch.Tensor], rois: torch.Tensor, levels: torch.Tensor,
                                  output_size: int, strides: tuple[int, ...]) -> torch.Tensor:
    """(K, 5) RoIs (image index, x1, y1, x2, y2) and their (K,) pyramid levels -> (K, C, P, P)
    features, a channels-last tensor (what the mask convs want; ``flatten`` copies it for the box
    head), in the maps' dtype: bf16/fp16 maps are read as they are, with sample positions and
    weights computed from the float32 RoIs (then rounded to the maps' dtype, as the values they
    weigh). RoIs with non-finite coordinates or no samples give zeros. No gradients."""
    channels = features[0].shape[1]
    out = features[0].new_empty(rois.shape[0], output_size, output_size, channels)
    finite = torch.isfinite(rois).all(dim=1)
    if not bool(finite.all()):
        out[~finite] = 0
    for level, (feature, stride) in enumerate(zip(features, strides)):
        index = torch.nonzero((levels == level) & finite).squeeze(1)
        if index.numel():
            _align_level(feature, rois[index].to(torch.promote_types(rois.dtype, torch.float32)), index,
                         1.0 / stride, out)
    return out.permute(0, 3, 1, 2)


def _align_level(feature: torch.Tensor, rois: torch.Tensor, rows: torch.Tensor, scale: float,
                 out: torch.Tensor) -> None:
    """RoIAlign of ``rois`` on one (B, C, H, W) map, written into ``out[rows]`` (N, P, P, C)."""
    batch, channels, height, width = feature.shape
    size = out.shape[1]
    table = feature.permute(0, 2, 3, 1).reshape(batch * height * width, channels)  # a view if channels-last
    boxes = rois[:, 1:] * scale - 0.5
    starts, lengths = boxes[:, :2], boxes[:, 2:] - boxes[:, :2]  # (x, y) each
    grid_x, grid_y = samples_per_bin(lengths[:, 0], size), samples_per_bin(lengths[:, 1], size)
    group_of = grid_y * (int(grid_x.max()) + 1) + grid_x
    for group in torch.unique(group_of).tolist():
        members = torch.nonzero(group_of == group).squeeze(1)
        gy, gx = int(grid_y[members[0]]), int(grid_x[members[0]])
        if gy <= 0 or gx <= 0:  # an empty RoI: no samples, zeros (as torchvision)
            out.index_fill_(0, rows[members], 0)
            continue
        if gy * gx > MAX_SAMPLES_PER_BIN:
            pooled = roi_align(feature.contiguous().to(rois.dtype), rois[members], size, scale, sampling_ratio=0,
                               aligned=True)  # torchvision's CPU kernel reads float32 maps only
            out.index_copy_(0, rows[members], pooled.permute(0, 2, 3, 1).to(out.dtype))
            continue
        y_low, y_high, y_low_weight, y_high_weight = axis_samples(
            starts[members, 1], lengths[members, 1], size, height, gy)
        x_low, x_high, x_low_weight, x_high_weight = axis_samples(
            starts[members, 0], lengths[members, 0], size, width, gx)
        y_index, y_weight = torch.stack([y_low, y_high], -1), torch.stack([y_low_weight, y_high_weight], -1)
        x_index, x_weight = torch.stack([x_low, x_high], -1), torch.stack([x_low_weight, x_high_weight], -1)
        # (n, P rows, P columns, gy, 2, gx, 2): every sample's four corners, for every bin
        image_offset = rois[members, 0].long() * (height * width)
        index = (image_offset[:, None, None, None, None, None, None] + y_index[:, :, None, :, :, None, None] * width
                 + x_index[:, None, :, None, None, :, :])
        weight = y_weight[:, :, None, :, :, None, None] * x_weight[:, None, :, None, None, :, :]
        taps = gy * gx * 4
        pooled = F.embedding_bag(index.reshape(-1, taps), table,
                                 per_sample_weights=weight.reshape(-1, taps).to(table.dtype), mode="sum")
        out.index_copy_(0, rows[members], pooled.view(members.shape[0], size, size, channels))
