#!/usr/bin/env python
"""Measure the float-noise figures behind tests/test_vitdet_golden.py's bounds on this CPU, as
JSON lines: the exact and the fast path against each Detectron2 ViTDet golden file (the shared
AVX2 EPYC one and tests/data/golden_cpu_kinds' AVX-512 one), and the fast path against the exact
one (largest box and score differences after one-to-one matching). Run it as it is, and with
``ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2`` to round as an AVX2 CPU:

    python tools/vitdet_margins.py
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import test_golden as golden  # noqa: E402  (the tests' own helpers: one definition of each comparison)
import test_vitdet_golden as vitdet  # noqa: E402
from test_detectron2_golden import read_detections  # noqa: E402


def differences(ours, reference: dict) -> dict:
    index = golden.match_one_to_one(ours, reference)
    return {"unmatched": int((index < 0).sum()),
            "box_px": (ours.boxes[index] - reference["boxes"]).abs().max().item(),
            "score": (ours.scores[index] - reference["scores"]).abs().max().item()}


def main() -> None:
    torch.set_num_threads(2)
    print(json.dumps({"cpu_capability": torch.backends.cpu.get_cpu_capability(), "torch": torch.__version__}))
    detections = {exact: vitdet.predict(vitdet.golden_model(exact)) for exact in (True, False)}
    exact = {"boxes": detections[True].boxes, "labels": detections[True].labels, "scores": detections[True].scores}
    print(json.dumps({"fast_vs_exact": differences(detections[False], exact)}))
    for (capability, vendor), path in vitdet.KIND_FILES.items():
        for is_exact, ours in detections.items():
            print(json.dumps({"golden": f"{capability}/{vendor}", "path": "exact" if is_exact else "fast",
                              **differences(ours, read_detections(path))}))


if __name__ == "__main__":
    main()
