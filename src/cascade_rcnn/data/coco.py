"""A COCO-format instance data set (boxes, labels, masks, crowd regions) for training and evaluation.

The annotation file and the image files are checked once, when the data set is built
(``coco_checks``: every defect is handled by one fixed rule and recorded in ``dataset.report``).
The one check left to ``__getitem__`` is that the decoded image has the size stated.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from pycocotools import mask as mask_utils

from .coco_checks import (
    DatasetError,
    annotation_name,
    check_class_names,
    checked_box,
    checked_segmentation,
    group_by_image,
    load_json,
    readable_images,
    valid_annotations,
    valid_categories,
    valid_images,
    without_unused_background,
)
from .images import read_image
from .lvis import with_file_names
from .report import DatasetReport


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
        image_dir: folder the images' ``file_name`` are relative to (an LVIS entry with only a
            ``coco_url`` is read from the URL's file name: ``lvis.with_file_names``).
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
            annotation at all in the file (labelme's; see ``coco_checks.without_unused_background``).

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
        data = load_json(self.json_path)
        categories = valid_categories(data["categories"], self.report)
        images = valid_images(with_file_names(data["images"], self.image_dir), self.report)
        annotations = valid_annotations(data["annotations"], images, self.report)
        if drop_unused_background:
            categories = without_unused_background(categories, annotations)
        if not categories:
            raise DatasetError(f"{self.json_path}: no usable category in \"categories\"")
        self.class_names: tuple[str, ...] = tuple(c["name"] for c in categories)
        self.category_ids: tuple[int, ...] = tuple(c["id"] for c in categories)
        if class_names is not None:
            check_class_names(tuple(class_names), self.class_names, self.json_path)
        by_image = group_by_image(images, annotations, set(self.category_ids), self.report)
        if check_files:  # first, so that every broken file is reported, also of images filtered out
            images = readable_images(images, self.image_dir, self.report)
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

    def _record(self, image: dict, annotations: list[dict], label_of: dict[int, int]) -> _ImageRecord:
        """The image's checked boxes (crowd regions apart), labels and segmentations; counted in the report."""
        report = self.report
        boxes, labels, segmentations, crowd_boxes = [], [], [], []
        for annotation in annotations:
            name = annotation_name(annotation, image["file_name"])
            box = checked_box(annotation.get("bbox"), image["width"], image["height"], name, report)
            if box is None:
                continue
            if annotation.get("iscrowd", 0):
                crowd_boxes.append(box)
                continue
            boxes.append(box)
            labels.append(label_of[annotation["category_id"]])
            segmentations.append(checked_segmentation(annotation.get("segmentation"), image, name, report)
                                 if self.with_masks else None)
        report.images += 1
        report.annotations += len(boxes)
        report.crowd_annotations += len(crowd_boxes)
        report.images_without_annotations += not boxes
        return _ImageRecord(image["id"], image["file_name"], image["height"], image["width"],
                            np.array(boxes, dtype=np.float32).reshape(-1, 4), np.array(labels, dtype=np.int64),
                            segmentations, np.array(crowd_boxes, dtype=np.float32).reshape(-1, 4))


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
