"""The checks and repairs of a COCO annotation file and its images, run once when a data set is built.

Every defect (a missing or unreadable image, a size that differs from the JSON's, an annotation of
an unknown image or category, a non-finite, negative, empty or outside box, a short polygon, an
unreadable segmentation, a duplicate id, ...) is handled by one fixed rule and recorded in a
:class:`DatasetReport` (see ``report.DEFECTS``). Only a file that is not COCO JSON, or one without
any usable category, raises :class:`DatasetError` naming it. Image files are checked from their
headers (no pixel decoded).
"""
from __future__ import annotations

import json
import math
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ..errors import CascadeRCNNError
from .images import ImageError, image_file_size
from .report import DatasetReport

# Names of a "no object" category that labelme-style converters emit (as id 0, without
# annotations); see ``without_unused_background``.
BACKGROUND_NAMES = ("_background_", "background")
HEADER_READERS = 16  # threads reading image headers at start (I/O bound)


class DatasetError(CascadeRCNNError, ValueError):
    """An annotation file (or image) that cannot be used; the message names the file."""


class ClassNamesError(DatasetError):
    """An annotation file whose categories are not the classes expected (a model's, a training set's)."""


def load_json(path: Path) -> dict:
    """The file's JSON object, which must hold the lists "images", "annotations" and "categories"."""
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


def valid_categories(categories: list, report: DatasetReport) -> list[dict]:
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


def without_unused_background(categories: list[dict], annotations: list[dict]) -> list[dict]:
    """``categories`` less one named "_background_" or "background" that no annotation uses
    (labelme's converter writes one as id 0; kept, label 0 would be a class that never occurs).
    A background category WITH annotations is a real class and is kept like any other."""
    used = {a["category_id"] for a in annotations}
    return [c for c in categories if not (c["name"].strip().lower() in BACKGROUND_NAMES and c["id"] not in used)]


def check_class_names(expected: tuple[str, ...], found: tuple[str, ...], path: Path) -> None:
    """Raise :class:`ClassNamesError` unless the file's classes are ``expected``, naming the first difference."""
    if expected == found:
        return
    first = next((i for i, (a, b) in enumerate(zip(expected, found)) if a != b), min(len(expected), len(found)))
    got = repr(found[first]) if first < len(found) else "nothing"
    want = repr(expected[first]) if first < len(expected) else "nothing"
    raise ClassNamesError(f"{path}: its categories do not match the expected classes: expected "
                       f"{len(expected)} classes {list(expected)}, the file has {len(found)} "
                       f"{list(found)} (sorted by category id); first difference at label {first}: "
                       f"expected {want}, found {got}")


def valid_images(images: list, report: DatasetReport) -> list[dict]:
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


def readable_images(images: list[dict], image_dir: Path, report: DatasetReport) -> list[dict]:
    """The images whose file exists, has a readable header and the JSON's size."""
    kept = []
    with ThreadPoolExecutor(HEADER_READERS) as pool:
        for image, problem in zip(images, pool.map(lambda image: _file_problem(image, image_dir), images)):
            if problem is None:
                kept.append(image)
            else:
                report.record(*problem)
    return kept


def _file_problem(image: dict, image_dir: Path) -> tuple[str, str] | None:
    """(defect kind, offender) of an image's file, or None if it is fine."""
    path = image_dir / image["file_name"]
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


def valid_annotations(annotations: list, images: list[dict], report: DatasetReport) -> list[dict]:
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
                report.record("duplicate_annotation_id", annotation_name(annotation, names[annotation["image_id"]]))
                if annotation == first_with_id[ann_id]:
                    continue
            else:
                first_with_id[ann_id] = annotation
        kept.append(annotation)
    return kept


def group_by_image(images: list[dict], annotations: list[dict], category_ids: set[int],
                   report: DatasetReport) -> dict[int, list[dict]]:
    """The annotations of ``category_ids``, per image id (those of other categories recorded)."""
    names = {image["id"]: image["file_name"] for image in images}
    by_image: dict[int, list[dict]] = {image["id"]: [] for image in images}
    for annotation in annotations:
        if annotation["category_id"] in category_ids:
            by_image[annotation["image_id"]].append(annotation)
        else:
            report.record("unknown_category", annotation_name(annotation, names[annotation["image_id"]]))
    return by_image


def checked_box(bbox, width: int, height: int, name: str, report: DatasetReport) -> list[float] | None:
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


def checked_segmentation(segmentation, image: dict, name: str, report: DatasetReport) -> list | dict | None:
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


def annotation_name(annotation: dict, file_name: str) -> str:
    """How a report names an annotation: ``annotation id 17 (a.png)``."""
    return f"annotation id {annotation.get('id', '(none)')} ({file_name})"


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _short(value, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."
