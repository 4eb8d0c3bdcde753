"""One box stage (Mask R-CNN head, IoU 0.5) vs the three-stage cascade, same data and schedule.

Trains both from scratch on the generated shapes data set and prints, per model, box and mask
AP50..AP90 on held-out images as JSON lines (the paper's Table 1 experiment, small).

    python benchmarks/stages.py [--out runs/stages] [--train-images 400] [--epochs 6] [--device cpu]
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import torch

from cascade_rcnn.api import build_model
from cascade_rcnn.data.coco import CocoDataset
from cascade_rcnn.data.shapes import generate_shapes
from cascade_rcnn.engine.train import TrainConfig, train
from cascade_rcnn.engine.validate import evaluate_dataset
from cascade_rcnn.zoo import get_config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/stages")
    parser.add_argument("--train-images", type=int, default=400)
    parser.add_argument("--val-images", type=int, default=100)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    out = Path(args.out)
    generate_shapes(out / "train", args.train_images, args.size, seed=0)
    generate_shapes(out / "val", args.val_images, args.size, seed=1)
    val_json = out / "val" / "annotations.json"
    base = get_config("cascade_mask_rcnn_r18w32_fpn_256")
    for stages in (1, 3):
        config = dataclasses.replace(base, name=f"{base.name}_{stages}stage", num_stages=stages)
        start = time.perf_counter()
        torch.manual_seed(0)
        final = train(config, TrainConfig(
            train_json=str(out / "train" / "annotations.json"), train_images=str(out / "train" / "images"),
            out_dir=str(out / f"{stages}stage"), epochs=args.epochs, lr_steps=(args.epochs - 1,), lr=0.02,
            batch_size=args.batch_size, warmup_iters=100, clip_grad=10.0, workers=1, eval_every=0,
            device=args.device))
        train_minutes = (time.perf_counter() - start) / 60
        model = build_model(config, weights=final, device=args.device)
        metrics = evaluate_dataset(model, CocoDataset(val_json, out / "val" / "images"), val_json)
        print(json.dumps({"stages": stages, "train_minutes": round(train_minutes, 1),
                          **{f"{kind}_{k}": round(v, 4) for kind, values in metrics.items()
                             for k, v in values.items() if k in ("AP", "AP50", "AP60", "AP70", "AP80", "AP90")}}),
              flush=True)


if __name__ == "__main__":
    main()
