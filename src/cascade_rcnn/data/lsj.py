"""Large-scale jitter (Ghiasi et al., 2021), as ViTDet trains (Detectron2's ``ResizeScale`` then
``FixedSizeCrop(pad=False)``; the flip is the loader's): the image resized by ``T * s / h`` or
``T * s / w``, whichever is smaller, for s drawn uniformly in [0.1, 2.0] (sizes rounded half to
even, as NumPy), then a T x T window of it, at an offset of ``round(u * (size - T))`` on each axis
with ONE u drawn uniformly in [0, 1) for both (as Detectron2). No padding: a smaller image stays
smaller (ViTDet's ViT pads its input to its square). Boxes are clipped to the window and the
empty ones dropped with their labels and masks; where masks exist, each box is then recomputed as
its cropped mask's bounding box and an object whose mask is left empty dropped (Detectron2's
``recompute_boxes``, with bitmaps: a box spans whole mask pixels).
"""
from __future__ import annotations

import numpy as np
import torch

from .transforms import crop_window, resize_sample_to

LSJ_SCALES = (0.1, 2.0)  # ViTDet's ResizeScale min_scale, max_scale


def large_scale_jitter(sample: dict, side: int, generator: torch.Generator) -> tuple[dict, tuple[int, int]]:
    """The sample resized and cropped to at most ``side`` x ``side`` (draws from ``generator``),
    and the (long, short) scale that leaves it as it is, for ``train_transform``."""
    height, width = sample["image"].shape[:2]
    low, high = LSJ_SCALES
    scale = low + (high - low) * float(torch.rand((), dtype=torch.float64, generator=generator))
    factor = min(side * scale / height, side * scale / width)
    size = (max(round(height * factor), 1), max(round(width * factor), 1))
    offset = float(torch.rand((), dtype=torch.float64, generator=generator))
    top, left = (round(max(extent - side, 0) * offset) for extent in size)
    cropped = crop_window(resize_sample_to(sample, size), top, left, min(side, size[0]), min(side, size[1]))
    if "masks" in cropped:
        cropped = boxes_from_masks(cropped)
    out_h, out_w = cropped["image"].shape[:2]
    return cropped, (max(out_h, out_w), min(out_h, out_w))


def boxes_from_masks(sample: dict) -> dict:
    """``sample`` with each object's box the bounding box of its mask (x1, y1, x2 + 1, y2 + 1 of
    its pixels), objects with an empty mask dropped with their labels."""
    masks = sample["masks"]
    rows, cols = masks.any(axis=2), masks.any(axis=1)  # (G, H), (G, W)
    keep = rows.any(axis=1)
    boxes = np.zeros((len(masks), 4), dtype=np.float32)
    for index in np.flatnonzero(keep):
        ys, xs = np.flatnonzero(rows[index]), np.flatnonzero(cols[index])
        boxes[index] = (xs[0], ys[0], xs[-1] + 1, ys[-1] + 1)
    keep_t = torch.from_numpy(keep)
    return {**sample, "boxes": torch.from_numpy(boxes)[keep_t], "labels": sample["labels"][keep_t],
            "masks": masks[keep]}
