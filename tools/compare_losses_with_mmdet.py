"""Compare our training losses with MMDetection's for a zoo row, on one fixed batch.

Builds the same seeded, calibrated checkpoint in MMDetection's format as compare_with_mmdet.py
(``--init seeded``: the plain seeded initialisation, which tests rebuild), takes the two-image
batch of ../shared/golden (5 and 4 objects with masks, 320x416 and 290x403 padded to 320x416; or
``--batch FILE.pt`` with ``inputs``, ``image_sizes`` and ``targets``), runs MMDetection's ``model.loss`` through ``tools/mmdet_reference_losses.py``
in its own environment and ours on the exact and the fast path, with every candidate sampled
(no random choice) and stochastic depth off on both sides, and prints one JSON line per path:
each loss term, ours vs MMDetection's, and the largest relative difference.

    python tools/compare_losses_with_mmdet.py --mmdet-python /path/to/venv/bin/python \
        [--models cascade_mask_rcnn_convnext-t_p4_w7_fpn_giou_4conv1f_fp16_ms-crop_3x_coco ...] \
        [--init calibrated|seeded] [--batch FILE.pt] [--seed N]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
from dataclasses import replace
from pathlib import Path

import torch
from compare_with_mmdet import SPEC, mmdet_config, synthetic_checkpoint

import cascade_rcnn
from cascade_rcnn.benchmarking.synthetic import drawn_scene

GOLDEN_BATCH = SPEC.parent / "golden" / "cascade_mask_rcnn_r18w32_fpn_256" / "losses.pt"
ALL_CANDIDATES = {"rpn_samples_per_image": 10**9, "rois_per_image": 10**9}


def our_losses(name: str, checkpoint: Path, batch: dict, exact: bool) -> dict[str, float]:
    """Our losses under MMDetection's names and units (``sK.acc`` in percent)."""
    config = cascade_rcnn.get_config(name)
    config = replace(config, backbone=replace(config.backbone, drop_path_rate=0.0))
    model = cascade_rcnn.build_model(config, weights=checkpoint, exact=exact, settings=ALL_CANDIDATES).train()
    torch.manual_seed(0)
    losses = model.loss(batch["inputs"], batch["targets"], batch["image_sizes"])
    names = {"rpn_cls": "loss_rpn_cls", "rpn_box": "loss_rpn_bbox"}
    for stage in range(model.config.num_stages):
        names.update({f"s{stage}_cls": f"s{stage}.loss_cls", f"s{stage}_acc": f"s{stage}.acc",
                      f"s{stage}_box": f"s{stage}.loss_bbox", f"s{stage}_mask": f"s{stage}.loss_mask"})
    return {names[key]: value.item() * (100.0 if key.endswith("_acc") else 1.0) for key, value in losses.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mmdet-python", required=True, help="python of an environment with mmdet 3.3 + mmcv 2.1")
    parser.add_argument("--models", nargs="+",
                        default=["cascade_mask_rcnn_convnext-t_p4_w7_fpn_giou_4conv1f_fp16_ms-crop_3x_coco"])
    parser.add_argument("--seed", type=int, default=0, help="of the synthetic checkpoint")
    parser.add_argument("--init", choices=["calibrated", "seeded"], default="calibrated")
    parser.add_argument("--batch", help="a batch file (default: the 'main' batch of ../shared/golden)")
    args = parser.parse_args()
    torch.set_num_threads(2)
    if args.batch:
        batch = torch.load(args.batch, weights_only=True)
    else:
        case = torch.load(GOLDEN_BATCH, weights_only=True)["cases"]["main"]
        batch = {"inputs": case["inputs"], "image_sizes": torch.tensor(case["image_sizes"]),
                 "targets": [{key: target[key] for key in ("boxes", "labels", "masks")} for target in case["targets"]]}
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        torch.save(batch, work / "batch.pt")
        scene = drawn_scene(427, 640)  # what the checkpoint is calibrated on, as in compare_with_mmdet
        for name in args.models:
            checkpoint = work / f"{name}.pth"
            synthetic_checkpoint(name, checkpoint, scene if args.init == "calibrated" else None, args.seed)
            run = subprocess.run([args.mmdet_python, str(Path(__file__).with_name("mmdet_reference_losses.py")),
                                  mmdet_config(name), str(checkpoint), str(work / "batch.pt"), str(work / "mmdet.pt")],
                                 capture_output=True, text=True)
            if run.returncode:
                raise SystemExit(f"MMDetection failed on {name}:\n{run.stderr[-3000:]}")
            theirs = torch.load(work / "mmdet.pt", weights_only=True)
            for path in ("exact", "fast"):
                ours = our_losses(name, checkpoint, batch, exact=path == "exact")
                assert set(ours) == set(theirs), (sorted(ours), sorted(theirs))
                relative = {key: abs(ours[key] - value) / max(abs(value), 1e-12) for key, value in theirs.items()}
                print(json.dumps({"model": name, "path": path, "max_relative_difference": max(relative.values()),
                                  "losses": {key: [ours[key], theirs[key]] for key in sorted(theirs)}}), flush=True)


if __name__ == "__main__":
    main()
