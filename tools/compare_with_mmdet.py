"""Compare our detections with MMDetection's for the same checkpoint and image.

Builds a seeded random checkpoint in MMDetection's format for a zoo config, calibrated on the image
like ../shared/golden's (``synthetic_checkpoint``), or takes a real one; runs MMDetection through
``tools/mmdet_reference.py`` in another Python environment that has mmdet 3.3 + mmcv 2.1 (see
../shared/spec/MMDETECTION.md for how to build it), runs ours (the exact and the fast inference
path), and prints one JSON line per model and path: matched detections, the largest box / score
difference, the mask pixels that differ, the lowest mask IoU. ``--reference exact`` compares our
fast path with our exact one instead (no MMDetection needed).

    python tools/compare_with_mmdet.py --mmdet-python /path/to/venv/bin/python \
        [--models cascade_rcnn_r50_fpn_1x_coco ...] [--checkpoint PTH] [--image IMG] [--seed N]
    python tools/compare_with_mmdet.py --reference exact --paths fast [--models ...]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
from dataclasses import asdict
from pathlib import Path

import cv2
import numpy as np
import torch

import cascade_rcnn
from cascade_rcnn.benchmarking.agreement import agreement
from cascade_rcnn.benchmarking.synthetic import drawn_scene, spread_random_weights
from cascade_rcnn.models.backbones.swin import SwinConfig
from cascade_rcnn.models.backbones.swin_layout import official_to_mmdet
from cascade_rcnn.outputs.detections import Detections

SPEC = Path(__file__).resolve().parents[2] / "shared" / "spec"
INDEXES = (SPEC / "mmdet_keys" / "index.json", SPEC / "mmdet_keys_modern" / "index.json")
OUR_CONFIGS = Path(__file__).with_name("mmdet_configs")  # rows MMDetection has no config of its own for


def mmdet_config(name: str) -> str:
    """The MMDetection config that builds zoo row ``name``: its own (from the key indexes of
    ../shared/spec) or, for the official Swin rows, ours in tools/mmdet_configs."""
    ours = OUR_CONFIGS / f"{name}.py"
    if ours.is_file():
        return str(ours)
    for index in INDEXES:
        for entry in json.loads(index.read_text())["models"]:
            if entry["name"] == name:
                return entry["v3_config"]
    raise SystemExit(f"no MMDetection config known for {name}")


def synthetic_checkpoint(name: str, path: Path, image: np.ndarray | None, seed: int = 0) -> None:
    """Seeded random weights with MMDetection's keys, calibrated on ``image`` (RGB) as
    ../shared/golden's checkpoint was (``synthetic.spread_random_weights``): BatchNorm statistics
    measured on the image, prediction layers rescaled so that detections spread like a trained
    model's. Statistics drawn at random instead grow the activations layer by layer, which
    saturates the scores of the deeper and caffe-style models (or leaves no detection) and
    understates how far float rounding moves a trained model's detections (BENCHMARKS.md).
    ``image=None``: the plain seeded initialisation (``torch.manual_seed(seed)``, then
    ``build_model(name)``), which a test can rebuild without this tool."""
    torch.manual_seed(seed)
    model = cascade_rcnn.build_model(name)
    if image is not None:
        model = spread_random_weights(model, image, seed=seed)
    state = model.state_dict()
    if isinstance(model.config.backbone, SwinConfig):  # our Swin speaks the official layout
        state = official_to_mmdet(state)
    torch.save({"state_dict": state, "meta": {"mmdet_version": "2.0.0", "CLASSES": model.class_names}}, path)


def reference_detections(name: str, checkpoint: Path, image: Path, reference: str, score_thr: float,
                         work: Path, mmdet_python: str | None) -> Detections:
    """MMDetection's detections (run in its own environment), or our exact path's, which
    reproduces MMDetection's bit for bit (the table in BENCHMARKS.md) and needs no MMDetection."""
    if reference == "exact":
        return cascade_rcnn.build_model(name, weights=checkpoint, exact=True).predict(str(image), score_thr=score_thr)[0]
    reference_path = work / f"{name}_mmdet.pt"
    run = subprocess.run([mmdet_python, str(Path(__file__).with_name("mmdet_reference.py")), mmdet_config(name),
                          str(checkpoint), str(image), str(reference_path), "--score-thr", str(score_thr)],
                         capture_output=True, text=True)
    if run.returncode:
        raise SystemExit(f"MMDetection failed on {name}:\n{run.stderr[-3000:]}")
    result = torch.load(reference_path, weights_only=True)
    masks = result.get("masks")
    return Detections(result["boxes"], result["scores"], result["labels"], (), tuple(cv2.imread(str(image)).shape[:2]),
                      None if masks is None else masks.bool())


def compare(name: str, path: str, checkpoint: Path, image: Path, reference: Detections, score_thr: float) -> dict:
    """Our detections against the reference's: bit-identical or not, and by how much they differ."""
    ours = cascade_rcnn.build_model(name, weights=checkpoint, exact=path == "exact").predict(
        str(image), score_thr=score_thr)[0]
    identical = (len(ours) == len(reference) and torch.equal(ours.boxes, reference.boxes)
                 and torch.equal(ours.scores, reference.scores) and torch.equal(ours.labels, reference.labels))
    row = {"model": name, "path": path, "bit_identical_boxes_scores_labels": identical,
           **asdict(agreement(reference, ours))}
    if ours.masks is not None and len(ours) == len(reference):
        row["mask_pixels_differing"] = int((ours.masks != reference.masks).sum())
        row["mask_pixels_total"] = int(ours.masks.numel())
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", choices=["mmdet", "exact"], default="mmdet",
                        help="mmdet: MMDetection itself (needs --mmdet-python); exact: our bit-exact path")
    parser.add_argument("--mmdet-python", help="python of an environment with mmdet 3.3 + mmcv 2.1")
    parser.add_argument("--paths", nargs="+", choices=["exact", "fast"], default=["exact", "fast"],
                        help="our inference paths to compare")
    parser.add_argument("--models", nargs="+", default=["cascade_rcnn_r50_fpn_1x_coco",
                                                       "cascade_mask_rcnn_r50_fpn_1x_coco"])
    parser.add_argument("--checkpoint", help="a real checkpoint (only with one model)")
    parser.add_argument("--image")
    parser.add_argument("--score-thr", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0, help="of the synthetic checkpoint")
    args = parser.parse_args()
    if args.reference == "mmdet" and not args.mmdet_python:
        parser.error("--reference mmdet needs --mmdet-python")
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        image = Path(args.image) if args.image else work / "image.png"
        if not args.image:
            cv2.imwrite(str(image), drawn_scene(427, 640)[:, :, ::-1])
        pixels = cv2.imread(str(image))[:, :, ::-1].copy()  # RGB, what the checkpoint is calibrated on
        for name in args.models:
            checkpoint = Path(args.checkpoint) if args.checkpoint else work / f"{name}.pth"
            if not args.checkpoint:
                synthetic_checkpoint(name, checkpoint, pixels, args.seed)
            reference = reference_detections(name, checkpoint, image, args.reference, args.score_thr, work,
                                             args.mmdet_python)
            for path in args.paths:
                row = compare(name, path, checkpoint, image, reference, args.score_thr)
                print(json.dumps({"compared_with": args.reference, **row}), flush=True)


if __name__ == "__main__":
    main()
