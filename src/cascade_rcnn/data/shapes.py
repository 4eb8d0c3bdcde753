"""A synthetic instance-segmentation data set in COCO format: shapes told apart by geometry.

Five classes (category ids 1..5): circle, triangle, rectangle (aspect 1 to 2.2), star (five
points) and ring. Colours are random and say nothing about the class; backgrounds are textured
(gradients, smooth noise, stripes, checkers, pixel noise) and so are the objects (shading,
stripes, noise). Objects are 8 px to a third of the image across (radius uniform: about 60% of
the instances are COCO-"small", area < 32 x 32, and 25% below 16 x 16), rotated, placed at
random, touching others, or nested (a small shape in a ring's hole or on a large shape). Later
objects occlude earlier ones: every mask is exactly the pixels painted with that object, so masks
of one image never overlap, and an instance left with less than half of its area visible
(occluded or outside the image: too little of its geometry to tell its class) is not annotated
and not drawn. Unannotated distractors share the classes' colours but not their geometry:
irregular blobs, ellipses, strokes, crosses and open arcs.

Annotations are pixel-exact: ``segmentation`` is the compressed RLE of the rendered mask and
``bbox`` its tight box (integers, [x, y, w, h]); ``area`` is its pixel count. The output depends
only on the seed (image i is drawn from the seed and i alone), byte for byte.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from ..errors import UserInputError

SHAPE_CLASSES = ("circle", "triangle", "rectangle", "star", "ring")
DISTRACTORS = ("blob", "ellipse", "stroke", "cross", "arc")
MIN_VISIBLE = 0.5  # an instance needs this fraction of its area visible to be kept
_SUBPIXEL = 4  # cv2 drawing with 2**4 sub-pixel steps: exact placement, no anti-aliasing
# Noisy pictures barely compress: Huffman coding alone is twice as fast as deflate, and smaller.
_PNG_FAST = [cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_HUFFMAN_ONLY]


@dataclass
class _Item:
    """One drawn shape; ``mask`` is (S + 2P, S + 2P) bool in the padded frame."""

    kind: str  # a class name or a distractor name
    cx: float
    cy: float
    radius: float  # circumradius, image pixels
    mask: np.ndarray
    color: np.ndarray  # (3,) float32 RGB
    texture: tuple  # see _random_texture
    hole: float = 0.0  # rings: the hole's radius / radius

    @property
    def label(self) -> int | None:
        return SHAPE_CLASSES.index(self.kind) if self.kind in SHAPE_CLASSES else None


def generate_shapes(out_dir: str | Path, num_images: int = 200, size: int = 320, seed: int = 0) -> Path:
    """Write ``out_dir/annotations.json`` and ``out_dir/images/000000.png`` ...; returns the JSON's path.

    Use a different ``seed`` for a validation split; image ``i`` of a seed is the same whatever
    ``num_images`` is. Load the result with
    ``CocoDataset(path, path.parent / "images")``.
    """
    if size < 64:
        raise UserInputError(f"size must be at least 64 px (objects are 8 px to size / 3), got {size}")
    json_path, image_dir = shapes_files(out_dir)
    image_dir.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for index in range(num_images):
        image, instances = render_image(np.random.default_rng([seed, index]), size)
        file_name = f"{index:06d}.png"
        png = cv2.imencode(".png", image[:, :, ::-1], _PNG_FAST)[1]
        (image_dir / file_name).write_bytes(png.tobytes())
        images.append({"id": index, "file_name": file_name, "height": size, "width": size})
        for label, mask in instances:
            rle = mask_utils.encode(np.asfortranarray(mask))
            ys, xs = np.nonzero(mask)
            annotations.append({
                "id": len(annotations) + 1,  # COCOeval needs ids > 0
                "image_id": index, "category_id": label + 1, "iscrowd": 0,
                "bbox": [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)],
                "area": int(mask.sum()),
                "segmentation": {"size": [size, size], "counts": rle["counts"].decode("ascii")}})
    data = {"info": {"description": "cascade_rcnn synthetic shapes", "seed": seed, "size": size},
            "images": images, "annotations": annotations,
            "categories": [{"id": i + 1, "name": name, "supercategory": "shape"}
                           for i, name in enumerate(SHAPE_CLASSES)]}
    json_path.write_text(json.dumps(data, separators=(",", ":")))
    return json_path


def shapes_files(out_dir: str | Path) -> tuple[Path, Path]:
    """Where ``generate_shapes`` writes: the annotation file and the images folder."""
    return Path(out_dir) / "annotations.json", Path(out_dir) / "images"


def render_image(rng: np.random.Generator, size: int) -> tuple[np.ndarray, list[tuple[int, np.ndarray]]]:
    """One picture: RGB uint8 (size, size, 3) and its instances as (label, (size, size) uint8 mask)."""
    pad = size // 6 + 2
    items = _place_items(rng, size, pad)
    while True:  # dropping an instance only uncovers others, so this ends with all kept >= 50%
        owner = _owner_map(items, size, pad)
        visible = [owner == k for k in range(len(items))]
        keep = [item.label is None or mask.sum() >= max(MIN_VISIBLE * item.mask.sum(), 1)
                for item, mask in zip(items, visible)]
        if all(keep):
            break
        items = [item for item, kept in zip(items, keep) if kept]
    canvas = _background(rng, size)
    for item, mask in zip(items, visible):
        _paint(canvas, mask, item, rng)
    canvas += rng.standard_normal(canvas.shape, dtype=np.float32) * np.float32(rng.uniform(0, 10))
    image = np.clip(canvas, 0, 255).round().astype(np.uint8)
    instances = [(item.label, mask.view(np.uint8)) for item, mask in zip(items, visible) if item.label is not None]
    return image, instances


def _owner_map(items: list[_Item], size: int, pad: int) -> np.ndarray:
    """(size, size) int: index of the top-most item at each pixel, -1 for background."""
    owner = np.full((size + 2 * pad, size + 2 * pad), -1, dtype=np.int32)
    for k, item in enumerate(items):
        owner[item.mask] = k
    return owner[pad:pad + size, pad:pad + size]


def _place_items(rng: np.random.Generator, size: int, pad: int) -> list[_Item]:
    """Objects and distractors in drawing order: at random, touching an earlier one, or nested."""
    kinds = list(rng.choice(SHAPE_CLASSES, rng.integers(3, 11))) + list(rng.choice(DISTRACTORS, rng.integers(1, 5)))
    kinds = [str(k) for k in rng.permutation(kinds)]
    min_radius, max_radius = 4.0, size / 6  # 8 px to size / 3 across
    items: list[_Item] = []
    for kind in kinds:
        radius = rng.uniform(min_radius, max_radius)
        if kind in ("star", "ring"):
            radius = max(radius, 6.0)  # recognisable from 12 px
        elif kind in DISTRACTORS:
            radius = max(radius, 8.0)  # below 16 px they could pass for a class
        mode = rng.random()
        hosts = [i for i in items if i.kind in ("ring", "circle", "rectangle") and i.radius > 20]
        if mode < 0.2 and hosts:  # nested: in a ring's hole, or on a large shape
            host = hosts[rng.integers(len(hosts))]
            room = host.hole * host.radius if host.kind == "ring" else 0.4 * host.radius  # >= 8 px
            radius = min(radius, 0.8 * room)
            offset = rng.uniform(0, max(room - radius, 0))
            angle = rng.uniform(0, 2 * math.pi)
            cx, cy = host.cx + offset * math.cos(angle), host.cy + offset * math.sin(angle)
        elif mode < 0.45 and items:  # touching (or slightly overlapping) an earlier item
            other = items[rng.integers(len(items))]
            angle = rng.uniform(0, 2 * math.pi)
            distance = rng.uniform(0.8, 1.0) * (other.radius + radius)
            cx, cy = other.cx + distance * math.cos(angle), other.cy + distance * math.sin(angle)
        else:
            cx, cy = rng.uniform(0, size), rng.uniform(0, size)
        cx, cy = min(max(cx, 0.0), size), min(max(cy, 0.0), size)  # whole shape inside the padded frame
        if kind in DISTRACTORS and items and rng.random() < 0.5:  # a class's colour, other geometry
            model = items[rng.integers(len(items))]
            color, texture = model.color, model.texture
        else:
            color, texture = _random_color(rng), _random_texture(rng)
        mask = np.zeros((size + 2 * pad, size + 2 * pad), dtype=np.uint8)
        hole = _draw_shape(mask, kind, cx + pad, cy + pad, radius, rng)
        items.append(_Item(kind, cx, cy, radius, mask.astype(bool), color, texture, hole))
    return items


def _draw_shape(mask: np.ndarray, kind: str, cx: float, cy: float, r: float, rng: np.random.Generator) -> float:
    """Draw ``kind`` (circumradius ``r``, random rotation) as 1s into ``mask``; returns the hole's
    radius as a fraction of ``r`` (rings), else 0."""
    rotation = rng.uniform(0, 2 * math.pi)
    if kind == "circle":
        cv2.circle(mask, _fixed((cx, cy)), _fixed(r), 1, -1, cv2.LINE_8, _SUBPIXEL)
    elif kind == "ring":
        hole = rng.uniform(0.45, 0.7)
        cv2.circle(mask, _fixed((cx, cy)), _fixed(r), 1, -1, cv2.LINE_8, _SUBPIXEL)
        cv2.circle(mask, _fixed((cx, cy)), _fixed(r * hole), 0, -1, cv2.LINE_8, _SUBPIXEL)
        return hole
    elif kind == "triangle":
        angles = np.array([0.0, 2.1, 4.2]) + rng.uniform(-0.3, 0.3, 3) + rotation
        _fill(mask, _polar(cx, cy, r * rng.uniform(0.85, 1.0, 3), angles))
    elif kind == "rectangle":
        aspect = rng.uniform(1.0, 2.2)
        half_w, half_h = r * aspect / math.hypot(aspect, 1), r / math.hypot(aspect, 1)
        corners = np.array([[-half_w, -half_h], [half_w, -half_h], [half_w, half_h], [-half_w, half_h]])
        _fill(mask, corners @ _rotation(rotation).T + (cx, cy))
    elif kind == "star":
        radii = np.tile([r, r * rng.uniform(0.38, 0.5)], 5)
        _fill(mask, _polar(cx, cy, radii, rotation + np.arange(10) * math.pi / 5))
    elif kind == "blob":  # smooth irregular outline: low harmonics (no 5: a star) with random phases
        angles = np.linspace(0, 2 * math.pi, 48, endpoint=False)
        radii = np.ones(48)
        for harmonic in (1, 2, 3, 4):
            radii += rng.uniform(0.05, 0.22) * np.cos(harmonic * angles + rng.uniform(0, 2 * math.pi))
        _fill(mask, _polar(cx, cy, r * radii / radii.max(), angles + rotation))
    elif kind == "ellipse":
        axes = _fixed((r, r / rng.uniform(1.7, 3.0)))
        cv2.ellipse(mask, _fixed((cx, cy)), axes, math.degrees(rotation), 0, 360, 1, -1, cv2.LINE_8, _SUBPIXEL)
    elif kind == "stroke":  # a thin bent line
        points = [np.array([cx, cy]) - r * np.array([math.cos(rotation), math.sin(rotation)])]
        for _ in range(rng.integers(1, 4)):
            rotation += rng.uniform(-1.0, 1.0)
            points.append(points[-1] + 2 * r / 3 * np.array([math.cos(rotation), math.sin(rotation)]))
        cv2.polylines(mask, [_fixed(np.array(points))], False, 1, int(rng.integers(1, 5)), cv2.LINE_8, _SUBPIXEL)
    elif kind == "cross":
        arm = rng.uniform(0.25, 0.4) * r
        outline = np.array([[r, -arm], [r, arm], [arm, arm]])  # a quarter of the outline
        quarter = [outline @ _rotation(q * math.pi / 2).T for q in range(4)]
        _fill(mask, np.concatenate(quarter) @ _rotation(rotation).T + (cx, cy))
    elif kind == "arc":  # a ring with a gap
        thickness = max(2, round(r * rng.uniform(0.3, 0.5)))
        gap = rng.uniform(50, 120)
        cv2.ellipse(mask, _fixed((cx, cy)), _fixed((r - thickness / 2, r - thickness / 2)), math.degrees(rotation),
                    gap / 2, 360 - gap / 2, 1, thickness, cv2.LINE_8, _SUBPIXEL)
    return 0.0


def _fixed(value):
    """Image coordinates -> cv2's fixed-point integers (tuples stay tuples, arrays become int32)."""
    if isinstance(value, tuple):
        return tuple(int(round(v * 2 ** _SUBPIXEL)) for v in value)
    if isinstance(value, np.ndarray):
        return np.round(value * 2 ** _SUBPIXEL).astype(np.int32)
    return int(round(value * 2 ** _SUBPIXEL))


