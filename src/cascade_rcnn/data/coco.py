"""A COCO-format instance data set (boxes, labels, masks, crowd regions) for training and evaluation.

Everything that is wrong with the annotation file is found when the data set is built, never
mid-epoch: a malformed file raises :class:`DatasetError` naming it (and the annotation id);
fixable problems (boxes reaching outside the image, boxes smaller than a pixel, missing image
files, annotations of unknown categories) are fixed or skipped and counted in
:class:`DatasetReport`. The one check left to ``__getitem__`` is that the decoded image has the
size the file states (decoding every image up front would cost minutes on COCO).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from pycocotools import mask as mask_utils

from .images import read_image

# Names of a "no object" category that labelme-style converters emit (as id 0, without
# annotations); see ``drop_unused_background``.
BACKGROUND_NAMES = ("_background_", "background")


class DatasetError(ValueError):
    """An annotation file (or image) that cannot be used; the message names the file."""


@dataclass
class DatasetReport:
    """What was loaded, fixed and skipped. Box counts cover the images whose file exists;
    ``unknown_category_annotations`` covers the whole file."""

    images: int = 0  # images in the data set
    annotations: int = 0  # object instances (not crowd) in the data set
    images_without_annotations: int = 0  # images kept as negatives: no instance (crowd only counts as none)
    crowd_annotations: int = 0  # iscrowd=1 regions kept as crowd_boxes
    clipped_boxes: int = 0  # boxes (instances or crowd) reaching outside the image, clipped
    degenerate_boxes: int = 0  # boxes with width or height < 1 px after clipping, dropped
    missing_images: int = 0  # images whose file does not exist, dropped with their annotations
    unknown_category_annotations: int = 0  # annotations whose category_id is not a category, dropped
    skipped_empty_images: int = 0  # images without instances, dropped because of skip_empty

    def summary(self) -> str:
        """One human line, e.g. ``3 images, 12 instances; clipped 2 boxes, dropped 1 missing image``."""
        line = (f"{self.images} images, {self.annotations} instances, {self.crowd_annotations} crowd regions, "
                f"{self.images_without_annotations} images without instances")
        fixes = [f"{count} {what}" for count, what in (
            (self.clipped_boxes, "boxes clipped to the image"),
            (self.degenerate_boxes, "boxes under 1 px dropped"),
            (self.missing_images, "missing image files skipped"),
            (self.unknown_category_annotations, "annotations of unknown categories skipped"),
            (self.skipped_empty_images, "images without instances skipped"),
        ) if count]
        return line + ("; " + ", ".join(fixes) if fixes else "; nothing to fix")


@dataclass
class _ImageRecord:
    """One image's annotations after checking, in the form ``__getitem__`` needs."""

    image_id: int
    file_name: str
    height: int
    width: int
    boxes: np.ndarray  # (N, 4) float32 xyxy, clipped
    labels: np.ndarray  # (N,) int64
    segmentations: list  # N entries: polygons (list of lists), RLE dict, or None (use the box)
    crowd_boxes: np.ndarray  # (M, 4) float32 xyxy, clipped


