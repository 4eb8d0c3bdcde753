"""A COCO-format instance data set (boxes, labels, masks, crowd regions) for training and evaluation.

The annotation file and the image files are checked once, when the data set is built: every
defect (a missing or unreadable image, a size that differs from the JSON's, an annotation of an
unknown image or category, a non-finite, negative, empty or outside box, a short polygon, an
unreadable segmentation, a duplicate id, ...) is handled by one fixed rule and recorded in
:class:`DatasetReport` (see ``report.DEFECTS``). Only a file that is not COCO JSON, or one without
any usable category, raises :class:`DatasetError` naming it. The image headers are read (no pixel
decoded); the one check left to ``__getitem__`` is that the decoded image has the size stated.
"""
from __future__ import annotations

import json
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from pycocotools import mask as mask_utils

from .images import ImageError, image_file_size, read_image
from .report import DatasetReport

# Names of a "no object" category that labelme-style converters emit (as id 0, without
# annotations); see ``drop_unused_background``.
BACKGROUND_NAMES = ("_background_", "background")
HEADER_READERS = 16  # threads reading image headers at start (I/O bound)


class DatasetError(ValueError):
    """An annotation file (or image) that cannot be used; the message names the file."""


@dataclass
class _ImageRecord:
    """One image's annotations after checking, in the form ``__getitem__`` needs."""

    image_id: int
    file_name: str
    height: int
    width: int
    boxes: np.ndarray  # (N, 4) float32 xyxy, clipped
    labels: np.ndarray  # (N,) int64
    segmentations: list  # N entries: polygons (list of lists of >= 6 numbers), checked RLE dict, or None (the box)
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
        filter_empty_gt: leave out images that no annotation of a known category names
            (MMDetection's ``filter_empty_gt``: an image with only crowd regions, or only boxes
            later dropped as defective, is kept, as a negative). Off by default: kept as negatives.
        min_size: leave out images whose shorter side (the JSON's) is below this (MMDetection's
            ``min_size``; its COCO training recipe uses 32). 0 keeps all.
        with_masks: check segmentations and decode instance masks in ``__getitem__``.
        check_files: check that every image file exists, is a readable image (header only) and
            has the JSON's size; images failing it are left out and reported.
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
    annotation has no usable segmentation.
    """

    def __init__(self, json_path: str | Path, image_dir: str | Path, class_names: list[str] | None = None,
                 filter_empty_gt: bool = False, min_size: int = 0, with_masks: bool = True,
                 check_files: bool = True, drop_unused_background: bool = True) -> None:
        self.json_path = Path(json_path)
        self.image_dir = Path(image_dir)
        self.with_masks = with_masks
        self.report = DatasetReport()
        data = _load_json(self.json_path)
        categories = _valid_categories(data["categories"], self.report)
        images = _valid_images(data["images"], self.report)
        annotations = _valid_annotations(data["annotations"], images, self.report)
        if drop_unused_background:
            used = {a["category_id"] for a in annotations}
            categories = [c for c in categories
                          if not (c["name"].strip().lower() in BACKGROUND_NAMES and c["id"] not in used)]
        if not categories:
            raise DatasetError(f"{self.json_path}: no usable category in \"categories\"")
        self.class_names: tuple[str, ...] = tuple(c["name"] for c in categories)
        self.category_ids: tuple[int, ...] = tuple(c["id"] for c in categories)
        if class_names is not None:
            _check_class_names(tuple(class_names), self.class_names, self.json_path)
        by_image = self._group_by_image(images, annotations)
        if check_files:  # first, so that every broken file is reported, also of images filtered out
            images = self._with_readable_files(images)
        images = self._filter(images, by_image, filter_empty_gt, min_size)
        label_of = {category_id: label for label, category_id in enumerate(self.category_ids)}
        self.records = [self._record(image, by_image[image["id"]], label_of) for image in images]

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

    def require_every_image(self) -> None:
        """Raise :class:`DatasetError` if any image of the file was left out for a defect (for
        evaluation: the objects of a left-out image would silently count as misses)."""
        lost = self.report.lost_images()
        if lost:
            raise DatasetError(f"{self.json_path}: images that cannot be used with {self.image_dir}: "
                               + "; ".join(lost))

    def _group_by_image(self, images: list[dict], annotations: list[dict]) -> dict[int, list[dict]]:
        """The annotations of known categories, per image id (unknown categories recorded)."""
        known = set(self.category_ids)
        names = {image["id"]: image["file_name"] for image in images}
        by_image: dict[int, list[dict]] = {image["id"]: [] for image in images}
        for annotation in annotations:
            if annotation["category_id"] in known:
                by_image[annotation["image_id"]].append(annotation)
            else:
                self.report.record("unknown_category", _name(annotation, names[annotation["image_id"]]))
        return by_image

    def _filter(self, images: list[dict], by_image: dict[int, list[dict]], filter_empty_gt: bool,
                min_size: int) -> list[dict]:
        """MMDetection's ``filter_data``: no annotation of a known category, or too small."""
        kept = []
        for image in images:
            if filter_empty_gt and not by_image[image["id"]]:
                self.report.filtered_empty += 1
            elif min(image["width"], image["height"]) < min_size:
                self.report.filtered_small += 1
            else:
                kept.append(image)
        return kept

    def _with_readable_files(self, images: list[dict]) -> list[dict]:
        """The images whose file exists, has a readable header and the JSON's size."""
        kept = []
        with ThreadPoolExecutor(HEADER_READERS) as pool:
            for image, problem in zip(images, pool.map(self._file_problem, images)):
                if problem is None:
                    kept.append(image)
                else:
                    self.report.record(*problem)
        return kept

    def _file_problem(self, image: dict) -> tuple[str, str] | None:
        """(defect kind, offender) of an image's file, or None if it is fine."""
        path = self.image_dir / image["file_name"]
        if not path.is_file():
            return "missing_image", image["file_name"]
        try:
            size = image_file_size(path)
        except ImageError as error:
            return "unreadable_image", f"{image['file_name']} ({str(error).removeprefix(f'{path}: ')})"
        if size != (image["height"], image["width"]):
            return "size_mismatch", (f"{image['file_name']} (file {size[1]}x{size[0]}, "
                                     f"JSON {image['width']}x{image['height']})")
        return None

    def _record(self, image: dict, annotations: list[dict], label_of: dict[int, int]) -> _ImageRecord:
        report = self.report
        boxes, labels, segmentations, crowd_boxes = [], [], [], []
        for annotation in annotations:
            name = _name(annotation, image["file_name"])
            box = _checked_box(annotation.get("bbox"), image["width"], image["height"], name, report)
            if box is None:
                continue
            if annotation.get("iscrowd", 0):
                crowd_boxes.append(box)
                continue
            boxes.append(box)
            labels.append(label_of[annotation["category_id"]])
            segmentations.append(_checked_segmentation(annotation.get("segmentation"), image, name, report)
                                 if self.with_masks else None)
        report.images += 1
        report.annotations += len(boxes)
        report.crowd_annotations += len(crowd_boxes)
        report.images_without_annotations += not boxes
        return _ImageRecord(image["id"], image["file_name"], image["height"], image["width"],
                            np.array(boxes, dtype=np.float32).reshape(-1, 4), np.array(labels, dtype=np.int64),
                            segmentations, np.array(crowd_boxes, dtype=np.float32).reshape(-1, 4))


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


