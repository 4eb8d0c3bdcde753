"""Our side of benchmarks/vs_detectron2.py, one process per path so that its CPU time and peak
memory are its own: builds ``build_model(CONFIG, weights=CHECKPOINT, exact=...)`` (a zoo row's name
or Detectron2's yacs config read as data, the checkpoint under Detectron2's key names), reads the image (decoded
once, RGB), then answers one line of stdin at a time, as detectron2_worker.py does:

    run        times one ``model.predict(image, score_thr=0.0)`` call, prints {"seconds",
               "cpu_seconds", "detections", "peak_rss_mb"}
    dump PATH  the same, and saves boxes, scores, labels and masks to PATH (torch.save)

    python ours_worker.py CONFIG CHECKPOINT.pth IMAGE --threads 2 [--exact]
"""
import argparse
import json
import sys
import time

import cv2
import torch

import cascade_rcnn


def peak_rss_mb() -> float:
    """This process's peak resident set size so far: Linux's VmHWM (getrusage's ru_maxrss would
    carry the parent's peak over the exec)."""
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) / 1024


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("config", help="a zoo row's name or a Detectron2 yacs config file (its _BASE_ files beside it)")
    parser.add_argument("checkpoint", help='{"model": state_dict} with Detectron2\'s key names')
    parser.add_argument("image")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--exact", action="store_true", help="the exact path (default: the fast path)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = cascade_rcnn.build_model(args.config, weights=args.checkpoint, exact=args.exact)
    image = cv2.imread(args.image)[:, :, ::-1].copy()  # RGB, as predict takes a numpy image
    print(json.dumps({"ready": True, "path": "exact" if args.exact else "fast", "torch": torch.__version__,
                      "load_peak_rss_mb": round(peak_rss_mb(), 1)}), flush=True)
    for line in sys.stdin:
        command = line.split()
        start, cpu_start = time.perf_counter(), time.process_time()
        found = model.predict(image, score_thr=0.0)[0]
        seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
        if command and command[0] == "dump":
            torch.save({"boxes": found.boxes, "scores": found.scores, "labels": found.labels,
                        "masks": found.masks}, command[1])
        print(json.dumps({"seconds": seconds, "cpu_seconds": cpu_seconds, "detections": len(found),
                          "peak_rss_mb": round(peak_rss_mb(), 1)}), flush=True)


if __name__ == "__main__":
    main()
