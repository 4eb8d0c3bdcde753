#!/usr/bin/env python
"""Outputs of the MMDetection-side paths, saved for an A/B check between two commits: the golden
model's detections (exact and fast, the cascade and stage 1 alone), its training losses (every
candidate sampled), and a tiny model's plain, TTA, tiled and batched detections. Run it once per
checkout (PYTHONPATH picks the source; ../shared beside the checkout) and compare the two files
tensor by tensor:

    PYTHONPATH=OLD/src python tools/ab_snapshot.py OLD old.pt
    PYTHONPATH=NEW/src python tools/ab_snapshot.py NEW new.pt
    python tools/ab_snapshot.py --compare old.pt new.pt
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

# The golden run sampled every candidate (tests/test_golden.py TRAIN_SETTINGS).
TRAIN_SETTINGS = {"rpn_samples_per_image": 10**9, "rois_per_image": 10**9, "train_proposals": 500}


def snapshot(checkout: Path, path: str) -> None:
    sys.path.insert(0, str(checkout / "tests"))
    torch.set_num_threads(2)
    import cascade_rcnn
    from conftest import tiny_model

    from cascade_rcnn.benchmarking.synthetic import drawn_scene, spread_random_weights

    golden = checkout.parent / "shared" / "golden" / "cascade_mask_rcnn_r18w32_fpn_256"
    name, image = "cascade_mask_rcnn_r18w32_fpn_256", str(golden / "image.png")
    out = {}

    def keep(prefix: str, found) -> None:
        out[f"{prefix}.boxes"], out[f"{prefix}.scores"], out[f"{prefix}.labels"] = found.boxes, found.scores, found.labels
        if found.masks is not None:
            out[f"{prefix}.masks"] = found.masks

    case = torch.load(golden / "losses.pt", weights_only=True)["cases"]["main"]
    for exact in (True, False):
        model = cascade_rcnn.build_model(name, weights=golden / "checkpoint.pth", exact=exact)
        keep(f"golden.{exact}", model.predict(image, score_thr=0.0)[0])
        keep(f"golden.stage0.{exact}", model.predict(image, score_thr=0.0, stage=0)[0])
        model = cascade_rcnn.build_model(name, weights=golden / "checkpoint.pth", exact=exact,
                                         settings=TRAIN_SETTINGS).train()
        torch.manual_seed(0)
        for term, value in model.loss(case["inputs"], case["targets"], torch.tensor(case["image_sizes"])).items():
            out[f"loss.{exact}.{term}"] = value.detach()
    scene = drawn_scene(150, 200, seed=2)
    for with_mask in (True, False):
        model = spread_random_weights(tiny_model(with_mask), scene)
        keep(f"tiny.{with_mask}", model.predict(scene, score_thr=0.0)[0])
        keep(f"tiny.tta.{with_mask}", model.predict(scene, score_thr=0.0, tta="flip,scales=0.75:1")[0])
        keep(f"tiny.tile.{with_mask}", model.predict(scene, score_thr=0.0, tile=96)[0])
        batch = model.predict([scene, drawn_scene(140, 200, seed=3)], score_thr=0.0, batch_size=2)
        for index, found in enumerate(batch):
            keep(f"tiny.batch{index}.{with_mask}", found)
    torch.save(out, path)


def compare(old: str, new: str) -> None:
    """How many tensors are bit-identical, and the largest difference of each one that is not."""
    a, b = torch.load(old, weights_only=True), torch.load(new, weights_only=True)
    only = sorted(set(a) ^ set(b))
    same = [key for key in a if key in b and a[key].shape == b[key].shape and torch.equal(a[key], b[key])]
    print(f"{len(same)} of {len(a)} bit-identical" + (f"; in one file only: {only}" if only else ""))
    for key in sorted(set(a) & set(b) - set(same)):
        difference = ((a[key].float() - b[key].float()).abs().max().item() if a[key].shape == b[key].shape
                      else f"shapes {tuple(a[key].shape)} / {tuple(b[key].shape)}")
        print(f"differs: {key}: {difference}")


if __name__ == "__main__":
    if sys.argv[1] == "--compare":
        compare(sys.argv[2], sys.argv[3])
    else:
        snapshot(Path(sys.argv[1]).resolve(), sys.argv[2])
