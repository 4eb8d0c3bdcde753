"""Detectron2's side of benchmarks/vs_detectron2.py, run in an environment with Detectron2 built
(``../shared/tools/detectron2/d2env.sh``): builds a yacs config (``get_cfg`` + ``merge_from_file``,
CPU, ``ROI_HEADS.SCORE_THRESH_TEST 0.0``), loads a checkpoint through ``DefaultPredictor`` (its
``DetectionCheckpointer``), checks that every tensor of the model came from the checkpoint, then
answers one line of stdin at a time:

    run        times one ``DefaultPredictor`` call on the image (read with cv2: BGR, decoded once),
               prints {"seconds", "cpu_seconds", "detections", "peak_rss_mb"}
    dump PATH  runs it once and saves boxes, scores, classes and masks to PATH (torch.save)

    python detectron2_worker.py CONFIG.yaml CHECKPOINT.pth IMAGE --threads 2
"""
import argparse
import json
import sys
import time

import cv2
import torch
from detectron2.config import get_cfg
from detectron2.engine import DefaultPredictor

parser = argparse.ArgumentParser()
parser.add_argument("config", help="a Detectron2 yacs config file (its _BASE_ files beside it)")
parser.add_argument("checkpoint", help='{"model": state_dict} with Detectron2\'s key names')
parser.add_argument("image")
parser.add_argument("--threads", type=int, default=2)
args = parser.parse_args()
torch.set_num_threads(args.threads)
cfg = get_cfg()
cfg.merge_from_file(args.config)
cfg.MODEL.DEVICE = "cpu"
cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = 0.0  # every head runs on 100 detections, as on our side
cfg.MODEL.WEIGHTS = args.checkpoint
predictor = DefaultPredictor(cfg)
saved = torch.load(args.checkpoint, map_location="cpu", weights_only=True)["model"]
held = predictor.model.state_dict()
missing = sorted(set(held) - set(saved))
differing = [key for key in held if key in saved and not torch.equal(held[key], saved[key].to(held[key].dtype))]
if missing or differing or set(saved) - set(held):
    raise SystemExit(f"the checkpoint does not fill Detectron2's model: missing {missing[:5]}, "
                     f"unused {sorted(set(saved) - set(held))[:5]}, differing {differing[:5]}")


def peak_rss_mb() -> float:
    """This process's peak resident set size so far: Linux's VmHWM (getrusage's ru_maxrss would
    carry the parent's peak over the exec)."""
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) / 1024


image = cv2.imread(args.image)  # BGR, as DefaultPredictor expects (cfg.INPUT.FORMAT converts)
print(json.dumps({"ready": True, "torch": torch.__version__, "load_peak_rss_mb": round(peak_rss_mb(), 1),
                  "tensors": len(held), "min_size_test": cfg.INPUT.MIN_SIZE_TEST,
                  "max_size_test": cfg.INPUT.MAX_SIZE_TEST}), flush=True)
for line in sys.stdin:
    command = line.split()
    start, cpu_start = time.perf_counter(), time.process_time()
    found = predictor(image)["instances"]  # DefaultPredictor runs under torch.no_grad()
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    if command and command[0] == "dump":
        torch.save({"boxes": found.pred_boxes.tensor, "scores": found.scores, "labels": found.pred_classes,
                    "masks": found.pred_masks}, command[1])
    print(json.dumps({"seconds": seconds, "cpu_seconds": cpu_seconds, "detections": len(found),
                      "peak_rss_mb": round(peak_rss_mb(), 1)}), flush=True)
