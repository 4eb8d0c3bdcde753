"""How far the fast inference path is from the exact (MMDetection bit-for-bit) one, next to the
float-noise floor: the exact path run on 1 thread instead of 2 (same ops, other summation order).

Random weights spread like a trained model's (BatchNorm statistics measured on the image), a drawn
427x640 scene, default test settings. One JSON object per model and comparison.

    python benchmarks/fast_path_agreement.py [--models NAME ...]
"""
from __future__ import annotations

import argparse
import json
from dataclasses import asdict

import torch

import cascade_rcnn
from cascade_rcnn.benchmarking.agreement import agreement
from cascade_rcnn.benchmarking.synthetic import drawn_scene, spread_random_weights

MODELS = ("cascade_rcnn_r50_fpn_1x_coco", "cascade_mask_rcnn_r50_fpn_1x_coco", "cascade_rcnn_r50_caffe_fpn_1x_coco",
          "cascade_mask_rcnn_x101_32x4d_fpn_1x_coco")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    args = parser.parse_args()
    for seed, name in enumerate(args.models):
        torch.set_num_threads(2)
        torch.manual_seed(seed)
        image = drawn_scene(427, 640, seed=seed)
        model = spread_random_weights(cascade_rcnn.build_model(name), image)
        model.exact = True
        exact = model.predict(image)[0]
        torch.set_num_threads(1)
        exact_one_thread = model.predict(image)[0]
        torch.set_num_threads(2)
        model.exact = False
        fast = model.predict(image)[0]
        for label, other in (("exact, 1 thread vs 2 (noise floor)", exact_one_thread), ("fast vs exact", fast)):
            row = {key: round(value, 6) if isinstance(value, float) else value
                   for key, value in asdict(agreement(exact, other, min_iou=0.5)).items()}
            print(json.dumps({"model": name, "comparison": label, **row}), flush=True)
        del model


if __name__ == "__main__":
    main()
