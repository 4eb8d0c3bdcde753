"""LVIS v1's annotation format: COCO's, plus what its federated evaluation needs.

Each category carries a ``frequency`` ("r" rare, "c" common, "f" frequent: the APr / APc / APf
groups); each image lists ``neg_category_ids`` (categories checked to be absent: predictions of
them are false positives) and ``not_exhaustive_category_ids`` (categories whose instances were not
all annotated: unmatched predictions of them are ignored). LVIS's own files name an image by its
``coco_url`` only (LVIS v1 uses COCO 2017 images, from both train2017 and val2017).
"""
from __future__ import annotations

from pathlib import Path, PurePosixPath
from urllib.parse import urlparse

FREQUENCIES = ("r", "c", "f")
IMAGE_LISTS = ("neg_category_ids", "not_exhaustive_category_ids")


def is_lvis(data: dict) -> bool:
    """Whether an annotation file uses LVIS's fields (any category with a ``frequency``, or any
    image with a ``neg_category_ids`` / ``not_exhaustive_category_ids`` list)."""
    if not isinstance(data, dict):
        return False
    return (any(isinstance(c, dict) and "frequency" in c for c in data.get("categories") or [])
            or any(isinstance(i, dict) and any(key in i for key in IMAGE_LISTS) for i in data.get("images") or []))


def lvis_problem(data: dict) -> str | None:
    """What keeps ``data`` from being evaluated as LVIS (the first problem, in words), or None."""
    if not isinstance(data, dict) or not all(isinstance(data.get(key), list) for key in ("images", "categories")):
        return "no \"images\" and \"categories\" lists"
    category_ids = set()
    for category in data["categories"]:
        category = category if isinstance(category, dict) else {}
        if category.get("frequency") not in FREQUENCIES:
            return (f"category id {category.get('id')!r} ({category.get('name')!r}) has frequency "
                    f"{category.get('frequency')!r}, not one of {'/'.join(FREQUENCIES)}")
        category_ids.add(category.get("id"))
    for image in data["images"]:
        image = image if isinstance(image, dict) else {}
        for key in IMAGE_LISTS:
            listed = image.get(key)
            if not isinstance(listed, list):
                return f"image id {image.get('id')!r} has no {key} list"
            unknown = [c for c in listed if c not in category_ids]
            if unknown:
                return f"image id {image.get('id')!r} lists {unknown[0]!r} in {key}, which is no category id"
    return None


def with_file_names(images: list, image_dir: str | Path | None = None) -> list:
    """``images`` with a ``file_name`` for each entry that has only a ``coco_url``: the URL's file
    name ('http://images.cocodataset.org/val2017/X.jpg' -> 'X.jpg'), inside the URL's folder
    ('val2017/X.jpg') when ``image_dir`` has a folder of that name (a COCO root holding train2017/
    and val2017/). Other entries are left as they are."""
    named = []
    for image in images:
        if isinstance(image, dict) and "file_name" not in image and isinstance(image.get("coco_url"), str):
            path = PurePosixPath(urlparse(image["coco_url"]).path)
            inside = image_dir is not None and path.parent.name and (Path(image_dir) / path.parent.name).is_dir()
            image = {**image, "file_name": f"{path.parent.name}/{path.name}" if inside else path.name}
        named.append(image)
    return named
