"""MMDetection's side of benchmarks/vs_mmdetection.py, run in an environment with mmdet 3.3 + mmcv
2.1 (+ mmpretrain 1.2 for ConvNeXt): loads a config and a checkpoint, then times one
``inference_detector`` call on the image per line read from stdin, printing one JSON line each.

    python mmdet_worker.py CONFIG CHECKPOINT IMAGE --threads 2
"""
import argparse
import json
import sys
import time
from pathlib import Path

import cv2
import torch
from mmdet.apis import inference_detector, init_detector

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
from mmdet_side import load_config  # noqa: E402

parser = argparse.ArgumentParser()
parser.add_argument("config", help="configs/... inside mmdet/.mim, or a config file")
parser.add_argument("checkpoint")
parser.add_argument("image")
parser.add_argument("--threads", type=int, default=2)
args = parser.parse_args()
torch.set_num_threads(args.threads)
config = load_config(args.config)
config.model.test_cfg.rcnn.score_thr = 0.0  # every head runs on 100 detections, as on our side
model = init_detector(config, args.checkpoint, device="cpu")
image = cv2.imread(args.image)  # BGR, as MMDetection reads files; decoded once, outside the timing
print(json.dumps({"ready": True}), flush=True)
for _ in sys.stdin:
    start, cpu_start = time.perf_counter(), time.process_time()
    with torch.no_grad():
        found = inference_detector(model, image).pred_instances
    print(json.dumps({"seconds": time.perf_counter() - start, "cpu_seconds": time.process_time() - cpu_start,
                      "detections": len(found.scores)}), flush=True)
