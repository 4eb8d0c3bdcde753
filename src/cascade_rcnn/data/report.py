"""What a COCO data set check found: every kind of defect, its handling, counts and offenders.

A defect is anything in an annotation file (or its images) that cannot be used as written. Each
kind has one fixed handling, listed in ``DEFECTS`` and in the README; the data set is rejected
outright only when the file is not COCO JSON or nothing usable is left.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass(frozen=True)
class DefectKind:
    what: str  # plural noun phrase: "image files that do not exist"
    handling: str  # what we do about each one: "skipped with their annotations"
    loses_image: bool = False  # the image is left out (evaluation refuses such a data set)


DEFECTS: dict[str, DefectKind] = {
    "malformed_category": DefectKind("categories without an integer id and a string name", "dropped"),
    "duplicate_category_id": DefectKind("categories repeating an earlier category's id", "dropped (the first kept)"),
    "malformed_image": DefectKind("image entries without an integer id, a file_name and a positive "
                                  "integer width and height", "skipped", loses_image=True),
    "duplicate_image_id": DefectKind("image entries repeating an earlier image's id",
                                     "skipped (the first kept)", loses_image=True),
    "missing_image": DefectKind("image files that do not exist", "skipped with their annotations",
                                loses_image=True),
    "unreadable_image": DefectKind("files that are not readable images (header check)",
                                   "skipped with their annotations", loses_image=True),
    "size_mismatch": DefectKind("images whose file size differs from the JSON's width x height",
                                "skipped with their annotations (drawn in the JSON's frame, they would "
                                "not fit the picture)", loses_image=True),
    "malformed_annotation": DefectKind("annotations that are not objects or lack an integer category_id",
                                       "dropped"),
    "duplicate_annotation_id": DefectKind("annotations repeating an earlier annotation's id",
                                          "exact copies dropped, others kept (ids play no part in training)"),
    "unknown_image_id": DefectKind("annotations whose image_id is not an image", "dropped"),
    "unknown_category": DefectKind("annotations whose category_id is not a category", "dropped"),
    "bad_box": DefectKind("boxes that are missing or not 4 finite numbers", "dropped"),
    "negative_box": DefectKind("boxes with a negative width or height", "dropped"),
    "outside_box": DefectKind("boxes wholly outside the image", "dropped"),
    "zero_size_box": DefectKind("boxes under 1 px wide or high (after clipping)", "dropped"),
    "clipped_box": DefectKind("boxes reaching outside the image", "clipped to the image"),
    "short_polygon": DefectKind("polygons with fewer than 3 points (mask models)",
                                "dropped from their segmentation"),
    "empty_segmentation": DefectKind("instances without a usable polygon or RLE (mask models)",
                                     "the filled box is the mask"),
    "bad_segmentation": DefectKind("segmentations that are neither polygons nor an RLE of the image's "
                                   "size (mask models)", "the filled box is the mask"),
}


@dataclass
class DatasetReport:
    """Counts of what was loaded and filtered, and every defect with its first offenders.

    ``record(kind, offender)`` notes one defect; ``offender`` names it for a person, e.g.
    ``"images/a.png"`` or ``"annotation id 17 (a.png)"``.
    """

    images: int = 0  # images in the data set
    annotations: int = 0  # object instances (not crowd) in the data set
    crowd_annotations: int = 0  # iscrowd=1 regions kept as crowd_boxes
    images_without_annotations: int = 0  # images kept as negatives: no instance (crowd only counts as none)
    filtered_empty: int = 0  # images dropped by filter_empty_gt: no annotation of a known category
    filtered_small: int = 0  # images dropped by min_size: shorter side below it
    defects: Counter = field(default_factory=Counter)
    offenders: dict[str, list[str]] = field(default_factory=dict)
    examples: int = 5  # offenders kept per kind

    def record(self, kind: str, offender: str) -> None:
        if kind not in DEFECTS:
            raise KeyError(f"unknown defect kind {kind!r}")
        self.defects[kind] += 1
        names = self.offenders.setdefault(kind, [])
        if len(names) < self.examples:
            names.append(offender)

    def count(self, kind: str) -> int:
        return self.defects[kind]

    def lost_images(self) -> list[str]:
        """Offender lines of the defects that left an image out (the first few of each kind)."""
        return [f"{self.defects[kind]} {DEFECTS[kind].what}: {', '.join(self.offenders[kind])}"
                + self._more(kind) for kind in DEFECTS if DEFECTS[kind].loses_image and self.defects[kind]]

    def summary(self) -> str:
        """The counts on one line, then one line per kind of defect found: count, what, handling,
        the first offenders."""
        lines = [f"{self.images} images, {self.annotations} instances, {self.crowd_annotations} crowd regions, "
                 f"{self.images_without_annotations} images without instances"
                 + "".join(f", {n} {what}" for n, what in (
                     (self.filtered_empty, "images without annotations left out (filter_empty_gt)"),
                     (self.filtered_small, "images under min_size left out")) if n)]
        for kind, defect in DEFECTS.items():
            if self.defects[kind]:
                lines.append(f"  {self.defects[kind]} {defect.what}: {defect.handling}; "
                             f"{', '.join(self.offenders[kind])}{self._more(kind)}")
        if len(lines) == 1:
            lines[0] += "; no defects"
        return "\n".join(lines)

    def _more(self, kind: str) -> str:
        more = self.defects[kind] - len(self.offenders[kind])
        return f" (+{more} more)" if more else ""
