"""How much recall sliced inference (``predict(tile=...)``) recovers on a large mosaic of small objects.

Builds mosaics of GRID x GRID generated shapes pictures (256 px each, seed 2: images the shapes
model never saw), so every mosaic is (256 GRID)^2 px holding a few hundred objects of 8..85 px,
with COCO ground truth shifted into place. Runs the model on each mosaic plainly (the config's
resize shrinks the whole mosaic to 256 px) and tiled, and prints box AP, AP50 and recall (IoU 0.5
and averaged over 0.5:0.95) with up to 5000 detections per image (``max_per_image`` and
COCOeval's maxDets raised from 100: a mosaic holds a few hundred objects, and a tiled pass keeps
every tile's detections above the score threshold), plus seconds per mosaic. The last row is the
reference: the same model on the 256 px pictures one at a time (what tiles at 1:1 could reach),
its detections moved into the mosaics' frame and scored the same way.

The box branch of the mask checkpoint runs as a box-only model (mask heads dropped): the question
is whether objects are found, and pasting thousands of 2048^2 masks would not fit in memory.

    python benchmarks/tiling_recall.py --weights /tmp/work/shapes_model/final.pth \
        [--out /tmp/work/mosaic] [--mosaics 4] [--grid 8] [--tiles 256 512] [--overlap 0.2]
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from cascade_rcnn.api import build_model
from cascade_rcnn.data.images import read_image
from cascade_rcnn.data.shapes import generate_shapes
from cascade_rcnn.inference.predictor import CascadeRCNN

PART = 256
MAX_DETECTIONS = 5000


def build_mosaics(out: Path, count: int, grid: int, seed: int) -> Path:
    """``out/mosaics/*.png`` and ``out/mosaics.json`` (boxes only); returns the JSON's path."""
    parts = out / "parts"
    gt = json.loads(generate_shapes(parts, count * grid * grid, PART, seed=seed).read_text())
    by_image: dict[int, list[dict]] = {}
    for annotation in gt["annotations"]:
        by_image.setdefault(annotation["image_id"], []).append(annotation)
    (out / "mosaics").mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for m in range(count):
        canvas = np.zeros((grid * PART, grid * PART, 3), np.uint8)
        for k in range(grid * grid):
            index = m * grid * grid + k
            row, col = divmod(k, grid)
            canvas[row * PART:(row + 1) * PART, col * PART:(col + 1) * PART] = read_image(
                parts / "images" / gt["images"][index]["file_name"])
            for annotation in by_image.get(index, []):
                x, y, w, h = annotation["bbox"]
                annotations.append({"id": len(annotations) + 1, "image_id": m, "iscrowd": 0,
                                    "category_id": annotation["category_id"], "area": annotation["area"],
                                    "bbox": [x + col * PART, y + row * PART, w, h]})
        file_name = f"mosaic{m}.png"
        cv2.imwrite(str(out / "mosaics" / file_name), canvas[:, :, ::-1])
        images.append({"id": m, "file_name": file_name, "height": grid * PART, "width": grid * PART})
    path = out / "mosaics.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": gt["categories"]}))
    return path


def pictures_one_by_one(model: CascadeRCNN, out: Path, gt: dict) -> list[dict]:
    """Detections of every 256 px picture alone, moved to its place in its mosaic."""
    grid = gt["images"][0]["width"] // PART
    pictures = sorted((out / "parts" / "images").iterdir())[:len(gt["images"]) * grid * grid]
    records = []
    for index, path in enumerate(pictures):
        mosaic, k = divmod(index, grid * grid)
        row, col = divmod(k, grid)
        found = model.predict(str(path), max_per_image=MAX_DETECTIONS)[0]
        found.boxes += torch.tensor([col * PART, row * PART] * 2, dtype=found.boxes.dtype)
        records += found.to_coco({"image_id": mosaic}, [c["id"] for c in gt["categories"]])
    return records


def box_only(model: CascadeRCNN) -> CascadeRCNN:
    """The same weights without the mask heads."""
    boxes = CascadeRCNN(dataclasses.replace(model.config, with_mask=False))
    missing, _ = boxes.load_state_dict(model.state_dict(), strict=False)
    assert not missing, missing
    return boxes.eval()


def score(gt_path: Path, records: list[dict]) -> dict[str, float]:
    if not records:
        return dict.fromkeys(("AP", "AP50", "recall50", "recall", "APs"), 0.0)
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(gt_path))
        evaluator = COCOeval(gt, gt.loadRes(records), "bbox")
        evaluator.params.maxDets = [10, 100, MAX_DETECTIONS]
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    recall = evaluator.eval["recall"][:, :, 0, 2]  # (IoU, class) at area "all", MAX_DETECTIONS
    return {"AP": evaluator.stats[0], "AP50": evaluator.stats[1], "recall50": float(np.mean(recall[0])),
            "recall": float(np.mean(recall)), "APs": evaluator.stats[3]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", required=True)
    parser.add_argument("--model", default="cascade_mask_rcnn_r18w32_fpn_256")
    parser.add_argument("--out", default="/tmp/work/mosaic")
    parser.add_argument("--mosaics", type=int, default=4)
    parser.add_argument("--grid", type=int, default=8)
    parser.add_argument("--seed", type=int, default=2)
    parser.add_argument("--tiles", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--overlap", type=float, default=0.2)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--reference", action=argparse.BooleanOptionalAction, default=True,
                        help="also the pictures one by one (default: on)")
    parser.add_argument("--reference-only", action="store_true", help="only that row")
    args = parser.parse_args()
    out = Path(args.out)
    gt_path = out / "mosaics.json"
    if not gt_path.is_file():
        gt_path = build_mosaics(out, args.mosaics, args.grid, args.seed)
    gt = json.loads(gt_path.read_text())
    model = box_only(build_model(args.model, weights=args.weights))
    runs = [("plain (whole mosaic resized)", {})]
    runs += [(f"tile {t}, overlap {args.overlap:g}", {"tile": t, "tile_overlap": args.overlap}) for t in args.tiles]
    runs += [(f"tile {args.tiles[0]} + full image", {"tile": args.tiles[0], "tile_overlap": args.overlap,
                                                     "tile_full_image": True})]
    print(f"{len(gt['images'])} mosaics of {gt['images'][0]['width']} px, {len(gt['annotations'])} objects; "
          f"{args.model} boxes, up to {MAX_DETECTIONS} detections per mosaic")
    runs += [("reference: the 256 px pictures one by one", None)] if args.reference else []
    print("| run | box AP | AP50 | APs | recall@0.5 | recall@0.5:0.95 | s/mosaic |")
    print("|---|---|---|---|---|---|---|")
    for name, options in runs if not args.reference_only else runs[-1:]:
        records, start = [], time.perf_counter()
        if options is None:
            records = pictures_one_by_one(model, out, gt)
        for entry in gt["images"] if options is not None else []:
            found = model.predict(str(out / "mosaics" / entry["file_name"]), max_per_image=MAX_DETECTIONS,
                                  batch_size=args.batch_size, **options)[0]
            records += found.to_coco({"image_id": entry["id"]}, [c["id"] for c in gt["categories"]])
        seconds = (time.perf_counter() - start) / len(gt["images"])
        metrics = score(gt_path, records)
        print(f"| {name} | {100 * metrics['AP']:.1f} | {100 * metrics['AP50']:.1f} | {100 * metrics['APs']:.1f} | "
              f"{100 * metrics['recall50']:.1f} | {100 * metrics['recall']:.1f} | {seconds:.1f} |", flush=True)


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