def _valid_categories(categories: list, report: DatasetReport) -> list[dict]:
    """The categories with an integer ``id`` and a string ``name``, first of each id, sorted by id."""
    kept: dict[int, dict] = {}
    for category in categories:
        if not (isinstance(category, dict) and _is_int(category.get("id"))
                and isinstance(category.get("name"), str)):
            report.record("malformed_category", _short(category))
        elif category["id"] in kept:
            report.record("duplicate_category_id", f"id {category['id']} ({category['name']!r})")
        else:
            kept[category["id"]] = category
    return sorted(kept.values(), key=lambda c: c["id"])


def _valid_images(images: list, report: DatasetReport) -> list[dict]:
    """The image entries with an integer id, a file_name and a positive size; first of each id."""
    kept: dict[int, dict] = {}
    for image in images:
        if not (isinstance(image, dict) and _is_int(image.get("id")) and isinstance(image.get("file_name"), str)
                and all(_is_int(image.get(key)) and image[key] > 0 for key in ("width", "height"))):
            report.record("malformed_image", _short(image))
        elif image["id"] in kept:
            report.record("duplicate_image_id", f"{image['file_name']} (id {image['id']}, "
                                                f"first {kept[image['id']]['file_name']})")
        else:
            kept[image["id"]] = image
    return list(kept.values())


def _valid_annotations(annotations: list, images: list[dict], report: DatasetReport) -> list[dict]:
    """The annotations that are objects with an integer category_id naming a known image; exact
    repeats of an earlier annotation with the same id dropped. Boxes and segmentations are
    checked later, per image kept."""
    names = {image["id"]: image["file_name"] for image in images}
    first_with_id: dict = {}
    kept = []
    for annotation in annotations:
        if not (isinstance(annotation, dict) and _is_int(annotation.get("category_id"))):
            report.record("malformed_annotation", _short(annotation))
            continue
        if not (_is_int(annotation.get("image_id")) and annotation["image_id"] in names):
            report.record("unknown_image_id", f"annotation id {annotation.get('id', '(none)')} "
                                              f"(image_id {annotation.get('image_id')!r})")
            continue
        ann_id = annotation.get("id")
        if isinstance(ann_id, (int, str)):
            if ann_id in first_with_id:
                report.record("duplicate_annotation_id", _name(annotation, names[annotation["image_id"]]))
                if annotation == first_with_id[ann_id]:
                    continue
            else:
                first_with_id[ann_id] = annotation
        kept.append(annotation)
    return kept


