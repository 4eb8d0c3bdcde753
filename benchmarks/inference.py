"""Inference time per image: our Cascade (Mask) R-CNN R50-FPN (fast and exact paths, and the fast
path at bf16 / fp16 with ``--paths``) vs torchvision's Mask R-CNN R50-FPN (float32), on the same
image, in the same process.

Input as users have it: a natural-looking 480x640 picture (``drawn_scene``, or ``--image``),
resized to the zoo's 800 short side. Ours runs with random weights whose detections spread like
a trained model's (``spread_random_weights``); ``score_thr=0`` on both sides so that every head
runs on 100 detections. Prints one JSON object per model, with the ratio to the peer of the
median wall time and of the median process CPU time (steadier when other work shares the cores).

    python benchmarks/inference.py [--repeats 5] [--threads 2] [--image PHOTO] [--device cpu]
        [--paths fast exact bf16 fp16]

bf16 needs a CPU with bfloat16 instructions or a GPU, fp16 a GPU (``check_precision`` refuses the
others in one line).
"""
from __future__ import annotations

import argparse
import json
from dataclasses import replace

import torch
import torchvision

import cascade_rcnn
from cascade_rcnn.benchmarking.benchmark import Timing, peak_memory_gb, time_calls
from cascade_rcnn.benchmarking.synthetic import drawn_scene, spread_random_weights
from cascade_rcnn.data.images import read_image
from cascade_rcnn.ops.compute_path import EXACT, FAST, check_precision

MODELS = ("cascade_rcnn_r50_fpn_1x_coco", "cascade_mask_rcnn_r50_fpn_1x_coco")
PATHS = {"fast": FAST, "exact": EXACT, "bf16": replace(FAST, precision="bf16"), "fp16": replace(FAST, precision="fp16")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--image", help="a photo (default: a drawn 480x640 scene)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--paths", nargs="+", default=["fast", "exact"], choices=list(PATHS))
    args = parser.parse_args()
    for path in args.paths:
        check_precision(PATHS[path].precision, args.device)
    torch.set_num_threads(args.threads)
    image = read_image(args.image) if args.image else drawn_scene(480, 640)
    height, width = image.shape[:2]
    tensor = torch.from_numpy(image).permute(2, 0, 1).float().div(255).to(args.device)

    torch.manual_seed(0)
    peer = torchvision.models.detection.maskrcnn_resnet50_fpn(
        weights=None, weights_backbone=None, box_score_thresh=0.0).eval().to(args.device)
    runs = {("torchvision_maskrcnn_resnet50_fpn", ""): torch.no_grad()(lambda: len(peer([tensor])[0]["boxes"]))}
    for name in args.models:
        torch.manual_seed(0)
        model = spread_random_weights(cascade_rcnn.build_model(name, device=args.device), image)
        for path in args.paths:
            runs[(name, path)] = _ours(model, image, PATHS[path])
    # Interleaved rounds (every model once per round), so that load from other processes hits all alike.
    detections = {key: run() for key, run in runs.items()}  # also the warm-up
    timings = {key: Timing([], []) for key in runs}
    for _ in range(args.repeats):
        for key, run in runs.items():
            timing = time_calls(run, 1, args.device, warmup=0)
            timings[key].seconds += timing.seconds
            timings[key].cpu_seconds += timing.cpu_seconds
    peer_timing = timings[("torchvision_maskrcnn_resnet50_fpn", "")]
    for (name, path), timing in timings.items():
        print(json.dumps({"model": name, "path": path or None, "detections": detections[(name, path)],
                          "s_per_img": round(timing.median, 3), "cpu_s_per_img": round(timing.median_cpu, 3),
                          "ratio_to_torchvision_maskrcnn": round(timing.median / peer_timing.median, 3),
                          "cpu_ratio_to_torchvision_maskrcnn": round(timing.median_cpu / peer_timing.median_cpu, 3),
                          "image": f"{height}x{width}", "device": args.device, "threads": args.threads,
                          "repeats": args.repeats}))
    print(json.dumps({"peak_memory_gb_whole_process": round(peak_memory_gb(args.device), 2)}))


def _ours(model: cascade_rcnn.CascadeRCNN, image, path):
    def run() -> int:
        model.path = path
        return len(model.predict(image, score_thr=0.0)[0])
    return run


if __name__ == "__main__":
    main()
