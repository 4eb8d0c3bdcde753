"""Inference time per image: our model vs Detectron2's same model, same weights, same image, in one
run (Detectron2 in its own environment, a worker process driven line by line).

The model is Detectron2's ``configs/Misc/cascade_mask_rcnn_R_50_FPN_3x.yaml`` (the copy in
``cascade_rcnn.weights.zoo.DETECTRON2_CONFIGS``, with its ``_BASE_``; our zoo row of that name): Detectron2 builds it with ``get_cfg`` +
``merge_from_file``, we with ``build_model("<that yaml>", weights=...)``. The weights are seeded
random ones made on our side and calibrated on the image so that detections spread like a trained
model's (``synthetic.spread_random_weights``), then written under Detectron2's key names (the
inverse of ``weights/detectron2_layout.py``) as ``{"model": state_dict}``, which Detectron2's
``DetectionCheckpointer`` and our ``build_model`` both read. The image is a natural-looking 480x640
scene (``drawn_scene``), resized by both to the row's scale (short side 800, long side at most
1333: 800x1067), ``score_thr=0`` on both sides (100 detections).

First the agreement check: Detectron2's detections against our exact and fast paths' on the image
(so the timing compares the same work). Then rounds alternate Detectron2's ``DefaultPredictor``
call, our fast path and our exact path, each timed in its own process around the predict call
(image already decoded). Prints one JSON object per check and per path, with the medians and the
ratio to Detectron2 (wall and process CPU time; also the ratio of the fastest rounds, which other
work on a shared machine disturbs least).

    python benchmarks/vs_detectron2.py --d2-python /tmp/d2venv/bin/python [--repeats 3] [--threads 2]
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

import cascade_rcnn
from cascade_rcnn.benchmarking.agreement import agreement
from cascade_rcnn.benchmarking.synthetic import drawn_scene, spread_random_weights
from cascade_rcnn.outputs.detections import Detections
from cascade_rcnn.weights.detectron2_layout import our_name
from cascade_rcnn.weights.zoo import DETECTRON2_CONFIGS

DATA = Path(__file__).resolve().parents[1] / "tests" / "data"
CONFIG = DETECTRON2_CONFIGS / "Misc" / "cascade_mask_rcnn_R_50_FPN_3x.yaml"
# Detectron2's state-dict names for that config, in its order (its model-zoo checkpoint's keys).
KEYS = DATA / "detectron2_keys" / "Misc-cascade_mask_rcnn_R_50_FPN_3x.json"


def detectron2_checkpoint(config: Path, keys: Path, path: Path, image: np.ndarray, seed: int = 0) -> None:
    """Seeded random weights (``torch.manual_seed(seed)``, then ``build_model(config)``), calibrated
    on ``image`` (RGB), saved as ``{"model": state_dict}`` under Detectron2's names: each of its keys
    (``keys``: [name, shape, dtype] rows) takes the tensor of our name for it."""
    torch.manual_seed(seed)
    ours = spread_random_weights(cascade_rcnn.build_model(str(config)), image, seed=seed).state_dict()
    theirs, used = {}, set()
    for name, shape, _dtype in json.loads(keys.read_text()):
        mine = our_name(name)
        if mine is None or mine not in ours or list(ours[mine].shape) != shape:
            raise SystemExit(f"{name}: no tensor of shape {shape} in our model (ours: {mine})")
        theirs[name] = ours[mine].detach().clone().contiguous()
        used.add(mine)
    left = [key for key in ours if key not in used and not key.endswith("num_batches_tracked")]
    if left:
        raise SystemExit(f"{len(left)} of our tensors have no Detectron2 key: {left[:5]}")
    torch.save({"model": theirs}, path)


def ours_once(model: cascade_rcnn.CascadeRCNN, image: np.ndarray) -> dict:
    start, cpu_start = time.perf_counter(), time.process_time()
    found = model.predict(image, score_thr=0.0)[0]
    return {"seconds": time.perf_counter() - start, "cpu_seconds": time.process_time() - cpu_start,
            "detections": len(found)}


def next_report(worker: subprocess.Popen) -> dict:
    """The worker's next JSON line (Detectron2 may print other lines of its own)."""
    for line in worker.stdout:
        if line.startswith("{"):
            return json.loads(line)
    raise SystemExit(f"the Detectron2 worker stopped (exit status {worker.wait()}); its errors are above")


