"""Does our training learn as fast as a reference implementation? torchvision's Faster R-CNN built
on OUR backbone + FPN (same initial weights) vs our one-stage box model (a Faster R-CNN head at
IoU 0.5), from scratch on the demo's shapes data, same batches, optimizer and steps; box AP on
held-out images, in the same process.

    python benchmarks/peer_training.py [--out runs/peer] [--steps 600] [--optimizer adamw|sgd]
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import time
from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.ops import MultiScaleRoIAlign

from cascade_rcnn.data.coco import CocoDataset
from cascade_rcnn.data.loader import AugmentedDataset, epoch_loader
from cascade_rcnn.engine.demo import DemoSettings, generate_demo_data
from cascade_rcnn.engine.evaluate import evaluate_coco
from cascade_rcnn.engine.schedule import LRSchedule
from cascade_rcnn.engine.train import OPTIMIZERS
from cascade_rcnn.engine.validate import predict_dataset
from cascade_rcnn.inference.predictor import CascadeRCNN
from cascade_rcnn.ops.compute_path import FAST
from cascade_rcnn.weights.zoo import get_config


class PyramidBackbone(nn.Module):
    """Our ResNet + FPN with torchvision's backbone interface (an OrderedDict of P2..P6)."""

    def __init__(self, model: CascadeRCNN):
        super().__init__()
        self.backbone, self.neck = model.backbone, model.neck
        self.out_channels = model.config.fpn_channels

    def forward(self, images: torch.Tensor) -> OrderedDict:
        return OrderedDict((str(i), level) for i, level in enumerate(self.neck(self.backbone(images, FAST))))


def torchvision_peer(ours: CascadeRCNN) -> FasterRCNN:
    """Faster R-CNN with our anchors (stride x anchor_scale, 3 ratios), RoI counts and FC width."""
    config = ours.config
    side = config.image_scale[0]
    anchors = AnchorGenerator(tuple((s * config.anchor_scale,) for s in (4, 8, 16, 32, 64)), ((0.5, 1.0, 2.0),) * 5)
    # Our model normalises inside the loader; torchvision normalises itself: give it the same mean/std.
    mean = [m / 255 for m in config.pixel_mean]
    std = [s / 255 for s in config.pixel_std]
    peer = FasterRCNN(PyramidBackbone(ours), num_classes=config.num_classes + 1, rpn_anchor_generator=anchors,
                      box_roi_pool=MultiScaleRoIAlign(["0", "1", "2", "3"], 7, 0), min_size=side, max_size=side,
                      image_mean=mean, image_std=std, rpn_pre_nms_top_n_train=config.train_proposals,
                      rpn_post_nms_top_n_train=config.train_proposals,
                      box_batch_size_per_image=config.rois_per_image)
    peer.roi_heads.box_head = TwoMLPHead(config.fpn_channels * 49, config.fc_channels)
    peer.roi_heads.box_predictor = FastRCNNPredictor(config.fc_channels, config.num_classes + 1)
    return peer


def train_steps(step, parameters, args, augmented: AugmentedDataset) -> float:
    """Run ``step(batch)`` -> loss for ``args.steps`` batches; returns minutes."""
    weight_decay = OPTIMIZERS[args.optimizer].weight_decay
    optimizer = (torch.optim.AdamW(parameters, lr=args.lr, weight_decay=weight_decay) if args.optimizer == "adamw"
                 else torch.optim.SGD(parameters, lr=args.lr, momentum=0.9, weight_decay=weight_decay))
    per_epoch = -(-len(augmented) // 4)
    schedule = LRSchedule(args.lr, steps=(args.steps * 5 // 6 // per_epoch,), warmup_iters=100)
    start, iteration, epoch = time.perf_counter(), 0, 0
    while iteration < args.steps:
        for batch in epoch_loader(augmented, epoch, 4, 1, 0):
            for group in optimizer.param_groups:
                group["lr"] = schedule.lr(epoch, iteration)
            loss = step(batch)
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(parameters, 10.0)
            optimizer.step()
            iteration += 1
            if iteration == args.steps:
                break
        epoch += 1
    return (time.perf_counter() - start) / 60


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/peer")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--optimizer", choices=["adamw", "sgd"], default="adamw")
    parser.add_argument("--lr", type=float, help="default: 1e-3 (adamw) or 0.02 (sgd)")
    args = parser.parse_args()
    args.lr = args.lr or (1e-3 if args.optimizer == "adamw" else 0.02)
    out = Path(args.out)
    settings = DemoSettings(train_images=400)
    generate_demo_data(out, settings)
    train_set = CocoDataset(out / "train" / "annotations.json", out / "train" / "images", with_masks=False)
    val_json = out / "val" / "annotations.json"
    val_set = CocoDataset(val_json, out / "val" / "images", with_masks=False)
    base = get_config("cascade_rcnn_r18w32_fpn_256").with_classes(train_set.class_names, train_set.category_ids)
    config = dataclasses.replace(base.with_changes(num_stages=1), name="one_stage")
    augmented = AugmentedDataset(train_set, config, seed=0, with_masks=False)

    torch.manual_seed(0)
    ours = CascadeRCNN(config).train()
    torch.manual_seed(0)
    peer = torchvision_peer(CascadeRCNN(config)).train()  # same initial backbone and FPN weights

    mean = torch.tensor(config.pixel_mean).view(3, 1, 1)
    std = torch.tensor(config.pixel_std).view(3, 1, 1)

    def peer_step(batch) -> torch.Tensor:
        images = [(batch.images[i, :, :h, :w] * std + mean) / 255 for i, (h, w) in enumerate(batch.sizes)]
        targets = [{"boxes": t["boxes"], "labels": t["labels"] + 1} for t in batch.targets]
        return sum(peer(images, targets).values())

    def our_step(batch) -> torch.Tensor:
        losses = ours(batch.images, batch.targets, batch.sizes)
        return sum(v for k, v in losses.items() if not k.endswith("_acc"))

    rows = {}
    peer_minutes = train_steps(peer_step, [p for p in peer.parameters() if p.requires_grad], args, augmented)
    peer.eval()
    records = []
    with torch.no_grad():
        for index in range(len(val_set)):
            sample = val_set[index]
            image = torch.from_numpy(sample["image"]).permute(2, 0, 1).float() / 255
            found = peer([image])[0]
            for box, score, label in zip(found["boxes"].tolist(), found["scores"].tolist(), found["labels"].tolist()):
                records.append({"image_id": sample["image_id"], "category_id": val_set.category_ids[label - 1],
                                "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]], "score": score})
    rows["torchvision_faster_rcnn_on_our_backbone"] = (peer_minutes, evaluate_coco(val_json, records)["bbox"])
    our_minutes = train_steps(our_step, [p for p in ours.parameters() if p.requires_grad], args, augmented)
    ours.eval()
    rows["cascade_rcnn_one_stage"] = (our_minutes, evaluate_coco(val_json, predict_dataset(ours, val_set))["bbox"])
    for name, (minutes, box) in rows.items():
        print(json.dumps({"model": name, "steps": args.steps, "optimizer": args.optimizer, "lr": args.lr,
                          "train_minutes": round(minutes, 1),
                          **{k: round(box[k], 4) for k in ("AP", "AP50", "AP70", "AP90")}}), flush=True)


if __name__ == "__main__":
    main()
