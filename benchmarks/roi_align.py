"""RoIAlign forward + backward in training: our separable form vs torchvision's roi_align, same
RoIs and feature maps, same process. Decides ``SEPARABLE_MAX_PIXELS``.

    python benchmarks/roi_align.py [--threads 2] [--repeats 5]
"""
from __future__ import annotations

import argparse
import json

import torch
import torchvision

from cascade_rcnn.benchmarking.benchmark import time_calls
from cascade_rcnn.ops.separable_roi_align import separable_roi_align

# (name, feature map side, RoIs, output size): the demo's P2 (256 px images), and larger maps.
CASES = [("box head, 64x64 map (demo P2)", 64, 256, 7), ("mask head, 64x64 map (demo P2)", 64, 64, 14),
         ("box head, 80x80 map", 80, 256, 7), ("box head, 100x100 map", 100, 256, 7),
         ("box head, 128x128 map", 128, 512, 7)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    generator = torch.Generator().manual_seed(0)
    for name, side, count, size in CASES:
        features = torch.randn(4, 64, side, side, generator=generator, requires_grad=True)
        xy = torch.rand(count, 2, generator=generator) * side * 4
        wh = 8 + torch.rand(count, 2, generator=generator) * 100
        rois = torch.cat([torch.randint(0, 4, (count, 1), generator=generator).float(), xy, xy + wh], dim=1)
        upstream = torch.randn(count, 64, size, size, generator=generator)

        def torchvision_step() -> None:
            torchvision.ops.roi_align(features, rois, size, 0.25, sampling_ratio=0, aligned=True).backward(upstream)

        def separable_step() -> None:
            separable_roi_align(features, rois, size, 0.25).backward(upstream)

        peer = time_calls(torchvision_step, args.repeats, "cpu").median
        ours = time_calls(separable_step, args.repeats, "cpu").median
        print(json.dumps({"case": name, "rois": count, "threads": args.threads,
                          "torchvision_ms": round(peer * 1000, 1), "separable_ms": round(ours * 1000, 1),
                          "ratio_to_torchvision": round(ours / peer, 3)}))


if __name__ == "__main__":
    main()