def _fill(mask: np.ndarray, points: np.ndarray) -> None:
    cv2.fillPoly(mask, [_fixed(points)], 1, cv2.LINE_8, _SUBPIXEL)


def _polar(cx: float, cy: float, radii, angles) -> np.ndarray:
    return np.stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)], axis=1)


def _rotation(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, -s], [s, c]])


def _random_color(rng: np.random.Generator) -> np.ndarray:
    hsv = np.uint8([[[rng.integers(0, 180), rng.integers(40, 256), rng.integers(50, 256)]]])
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32)


def _random_texture(rng: np.random.Generator) -> tuple:
    """(shading amplitude, shading direction, stripe period or 0, stripe angle, stripe colour, noise)."""
    stripes = rng.random() < 0.2
    return (rng.uniform(0, 60), rng.uniform(0, 2 * math.pi), rng.uniform(3, 9) if stripes else 0.0,
            rng.uniform(0, math.pi), _random_color(rng), rng.uniform(0, 15))


def _paint(canvas: np.ndarray, visible: np.ndarray, item: _Item, rng: np.random.Generator) -> None:
    """Paint ``item``'s texture on the ``visible`` pixels of the (S, S, 3) float canvas, in the
    object's own frame (shading across it, stripes, pixel noise)."""
    ys, xs = np.nonzero(visible)
    if not len(xs):
        return
    shade, shade_angle, period, stripe_angle, stripe_color, noise = item.texture
    u = ((xs - item.cx) * math.cos(shade_angle) + (ys - item.cy) * math.sin(shade_angle)) / item.radius
    colors = np.repeat(item.color[None], len(xs), axis=0) + (shade * u)[:, None]
    if period:
        v = (xs - item.cx) * math.cos(stripe_angle) + (ys - item.cy) * math.sin(stripe_angle)
        on = np.sin(2 * math.pi * v / period) > 0
        colors[on] = stripe_color
    canvas[ys, xs] = colors + rng.normal(0, noise, colors.shape)


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """(S, S, 3) float32 texture: a two-colour gradient plus one of smooth blotches, stripes,
    checkers, or nothing (pixel noise is added to the whole picture at the end)."""
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    angle = rng.uniform(0, 2 * math.pi)
    t = xs * math.cos(angle) + ys * math.sin(angle)
    t = ((t - t.min()) / (t.max() - t.min()))[..., None]
    canvas = _random_color(rng) * (1 - t) + _random_color(rng) * t
    kind = rng.integers(4)
    if kind == 0:  # smooth blotches
        cells = int(rng.integers(3, 12))
        low = rng.uniform(-1, 1, (cells, cells, 3)).astype(np.float32)
        canvas += rng.uniform(20, 70) * cv2.resize(low, (size, size), interpolation=cv2.INTER_CUBIC)
    elif kind == 1:  # stripes
        angle, period = rng.uniform(0, math.pi), rng.uniform(4, 40)
        wave = np.sin(2 * math.pi * (xs * math.cos(angle) + ys * math.sin(angle)) / period)
        canvas += wave[..., None] * rng.uniform(-60, 60, 3).astype(np.float32)
    elif kind == 2:  # checkers
        cell = rng.uniform(6, 40)
        board = ((xs // cell + ys // cell) % 2) * 2 - 1
        canvas += board[..., None] * rng.uniform(-40, 40, 3).astype(np.float32)
    return canvas
