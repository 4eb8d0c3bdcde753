"""Run MMDetection 3.x itself on one image (executed by compare_with_mmdet.py in a Python
environment that has mmdet/mmcv installed; this project never imports mmdet).

    python mmdet_reference.py CONFIG CHECKPOINT IMAGE OUT.pt [--score-thr 0.05]

CONFIG is a config inside mmdet/.mim (``configs/cascade_rcnn/x.py``) or a config file of ours
(``tools/mmdet_configs/*.py``, which build on MMDetection's own with ``_base_ = "mmdet::..."``).
"""
import argparse
import json

import torch
from mmdet.apis import inference_detector, init_detector

from mmdet_side import load_config

parser = argparse.ArgumentParser()
parser.add_argument("config", help="configs/... inside mmdet/.mim, or a config file")
parser.add_argument("checkpoint")
parser.add_argument("image")
parser.add_argument("out")
parser.add_argument("--score-thr", type=float, default=0.05)
args = parser.parse_args()

config = load_config(args.config)
config.model.test_cfg.rcnn.score_thr = args.score_thr
model = init_detector(config, args.checkpoint, device="cpu")
with torch.no_grad():
    instances = inference_detector(model, args.image).pred_instances
out = {"boxes": instances.bboxes, "scores": instances.scores, "labels": instances.labels}
if "masks" in instances:
    out["masks"] = instances.masks
torch.save(out, args.out)
print(json.dumps({"detections": len(instances.scores)}))
