"""Detectron2's side of benchmarks/vs_detectron2.py, run in an environment with Detectron2 built
(``../shared/tools/detectron2/d2env.sh``). Builds the model on the CPU with every box predictor's
score threshold at 0, from

- a yacs config (``.yaml``): ``get_cfg`` + ``merge_from_file``, loaded by ``DefaultPredictor``;
- a LazyConfig (``.py``; a relative path is read from Detectron2's source tree, e.g.
  ``projects/ViTDet/configs/COCO/cascade_mask_rcnn_vitdet_b_100ep.py``): ``instantiate(cfg.model)``,
  ``DetectionCheckpointer(model).load``, eval, and ``DefaultPredictor``'s call made with the
  LazyConfig's test mapper augmentations (ViTDet: ``ResizeShortestEdge(1024, max_size=1024)``) and
  ``model.input_format``;

checks that every tensor of the model came from the checkpoint, then answers one line of stdin at a
time:

    run        times one predictor call on the image (read with cv2: BGR, decoded once), prints
               {"seconds", "cpu_seconds", "detections", "peak_rss_mb"}
    dump PATH  runs it once and saves boxes, scores, classes and masks to PATH (torch.save)

    python detectron2_worker.py CONFIG.yaml|CONFIG.py CHECKPOINT.pth IMAGE --threads 2
"""
import argparse
import json
import sys
import time
from pathlib import Path

import cv2
import detectron2
import torch


class LazyPredictor:
    """``DefaultPredictor`` for a LazyConfig: its ``__call__`` (BGR image in; flipped to the model's
    input format, resized by the test mapper's augmentations, as a CHW float tensor with the original
    size) under ``torch.no_grad()``."""

    def __init__(self, config_file: str, checkpoint: str):
        from detectron2.checkpoint import DetectionCheckpointer
        from detectron2.config import LazyConfig, instantiate
        from detectron2.data import transforms

        cfg = LazyConfig.load(config_file)
        for predictor in cfg.model.roi_heads.get("box_predictors", None) or [cfg.model.roi_heads.box_predictor]:
            predictor.test_score_thresh = 0.0  # every head runs on 100 detections, as on our side
        self.model = instantiate(cfg.model).to("cpu").eval()
        DetectionCheckpointer(self.model).load(checkpoint)
        self.augmentations = transforms.AugmentationList(
            [instantiate(augmentation) for augmentation in cfg.dataloader.test.mapper.augmentations])
        self.input_format = cfg.model.input_format
        self.sizes = [[a.short_edge_length, a.max_size] for a in self.augmentations.augs
                      if isinstance(a, transforms.ResizeShortestEdge)]

    def __call__(self, image):
        from detectron2.data import transforms

        with torch.no_grad():
            if self.input_format == "RGB":
                image = image[:, :, ::-1]
            height, width = image.shape[:2]
            resized = transforms.AugInput(image)
            self.augmentations(resized)  # resizes resized.image
            tensor = torch.as_tensor(resized.image.astype("float32").transpose(2, 0, 1))
            return self.model([{"image": tensor, "height": height, "width": width}])[0]


parser = argparse.ArgumentParser()
parser.add_argument("config", help="a Detectron2 yacs config file (its _BASE_ files beside it) or LazyConfig (.py)")
parser.add_argument("checkpoint", help='{"model": state_dict} with Detectron2\'s key names')
parser.add_argument("image")
parser.add_argument("--threads", type=int, default=2)
args = parser.parse_args()
torch.set_num_threads(args.threads)
if args.config.endswith(".py"):
    config = Path(args.config)
    if not config.is_absolute() and not config.is_file():  # Detectron2's source tree (an editable build)
        config = Path(detectron2.__file__).resolve().parents[1] / config
    predictor = LazyPredictor(str(config), args.checkpoint)
    model, sizes = predictor.model, predictor.sizes
else:
    from detectron2.config import get_cfg
    from detectron2.engine import DefaultPredictor

    cfg = get_cfg()
    cfg.merge_from_file(args.config)
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = 0.0  # every head runs on 100 detections, as on our side
    cfg.MODEL.WEIGHTS = args.checkpoint
    predictor = DefaultPredictor(cfg)
    model, sizes = predictor.model, [[cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST]]
saved = torch.load(args.checkpoint, map_location="cpu", weights_only=True)["model"]
held = model.state_dict()
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


image = cv2.imread(args.image)  # BGR, as DefaultPredictor expects (the input format converts)
print(json.dumps({"ready": True, "torch": torch.__version__, "load_peak_rss_mb": round(peak_rss_mb(), 1),
                  "tensors": len(held), "test_sizes": sizes}), flush=True)
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
