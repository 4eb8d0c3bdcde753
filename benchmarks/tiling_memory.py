"""Peak memory of sliced inference on a huge image (default 20000 x 20000 px).

The image is generated shapes pictures (256 px) repeated over the whole canvas, held in memory as
RGB uint8 (1.2 GB at 20000^2). The process's peak resident set is reset (``/proc/self/clear_refs``)
after the model and the image are loaded, so the figure printed is what ``predict(tile=...)``
itself adds on top of them. A mask model is run with ``--mask-max-per-image`` masks (each
pasted mask is H x W bytes); with the default 100 it is refused up front, in one line.

    python benchmarks/tiling_memory.py --weights /tmp/work/shapes_model/final.pth \
        [--size 20000] [--tile 1024] [--mask-max-per-image 8]
"""
from __future__ import annotations

import argparse
import dataclasses
import re
import time
from pathlib import Path

import numpy as np
import torch

from cascade_rcnn.api import build_model
from cascade_rcnn.data.shapes import render_image
from cascade_rcnn.inference.predictor import CascadeRCNN
from cascade_rcnn.inference.tiling import tile_grid


def rss_gib(field: str) -> float:
    """VmRSS (now) or VmHWM (peak since the last reset) of this process, GiB."""
    status = Path("/proc/self/status").read_text()
    return int(re.search(rf"^{field}:\s+(\d+) kB", status, re.MULTILINE).group(1)) / 2**20


def reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # Linux: VmHWM := VmRSS


def measure(model: CascadeRCNN, image: np.ndarray, **options) -> str:
    reset_peak()
    before = rss_gib("VmRSS")
    start = time.perf_counter()
    try:
        found = model.predict(image, **options)[0]
    except ValueError as error:
        return f"refused: {error}"
    seconds = time.perf_counter() - start
    return (f"{len(found)} detections in {seconds / 60:.1f} min; RSS before {before:.2f} GiB, "
            f"peak during predict {rss_gib('VmHWM'):.2f} GiB (+{rss_gib('VmHWM') - before:.2f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", required=True)
    parser.add_argument("--model", default="cascade_mask_rcnn_r18w32_fpn_256")
    parser.add_argument("--size", type=int, default=20000)
    parser.add_argument("--tile", type=int, default=1024)
    parser.add_argument("--overlap", type=float, default=0.2)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--max-per-image", type=int, default=100, help="box-only run (per tile and in all)")
    parser.add_argument("--mask-max-per-image", type=int, default=8, help="mask run (0: skip)")
    args = parser.parse_args()
    picture, _ = render_image(np.random.default_rng([2, 0]), 256)
    repeats = -(-args.size // 256)
    image = np.ascontiguousarray(np.tile(picture, (repeats, repeats, 1))[:args.size, :args.size])
    del picture
    masks = build_model(args.model, weights=args.weights)
    boxes = CascadeRCNN(dataclasses.replace(masks.config, with_mask=False))
    boxes.load_state_dict(masks.state_dict(), strict=False)
    boxes.eval()
    grid = tile_grid(image.shape[:2], args.tile, args.overlap)
    print(f"image {args.size}x{args.size} RGB uint8 ({image.nbytes / 2**30:.2f} GiB), {len(grid)} tiles of "
          f"{args.tile} px (overlap {args.overlap:g}), batch {args.batch_size}, torch threads "
          f"{torch.get_num_threads()}")
    common = {"tile": args.tile, "tile_overlap": args.overlap, "batch_size": args.batch_size}
    print(f"box-only, max_per_image {args.max_per_image}: "
          f"{measure(boxes, image, max_per_image=args.max_per_image, **common)}", flush=True)
    print(f"mask model, max_per_image 100 (the default): {measure(masks, image, **common)}", flush=True)
    if args.mask_max_per_image:
        print(f"mask model, max_per_image {args.mask_max_per_image}: "
              f"{measure(masks, image, max_per_image=args.mask_max_per_image, **common)}", flush=True)


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
