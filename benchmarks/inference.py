"""CPU (or CUDA) inference time per image: our Cascade (Mask) R-CNN R50-FPN vs torchvision's
Mask R-CNN R50-FPN, on the same image, in the same process.

Random weights and ``score_thr=0`` on both sides, so every head runs on 100 detections (trained
weights would give fewer). Prints one JSON object per model, then the ratios.

    python benchmarks/inference.py [--repeats 5] [--threads 2] [--size 480x640] [--device cpu]
"""
from __future__ import annotations

import argparse
import json
import resource

import numpy as np
import torch
import torchvision

import cascade_rcnn
from timing import median_seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--size", default="480x640", help="HxW of the input image (resized to 800 short side)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    height, width = map(int, args.size.split("x"))
    image = (np.random.default_rng(0).random((height, width, 3)) * 255).astype(np.uint8)
    tensor = torch.from_numpy(image).permute(2, 0, 1).float().div(255).to(args.device)

    results = {}
    peer = torchvision.models.detection.maskrcnn_resnet50_fpn(
        weights=None, weights_backbone=None, box_score_thresh=0.0).eval().to(args.device)
    with torch.no_grad():
        seconds = median_seconds(lambda: peer([tensor]), args.repeats, args.device)
        count = len(peer([tensor])[0]["boxes"])
    results["torchvision_maskrcnn_resnet50_fpn"] = {"s_per_img": seconds, "detections": count}
    del peer
    for name, channels_last in (("cascade_rcnn_r50_fpn_1x_coco", False), ("cascade_mask_rcnn_r50_fpn_1x_coco", False),
                                ("cascade_rcnn_r50_fpn_1x_coco", True), ("cascade_mask_rcnn_r50_fpn_1x_coco", True)):
        torch.manual_seed(0)
        model = cascade_rcnn.build_model(name, device=args.device, channels_last=channels_last)
        seconds = median_seconds(lambda: model.predict(image, score_thr=0.0), args.repeats, args.device)
        count = len(model.predict(image, score_thr=0.0)[0])
        results[name + (" channels_last" if channels_last else "")] = {"s_per_img": seconds, "detections": count}
        del model
    peer_seconds = results["torchvision_maskrcnn_resnet50_fpn"]["s_per_img"]
    for name, row in results.items():
        row["ratio_to_torchvision_maskrcnn"] = row["s_per_img"] / peer_seconds
        print(json.dumps({"model": name, "image": args.size, "device": args.device,
                          "threads": args.threads, "repeats": args.repeats, **row}))
    print(json.dumps({"peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}))


if __name__ == "__main__":
    main()