class CocoDataset(torch.utils.data.Dataset):
    """Images and instance annotations of a COCO-format file, with contiguous labels.

    Labels: the categories sorted by id are labels 0..C-1; ``category_ids[label]`` is the COCO id
    and ``class_names[label]`` the name. Any ids work (starting at 0, with gaps).

    Args:
        json_path: the annotation file.
        image_dir: folder the images' ``file_name`` are relative to.
        class_names: the classes expected (e.g. a checkpoint's); the file's categories must have
            exactly these names in this order, or :class:`DatasetError` says how they differ.
        skip_empty: drop images without instances (MMDetection's COCO training recipe); by default
            they are kept as negatives.
        with_masks: decode instance masks in ``__getitem__``.
        check_files: drop (and count) images whose file does not exist.
        drop_unused_background: drop a category named "_background_" or "background" that has no
            annotation at all in the file — labelme's converter writes one as id 0, and keeping it
            would make label 0 a class that never occurs. A background category WITH annotations
            is a real class and is kept like any other.

    ``dataset[i]`` is a dict of numpy arrays (H, W = the image's size):
        image: (H, W, 3) uint8 RGB; boxes: (N, 4) float32 x1 y1 x2 y2 inside the image;
        labels: (N,) int64; masks: (N, H, W) uint8 in {0, 1} (only with ``with_masks``);
        crowd_boxes: (M, 4) float32 iscrowd=1 regions (not in boxes/labels/masks: training
        ignores what overlaps them); image_id: int; file_name: str.
    Boxes are the annotation's ``bbox`` [x, y, w, h] as [x, y, x + w, y + h], clipped to the image;
    masks are decoded from polygons, compressed or uncompressed RLE, or are the filled box when an
    annotation has no segmentation.
    """

    def __init__(self, json_path: str | Path, image_dir: str | Path, class_names: list[str] | None = None,
                 skip_empty: bool = False, with_masks: bool = True, check_files: bool = True,
                 drop_unused_background: bool = True) -> None:
        self.json_path = Path(json_path)
        self.image_dir = Path(image_dir)
        self.with_masks = with_masks
        data = _load_json(self.json_path)
        categories = _check_categories(data["categories"], self.json_path)
        images = _check_images(data["images"], self.json_path)
        annotations = _check_annotations(data["annotations"], images, self.json_path)
        if drop_unused_background:
            used = {a["category_id"] for a in annotations}
            categories = [c for c in categories
                          if not (c["name"].strip().lower() in BACKGROUND_NAMES and c["id"] not in used)]
        self.class_names: tuple[str, ...] = tuple(c["name"] for c in categories)
        self.category_ids: tuple[int, ...] = tuple(c["id"] for c in categories)
        if class_names is not None:
            _check_class_names(tuple(class_names), self.class_names, self.json_path)
        self.report = DatasetReport()
        self.records = self._build_records(images, annotations, skip_empty, check_files)

    def __len__(self) -> int:
        return len(self.records)

    @property
    def landscape(self) -> list[bool]:
        """Per image: width >= height (training batches group images of one orientation)."""
        return [record.width >= record.height for record in self.records]

    def __getitem__(self, index: int) -> dict:
        record = self.records[index]
        path = self.image_dir / record.file_name
        image = read_image(path)
        if image.shape[:2] != (record.height, record.width):
            raise DatasetError(f"{path}: the image is {image.shape[1]}x{image.shape[0]} (w x h) but "
                               f"{self.json_path} says {record.width}x{record.height} "
                               f"(image id {record.image_id})")
        sample = {"image": image, "boxes": record.boxes.copy(), "labels": record.labels.copy(),
                  "crowd_boxes": record.crowd_boxes.copy(), "image_id": record.image_id,
                  "file_name": record.file_name}
        if self.with_masks:
            sample["masks"] = _decode_masks(record)
        return sample

    def _build_records(self, images: list[dict], annotations: list[dict], skip_empty: bool,
                       check_files: bool) -> list[_ImageRecord]:
        report = self.report
        label_of = {category_id: label for label, category_id in enumerate(self.category_ids)}
        by_image: dict[int, list[dict]] = {image["id"]: [] for image in images}
        for annotation in annotations:
            if annotation["category_id"] not in label_of:
                report.unknown_category_annotations += 1
            else:
                by_image[annotation["image_id"]].append(annotation)
        records = []
        for image in images:
            if check_files and not (self.image_dir / image["file_name"]).is_file():
                report.missing_images += 1
                continue
            boxes, labels, segmentations, crowd_boxes = [], [], [], []
            for annotation in by_image[image["id"]]:
                box = _clip_box(annotation["bbox"], image["width"], image["height"], report)
                if box is None:
                    continue
                if annotation.get("iscrowd", 0):
                    crowd_boxes.append(box)
                else:
                    boxes.append(box)
                    labels.append(label_of[annotation["category_id"]])
                    segmentations.append(annotation.get("segmentation") or None)
            if not boxes and skip_empty:
                report.skipped_empty_images += 1
                continue
            report.images += 1
            report.annotations += len(boxes)
            report.crowd_annotations += len(crowd_boxes)
            report.images_without_annotations += not boxes
            records.append(_ImageRecord(
                image["id"], image["file_name"], image["height"], image["width"],
                np.array(boxes, dtype=np.float32).reshape(-1, 4), np.array(labels, dtype=np.int64),
                segmentations, np.array(crowd_boxes, dtype=np.float32).reshape(-1, 4)))
        return records


def _load_json(path: Path) -> dict:
    if not path.is_file():
        raise DatasetError(f"{path}: no such annotation file")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DatasetError(f"{path}: not a JSON file ({error})") from None
    if not isinstance(data, dict):
        raise DatasetError(f"{path}: expected a COCO JSON object, got a {type(data).__name__}")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            problem = "missing" if key not in data else f"not a list but a {type(data[key]).__name__}"
            raise DatasetError(f"{path}: not a COCO instances file: \"{key}\" is {problem}")
    return data


def _check_categories(categories: list, path: Path) -> list[dict]:
    """The categories sorted by id, each with an int ``id`` and a str ``name``; ids unique."""
    seen = set()
    for category in categories:
        if not (isinstance(category, dict) and _is_int(category.get("id"))
                and isinstance(category.get("name"), str)):
            raise DatasetError(f"{path}: category {category!r} needs an integer \"id\" and a string \"name\"")
        if category["id"] in seen:
            raise DatasetError(f"{path}: category id {category['id']} appears twice")
        seen.add(category["id"])
    if not categories:
        raise DatasetError(f"{path}: \"categories\" is empty")
    return sorted(categories, key=lambda c: c["id"])


