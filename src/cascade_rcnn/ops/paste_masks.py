"""Paste 28x28 mask probabilities into full-size image masks (MMDetection's ``_do_paste_mask``)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def paste_masks(probs: torch.Tensor, boxes: torch.Tensor, image_size: tuple[int, int],
                threshold: float = 0.5) -> torch.Tensor:
    """Bool masks (N, H, W) from probabilities ``probs`` (N, M, M) inside ``boxes`` (N, 4).

    Each mask is resampled with bilinear ``grid_sample`` at pixel centres ``i + 0.5`` over its box
    region +-1 px only (the rest of the image stays False), then thresholded with ``>=``. This is
    what MMDetection does on CPU; on CUDA, as MMDetection, ``paste_masks_whole_image`` (the same
    bits, with no per-mask loop or host synchronisation).
    """
    if probs.device.type == "cuda":
        return paste_masks_whole_image(probs, boxes, image_size, threshold)
    height, width = image_size
    out = torch.zeros((probs.shape[0], height, width), dtype=torch.bool, device=probs.device)
    for index, (prob, box) in enumerate(zip(probs, boxes.tolist())):
        x0, y0, x1, y1 = box
        left = max(math.floor(x0) - 1, 0)
        top = max(math.floor(y0) - 1, 0)
        right = min(math.ceil(x1) + 1, width)
        bottom = min(math.ceil(y1) + 1, height)
        if right <= left or bottom <= top:
            continue
        box_t = boxes[index]
        xs = (torch.arange(left, right, device=probs.device, dtype=torch.float32) + 0.5)
        ys = (torch.arange(top, bottom, device=probs.device, dtype=torch.float32) + 0.5)
        xs = (xs - box_t[0]) / (box_t[2] - box_t[0]) * 2 - 1
        ys = (ys - box_t[1]) / (box_t[3] - box_t[1]) * 2 - 1
        # A zero-width or zero-height box divides by zero; MMDetection samples at 0 there.
        xs = torch.where(torch.isinf(xs), torch.zeros_like(xs), xs)
        ys = torch.where(torch.isinf(ys), torch.zeros_like(ys), ys)
        grid = torch.stack([xs[None, :].expand(len(ys), -1), ys[:, None].expand(-1, len(xs))], dim=2)
        sampled = F.grid_sample(prob[None, None].float(), grid[None], align_corners=False)
        out[index, top:bottom, left:right] = sampled[0, 0] >= threshold
    return out


# Masks pasted at once on CUDA: at most this many output pixels per chunk (~1 GB of sampling grid).
PASTE_CHUNK_PIXELS = 2**27


def paste_masks_whole_image(probs: torch.Tensor, boxes: torch.Tensor, image_size: tuple[int, int],
                            threshold: float = 0.5) -> torch.Tensor:
    """``paste_masks`` sampling every pixel of the image for every mask, in chunks of masks.

    Pixels outside the box +-1 px are masked off, so the result equals ``paste_masks``' bit for
    bit; this form suits a GPU (one batched ``grid_sample`` per chunk, no host synchronisation).
    """
    height, width = image_size
    out = torch.zeros((probs.shape[0], height, width), dtype=torch.bool, device=probs.device)
    xs = torch.arange(width, device=probs.device, dtype=torch.float32) + 0.5
    ys = torch.arange(height, device=probs.device, dtype=torch.float32) + 0.5
    chunk = max(1, PASTE_CHUNK_PIXELS // max(height * width, 1))
    for start in range(0, probs.shape[0], chunk):
        box = boxes[start:start + chunk].float()
        x0, y0, x1, y1 = (box[:, i:i + 1] for i in range(4))
        grid_x = (xs[None, :] - x0) / (x1 - x0) * 2 - 1  # (n, W)
        grid_y = (ys[None, :] - y0) / (y1 - y0) * 2 - 1  # (n, H)
        # A zero-width or zero-height box divides by zero; MMDetection samples at 0 there.
        grid_x = torch.where(torch.isinf(grid_x), torch.zeros_like(grid_x), grid_x)
        grid_y = torch.where(torch.isinf(grid_y), torch.zeros_like(grid_y), grid_y)
        grid = torch.stack([grid_x[:, None, :].expand(-1, height, -1), grid_y[:, :, None].expand(-1, -1, width)], dim=3)
        sampled = F.grid_sample(probs[start:start + chunk, None].float(), grid, align_corners=False)
        # Only the box +-1 px, as paste_masks (this matters for zero-size boxes alone).
        in_x = (xs[None, :] >= torch.floor(x0) - 1 + 0.5) & (xs[None, :] < torch.ceil(x1) + 1)
        in_y = (ys[None, :] >= torch.floor(y0) - 1 + 0.5) & (ys[None, :] < torch.ceil(y1) + 1)
        out[start:start + chunk] = (sampled[:, 0] >= threshold) & in_y[:, :, None] & in_x[:, None, :]
    return out
