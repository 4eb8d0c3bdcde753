"""Run MMDetection 3.x's ``model.loss`` on a fixed batch (executed by compare_losses_with_mmdet.py
in a Python environment that has mmdet/mmcv/mmpretrain installed; this project never imports mmdet).

    python mmdet_reference_losses.py CONFIG CHECKPOINT BATCH.pt OUT.pt

CONFIG as for mmdet_reference.py. BATCH.pt: ``inputs`` (B, 3, H, W) normalised and padded,
``image_sizes`` (B, 2) unpadded (h, w), ``targets`` (per image ``boxes`` xyxy, ``labels`` 0-based,
``masks`` (N, h, w) uint8 at the unpadded size, optional ``crowd_boxes`` (M, 4): MMDetection's
ignored instances). ``--ignore-iof-thr T`` sets every assigner's ``ignore_iof_thr`` (the zoo's is
-1: crowd regions ignored nowhere). Every candidate is sampled (sampler ``num`` =
10**9, no random choice), stochastic depth is off, the model is in training mode; the masks are
padded to the batch as MMDetection's data preprocessor does (``pad_mask=True``). OUT.pt: the
losses under MMDetection's names (RPN terms summed over the FPN levels, ``acc`` in percent).
"""
import argparse
import json

import torch
from mmdet.registry import MODELS
from mmdet.structures import DetDataSample
from mmdet.structures.mask import BitmapMasks
from mmdet.utils import register_all_modules
from mmengine.runner import load_checkpoint
from mmengine.structures import InstanceData

from mmdet_side import load_config

parser = argparse.ArgumentParser()
parser.add_argument("config", help="configs/... inside mmdet/.mim, or a config file")
parser.add_argument("checkpoint")
parser.add_argument("batch")
parser.add_argument("out")
parser.add_argument("--ignore-iof-thr", type=float, help="every assigner's ignore_iof_thr (default: the config's)")
args = parser.parse_args()

config = load_config(args.config)
if "drop_path_rate" in config.model.backbone:  # stochastic depth off (ConvNeXt, Swin)
    config.model.backbone.drop_path_rate = 0.0
config.model.train_cfg.rpn.sampler.num = 10**9
for stage in config.model.train_cfg.rcnn:
    stage.sampler.num = 10**9
if args.ignore_iof_thr is not None:
    for assigner in [config.model.train_cfg.rpn.assigner] + [s.assigner for s in config.model.train_cfg.rcnn]:
        assigner.ignore_iof_thr = args.ignore_iof_thr
register_all_modules()
model = MODELS.build(config.model)
load_checkpoint(model, args.checkpoint, map_location="cpu", strict=True)
model.train()

batch = torch.load(args.batch, weights_only=True)
inputs = batch["inputs"]
padded = tuple(inputs.shape[-2:])
samples = []
for size, target in zip(batch["image_sizes"].tolist(), batch["targets"]):
    sample = DetDataSample(metainfo={"img_shape": tuple(size), "ori_shape": tuple(size), "pad_shape": padded,
                                     "batch_input_shape": padded, "scale_factor": (1.0, 1.0)})
    masks = BitmapMasks(target["masks"].numpy(), *size).pad(padded, pad_val=0)
    sample.gt_instances = InstanceData(bboxes=target["boxes"].float(), labels=target["labels"].long(), masks=masks)
    crowd = target.get("crowd_boxes", torch.zeros(0, 4)).float()
    sample.ignored_instances = InstanceData(bboxes=crowd, labels=torch.zeros(len(crowd), dtype=torch.long))
    samples.append(sample)
torch.manual_seed(0)
losses = model.loss(inputs, samples)
out = {name: float(sum(value) if isinstance(value, (list, tuple)) else value) for name, value in losses.items()}
torch.save(out, args.out)
print(json.dumps(out))