def _checked_box(bbox, width: int, height: int, name: str, report: DatasetReport) -> list[float] | None:
    """[x, y, w, h] -> [x1, y1, x2, y2] clipped to the image, or None for a defective box."""
    if not (isinstance(bbox, list) and len(bbox) == 4 and all(_is_finite(v) for v in bbox)):
        report.record("bad_box", f"{name}: {_short(bbox, 40)}")
        return None
    x, y, w, h = (float(v) for v in bbox)
    if w < 0 or h < 0:
        report.record("negative_box", f"{name}: {bbox}")
        return None
    box = [x, y, x + w, y + h]
    if box[0] >= width or box[1] >= height or box[2] <= 0 or box[3] <= 0:
        report.record("outside_box", f"{name}: {bbox}")
        return None
    clipped = [max(box[0], 0.0), max(box[1], 0.0), min(box[2], float(width)), min(box[3], float(height))]
    if clipped[2] - clipped[0] < 1 or clipped[3] - clipped[1] < 1:
        report.record("zero_size_box", f"{name}: {bbox}")
        return None
    if clipped != box:
        report.record("clipped_box", f"{name}: {bbox}")
    return clipped


def _checked_segmentation(segmentation, image: dict, name: str, report: DatasetReport) -> list | dict | None:
    """Polygons of >= 3 points, or an RLE of the image's size whose runs cover it exactly; None
    (the box will be the mask) for anything else, recorded."""
    if isinstance(segmentation, dict) and segmentation:
        return _checked_rle(segmentation, [image["height"], image["width"]], name, report)
    if isinstance(segmentation, list) and segmentation:
        if not all(isinstance(p, list) and len(p) % 2 == 0 and all(_is_finite(v) for v in p)
                   for p in segmentation):
            report.record("bad_segmentation", f"{name}: polygons that are not lists of x, y numbers")
            return None
        # pycocotools would also read a first polygon of 4 numbers as a box.
        polygons = [p for p in segmentation if len(p) >= 6]
        if len(polygons) < len(segmentation):
            report.record("short_polygon", name)
        if polygons:
            return polygons
    elif segmentation:
        report.record("bad_segmentation", f"{name}: neither polygons nor an RLE: {_short(segmentation, 40)}")
        return None
    report.record("empty_segmentation", name)
    return None


def _checked_rle(rle: dict, size: list[int], name: str, report: DatasetReport) -> dict | None:
    counts = rle.get("counts")
    if list(rle.get("size", [])) != size:
        report.record("bad_segmentation", f"{name}: RLE size {rle.get('size')} is not the image's "
                                          f"[height, width] {size}")
        return None
    runs = _rle_runs(counts) if isinstance(counts, str) else counts
    if not (isinstance(runs, list) and all(_is_int(r) and r >= 0 for r in runs)
            and sum(runs) == size[0] * size[1]):
        # pycocotools would read or write past the mask for runs that do not add up.
        report.record("bad_segmentation", f"{name}: RLE counts do not cover the {size[0]}x{size[1]} pixels")
        return None
    return rle


def _rle_runs(counts: str) -> list[int] | None:
    """The run lengths of COCO's compressed RLE string (pycocotools' ``rleFrString`` format: each
    number in 5-bit groups, low first, as characters 48 + group | 0x20 while more groups follow,
    sign-extended from bit 0x10 of the last group; from the fourth number on, each is stored as the
    difference to the number two before it). None if the string is not of that form."""
    runs: list[int] = []
    value = shift = 0
    for char in counts:
        group = ord(char) - 48
        if not 0 <= group < 64:
            return None
        value |= (group & 0x1F) << shift
        shift += 5
        if group & 0x20:
            continue
        if group & 0x10:
            value -= 1 << shift
        runs.append(value + (runs[-2] if len(runs) > 2 else 0))
        value = shift = 0
    return runs if shift == 0 else None


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
        polygons = segmentation or [[box[0], box[1], box[2], box[1], box[2], box[3], box[0], box[3]]]
        rles.append(mask_utils.merge(mask_utils.frPyObjects(polygons, height, width)))
    if not rles:
        return np.zeros((0, height, width), dtype=np.uint8)
    return np.ascontiguousarray(mask_utils.decode(rles).transpose(2, 0, 1))


def _name(annotation: dict, file_name: str) -> str:
    """How a report names an annotation: ``annotation id 17 (a.png)``."""
    return f"annotation id {annotation.get('id', '(none)')} ({file_name})"


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _short(value, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."
