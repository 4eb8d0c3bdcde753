"""COCO box and mask AP with and without test-time augmentation (``predict(tta=...)``).

Predicts every image of a COCO data set (by default the held-out shapes set) once per TTA
setting, with the test settings (score > 0.05, NMS 0.5, 100 per image), scores each with
``engine/evaluate.py`` and prints one table row per setting (box AP, AP50, AP75, APs, AP90, mask
AP, seconds per image).

    python benchmarks/tta_ap.py --weights /tmp/work/shapes_model/final.pth \
        --gt-json /tmp/work/shapes_data/val/annotations.json --images /tmp/work/shapes_data/val/images \
        [--tta none flip flip,scales=0.75:1:1.25] [--stage K]

The same numbers from the command line, one setting at a time:

    cascade-rcnn predict IMAGES --model M --weights W --score-thr 0.05 --no-draw --out runs/tta --tta flip
    cascade-rcnn evaluate --gt-json GT --predictions runs/tta/predictions.json
"""
from __future__ import annotations

import argparse
import time

import torch

from cascade_rcnn.api import build_model
from cascade_rcnn.data.coco import CocoDataset
from cascade_rcnn.engine.evaluate import evaluate_coco


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", required=True)
    parser.add_argument("--model", default="cascade_mask_rcnn_r18w32_fpn_256")
    parser.add_argument("--gt-json", default="/tmp/work/shapes_data/val/annotations.json")
    parser.add_argument("--images", default="/tmp/work/shapes_data/val/images")
    parser.add_argument("--tta", nargs="+", default=["none", "flip", "flip,scales=0.75:1:1.25"])
    parser.add_argument("--stage", type=int, help="score with cascade stage K alone (0-based)")
    parser.add_argument("--batch-size", type=int, default=2, help="views per forward pass")
    args = parser.parse_args()
    model = build_model(args.model, weights=args.weights)
    dataset = CocoDataset(args.gt_json, args.images, class_names=list(model.class_names), with_masks=False)
    category_ids = list(dataset.category_ids)
    samples = [dataset[i] for i in range(len(dataset))]
    print(f"{args.model}, {len(samples)} images, stage {'all' if args.stage is None else args.stage + 1}, "
          f"torch threads {torch.get_num_threads()}")
    print("| TTA | box AP | AP50 | AP75 | APs | AP90 | mask AP | s/img |")
    print("|---|---|---|---|---|---|---|---|")
    for setting in args.tta:
        tta = None if setting == "none" else setting
        records, start = [], time.perf_counter()
        for sample in samples:
            found = model.predict(sample["image"], stage=args.stage, tta=tta, batch_size=args.batch_size)[0]
            records += found.to_coco({"image_id": sample["image_id"]}, category_ids)
        seconds = (time.perf_counter() - start) / len(samples)
        metrics = evaluate_coco(args.gt_json, records)
        box, mask = metrics["bbox"], metrics.get("segm", {})
        mask_ap = f"{100 * mask['AP']:.1f}" if mask else "-"
        print(f"| {setting} | " + " | ".join(f"{100 * box[k]:.1f}" for k in ("AP", "AP50", "AP75", "APs", "AP90"))
              + f" | {mask_ap} | {seconds:.2f} |", flush=True)


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