def _check_images(images: list, path: Path) -> list[dict]:
    seen = set()
    for image in images:
        if not isinstance(image, dict) or not _is_int(image.get("id")):
            raise DatasetError(f"{path}: image entry {_short(image)} has no integer \"id\"")
        if not isinstance(image.get("file_name"), str):
            raise DatasetError(f"{path}: image id {image['id']} has no \"file_name\"")
        for key in ("height", "width"):
            if not _is_int(image.get(key)) or image[key] < 1:
                raise DatasetError(f"{path}: image id {image['id']} needs a positive integer \"{key}\"")
        if image["id"] in seen:
            raise DatasetError(f"{path}: image id {image['id']} appears twice")
        seen.add(image["id"])
    return images


def _check_annotations(annotations: list, images: list[dict], path: Path) -> list[dict]:
    """Raises on anything malformed; leaves unknown categories to be counted and skipped."""
    sizes = {image["id"]: (image["height"], image["width"]) for image in images}
    for annotation in annotations:
        if not isinstance(annotation, dict):
            raise DatasetError(f"{path}: annotation {_short(annotation)} is not an object")
        where = f"{path}: annotation id {annotation.get('id', '(none)')}"
        if annotation.get("image_id") not in sizes:
            raise DatasetError(f"{where}: image_id {annotation.get('image_id')!r} is not in \"images\"")
        if not _is_int(annotation.get("category_id")):
            raise DatasetError(f"{where}: needs an integer \"category_id\"")
        bbox = annotation.get("bbox")
        if bbox is None:
            raise DatasetError(f"{where}: has no \"bbox\"")
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(_is_finite(v) for v in bbox)):
            raise DatasetError(f"{where}: \"bbox\" must be 4 finite numbers [x, y, w, h], got {_short(bbox)}")
        _check_segmentation(annotation.get("segmentation"), sizes[annotation["image_id"]], where)
    return annotations


def _check_segmentation(segmentation, size: tuple[int, int], where: str) -> None:
    """Polygons ``[[x1, y1, x2, y2, ...], ...]`` or an RLE ``{"size": [h, w], "counts": ...}``
    (the image's size), or nothing."""
    if not segmentation:
        return
    if isinstance(segmentation, list):
        if not all(isinstance(p, list) and len(p) % 2 == 0 and all(_is_finite(v) for v in p)
                   for p in segmentation):
            raise DatasetError(f"{where}: polygon \"segmentation\" must be lists of x, y numbers")
        return
    if isinstance(segmentation, dict) and isinstance(segmentation.get("counts"), (list, str)):
        if list(segmentation.get("size", [])) != list(size):
            raise DatasetError(f"{where}: RLE size {segmentation.get('size')} is not the image's "
                               f"[height, width] {list(size)}")
        return
    raise DatasetError(f"{where}: \"segmentation\" is neither polygons nor an RLE: {_short(segmentation)}")


def _check_class_names(expected: tuple[str, ...], found: tuple[str, ...], path: Path) -> None:
    if expected == found:
        return
    first = next((i for i, (a, b) in enumerate(zip(expected, found)) if a != b), min(len(expected), len(found)))
    got = repr(found[first]) if first < len(found) else "nothing"
    want = repr(expected[first]) if first < len(expected) else "nothing"
    raise DatasetError(f"{path}: its categories do not match the expected classes: expected "
                       f"{len(expected)} classes {list(expected)}, the file has {len(found)} "
                       f"{list(found)} (sorted by category id); first difference at label {first}: "
                       f"expected {want}, found {got}")


def _clip_box(bbox: list[float], width: int, height: int, report: DatasetReport) -> list[float] | None:
    """[x, y, w, h] -> [x1, y1, x2, y2] clipped to the image, or None (counted) if under 1 px."""
    x, y, w, h = (float(v) for v in bbox)
    box = [x, y, x + w, y + h]
    clipped = [min(max(box[0], 0.0), width), min(max(box[1], 0.0), height),
               min(max(box[2], 0.0), width), min(max(box[3], 0.0), height)]
    if clipped[2] - clipped[0] < 1 or clipped[3] - clipped[1] < 1:
        report.degenerate_boxes += 1
        return None
    report.clipped_boxes += clipped != box
    return clipped


def _decode_masks(record: _ImageRecord) -> np.ndarray:
    """(N, H, W) uint8 masks of one image's instances."""
    height, width = record.height, record.width
    rles = []
    for segmentation, box in zip(record.segmentations, record.boxes.tolist()):
        if isinstance(segmentation, dict):
            if isinstance(segmentation["counts"], list):  # uncompressed RLE
                rles.append(mask_utils.frPyObjects(segmentation, height, width))
            else:
                rles.append(segmentation)
            continue
        # pycocotools reads a first polygon of 4 numbers as a box: keep polygons of >= 3 points.
        polygons = [p for p in segmentation or [] if len(p) >= 6]
        if not polygons:  # no usable segmentation: the box is the mask
            polygons = [[box[0], box[1], box[2], box[1], box[2], box[3], box[0], box[3]]]
        rles.append(mask_utils.merge(mask_utils.frPyObjects(polygons, height, width)))
    if not rles:
        return np.zeros((0, height, width), dtype=np.uint8)
    return np.ascontiguousarray(mask_utils.decode(rles).transpose(2, 0, 1))


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _short(value, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."
