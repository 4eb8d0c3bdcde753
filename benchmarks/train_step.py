"""Training step time and peak memory: our Cascade Mask R-CNN R50-FPN (at each of ``--precisions``:
autocast with float32 master weights for bf16 / fp16) vs torchvision's Mask R-CNN R50-FPN
(float32), 2 images of 1333x800 with 8 objects each, in the same process.

    python benchmarks/train_step.py [--steps 3] [--threads 2] [--device cpu] [--precisions fp32 bf16]
"""
from __future__ import annotations

import argparse
import json
import resource
from dataclasses import replace

import torch
import torchvision

import cascade_rcnn
from cascade_rcnn.benchmarking.benchmark import synthetic_targets, time_calls
from cascade_rcnn.data.transforms import pad_batch
from cascade_rcnn.ops.compute_path import PRECISION_DTYPES, check_precision

HEIGHT, WIDTH = 800, 1333


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precisions", nargs="+", default=["fp32"], choices=list(PRECISION_DTYPES))
    args = parser.parse_args()
    for precision in args.precisions:
        check_precision(precision, args.device)
    torch.set_num_threads(args.threads)
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(2, 3, HEIGHT, WIDTH, generator=generator)
    gts = [synthetic_targets(HEIGHT, WIDTH, 80, True, generator, torch.device(args.device)) for _ in range(2)]
    rows = {}

    torch.manual_seed(0)
    peer = torchvision.models.detection.maskrcnn_resnet50_fpn(weights=None, weights_backbone=None,
                                                              min_size=HEIGHT, max_size=WIDTH).to(args.device).train()
    peer_targets = [{**t, "labels": t["labels"] + 1} for t in gts]
    peer_optimizer = torch.optim.SGD([p for p in peer.parameters() if p.requires_grad], lr=1e-4, momentum=0.9)

    def peer_step() -> None:
        loss = sum(peer(list(images.to(args.device)), peer_targets).values())
        peer_optimizer.zero_grad()
        loss.backward()
        peer_optimizer.step()

    rows["torchvision_maskrcnn_resnet50_fpn"] = time_calls(peer_step, args.steps, args.device).median
    del peer, peer_optimizer

    model = cascade_rcnn.CascadeRCNN(cascade_rcnn.get_config("cascade_mask_rcnn_r50_fpn_1x_coco")).to(args.device).train()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-4, momentum=0.9)
    mean = torch.tensor(model.config.pixel_mean).view(3, 1, 1)
    std = torch.tensor(model.config.pixel_std).view(3, 1, 1)
    batch = pad_batch([(image * 255 - mean) / std for image in images]).to(args.device)

    def our_step() -> None:
        losses = model(batch, gts, torch.tensor([(HEIGHT, WIDTH)] * 2))
        loss = sum(v for k, v in losses.items() if not k.endswith("_acc"))
        optimizer.zero_grad()
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    for precision in args.precisions:
        model.path = replace(model.path, precision=precision)
        scaler = torch.amp.GradScaler(torch.device(args.device).type, enabled=precision == "fp16")
        name = "cascade_mask_rcnn_r50_fpn_1x_coco" + ("" if precision == "fp32" else f" {precision}")
        rows[name] = time_calls(our_step, args.steps, args.device).median
    peak = (torch.cuda.max_memory_allocated() / 2**30 if args.device.startswith("cuda")
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20)
    for name, seconds in rows.items():
        print(json.dumps({"model": name, "images": f"2x{HEIGHT}x{WIDTH}", "device": args.device,
                          "threads": args.threads, "s_per_step": round(seconds, 3),
                          "ratio_to_torchvision": round(seconds / rows["torchvision_maskrcnn_resnet50_fpn"], 3)}))
    print(json.dumps({"peak_memory_gb_whole_process": round(peak, 2)}))


if __name__ == "__main__":
    main()
