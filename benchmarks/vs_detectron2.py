"""Inference time per image: our model vs Detectron2's same model, same weights, same image, in one
run; each side and path in its own worker process (Detectron2's in its own environment,
detectron2_worker.py; ours, ours_worker.py), driven line by line.

The model is one row of ``ROWS`` (``--row``):

- ``r50-3x``: Detectron2's ``configs/Misc/cascade_mask_rcnn_R_50_FPN_3x.yaml`` (the copy in
  ``cascade_rcnn.weights.zoo.DETECTRON2_CONFIGS``, with its ``_BASE_``; our zoo row of that name):
  Detectron2 builds it with ``get_cfg`` + ``merge_from_file``, we with ``build_model("<that yaml>",
  weights=...)``; the image resized to short side 800, long side at most 1333 (800x1067);
- ``vitdet-b``: ViTDet's ``projects/ViTDet/configs/COCO/cascade_mask_rcnn_vitdet_b_100ep.py``:
  Detectron2 builds it with ``LazyConfig.load`` + ``instantiate(cfg.model)`` and its test mapper's
  resize (``ResizeShortestEdge(1024, max_size=1024)``), we with ``build_model("COCO/cascade_mask_
  rcnn_vitdet_b_100ep", weights=...)`` (its config: Detectron2's LazyConfig dump of that file); the
  image resized to long side 1024 (768x1024), zero-padded to 1024x1024 by both ViTs.

The weights are seeded random ones made here and calibrated on the image so that
detections spread like a trained model's (``synthetic.spread_random_weights``), then written under
Detectron2's key names (the inverse of ``weights/detectron2_layout.py``) as ``{"model":
state_dict}``, which Detectron2's ``DetectionCheckpointer`` and our ``build_model`` both read. A ViT's
relative position tables, zero as initialised, are drawn at random first (a trained model's are
not zero), so the attention bias counts. The image is a natural-looking 480x640 scene
(``drawn_scene``), resized by both to the row's scale, ``score_thr=0`` on both sides (100
detections).

Each worker's first call (the warm-up) dumps its detections: the agreement check of our exact and
fast paths against Detectron2 (so the timing compares the same work). Then rounds alternate
Detectron2's ``DefaultPredictor`` call, our fast path and our exact path, each timed in its process
around the predict call (image already decoded). Prints one JSON object per check and per run: the
medians and their ratio to Detectron2's (wall and process CPU time), the fastest round and its ratio
to Detectron2's fastest (which other work on a shared machine disturbs least), the median of the
rounds' own ratios (each round's time over Detectron2's in that round), and the process's
peak resident memory after loading and after the rounds.

    python benchmarks/vs_detectron2.py --d2-python /tmp/d2venv/bin/python [--row r50-3x|vitdet-b]
        [--repeats 3] [--threads 2]
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

import cascade_rcnn
from cascade_rcnn.benchmarking.agreement import agreement
from cascade_rcnn.benchmarking.synthetic import drawn_scene, spread_random_weights
from cascade_rcnn.outputs.detections import Detections
from cascade_rcnn.weights.detectron2_layout import our_name
from cascade_rcnn.weights.zoo import DETECTRON2_CONFIGS

DATA = Path(__file__).resolve().parents[1] / "tests" / "data"


@dataclass(frozen=True)
class Row:
    """One model of the comparison: ours (``build_model``'s argument), Detectron2's config file (a
    relative ``.py`` is read from its source tree by detectron2_worker.py) and its state-dict names,
    in its order (its model-zoo checkpoint's keys: [name, shape, dtype] rows)."""

    ours: str
    detectron2: str
    keys: Path


R50_YAML = str(DETECTRON2_CONFIGS / "Misc" / "cascade_mask_rcnn_R_50_FPN_3x.yaml")
ROWS = {
    "r50-3x": Row(R50_YAML, R50_YAML, DATA / "detectron2_keys" / "Misc-cascade_mask_rcnn_R_50_FPN_3x.json"),
    "vitdet-b": Row("COCO/cascade_mask_rcnn_vitdet_b_100ep",
                    "projects/ViTDet/configs/COCO/cascade_mask_rcnn_vitdet_b_100ep.py",
                    DATA / "detectron2_keys" / "ViTDet-COCO-cascade_mask_rcnn_vitdet_b_100ep.json"),
}


def detectron2_checkpoint(config: str, keys: Path, path: Path, image: np.ndarray, seed: int = 0) -> None:
    """Seeded random weights (``torch.manual_seed(seed)``, then ``build_model(config)``), calibrated
    on ``image`` (RGB), saved as ``{"model": state_dict}`` under Detectron2's names: each of its keys
    (``keys``: [name, shape, dtype] rows) takes the tensor of our name for it."""
    torch.manual_seed(seed)
    ours = spread_random_weights(cascade_rcnn.build_model(config), image, seed=seed).state_dict()
    theirs, used = {}, set()
    for name, shape, _dtype in json.loads(keys.read_text()):
        mine = our_name(name)
        if mine is None or mine not in ours or list(ours[mine].shape) != shape:
            raise SystemExit(f"{name}: no tensor of shape {shape} in our model (ours: {mine})")
        theirs[name] = ours[mine].detach().clone().contiguous()
        used.add(mine)
    left = [key for key in ours if key not in used and not key.endswith("num_batches_tracked")]
    if left:
        raise SystemExit(f"{len(left)} of our tensors have no Detectron2 key: {left[:5]}")
    torch.save({"model": theirs}, path)


def next_report(worker: subprocess.Popen) -> dict:
    """The worker's next JSON line (Detectron2 may print other lines of its own)."""
    for line in worker.stdout:
        if line.startswith("{"):
            return json.loads(line)
    raise SystemExit(f"the Detectron2 worker stopped (exit status {worker.wait()}); its errors are above")


def agreement_with(theirs: dict, found: Detections) -> dict:
    """How far our detections are from Detectron2's: bit-identical or not (both come sorted by
    score), and matched one to one (same label, box IoU >= 0.9, greedily by Detectron2's score:
    float noise may swap two near-tied detections) with the largest differences of a pair."""
    reference = Detections(theirs["boxes"], theirs["scores"], theirs["labels"].long(), (), found.image_size,
                           theirs["masks"].bool())
    identical = len(found) == len(reference) and all(
        torch.equal(getattr(found, field), getattr(reference, field))
        for field in ("boxes", "scores", "labels", "masks"))
    matched = agreement(reference, found)
    return {"detections": [len(reference), len(found)], "bit_identical": identical, "matched": matched.matched,
            "max_box_px": matched.max_box_diff, "max_score": matched.max_score_diff,
            "min_mask_iou": matched.min_mask_iou}


class Worker:
    """A worker process (detectron2_worker.py or ours_worker.py) driven one line at a time."""

    def __init__(self, command: list[str]):
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.ready = next_report(self.process)  # once its model is loaded (and, for Detectron2's, checked)

    def ask(self, line: str) -> dict:
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()
        return next_report(self.process)

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait()


def summary(key: str, timings: list[dict], base: list[dict], ready: dict, meta: dict) -> dict:
    """One run's line: medians, ratios to Detectron2's medians (wall and CPU time), of the fastest
    rounds and round by round, and peak memory."""
    def median(rows: list[dict], field: str) -> float:
        return statistics.median(row[field] for row in rows)

    seconds, cpu = median(timings, "seconds"), median(timings, "cpu_seconds")
    return {**meta, "run": key, "detections": timings[0]["detections"],
            "s_per_img": round(seconds, 3), "cpu_s_per_img": round(cpu, 3),
            "ratio_to_detectron2": round(seconds / median(base, "seconds"), 3),
            "cpu_ratio_to_detectron2": round(cpu / median(base, "cpu_seconds"), 3),
            "best_s_per_img": round(min(r["seconds"] for r in timings), 3),
            "best_ratio_to_detectron2": round(min(r["seconds"] for r in timings) / min(r["seconds"] for r in base), 3),
            # each round's time over Detectron2's in the same round (neighbours in time share the load)
            "median_round_ratio": round(statistics.median(r["seconds"] / b["seconds"]
                                                          for r, b in zip(timings, base)), 3),
            "load_peak_rss_mb": ready["load_peak_rss_mb"], "peak_rss_mb": max(r["peak_rss_mb"] for r in timings),
            "seconds": [round(r["seconds"], 3) for r in timings]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--d2-python", required=True, help="the Python of an environment with Detectron2")
    parser.add_argument("--row", choices=list(ROWS), default="r50-3x", help="the model (module docstring)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--paths", nargs="+", choices=("fast", "exact"), default=["fast", "exact"])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    row = ROWS[args.row]
    image = drawn_scene(480, 640)
    here = Path(__file__).resolve().parent
    with tempfile.TemporaryDirectory() as work:
        picture, checkpoint = Path(work) / "scene.png", Path(work) / "checkpoint.pth"
        cv2.imwrite(str(picture), image[:, :, ::-1])
        detectron2_checkpoint(row.ours, row.keys, checkpoint, image)
        files = [str(checkpoint), str(picture), "--threads", str(args.threads)]
        # One process per side and path, started one after another (each loads on its own).
        workers = {"detectron2": Worker([args.d2_python, str(here / "detectron2_worker.py"), row.detectron2, *files])}
        for path in args.paths:
            workers[path] = Worker([sys.executable, str(here / "ours_worker.py"), row.ours, *files,
                                    *(["--exact"] if path == "exact" else [])])
        dumps = {}
        for key, worker in workers.items():
            dumps[key] = Path(work) / f"{key}.pt"
            worker.ask(f"dump {dumps[key]}")  # also each worker's first (warm-up) call
        theirs = torch.load(dumps["detectron2"], weights_only=True)
        for path in args.paths:
            mine = torch.load(dumps[path], weights_only=True)
            found = Detections(mine["boxes"], mine["scores"], mine["labels"], (), image.shape[:2], mine["masks"])
            print(json.dumps({"check": "agreement with Detectron2", "path": path, **agreement_with(theirs, found)}),
                  flush=True)
        results = {key: [] for key in workers}
        for _round in range(args.repeats):  # rounds alternate the runs, so that slow spells hit each alike
            for key, worker in workers.items():
                results[key].append(worker.ask("run"))
        for worker in workers.values():
            worker.close()
    meta = {"model": Path(row.ours).stem, "row": args.row, "image": "x".join(map(str, image.shape[:2])),
            "threads": args.threads,
            "repeats": args.repeats, "torch": {key: worker.ready["torch"] for key, worker in workers.items()},
            "cpu_capability": torch.backends.cpu.get_cpu_capability()}
    for key, timings in results.items():
        print(json.dumps(summary(key, timings, results["detectron2"], workers[key].ready, meta)), flush=True)


if __name__ == "__main__":
    main()
