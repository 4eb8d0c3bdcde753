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
    what MMDetection does on CPU; sampling the whole image gives the same bits, only slower.
    """
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
