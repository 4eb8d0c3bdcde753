"""One box stage (Mask R-CNN head, IoU 0.5) vs the three-stage cascade, same data and schedule.

Trains both from scratch on the demo's generated shapes data with the demo's from-scratch recipe
(AdamW, 800 images, 5 epochs) and prints, per model, box and mask AP50..AP90 on held-out images as JSON
lines (the paper's Table 1 experiment, small).

    python benchmarks/stages.py [--out runs/stages] [--val-images 100] [--device cpu]
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
from cascade_rcnn.engine.demo import (
    DemoSettings,
    demo_model_config,
    demo_train_config,
    generate_demo_data,
)
from cascade_rcnn.engine.train import train
from cascade_rcnn.engine.validate import evaluate_dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/stages")
    parser.add_argument("--val-images", type=int, default=100)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    out = Path(args.out)
    settings = DemoSettings.from_scratch(val_images=args.val_images, eval_every=0)
    generate_demo_data(out, settings)
    val_json = out / "val" / "annotations.json"
    base = demo_model_config(settings)
    for stages in (1, 3):
        config = dataclasses.replace(base.with_changes(num_stages=stages), name=f"{base.name}_{stages}stage")
        start = time.perf_counter()
        torch.manual_seed(0)
        final = train(config, dataclasses.replace(demo_train_config(out, out / f"{stages}stage", settings),
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
