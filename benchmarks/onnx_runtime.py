"""ONNX export of zoo models: parity of onnxruntime (CPU) with our PyTorch model, and time per image
of both, same image, same process.

Weights are random but spread like a trained model's (``spread_random_weights``); the image is
a drawn 480x640 scene resized to the zoo's 800 short side; default test settings (score > 0.05,
at most 100 detections). Prints one JSON object per model.

    python benchmarks/onnx_runtime.py [--models NAME ...] [--repeats 3] [--threads 2]
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

MODELS = ("cascade_rcnn_r50_fpn_1x_coco", "cascade_mask_rcnn_r50_fpn_1x_coco")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    image = drawn_scene(480, 640)
    with tempfile.TemporaryDirectory() as work:
        for name in args.models:
            torch.manual_seed(0)
            model = spread_random_weights(cascade_rcnn.build_model(name), image)
            start = time.perf_counter()
            path = cascade_rcnn.export_onnx(model, Path(work) / f"{name}.onnx")
            export_s = time.perf_counter() - start
            runtime = cascade_rcnn.OnnxDetector(path, threads=args.threads)
            ours, theirs = model.predict(image)[0], runtime.predict(image)[0]
            torch_timing = time_calls(lambda: model.predict(image), args.repeats, "cpu")
            onnx_timing = time_calls(lambda: runtime.predict(image), args.repeats, "cpu")
            print(json.dumps({
                "model": name, "export_s": round(export_s, 1), "onnx_mb": round(path.stat().st_size / 2**20, 1),
                "pytorch_s_per_img": round(torch_timing.median, 3), "onnx_s_per_img": round(onnx_timing.median, 3),
                "pytorch_cpu_s": round(torch_timing.median_cpu, 3), "onnx_cpu_s": round(onnx_timing.median_cpu, 3),
                "onnx_over_pytorch": round(onnx_timing.median / torch_timing.median, 3),
                "onnx_over_pytorch_cpu": round(onnx_timing.median_cpu / torch_timing.median_cpu, 3),
                **{f"parity_{k}": v for k, v in asdict(agreement(ours, theirs, min_iou=0.5)).items()},
                "threads": args.threads}), flush=True)


if __name__ == "__main__":
    main()
