"""ONNX export of zoo models: parity of onnxruntime (CPU) with our PyTorch model, time per image
of both (same image, same process), and onnxruntime's images/s at batch 1 vs batch N.

Weights are random but spread like a trained model's (``spread_random_weights``); the image is
a drawn 480x640 scene resized to the zoo's 800 short side; default test settings (score > 0.05,
at most 100 detections). The batch comparison runs the same N drawn 480x640 scenes (one padded
size, so ``predict(..., batch_size=N)`` makes one batch of them) through the same file at
``batch_size=1`` and ``batch_size=N``; each figure is N / median seconds of one ``predict`` call
over all N. Prints one JSON object per model.

    python benchmarks/onnx_runtime.py [--models NAME ...] [--repeats 3] [--threads 2] [--batch 4]
        [--no-pytorch]
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import torch

import cascade_rcnn
from cascade_rcnn.benchmarking.agreement import agreement
from cascade_rcnn.benchmarking.benchmark import time_calls
from cascade_rcnn.benchmarking.synthetic import drawn_scene, spread_random_weights
from cascade_rcnn.deploy.export import FORMAT

MODELS = ("cascade_rcnn_r50_fpn_1x_coco", "cascade_mask_rcnn_r50_fpn_1x_coco")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=4, help="the batch size compared with batch 1 (0: skip)")
    parser.add_argument("--no-pytorch", action="store_true", help="skip the PyTorch parity and timing")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    image = drawn_scene(480, 640)
    batch_images = [drawn_scene(480, 640, seed=seed) for seed in range(args.batch)]
    with tempfile.TemporaryDirectory() as work:
        for name in args.models:
            torch.manual_seed(0)
            model = spread_random_weights(cascade_rcnn.build_model(name), image)
            start = time.perf_counter()
            path = cascade_rcnn.export_onnx(model, Path(work) / f"{name}.onnx")
            export_s = time.perf_counter() - start
            runtime = cascade_rcnn.OnnxDetector(path, threads=args.threads)
            onnx_timing = time_calls(lambda runtime=runtime: runtime.predict(image), args.repeats, "cpu")
            result = {"model": name, "format": FORMAT, "export_s": round(export_s, 1),
                      "onnx_mb": round(path.stat().st_size / 2**20, 1),
                      "onnx_s_per_img": round(onnx_timing.median, 3), "onnx_cpu_s": round(onnx_timing.median_cpu, 3)}
            if not args.no_pytorch:
                ours, theirs = model.predict(image)[0], runtime.predict(image)[0]
                torch_timing = time_calls(lambda model=model: model.predict(image), args.repeats, "cpu")
                result.update({
                    "pytorch_s_per_img": round(torch_timing.median, 3),
                    "pytorch_cpu_s": round(torch_timing.median_cpu, 3),
                    "onnx_over_pytorch": round(onnx_timing.median / torch_timing.median, 3),
                    "onnx_over_pytorch_cpu": round(onnx_timing.median_cpu / torch_timing.median_cpu, 3),
                    **{f"parity_{k}": v for k, v in asdict(agreement(ours, theirs, min_iou=0.5)).items()}})
            if args.batch:
                result.update(batch_figures(runtime, batch_images, args.repeats))
            result["threads"] = args.threads
            print(json.dumps(result), flush=True)


def batch_figures(runtime: cascade_rcnn.OnnxDetector, images: list, repeats: int) -> dict:
    """onnxruntime images/s at batch 1 and at batch len(images) on the same images, and how far
    the batched detections are from the batch-1 ones."""
    size = len(images)
    timings = {batch: time_calls(lambda batch=batch: runtime.predict(images, batch_size=batch), repeats, "cpu")
               for batch in (1, size)}
    single, batched = runtime.predict(images), runtime.predict(images, batch_size=size)
    matches = [agreement(a, b, min_iou=0.5) for a, b in zip(single, batched)]
    return {
        "batch": size,
        "onnx_img_per_s_batch1": round(size / timings[1].median, 3),
        f"onnx_img_per_s_batch{size}": round(size / timings[size].median, 3),
        f"batch{size}_over_batch1": round(timings[1].median / timings[size].median, 3),
        "onnx_cpu_s_per_img_batch1": round(timings[1].median_cpu / size, 3),
        f"onnx_cpu_s_per_img_batch{size}": round(timings[size].median_cpu / size, 3),
        "batch_parity_detections": sum(m.reference for m in matches),
        "batch_parity_matched": sum(m.matched for m in matches),
        "batch_parity_max_score_diff": max((m.max_score_diff or 0.0) for m in matches),
        "batch_parity_min_box_iou": min((m.min_box_iou for m in matches if m.min_box_iou is not None), default=None),
    }


if __name__ == "__main__":
    main()
