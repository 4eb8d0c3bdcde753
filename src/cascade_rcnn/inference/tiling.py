"""Sliced inference: images far larger than the network's input, cut into overlapping tiles.

The image is cut, at its own resolution, into T x T tiles (``tile_grid``): neighbours share
``int(T * overlap)`` pixels, and the last row and column are moved back to end at the image's
edge, so every tile has the same size and tiles batch together. Each tile is then an ordinary
image to the model: the config's resize (as in training), so a tile of the config's short side
(800 for the COCO configs, 256 for the shapes configs) runs at 1:1, a smaller one is enlarged and
a larger one shrunk. Detections come back in tile pixels, are moved to image pixels and merged:

1. Border rule (``border_rule``, ``found_by_holder``). A detection that touches one of its tile's
   inner borders (within ``BORDER_MARGIN`` network pixels; image edges do not count) may be an
   object cut by that border. It is dropped when the neighbouring tile across that border holds
   its whole box clear of the neighbour's own inner borders and has found it too (a detection of
   the same class there covers at least ``HOLDER_COVER`` of its box): the object continues into
   the overlap, and that neighbour sees all of it that this tile sees, and more. If the neighbour
   missed it, it is kept: a piece is better than nothing. Detections touching a border are marked
   as cut.
2. Stitching (``stitch``). A cut detection and a detection of the same class from another tile
   are the same object when their boxes, clipped to the part of the image both tiles cover, have
   IoU >= ``STITCH_IOU`` (an object larger than the overlap, cut in each tile; or a piece whose
   neighbour was not clear of its borders): they become one detection with the union box, the
   higher score and the maximum of both masks (each resampled into the union box).
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
from ..errors import UserInputError
from ..models.detections import DetectionSettings, ImageDetections
from ..outputs.detections import Detections
from .merging import class_nms, concatenate, resample_masks, select, to_detections

if TYPE_CHECKING:
    from .predictor import CascadeRCNN

MIN_TILE = SIZE_DIVISOR  # the network pads to multiples of 32: a smaller tile is mostly padding
BORDER_MARGIN = 4.0  # network pixels (one cell of the finest feature map): "touches a border"
HOLDER_COVER = 0.5  # fraction of a cut box that a neighbour's detection must cover to replace it
STITCH_IOU = 0.5  # clipped-box IoU above which pieces from two tiles are one object
MAX_PASTED_MASK_BYTES = 4 * 2**30  # (N, H, W) bool masks of a tiled image, N = max_per_image
_PAIR_CHUNK = 16  # cut detections compared with their neighbourhood at a time (bounds the pair matrices)


def check_tiling(tile: int, overlap: float, full_image: bool = False) -> None:
    """One-line ValueError for a tile size or overlap that cannot work."""
    if isinstance(tile, bool) or not isinstance(tile, (int, np.integer)):
        raise UserInputError(f"tile must be a whole number of pixels, got {tile!r}")
    if tile < MIN_TILE:
        raise UserInputError(f"tile must be at least {MIN_TILE} px (the network's stride), got {tile}")
    if isinstance(overlap, bool) or not isinstance(overlap, (int, float, np.floating)) or not 0 <= overlap < 1:
        raise UserInputError(f"tile overlap must be in [0, 1) (a fraction of the tile), got {overlap!r}")
    if not isinstance(full_image, bool):
        raise UserInputError(f"tile_full_image must be True or False, got {full_image!r}")


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

    def meeting(self, index: int) -> list[int]:
        """The tiles whose rectangles meet (overlap or touch) tile ``index``'s, itself included:
        the only tiles whose detections can pair with its own in the merge rules."""
        row, column = divmod(index, len(self.xs))
        x, y = self.xs[column], self.ys[row]
        columns = [j for j, other in enumerate(self.xs) if other <= x + self.width and x <= other + self.width]
        rows = [i for i, other in enumerate(self.ys) if other <= y + self.height and y <= other + self.height]
        return [i * len(self.xs) + j for i in rows for j in columns]

    def __len__(self) -> int:
        return len(self.xs) * len(self.ys)


def tile_grid(image_size: tuple[int, int], tile: int, overlap: float) -> TileGrid:
    """The tiles of an (H, W) image: ``tile`` px squares sharing ``int(tile * overlap)`` px
    (values ``check_tiling`` accepts)."""
    height, width = image_size
    step = tile - int(tile * overlap)  # >= 1 since overlap < 1
    return TileGrid(tuple(tile_starts(width, tile, step)), tuple(tile_starts(height, tile, step)),
                    min(tile, width), min(tile, height), (height, width))


def border_rule(boxes: torch.Tensor, tile_index: int, grid: TileGrid,
                margin: tuple[float, float]) -> tuple[torch.Tensor, torch.Tensor]:
    """Where (N, 4) image-pixel boxes found in tile ``tile_index`` (of ``grid.rects()``) touch
    its inner borders, within ``margin`` (x, y) image pixels.

    Returns ``cut`` (N,) bool, True where a box touches an inner border, and ``holders`` (N, 4)
    long: per side (left, top, right, bottom) that a box touches, the index of the neighbouring
    tile across it when that tile holds the whole box clear of its own inner borders, else -1.
    """
    cut = torch.zeros(boxes.shape[0], dtype=torch.bool)
    holders = torch.full((boxes.shape[0], 4), -1, dtype=torch.long)
    height, width = grid.image_size
    row, column = divmod(tile_index, len(grid.xs))
    for axis, starts, size, length, position in ((0, grid.xs, grid.width, width, column),
                                                 (1, grid.ys, grid.height, height, row)):
        lo, hi, m = boxes[:, axis], boxes[:, axis + 2], margin[axis]
        start = starts[position]
        for side, neighbour in ((0, position - 1), (1, position + 1)):
            if not 0 <= neighbour < len(starts):
                continue  # this side is the image's edge: nothing is cut there
            touches = lo <= start + m if side == 0 else hi >= start + size - m
            n0, n1 = starts[neighbour], starts[neighbour] + size
            clear = ((lo > n0 + m) | (n0 == 0)) & ((hi < n1 - m) | (n1 == length))
            cut |= touches
            holders[touches & clear, 2 * side + axis] = (row * len(grid.xs) + neighbour if axis == 0
                                                          else neighbour * len(grid.xs) + column)
    return cut, holders


def found_by_holder(found: ImageDetections, tile_of: torch.Tensor, holders: torch.Tensor,
                    grid: TileGrid) -> torch.Tensor:
    """Rule 1 of the module docstring: (N,) bool, True for a detection that a tile in its
    ``holders`` has found too: a detection of the same class there covers at least
    ``HOLDER_COVER`` of its box. A detection whose own tile holds that other one back in the same
    way does not count (else two views of one object in the overlap could drop each other)."""
    drop = torch.zeros(found.boxes.shape[0], dtype=torch.bool)
    candidates = torch.nonzero((holders >= 0).any(dim=1)).squeeze(1)
    boxes, labels = found.boxes, found.labels
    for d, others in _neighbourhoods(candidates, tile_of, grid):
        inter = _area(torch.cat([torch.maximum(boxes[d, None, :2], boxes[None, others, :2]),
                                 torch.minimum(boxes[d, None, 2:], boxes[None, others, 2:])], dim=2))
        covers = inter >= HOLDER_COVER * _area(boxes[d])[:, None].clamp(min=1e-6)
        in_holder = (tile_of[None, others, None] == holders[d, None, :]).any(dim=2)
        holds_back = (holders[None, others, :] == tile_of[d, None, None]).any(dim=2)
        same = labels[d, None] == labels[None, others]
        drop[d] = (same & in_holder & covers & ~holds_back).any(dim=1)
    return drop


def _neighbourhoods(query: torch.Tensor, tile_of: torch.Tensor, grid: TileGrid):
    """Yield (q, others) for the detections ``query`` (indices): up to ``_PAIR_CHUNK`` of them
    from one tile, and every detection of the tiles that meet that tile. Detections of tiles that
    do not meet share no image region with them, so pairing stays linear in the number of tiles
    (a 20000^2 image has 625 tiles of 1024 px) instead of quadratic in the detections."""
    by_tile = torch.split(torch.argsort(tile_of, stable=True), torch.bincount(tile_of, minlength=len(grid)).tolist())
    query = query[torch.argsort(tile_of[query], stable=True)]
    tiles, counts = torch.unique_consecutive(tile_of[query], return_counts=True)
    for tile, mine in zip(tiles.tolist(), torch.split(query, counts.tolist())):
        others = torch.cat([by_tile[t] for t in grid.meeting(tile)])
        for start in range(0, mine.shape[0], _PAIR_CHUNK):
            yield mine[start:start + _PAIR_CHUNK], others


def stitch(found: ImageDetections, cut: torch.Tensor, tile_of: torch.Tensor, grid: TileGrid) -> ImageDetections:
    """Rule 2 of the module docstring: pieces of one object from several tiles joined.

    ``found``: all tiles' detections in image pixels; ``cut`` (N,) bool; ``tile_of`` (N,) the
    index of the tile each detection came from (of ``grid``). Returns the detections not joined,
    then the joined ones.
    """
    count = found.boxes.shape[0]
    parent = list(range(count))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    boxes, labels = found.boxes, found.labels
    tile_rects = torch.tensor(grid.rects(), dtype=torch.float32)[tile_of]
    for a, others in _neighbourhoods(torch.nonzero(cut).squeeze(1), tile_of, grid):
        region = torch.cat([torch.maximum(tile_rects[a, None, :2], tile_rects[None, others, :2]),
                            torch.minimum(tile_rects[a, None, 2:], tile_rects[None, others, 2:])], dim=2)
        clipped_a = _clip(boxes[a, None, :], region)
        clipped_b = _clip(boxes[None, others, :], region)
        inter = _area(torch.cat([torch.maximum(clipped_a[..., :2], clipped_b[..., :2]),
                                 torch.minimum(clipped_a[..., 2:], clipped_b[..., 2:])], dim=2))
        union = _area(clipped_a) + _area(clipped_b) - inter
        iou = torch.where(union > 0, inter / union.clamp(min=1e-6), torch.zeros_like(inter))
        other_tile = tile_of[a, None] != tile_of[None, others]
        pairs = torch.nonzero((labels[a, None] == labels[None, others]) & other_tile & (iou >= STITCH_IOU))
        for i, j in pairs.tolist():
            parent[root(int(a[i]))] = root(int(others[j]))
    groups: dict[int, list[int]] = {}
    for i in range(count):
        groups.setdefault(root(i), []).append(i)
    alone = torch.tensor([members[0] for members in groups.values() if len(members) == 1], dtype=torch.long)
    joined = [members for members in groups.values() if len(members) > 1]
    return concatenate([select(found, alone), _join(found, joined)])


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
        raise UserInputError(f"{name}: up to {max_per_image} masks (max_per_image) of {height}x{width} px would take "
                             f"{need / 2**30:.1f} GiB once pasted (limit {MAX_PASTED_MASK_BYTES / 2**30:g} GiB); "
                             f"{advice}use a box-only model")


def predict_tiled(model: CascadeRCNN, image: np.ndarray, name: str, settings: DetectionSettings, tile: int,
                  overlap: float = 0.2, full_image: bool = False, stage: int | None = None,
                  batch_size: int = 1) -> Detections:
    """Detections of one RGB uint8 (H, W, 3) image from ``tile`` x ``tile`` tiles (module docstring).

    ``batch_size`` tiles run per forward pass; ``stage`` as in ``CascadeRCNN.predict``, which
    checks ``tile``, ``overlap`` and ``full_image`` (``check_tiling``) once per call.
    """
    image_size = image.shape[:2]
    with_mask = model.config.with_mask
    if with_mask:
        check_mask_budget(image_size, settings.max_per_image, name)
    grid = tile_grid(image_size, tile, overlap)
    rects = grid.rects()
    pieces, cut, holders, tile_of = [], [], [], []
    for start in range(0, len(rects), batch_size):
        chunk = rects[start:start + batch_size]
        prepared = [model.preprocess(image[y0:y1, x0:x1], f"{name} tile at ({x0}, {y0})") for x0, y0, x1, y1 in chunk]
        scale_x, scale_y = prepared[0][0].scale_factor
        margin = (BORDER_MARGIN / scale_x, BORDER_MARGIN / scale_y)
        for index, found in enumerate(model.detect_unpasted(prepared, settings, stage, batch_size), start):
            found.boxes = found.boxes + found.boxes.new_tensor(rects[index][:2]).repeat(2)
            touches, held = border_rule(found.boxes, index, grid, margin)
            pieces.append(found)
            cut.append(touches)
            holders.append(held)
            tile_of.append(torch.full((touches.shape[0],), index, dtype=torch.long))
    found, tile_of = concatenate(pieces), torch.cat(tile_of)
    keep = ~found_by_holder(found, tile_of, torch.cat(holders), grid)
    passes = [stitch(select(found, keep), torch.cat(cut)[keep], tile_of[keep], grid)]
    if full_image:
        passes += model.detect_unpasted([model.preprocess(image, name)], settings, stage)
    merged = class_nms(concatenate(passes), settings.nms_iou, settings.max_per_image)
    return to_detections(merged, image_size, model.class_names, model.config.mask_threshold)
