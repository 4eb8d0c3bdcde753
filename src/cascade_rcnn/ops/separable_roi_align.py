"""RoIAlign as two matrix products, for training on small feature maps.

Same sampling as torchvision's ``roi_align(..., sampling_ratio=0, aligned=True)`` (= mmcv's), up
to float rounding. Why: torchvision's CPU backward scatters one value at a time on one thread and
recomputes the bilinear weights for every channel - a third of a small model's training step.
Bilinear sampling is separable, so for RoI k on image b:

    out[k, c] = Wy[k] @ F[b, c] @ Wx[k]^T        Wy[k]: (P, H), Wx[k]: (P, W)

where row p of Wy[k] holds the bilinear weights of bin p's sample rows, averaged over the bin's
samples (and likewise Wx for columns); autograd's backward is then matrix products too. The
cost grows with H x W, so it only pays on small maps (``SEPARABLE_MAX_PIXELS``).
"""
from __future__ import annotations

import torch

SEPARABLE_MAX_PIXELS = 100 * 100  # feature maps up to this size use the separable form in training


def axis_samples(start: torch.Tensor, length: torch.Tensor, bins: int, extent: int, grid_size: int
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """torchvision's bilinear samples along one axis: (low index, high index, low weight, high
    weight), each (K, bins, grid_size), for sample i of bin p of RoI k.

    start, length: (K,) RoI start and length on this axis in feature pixels (aligned, i.e.
    already shifted by -0.5). Each bin takes ceil(length / bins) samples, as torchvision does;
    samples past a RoI's own count (``grid_size`` is the largest) and samples outside the map
    by more than a pixel get zero weights. Weights are divided by the RoI's sample count, so
    summing over samples averages them.
    """
    grid = samples_per_bin(length, bins).to(start.dtype)[:, None, None]
    bin_size = length / bins
    bin_index = torch.arange(bins, dtype=start.dtype, device=start.device)[None, :, None]
    sample = torch.arange(grid_size, dtype=start.dtype, device=start.device)[None, None, :]
    bin_size = bin_size[:, None, None]
    samples = grid.clamp(min=1)  # divisor; RoIs with no samples get zero weights through `valid`
    # torchvision's sample position: start + p * bin + (i + 0.5) * bin / grid
    coords = start[:, None, None] + bin_index * bin_size + (sample + 0.5) * bin_size / samples
    valid = (sample < grid) & (coords >= -1.0) & (coords <= extent)  # outside by > 1 px: zero
    coords = coords.clamp(min=0)
    low = coords.floor()
    at_edge = low >= extent - 1  # the last row/column: no interpolation
    low = torch.where(at_edge, torch.full_like(low, extent - 1), low)
    high_weight = torch.where(at_edge, torch.zeros_like(coords), coords - low)
    scale = valid / samples
    low_index = low.long()
    high_index = torch.where(at_edge, low_index, low_index + 1)
    return low_index, high_index, (1 - high_weight) * scale, high_weight * scale


def samples_per_bin(length: torch.Tensor, bins: int) -> torch.Tensor:
    """(K,) long: how many samples each bin of each RoI takes along an axis (ceil(length / bins))."""
    return torch.ceil(length / bins).clamp(min=0).long()


def axis_weights(start: torch.Tensor, length: torch.Tensor, bins: int, extent: int) -> torch.Tensor:
    """(K, bins, extent) averaged sampling weights along one axis (``axis_samples`` scattered
    onto the axis)."""
    weights = start.new_zeros(start.shape[0], bins, extent)
    max_grid = int(samples_per_bin(length, bins).max()) if start.shape[0] else 0
    if max_grid == 0:
        return weights
    low_index, high_index, low_weight, high_weight = axis_samples(start, length, bins, extent, max_grid)
    weights.scatter_add_(2, low_index, low_weight)
    weights.scatter_add_(2, high_index, high_weight)
    return weights


def separable_roi_align(features: torch.Tensor, rois: torch.Tensor, output_size: int,
                        spatial_scale: float) -> torch.Tensor:
    """(B, C, H, W) features, (K, 5) RoIs (image index, x1, y1, x2, y2 in image pixels) ->
    (K, C, output_size, output_size), differentiable with respect to ``features``.

    Computed in float32 at least, also under autocast (as torchvision's roi_align), then returned
    in the features' dtype.
    """
    with torch.autocast(features.device.type, enabled=False):
        dtype = torch.promote_types(features.dtype, torch.float32)
        out = _separable(features.to(dtype), rois.to(dtype), output_size, spatial_scale)
    return out.to(features.dtype)


def _separable(features: torch.Tensor, rois: torch.Tensor, output_size: int, spatial_scale: float) -> torch.Tensor:
    """``separable_roi_align`` for float32 or float64 features and RoIs of the same dtype."""
    _, channels, height, width = features.shape
    boxes = rois[:, 1:] * spatial_scale - 0.5
    wy = axis_weights(boxes[:, 1], boxes[:, 3] - boxes[:, 1], output_size, height)
    wx = axis_weights(boxes[:, 0], boxes[:, 2] - boxes[:, 0], output_size, width)
    out = features.new_zeros(rois.shape[0], channels, output_size, output_size)
    image_index = rois[:, 0].long()
    for image in image_index.unique().tolist():
        mine = torch.nonzero(image_index == image).squeeze(1)
        n = mine.numel()
        # rows: (n * P, H) @ (H, C * W) -> (n, P, C, W)
        rows = (wy[mine].reshape(n * output_size, height)
                @ features[image].transpose(0, 1).reshape(height, channels * width))
        rows = rows.reshape(n, output_size * channels, width)
        # columns, per RoI: (n, P * C, W) @ (n, W, P) -> (n, P, C, P)
        pooled = torch.bmm(rows, wx[mine].transpose(1, 2)).reshape(n, output_size, channels, output_size)
        out = out.index_copy(0, mine, pooled.permute(0, 2, 1, 3))
    return out
