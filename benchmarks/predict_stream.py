"""Streaming predict over a few hundred images: resident memory per image, and the speed-up of
reading images ahead in threads. Prints one JSON object.

    .venv/bin/python benchmarks/predict_stream.py [--images 300] [--width 1280] [--height 960]
        [--model cascade_rcnn_r18w32_fpn_256]

The model is a small project config (256 px scale, so the model's share of the time is small and
the reading's is large: the case read-ahead is for) with seeded random weights whose box heads
are biased towards one class, so that every image gets up to 100 detections above the 0.05
threshold (a real record in the stream) without the per-class NMS over all 80 classes that
``score_thr=0`` costs. (The mask config pastes each mask over the whole image: seconds per
1280x960 image here.) The images are JPEGs
(smooth colour fields plus noise) written once into a temporary folder. Resident memory (VmRSS)
is sampled after every image through ``model.predict``.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from cascade_rcnn import CascadeRCNN, get_config
from cascade_rcnn.engine.predict import predict_files


def resident_mb() -> float:
    """This process's resident memory in MB (Linux /proc)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def write_images(folder: Path, count: int, width: int, height: int) -> None:
    rng = np.random.default_rng(0)
    for index in range(count):
        field = cv2.resize(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8), (width, height),
                           interpolation=cv2.INTER_CUBIC)
        noisy = np.clip(field + rng.normal(0, 12, field.shape), 0, 255).astype(np.uint8)
        cv2.imwrite(str(folder / f"{index:05d}.jpg"), noisy, [cv2.IMWRITE_JPEG_QUALITY, 90])


def run(model: CascadeRCNN, folder: Path, out: Path, read_workers: int, samples: list[float] | None) -> float:
    """Seconds for one predict_files over the folder (no drawings)."""
    original = model.predict

    def measured(*args, **kwargs):
        result = original(*args, **kwargs)
        if samples is not None:
            samples.append(resident_mb())
        return result

    model.predict = measured
    start = time.perf_counter()
    predict_files(model, [folder], out, score_thr=0.05, draw_pictures=False, show_progress=False,
                  read_workers=read_workers)
    seconds = time.perf_counter() - start
    del model.predict
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=960)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--model", default="cascade_rcnn_r18w32_fpn_256")
    args = parser.parse_args()
    torch.manual_seed(0)
    model = CascadeRCNN(get_config(args.model)).eval()
    with torch.no_grad():
        for head in model.roi_head.bbox_head:
            head.fc_cls.bias.zero_()
            head.fc_cls.bias[0] = 6.0
    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(temporary) / "images"
        folder.mkdir()
        write_images(folder, args.images, args.width, args.height)
        run(model, folder, Path(temporary) / "warm-up", 0, None)  # first-call allocations
        samples: list[float] = []
        seconds = {}
        for workers in args.workers:  # the memory series is taken on the first setting
            seconds[workers] = run(model, folder, Path(temporary) / f"out{workers}", workers,
                                   samples if not samples else None)
        stream = Path(temporary) / f"out{args.workers[0]}" / "predictions.jsonl"
        stream_mb = stream.stat().st_size / 2**20
        detections = sum(len(json.loads(line)["detections"]) for line in stream.open())
    half = len(samples) // 2
    slope = np.polyfit(np.arange(half, len(samples)), samples[half:], 1)[0]
    base = args.workers[0]
    print(json.dumps({
        "images": args.images, "image_size": [args.width, args.height], "model": args.model,
        "score_thr": 0.05, "detections_per_image": round(detections / args.images, 1),
        "threads": torch.get_num_threads(),
        "rss_mb": {"after_1": round(samples[0], 1), "after_10": round(samples[9], 1),
                   f"after_{len(samples)}": round(samples[-1], 1), "max": round(max(samples), 1)},
        "rss_growth_mb_per_100_images_second_half": round(float(slope) * 100, 2),
        "stream_file_mb": round(stream_mb, 2),
        "images_per_s": {f"read_workers={w}": round(args.images / s, 2) for w, s in seconds.items()},
        "speedup_vs_read_workers=" + str(base): {f"read_workers={w}": round(seconds[base] / s, 3)
                                                 for w, s in seconds.items()},
    }, indent=1))


if __name__ == "__main__":
    main()
