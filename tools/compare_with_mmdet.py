"""Compare our detections with MMDetection's for the same checkpoint and image.

Builds a seeded random checkpoint in MMDetection's format for a zoo config (or takes a real one),
runs MMDetection through ``tools/mmdet_reference.py`` in another Python environment that has
mmdet 3.3 + mmcv 2.1 (see ../shared/spec/MMDETECTION.md for how to build it), runs ours, and
prints one JSON line per model: matched detections, the largest box / score difference, and the
mask pixels that differ.

    python tools/compare_with_mmdet.py --mmdet-python /path/to/venv/bin/python \
        [--models cascade_rcnn_r50_fpn_1x_coco ...] [--checkpoint PTH] [--image IMG]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
from pathlib import Path

import cv2
import numpy as np
import torch

import cascade_rcnn

INDEX = Path(__file__).resolve().parents[2] / "shared" / "spec" / "mmdet_keys" / "index.json"


def synthetic_checkpoint(name: str, path: Path, seed: int = 0) -> None:
    """Seeded random weights with MMDetection's keys; class logits spread so scores differ."""
    torch.manual_seed(seed)
    model = cascade_rcnn.build_model(name)
    state = model.state_dict()
    for key, value in state.items():
        if key.endswith("running_var"):
            value.uniform_(0.5, 2.0)
        elif key.endswith("running_mean") or (key.endswith(".bias") and "bn" in key):
            value.normal_(0, 0.1)
        elif key.endswith("fc_cls.weight"):
            value.normal_(0, 0.05)
    torch.save({"state_dict": state, "meta": {"mmdet_version": "2.0.0", "CLASSES": model.class_names}}, path)


def test_image(path: Path) -> None:
    """A 427x640 picture with structure (shapes on a gradient), written as PNG."""
    rng = np.random.default_rng(1)
    y, x = np.mgrid[0:427, 0:640]
    image = np.stack([x % 256, y % 256, (x + y) % 256], axis=2).astype(np.float64)
    image = np.clip(image + rng.normal(0, 10, image.shape), 0, 255).astype(np.uint8)
    for _ in range(12):
        center = (int(rng.integers(0, 640)), int(rng.integers(0, 427)))
        cv2.circle(image, center, int(rng.integers(10, 120)), rng.integers(0, 255, 3).tolist(), -1)
    cv2.imwrite(str(path), image)


def compare(name: str, checkpoint: Path, image: Path, mmdet_python: str, score_thr: float, work: Path) -> dict:
    entry = next(m for m in json.loads(INDEX.read_text())["models"] if m["name"] == name)
    reference_path = work / f"{name}_mmdet.pt"
    subprocess.run([mmdet_python, str(Path(__file__).with_name("mmdet_reference.py")), entry["v3_config"],
                    str(checkpoint), str(image), str(reference_path), "--score-thr", str(score_thr)],
                   check=True, capture_output=True)
    reference = torch.load(reference_path, weights_only=True)
    ours = cascade_rcnn.build_model(name, weights=checkpoint).predict(str(image), score_thr=score_thr)[0]
    row = {"model": name, "ours": len(ours), "mmdet": len(reference["scores"])}
    if len(ours) and len(reference["scores"]):
        # Match every MMDetection detection to our nearest one of the same class.
        distance = torch.cdist(reference["boxes"].double(), ours.boxes.double(), p=float("inf"))
        distance[reference["labels"][:, None] != ours.labels[None, :]] = float("inf")
        best, index = distance.min(dim=1)
        matched = best < 1e-2
        row["matched"] = int(matched.sum())
        row["max_box_diff"] = float(best[matched].max()) if matched.any() else None
        row["max_score_diff"] = float((reference["scores"][matched] - ours.scores[index[matched]]).abs().max()) \
            if matched.any() else None
        row["same_order"] = bool(torch.equal(index, torch.arange(len(index)))) and len(ours) == len(index)
        if ours.masks is not None and matched.any():
            row["mask_pixels_differing"] = int((reference["masks"][matched].bool() != ours.masks[index[matched]]).sum())
            row["mask_pixels_total"] = int(reference["masks"][matched].numel())
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mmdet-python", required=True)
    parser.add_argument("--models", nargs="+", default=["cascade_rcnn_r50_fpn_1x_coco",
                                                       "cascade_mask_rcnn_r50_fpn_1x_coco"])
    parser.add_argument("--checkpoint", help="a real checkpoint (only with one model)")
    parser.add_argument("--image")
    parser.add_argument("--score-thr", type=float, default=0.05)
    args = parser.parse_args()
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        image = Path(args.image) if args.image else work / "image.png"
        if not args.image:
            test_image(image)
        for name in args.models:
            checkpoint = Path(args.checkpoint) if args.checkpoint else work / f"{name}.pth"
            if not args.checkpoint:
                synthetic_checkpoint(name, checkpoint)
            print(json.dumps(compare(name, checkpoint, image, args.mmdet_python, args.score_thr, work)), flush=True)


if __name__ == "__main__":
    main()
