"""Sliced inference: images far larger than the network's input, cut into overlapping tiles.

The image is cut, at its own resolution, into T x T tiles (``tile_grid``): neighbours share
``int(T * overlap)`` pixels, and the last row and column are moved back to end at the image's
edge, so every tile has the same size and tiles batch together. Each tile is then an ordinary
image to the model: the config's resize (as in training), so a tile of the config's short side
(800 for the COCO configs, 256 for the shapes configs) runs at 1:1, a smaller one is enlarged and
a larger one shrunk. Detections come back in tile pixels, are moved to image pixels and merged:

1. Border rule (``border_rule``). A detection that touches one of its tile's inner borders
   (within ``BORDER_MARGIN`` network pixels; image edges do not count) may be an object cut by
   that border. It is dropped when the neighbouring tile across that border holds its whole box
   clear of the neighbour's own inner borders: the object continues into the overlap, and that
   neighbour sees all of it that this tile sees, and more. Otherwise (the object is larger than the
   overlap, so no tile holds it whole) it is kept, marked as cut.
2. Stitching (``stitch``). A cut detection and a detection of the same class from another tile
   are the same object when their boxes, clipped to the part of the image both tiles cover, have
   IoU >= ``STITCH_IOU``: they become one detection with the union box, the higher score and the
   maximum of both masks (each resampled into the union box).
3. Class-wise NMS (``merging.class_nms``) over all tiles and, with ``full_image``, one pass over
   the whole image at the config's resize (for objects too large for a tile), at the test NMS
   IoU; the best ``max_per_image`` are kept. Score threshold, NMS and ``max_per_image`` also
   apply to each tile.

Masks stay (N, 28, 28) probabilities inside their boxes until the survivors are pasted once,
so memory grows with the detections, not with tiles x image size; tiles are cut from the image
one batch at a time. The pasted result is (N, H, W) bool, so a mask model is refused up front
when ``max_per_image`` masks of the image would exceed ``MAX_PASTED_MASK_BYTES``.

Limit: stitching compares boxes, so a long diagonal object larger than the overlap may stay as
two partial boxes; a larger overlap or ``full_image`` helps.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..data.transforms import SIZE_DIVISOR
from ..models.cascade import DetectionSettings
from ..models.detector import ImageDetections
from ..outputs.detections import Detections
from .merging import class_nms, concatenate, resample_masks, select, to_detections

if TYPE_CHECKING:
    from .predictor import CascadeRCNN

MIN_TILE = SIZE_DIVISOR  # the network pads to multiples of 32: a smaller tile is mostly padding
BORDER_MARGIN = 4.0  # network pixels (one cell of the finest feature map): "touches a border"
STITCH_IOU = 0.5  # clipped-box IoU above which pieces from two tiles are one object
MAX_PASTED_MASK_BYTES = 4 * 2**30  # (N, H, W) bool masks of a tiled image, N = max_per_image
_PAIR_CHUNK = 16  # cut detections compared with all others at a time (bounds the pair matrices)


def check_tiling(tile: int, overlap: float, full_image: bool = False) -> None:
    """One-line ValueError for a tile size or overlap that cannot work."""
    if isinstance(tile, bool) or not isinstance(tile, (int, np.integer)):
        raise ValueError(f"tile must be a whole number of pixels, got {tile!r}")
    if tile < MIN_TILE:
        raise ValueError(f"tile must be at least {MIN_TILE} px (the network's stride), got {tile}")
    if isinstance(overlap, bool) or not isinstance(overlap, (int, float, np.floating)) or not 0 <= overlap < 1:
        raise ValueError(f"tile overlap must be in [0, 1) (a fraction of the tile), got {overlap!r}")
    if not isinstance(full_image, bool):
        raise ValueError(f"tile_full_image must be True or False, got {full_image!r}")


def tile_starts(length: int, tile: int, step: int) -> list[int]:
    """Start offsets along one side: every ``step`` px, the last moved back to end at ``length``."""
    if length <= tile:
        return [0]
    return list(range(0, length - tile, step)) + [length - tile]


@dataclass(frozen=True)
class TileGrid:
    """Tiles of an (H, W) image: left edges ``xs``, top edges ``ys``, each ``width`` x ``height``
    (the tile size, or the image's side where the image is smaller)."""

    xs: tuple[int, ...]
    ys: tuple[int, ...]
    width: int
    height: int
    image_size: tuple[int, int]

    def rects(self) -> list[tuple[int, int, int, int]]:
        """(x0, y0, x1, y1) of every tile, row by row."""
        return [(x, y, x + self.width, y + self.height) for y in self.ys for x in self.xs]

    def __len__(self) -> int:
        return len(self.xs) * len(self.ys)


def tile_grid(image_size: tuple[int, int], tile: int, overlap: float) -> TileGrid:
    """The tiles of an (H, W) image: ``tile`` px squares sharing ``int(tile * overlap)`` px."""
    check_tiling(tile, overlap)
    height, width = image_size
    step = tile - int(tile * overlap)  # >= 1 since overlap < 1
    return TileGrid(tuple(tile_starts(width, tile, step)), tuple(tile_starts(height, tile, step)),
                    min(tile, width), min(tile, height), (height, width))


def border_rule(boxes: torch.Tensor, rect: tuple[int, int, int, int], grid: TileGrid,
                margin: tuple[float, float]) -> tuple[torch.Tensor, torch.Tensor]:
    """(keep, cut) bool (N,) for (N, 4) image-pixel boxes found in tile ``rect`` (rule 1 of the
    module docstring); ``margin`` (x, y) in image pixels."""
    keep = torch.ones(boxes.shape[0], dtype=torch.bool)
    cut = torch.zeros(boxes.shape[0], dtype=torch.bool)
    height, width = grid.image_size
    for axis, starts, size, length in ((0, grid.xs, grid.width, width), (1, grid.ys, grid.height, height)):
        lo, hi, m = boxes[:, axis], boxes[:, axis + 2], margin[axis]
        start = rect[axis]
        position = starts.index(start)
        for side, neighbour in ((0, position - 1), (1, position + 1)):
            if not 0 <= neighbour < len(starts):
                continue  # this side is the image's edge: nothing is cut there
            touches = lo <= start + m if side == 0 else hi >= start + size - m
            n0, n1 = starts[neighbour], starts[neighbour] + size
            inside = (lo > n0 + m) | (n0 == 0)
            inside &= (hi < n1 - m) | (n1 == length)
            cut |= touches
            keep &= ~(touches & inside)
    return keep, cut


def stitch(found: ImageDetections, cut: torch.Tensor, tile_rects: torch.Tensor) -> ImageDetections:
    """Rule 2 of the module docstring: pieces of one object from several tiles joined.

    ``found``: all tiles' detections in image pixels; ``cut`` (N,) bool; ``tile_rects`` (N, 4)
    the tile each detection came from. Returns the detections not joined, then the joined ones.
    """
    count = found.boxes.shape[0]
    parent = list(range(count))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    boxes, labels = found.boxes, found.labels
    cut_index = torch.nonzero(cut).squeeze(1)
    for start in range(0, cut_index.shape[0], _PAIR_CHUNK):
        a = cut_index[start:start + _PAIR_CHUNK]
        region = torch.cat([torch.maximum(tile_rects[a, None, :2], tile_rects[None, :, :2]),
                            torch.minimum(tile_rects[a, None, 2:], tile_rects[None, :, 2:])], dim=2)
        clipped_a = _clip(boxes[a, None, :], region)
        clipped_b = _clip(boxes[None, :, :], region)
        inter = _area(torch.cat([torch.maximum(clipped_a[..., :2], clipped_b[..., :2]),
                                 torch.minimum(clipped_a[..., 2:], clipped_b[..., 2:])], dim=2))
        union = _area(clipped_a) + _area(clipped_b) - inter
        iou = torch.where(union > 0, inter / union.clamp(min=1e-6), torch.zeros_like(inter))
        other_tile = (tile_rects[a, None, :] != tile_rects[None, :, :]).any(dim=2)
        pairs = torch.nonzero((labels[a, None] == labels[None, :]) & other_tile & (iou >= STITCH_IOU))
        for i, j in pairs.tolist():
            parent[root(int(a[i]))] = root(j)
    groups: dict[int, list[int]] = {}
    for i in range(count):
        groups.setdefault(root(i), []).append(i)
    alone = torch.tensor([members[0] for members in groups.values() if len(members) == 1], dtype=torch.long)
    joined = [members for members in groups.values() if len(members) > 1]
    return concatenate([select(found, alone), _join(found, joined)], found.mask_probs is not None)


def _clip(boxes: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    return torch.cat([torch.maximum(boxes[..., :2], region[..., :2]),
                      torch.minimum(boxes[..., 2:], region[..., 2:])], dim=-1)


def _area(boxes: torch.Tensor) -> torch.Tensor:
    return (boxes[..., 2] - boxes[..., 0]).clamp(min=0) * (boxes[..., 3] - boxes[..., 1]).clamp(min=0)


def _join(found: ImageDetections, groups: list[list[int]]) -> ImageDetections:
    """One detection per group of pieces: the union box, the best score (and its label), the
    maximum of the pieces' masks, each resampled into the union box."""
    if not groups:
        return select(found, torch.zeros(0, dtype=torch.long))
    members = torch.tensor([i for group in groups for i in group], dtype=torch.long)
    owner = torch.tensor([g for g, group in enumerate(groups) for _ in group], dtype=torch.long)
    boxes = found.boxes[members]
    union = torch.stack([torch.cat([found.boxes[group, :2].min(dim=0).values, found.boxes[group, 2:].max(dim=0).values])
                         for group in groups])
    best = torch.tensor([max(group, key=lambda i: float(found.scores[i])) for group in groups], dtype=torch.long)
    masks = None
    if found.mask_probs is not None:
        pieces = resample_masks(found.mask_probs[members], boxes, union[owner])
        masks = torch.zeros((len(groups), *pieces.shape[1:])).scatter_reduce(
            0, owner[:, None, None].expand_as(pieces), pieces, "amax")
    return ImageDetections(union, found.scores[best], found.labels[best], masks, boxes_in_original=True)


def check_mask_budget(image_size: tuple[int, int], max_per_image: int, name: str) -> None:
    """One-line ValueError, before any work, when the pasted masks could exceed the budget."""
    height, width = image_size
    need = height * width * max_per_image
    if need > MAX_PASTED_MASK_BYTES:
        fits = MAX_PASTED_MASK_BYTES // (height * width)
        advice = f"lower max_per_image (--max-per-image) to {fits} or " if fits else ""
        raise ValueError(f"{name}: up to {max_per_image} masks (max_per_image) of {height}x{width} px would take "
                         f"{need / 2**30:.1f} GiB once pasted (limit {MAX_PASTED_MASK_BYTES / 2**30:g} GiB); "
                         f"{advice}use a box-only model")


def predict_tiled(model: CascadeRCNN, image: np.ndarray, name: str, settings: DetectionSettings, tile: int,
                  overlap: float = 0.2, full_image: bool = False, stage: int | None = None, amp: str | None = None,
                  batch_size: int = 1) -> Detections:
    """Detections of one RGB uint8 (H, W, 3) image from ``tile`` x ``tile`` tiles (module docstring).

    ``batch_size`` tiles run per forward pass; ``stage``/``amp`` as in ``CascadeRCNN.predict``.
    """
    check_tiling(tile, overlap, full_image)
    image_size = image.shape[:2]
    with_mask = model.config.with_mask
    if with_mask:
        check_mask_budget(image_size, settings.max_per_image, name)
    grid = tile_grid(image_size, tile, overlap)
    rects = grid.rects()
    pieces, cut, tile_rects = [], [], []
    for start in range(0, len(rects), batch_size):
        chunk = rects[start:start + batch_size]
        prepared = [model.preprocess(image[y0:y1, x0:x1], f"{name} tile at ({x0}, {y0})") for x0, y0, x1, y1 in chunk]
        scale_x, scale_y = prepared[0][0].scale_factor
        margin = (BORDER_MARGIN / scale_x, BORDER_MARGIN / scale_y)
        for rect, found in zip(chunk, model.detect_unpasted(prepared, settings, stage, amp, batch_size)):
            found.boxes = found.boxes + found.boxes.new_tensor(rect[:2]).repeat(2)
            keep, touches = border_rule(found.boxes, rect, grid, margin)
            pieces.append(select(found, keep))
            cut.append(touches[keep])
            tile_rects.append(torch.tensor(rect, dtype=torch.float32).expand(int(keep.sum()), 4))
    passes = [stitch(concatenate(pieces, with_mask), torch.cat(cut), torch.cat(tile_rects))]
    if full_image:
        passes += model.detect_unpasted([model.preprocess(image, name)], settings, stage, amp)
    merged = class_nms(concatenate(passes, with_mask), settings.nms_iou, settings.max_per_image)
    return to_detections(merged, image_size, model.class_names)
