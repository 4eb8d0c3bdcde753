"""How far bf16 (or fp16) inference moves detections from the float32 fast path: matched
detections, largest box and score difference, lowest mask IoU (``agreement``, min IoU 0.5).

Models: the golden checkpoint of ``../shared/golden`` (MMDetection-trained weights of our small
``cascade_mask_rcnn_r18w32_fpn_256``, on its own image), and the R50 zoo models with random
weights calibrated on a drawn 427x640 scene (``spread_random_weights``), one JSON line each; or
any model with ``--weights`` (e.g. the demo's trained shapes model) on ``--images``.

On a CPU without bfloat16 instructions the library refuses bf16 as slow; ``--emulated`` lets it
run there anyway (oneDNN emulates bf16 through float32, with bf16's rounding): the agreement
figures are what a bf16 CPU computes, the run just takes longer.

    python benchmarks/precision_agreement.py [--precision bf16] [--emulated] [--models NAME ...]
    python benchmarks/precision_agreement.py --emulated --models cascade_mask_rcnn_r18w32_fpn_256 \
        --weights demo_output/train/final.pth --images demo_output/data/val/images/*.png
"""
from __future__ import annotations

import argparse
import json
from dataclasses import asdict, replace
from pathlib import Path

import torch

import cascade_rcnn
from cascade_rcnn.benchmarking.agreement import agreement
from cascade_rcnn.benchmarking.synthetic import drawn_scene, spread_random_weights
from cascade_rcnn.data.images import read_image
from cascade_rcnn.ops import compute_path

GOLDEN = Path(__file__).resolve().parents[2] / "shared" / "golden" / "cascade_mask_rcnn_r18w32_fpn_256"
MODELS = ("golden", "cascade_rcnn_r50_fpn_1x_coco", "cascade_mask_rcnn_r50_fpn_1x_coco")


def model_and_image(name: str) -> tuple[cascade_rcnn.CascadeRCNN, object]:
    """Golden or calibrated random weights with their image (see the module docstring)."""
    if name == "golden":
        return (cascade_rcnn.build_model("cascade_mask_rcnn_r18w32_fpn_256", weights=GOLDEN / "checkpoint.pth"),
                read_image(GOLDEN / "image.png"))
    image = drawn_scene(427, 640)
    torch.manual_seed(0)
    return spread_random_weights(cascade_rcnn.build_model(name), image), image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--precision", default="bf16", choices=["bf16", "fp16"])
    parser.add_argument("--emulated", action="store_true", help="run bf16 on a CPU without bfloat16 instructions")
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--weights", help="a checkpoint for the (one) model named in --models")
    parser.add_argument("--images", nargs="+", help="with --weights: compare on these images (summed)")
    parser.add_argument("--score-thr", type=float, help="test score threshold (default: the model's 0.05)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    emulated = args.emulated and not compute_path.cpu_has_bf16_instructions()
    if args.emulated:
        compute_path.cpu_has_bf16_instructions = lambda: True
    for name in args.models:
        if args.weights:
            model, images = cascade_rcnn.build_model(name, weights=args.weights), args.images
        else:
            model, image = model_and_image(name)
            images = [image]
        model.to(args.device)
        reference = model.predict(images, score_thr=args.score_thr)
        model.path = replace(model.path, precision=args.precision)
        other = model.predict(images, score_thr=args.score_thr)
        rows = [asdict(agreement(mine, theirs, min_iou=0.5)) for mine, theirs in zip(reference, other)]
        summary = {key: sum(row[key] for row in rows) for key in ("reference", "other", "matched")}
        for key, pick in (("max_box_diff", max), ("max_score_diff", max), ("min_box_iou", min), ("min_mask_iou", min)):
            values = [row[key] for row in rows if row[key] is not None]
            summary[key] = round(pick(values), 5) if values else None
        print(json.dumps({"model": name, "weights": args.weights or "see docstring", "images": len(images),
                          "comparison": f"{args.precision} vs fp32 (fast path)", "device": args.device,
                          "emulated_bf16": emulated, **summary}), flush=True)


if __name__ == "__main__":
    main()
