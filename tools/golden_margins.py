#!/usr/bin/env python
"""Measure the float-noise figures behind tests/test_golden.py's bounds on this CPU, as JSON lines.

For the exact and the fast path against each of ../shared/golden's MMDetection files (AVX-512 and
AVX2 EPYC runs): the largest box and score differences after one-to-one matching, the differing
mask pixels, the 28x28 mask probabilities' difference (exact path vs MMDetection's merged
probabilities; fast vs exact), and the training losses' largest relative difference. Run it as
it is, and with ``ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2`` to round as an AVX2 CPU:

    python tools/golden_margins.py
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import test_golden as golden  # noqa: E402  (the test's own helpers: one definition of each comparison)

from cascade_rcnn.models.detections import DetectionSettings  # noqa: E402


def mask_probabilities(exact: bool):
    model = golden.golden_model(exact)
    settings = DetectionSettings(score_thr=0.0, nms_iou=0.5, max_per_image=100)
    return model.detect_unpasted([model.preprocess(str(golden.GOLDEN / "image.png"))], settings)[0]


def main() -> None:
    torch.set_num_threads(2)
    print(json.dumps({"cpu_capability": torch.backends.cpu.get_cpu_capability(), "torch": torch.__version__}))
    unpasted = {exact: mask_probabilities(exact) for exact in (True, False)}
    detections = {exact: golden.predict(exact) for exact in (True, False)}
    exact = {"boxes": detections[True].boxes, "labels": detections[True].labels}
    fast_index = golden.match_one_to_one(detections[False], exact)  # near-tied detections may swap
    print(json.dumps({"fast_vs_exact_mask_probability": (unpasted[False].mask_probs[fast_index] -
                                                          unpasted[True].mask_probs).abs().max().item()}))
    for suffix in ("", ".AVX2"):
        reference = golden.GOLDEN / f"detections{suffix}.pt"
        expected = golden.read_detections(reference)
        merged = torch.load(reference, weights_only=True)["mask"]["merged_prob_of_label"]
        for exact in (True, False):
            ours = detections[exact]
            index = golden.match_one_to_one(ours, expected)
            row = {"golden": reference.name, "path": "exact" if exact else "fast", "unmatched": int((index < 0).sum()),
                   "box_px": (ours.boxes[index] - expected["boxes"]).abs().max().item(),
                   "score": (ours.scores[index] - expected["scores"]).abs().max().item(),
                   "mask_pixels": int((ours.masks[index] != expected["masks"]).sum())}
            if exact:
                row["mask_probability"] = (unpasted[True].mask_probs[index] - merged).abs().max().item()
            print(json.dumps(row))
        cases = torch.load(golden.GOLDEN / f"losses{suffix}.pt", weights_only=True)["cases"]
        for exact in (True, False):
            for name in golden.CASES:
                errors = golden.relative_errors(golden.training_losses(exact, cases[name]), cases[name]["losses"])
                worst = max(errors, key=errors.get)
                print(json.dumps({"golden": f"losses{suffix}.pt", "case": name, "path": "exact" if exact else "fast",
                                  "loss_rel": errors[worst], "term": worst}))


if __name__ == "__main__":
    main()