def agreement_with(theirs: dict, found: Detections) -> dict:
    """How far our detections are from Detectron2's: bit-identical or not (both come sorted by
    score), and matched one to one (same label, box IoU >= 0.9, greedily by Detectron2's score:
    float noise may swap two near-tied detections) with the largest differences of a pair."""
    reference = Detections(theirs["boxes"], theirs["scores"], theirs["labels"].long(), (), found.image_size,
                           theirs["masks"].bool())
    identical = len(found) == len(reference) and all(
        torch.equal(getattr(found, field), getattr(reference, field))
        for field in ("boxes", "scores", "labels", "masks"))
    matched = agreement(reference, found)
    return {"detections": [len(reference), len(found)], "bit_identical": identical, "matched": matched.matched,
            "max_box_px": matched.max_box_diff, "max_score": matched.max_score_diff,
            "min_mask_iou": matched.min_mask_iou}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--d2-python", required=True, help="the Python of an environment with Detectron2")
    parser.add_argument("--config", default=str(CONFIG), help="Detectron2 yacs config (default: the R-50 3x row)")
    parser.add_argument("--keys", default=str(KEYS), help="its Detectron2 state-dict keys ([name, shape, dtype])")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--paths", nargs="+", choices=("fast", "exact"), default=["fast", "exact"])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    image = drawn_scene(480, 640)
    with tempfile.TemporaryDirectory() as work:
        picture, checkpoint = Path(work) / "scene.png", Path(work) / "checkpoint.pth"
        cv2.imwrite(str(picture), image[:, :, ::-1])
        detectron2_checkpoint(Path(args.config), Path(args.keys), checkpoint, image)
        worker = subprocess.Popen(
            [args.d2_python, str(Path(__file__).with_name("detectron2_worker.py")), args.config,
             str(checkpoint), str(picture), "--threads", str(args.threads)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

        def ask(line: str) -> dict:
            worker.stdin.write(line + "\n")
            worker.stdin.flush()
            return next_report(worker)

        next_report(worker)  # {"ready": true} once the model is loaded and checked
        dumped = Path(work) / "detectron2.pt"
        ask(f"dump {dumped}")
        theirs = torch.load(dumped, weights_only=True)
        runs = {"detectron2": lambda: ask("run")}
        for path in args.paths:
            model = cascade_rcnn.build_model(args.config, weights=checkpoint, exact=path == "exact")
            print(json.dumps({"check": "agreement with Detectron2", "path": path,
                              **agreement_with(theirs, model.predict(image, score_thr=0.0)[0])}), flush=True)
            runs[path] = lambda model=model: ours_once(model, image)
        results = {key: [] for key in runs}
        for round_index in range(args.repeats + 1):  # round 0 is the warm-up
            for key, run in runs.items():
                result = run()
                if round_index:
                    results[key].append(result)
        worker.stdin.close()
        worker.wait()
    base = statistics.median(r["seconds"] for r in results["detectron2"])
    base_cpu = statistics.median(r["cpu_seconds"] for r in results["detectron2"])
    best = min(r["seconds"] for r in results["detectron2"])  # the least disturbed round, on a shared machine
    for key, timings in results.items():
        seconds = statistics.median(r["seconds"] for r in timings)
        cpu = statistics.median(r["cpu_seconds"] for r in timings)
        print(json.dumps({"model": Path(args.config).stem, "run": key, "detections": timings[0]["detections"],
                          "s_per_img": round(seconds, 3), "cpu_s_per_img": round(cpu, 3),
                          "ratio_to_detectron2": round(seconds / base, 3),
                          "cpu_ratio_to_detectron2": round(cpu / base_cpu, 3),
                          "best_ratio_to_detectron2": round(min(r["seconds"] for r in timings) / best, 3),
                          "seconds": [round(r["seconds"], 3) for r in timings],
                          "image": "x".join(map(str, image.shape[:2])), "threads": args.threads,
                          "repeats": args.repeats}), flush=True)


if __name__ == "__main__":
    main()
