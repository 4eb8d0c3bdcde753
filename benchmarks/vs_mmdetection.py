"""Inference time per image: our model vs MMDetection 3.3's same model, same weights, same image, in
one run (MMDetection in its own environment, a worker process driven line by line).

The weights are the seeded, calibrated checkpoint of tools/compare_with_mmdet.py (detections
spread like a trained model's), written in MMDetection's layout; the image a natural-looking 480x640
scene (``drawn_scene``) resized by both to the rows' 1333x800 scale; ``score_thr=0`` on both sides.
Rounds alternate MMDetection, our fast path and our exact path, each timed in its own process
around the predict call (image already decoded). Prints one JSON object per model and path with
the medians and the ratio to MMDetection (wall and process CPU time).

    python benchmarks/vs_mmdetection.py --mmdet-python /path/to/mmdet-venv/bin/python \
        [--models cascade_mask_rcnn_convnext-t_p4_w7_fpn_giou_4conv1f_fp16_ms-crop_3x_coco ...] [--repeats 3]
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import torch

import cascade_rcnn
from cascade_rcnn.benchmarking.synthetic import drawn_scene

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
from compare_with_mmdet import mmdet_config, synthetic_checkpoint  # noqa: E402

MODELS = ("cascade_mask_rcnn_convnext-t_p4_w7_fpn_giou_4conv1f_fp16_ms-crop_3x_coco",
          "cascade_mask_rcnn_swin_tiny_patch4_window7")


def ours_once(model: cascade_rcnn.CascadeRCNN, image) -> dict:
    start, cpu_start = time.perf_counter(), time.process_time()
    found = model.predict(image, score_thr=0.0)[0]
    return {"seconds": time.perf_counter() - start, "cpu_seconds": time.process_time() - cpu_start,
            "detections": len(found)}


def next_report(worker: subprocess.Popen) -> dict:
    """The worker's next JSON line (MMDetection prints other lines of its own to stdout)."""
    for line in worker.stdout:
        if line.startswith("{"):
            return json.loads(line)
    raise SystemExit(f"the MMDetection worker stopped (exit status {worker.wait()}); its errors are above")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mmdet-python", required=True)
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    image = drawn_scene(480, 640)
    with tempfile.TemporaryDirectory() as work:
        picture = Path(work) / "scene.png"
        cv2.imwrite(str(picture), image[:, :, ::-1])
        for name in args.models:
            checkpoint = Path(work) / f"{name}.pth"
            synthetic_checkpoint(name, checkpoint, image)
            worker = subprocess.Popen(
                [args.mmdet_python, str(Path(__file__).with_name("mmdet_worker.py")), mmdet_config(name),
                 str(checkpoint), str(picture), "--threads", str(args.threads)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

            def mmdet_once() -> dict:
                worker.stdin.write("run\n")
                worker.stdin.flush()
                return next_report(worker)

            next_report(worker)  # {"ready": true} once the model is loaded
            runs = {"mmdetection": mmdet_once}
            for path in ("fast", "exact"):
                model = cascade_rcnn.build_model(name, weights=checkpoint, exact=path == "exact")
                runs[path] = lambda model=model: ours_once(model, image)
            results = {key: [] for key in runs}
            for round_index in range(args.repeats + 1):  # round 0 is the warm-up
                for key, run in runs.items():
                    result = run()
                    if round_index:
                        results[key].append(result)
            worker.stdin.close()
            worker.wait()
            base = statistics.median(r["seconds"] for r in results["mmdetection"])
            base_cpu = statistics.median(r["cpu_seconds"] for r in results["mmdetection"])
            for key, timings in results.items():
                seconds = statistics.median(r["seconds"] for r in timings)
                cpu = statistics.median(r["cpu_seconds"] for r in timings)
                print(json.dumps({"model": name, "run": key, "detections": timings[0]["detections"],
                                  "s_per_img": round(seconds, 3), "cpu_s_per_img": round(cpu, 3),
                                  "ratio_to_mmdetection": round(seconds / base, 3),
                                  "cpu_ratio_to_mmdetection": round(cpu / base_cpu, 3),
                                  "image": "x".join(map(str, image.shape[:2])), "threads": args.threads,
                                  "repeats": args.repeats}), flush=True)


if __name__ == "__main__":
    main()
