"""How far the fast inference path moves detections from the exact (MMDetection bit-for-bit) one,
step by step, next to the float-noise floor: the exact path itself run on 1 thread instead of 2
(same ops, another summation order in the convolution kernels).

Each model gets random weights calibrated on a drawn 427x640 scene as ``../shared/golden``'s
checkpoint was (``spread_random_weights``: BatchNorm statistics measured on the image, prediction
layers rescaled so that detections spread like a trained model's), once per seed; then, at the
default test settings, the exact path is the reference for: the exact path on 1 thread (the
floor), each fast step switched on alone, all of ``FAST``, and ``FAST`` without each step. One
JSON object per model, seed and comparison (``agreement``: matched detections, largest box and
score difference, lowest mask IoU).

``--speed`` times the same paths instead: ``FAST`` and ``FAST`` without each step (what each
step saves), in interleaved rounds in one process, median wall and process CPU seconds per
image, with the 1-minute load average beside each figure.

    python benchmarks/fast_path_agreement.py [--models NAME ...] [--seeds 0 1 2] [--image PNG]
    python benchmarks/fast_path_agreement.py --speed [--models NAME ...] [--repeats 5] [--threads 2]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from dataclasses import asdict, fields, replace

import cv2
import numpy as np
import torch

import cascade_rcnn
from cascade_rcnn.benchmarking.agreement import agreement
from cascade_rcnn.benchmarking.synthetic import drawn_scene, spread_random_weights
from cascade_rcnn.ops.compute_path import EXACT, FAST, ComputePath

# R50 pytorch style, R101 caffe style (the model), X101-32x4d; box and mask models each.
MODELS = ("cascade_rcnn_r50_fpn_1x_coco", "cascade_mask_rcnn_r50_fpn_1x_coco",
          "cascade_rcnn_r101_caffe_fpn_1x_coco", "cascade_mask_rcnn_r101_caffe_fpn_1x_coco",
          "cascade_rcnn_x101_32x4d_fpn_1x_coco", "cascade_mask_rcnn_x101_32x4d_fpn_1x_coco")
STEPS = tuple(f.name for f in fields(ComputePath) if f.name not in ("exporting", "precision"))


def noise_paths(with_mask: bool) -> dict[str, ComputePath]:
    """Each step alone on the exact path, all of FAST, FAST without each step. The mask-logit
    step changes nothing on a box-only model, so it is left out there."""
    steps = [step for step in STEPS if with_mask or step != "class_mask_logits"]
    paths = {f"exact + {step}": replace(EXACT, **{step: True}) for step in steps}
    paths["fast"] = FAST
    paths.update({f"fast - {step}": replace(FAST, **{step: False}) for step in steps})
    return paths


def calibrated_model(name: str, seed: int, image: np.ndarray) -> cascade_rcnn.CascadeRCNN:
    torch.manual_seed(seed)
    return spread_random_weights(cascade_rcnn.build_model(name), image, seed=seed)


def noise(name: str, seed: int, threads: int, image: np.ndarray) -> None:
    """Print the exact path's distance to itself on one thread, and to every path of ``noise_paths``."""
    model = calibrated_model(name, seed, image)
    model.path = EXACT
    reference = model.predict(image)[0]
    torch.set_num_threads(1)
    others = {"exact, 1 thread (noise floor)": model.predict(image)[0]}
    torch.set_num_threads(threads)
    for label, path in noise_paths(model.roi_head.mask_head is not None).items():
        model.path = path
        others[label] = model.predict(image)[0]
    for label, other in others.items():
        row = {key: round(value, 7) if isinstance(value, float) else value
               for key, value in asdict(agreement(reference, other, min_iou=0.5)).items()}
        print(json.dumps({"model": name, "seed": seed, "comparison": f"{label} vs exact", **row}), flush=True)


def speed(name: str, repeats: int, score_thr: float | None) -> None:
    """Print FAST's and each FAST-without-a-step path's median seconds per image (wall, CPU)."""
    image = drawn_scene(480, 640)  # 800x1067 after the zoo's resize
    model = calibrated_model(name, 0, image)
    paths = {"fast": FAST, **{f"fast - {step}": replace(FAST, **{step: False}) for step in STEPS
                              if model.roi_head.mask_head is not None or step != "class_mask_logits"}}
    times: dict[str, list[tuple[float, float]]] = {label: [] for label in paths}
    loads = []
    for round_index in range(repeats + 1):  # round 0 warms up (folded weights, allocator)
        loads.append(os.getloadavg()[0])
        for label, path in paths.items():
            model.path = path
            wall, cpu = time.perf_counter(), time.process_time()
            model.predict(image, score_thr=score_thr)
            if round_index:
                times[label].append((time.perf_counter() - wall, time.process_time() - cpu))
    fast_wall = statistics.median(wall for wall, _ in times["fast"])
    fast_cpu = statistics.median(cpu for _, cpu in times["fast"])
    for label, samples in times.items():
        wall = statistics.median(w for w, _ in samples)
        cpu = statistics.median(c for _, c in samples)
        print(json.dumps({"model": name, "path": label, "threads": torch.get_num_threads(), "score_thr": score_thr,
                          "wall_s_median": round(wall, 3), "cpu_s_median": round(cpu, 3),
                          "wall_vs_fast": round(wall / fast_wall, 3), "cpu_vs_fast": round(cpu / fast_cpu, 3),
                          "wall_s": [round(w, 3) for w, _ in samples],
                          "load_1min_per_round": [round(load, 2) for load in loads]}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="of the calibrated weights")
    parser.add_argument("--image", help="calibrate and compare on this picture instead of the drawn 427x640 scene")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--speed", action="store_true", help="time the paths instead of comparing them")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds (--speed)")
    parser.add_argument("--score-thr", type=float, help="test score threshold (--speed; default: the zoo's 0.05)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    image = cv2.imread(args.image)[:, :, ::-1].copy() if args.image else drawn_scene(427, 640)  # RGB
    for name in args.models:
        if args.speed:
            speed(name, args.repeats, args.score_thr)
        else:
            for seed in args.seeds:
                noise(name, seed, args.threads, image)


if __name__ == "__main__":
    main()
