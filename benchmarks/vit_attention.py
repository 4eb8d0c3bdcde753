"""ViTDet's backbone at 1024 x 1024, exact path (Detectron2's attention: explicit logits, the
decomposed relative position bias added in place, softmax, product) against the fast path (torch's
fused ``scaled_dot_product_attention`` with the bias as its additive mask), one process, rounds
alternating. Prints one JSON object per path (median and fastest seconds, peak RSS growth) and the
ratio, plus the largest difference of the backbone's output between the two paths.

    python benchmarks/vit_attention.py [--arch b] [--rounds 3] [--threads 2]
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import time

import torch

from cascade_rcnn.models.backbones.vit import ViT, ViTConfig
from cascade_rcnn.ops.compute_path import EXACT, FAST

ARCHS = {"b": dict(embed_dim=768, depth=12, num_heads=12, window_blocks=(0, 1, 3, 4, 6, 7, 9, 10))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="b", choices=list(ARCHS))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    vit = ViT(ViTConfig(**ARCHS[args.arch])).eval()
    with torch.no_grad():
        for name, parameter in vit.named_parameters():
            if "rel_pos" in name:  # Detectron2 initialises them to zero; a trained model's are not
                parameter.normal_(0, 0.5 / parameter.shape[1] ** 0.5)
    image = torch.randn(1, 3, 1024, 1024)
    paths = {"exact": EXACT, "fast": FAST}
    times = {name: [] for name in paths}
    outputs = {}
    with torch.no_grad():
        for name, path in paths.items():  # warm-up
            outputs[name] = vit(image, path)[0]
        for _ in range(args.rounds):
            for name, path in paths.items():
                start = time.perf_counter()
                vit(image, path)
                times[name].append(time.perf_counter() - start)
    for name, seconds in times.items():
        print(json.dumps({"path": name, "arch": args.arch, "median_s": statistics.median(seconds),
                          "fastest_s": min(seconds), "rounds": seconds}))
    difference = (outputs["fast"] - outputs["exact"]).abs().max().item() / outputs["exact"].abs().max().item()
    print(json.dumps({"fast_over_exact_median": statistics.median(times["fast"]) / statistics.median(times["exact"]),
                      "fast_over_exact_fastest": min(times["fast"]) / min(times["exact"]),
                      "max_relative_difference": difference, "peak_rss_mib": resource.getrusage(
                          resource.RUSAGE_SELF).ru_maxrss / 1024, "threads": args.threads,
                      "cpu_capability": torch.backends.cpu.get_cpu_capability(), "torch": torch.__version__}))


if __name__ == "__main__":
    main()
