"""Compare our detections with MMDetection's for the same checkpoint and image.

Builds a seeded random checkpoint in MMDetection's format for a zoo config (or takes a real one),
runs MMDetection through ``tools/mmdet_reference.py`` in another Python environment that has
mmdet 3.3 + mmcv 2.1 (see ../shared/spec/MMDETECTION.md for how to build it), runs ours (the
exact and the fast inference path), and prints one JSON line per model and path: matched
detections, the largest box / score difference, the mask pixels that differ, the lowest mask IoU.
``--reference exact`` compares our fast path with our exact one instead (no MMDetection needed).

    python tools/compare_with_mmdet.py --mmdet-python /path/to/venv/bin/python \
        [--models cascade_rcnn_r50_fpn_1x_coco ...] [--checkpoint PTH] [--image IMG]
    python tools/compare_with_mmdet.py --reference exact --paths fast [--models ...]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
from pathlib import Path

import cv2
import torch

import cascade_rcnn
from cascade_rcnn.synthetic import drawn_scene

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


def reference_detections(name: str, checkpoint: Path, image: Path, reference: str, score_thr: float,
                         work: Path, mmdet_python: str | None) -> dict[str, torch.Tensor]:
    """MMDetection's detections (run in its own environment), or our exact path's, which
    reproduces MMDetection's bit for bit (the table in BENCHMARKS.md) and needs no MMDetection."""
    if reference == "exact":
        result = cascade_rcnn.build_model(name, weights=checkpoint, exact=True).predict(str(image), score_thr=score_thr)[0]
        return {"boxes": result.boxes, "scores": result.scores, "labels": result.labels, "masks": result.masks}
    entry = next(m for m in json.loads(INDEX.read_text())["models"] if m["name"] == name)
    reference_path = work / f"{name}_mmdet.pt"
    subprocess.run([mmdet_python, str(Path(__file__).with_name("mmdet_reference.py")), entry["v3_config"],
                    str(checkpoint), str(image), str(reference_path), "--score-thr", str(score_thr)],
                   check=True, capture_output=True)
    return torch.load(reference_path, weights_only=True)


def compare(name: str, path: str, checkpoint: Path, image: Path, reference: dict[str, torch.Tensor],
            score_thr: float) -> dict:
    """Match every reference detection to our nearest box of the same class (within 1 px)."""
    ours = cascade_rcnn.build_model(name, weights=checkpoint, exact=path == "exact").predict(
        str(image), score_thr=score_thr)[0]
    row = {"model": name, "path": path, "ours": len(ours), "reference": len(reference["scores"])}
    if len(ours) and len(reference["scores"]):
        distance = torch.cdist(reference["boxes"].double(), ours.boxes.double(), p=float("inf"))
        distance[reference["labels"][:, None] != ours.labels[None, :]] = float("inf")
        best, index = distance.min(dim=1)
        matched = best < 1.0
        row["matched"] = int(matched.sum())
        row["max_box_diff"] = float(best[matched].max()) if matched.any() else None
        row["max_score_diff"] = float((reference["scores"][matched] - ours.scores[index[matched]]).abs().max()) \
            if matched.any() else None
        row["same_order"] = bool(torch.equal(index, torch.arange(len(index)))) and len(ours) == len(index)
        if ours.masks is not None and matched.any():
            theirs, mine = reference["masks"][matched].bool(), ours.masks[index[matched]]
            row["mask_pixels_differing"] = int((theirs != mine).sum())
            row["mask_pixels_total"] = int(theirs.numel())
            union = (theirs | mine).flatten(1).sum(1)
            iou = torch.where(union > 0, (theirs & mine).flatten(1).sum(1) / union.clamp(min=1), 1.0)
            row["min_mask_iou"] = float(iou.min())
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
    args = parser.parse_args()
    if args.reference == "mmdet" and not args.mmdet_python:
        parser.error("--reference mmdet needs --mmdet-python")
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        image = Path(args.image) if args.image else work / "image.png"
        if not args.image:
            cv2.imwrite(str(image), drawn_scene(427, 640)[:, :, ::-1])
        for name in args.models:
            checkpoint = Path(args.checkpoint) if args.checkpoint else work / f"{name}.pth"
            if not args.checkpoint:
                synthetic_checkpoint(name, checkpoint)
            reference = reference_detections(name, checkpoint, image, args.reference, args.score_thr, work,
                                             args.mmdet_python)
            for path in args.paths:
                row = compare(name, path, checkpoint, image, reference, args.score_thr)
                print(json.dumps({"reference": args.reference, **row}), flush=True)


if __name__ == "__main__":
    main()
