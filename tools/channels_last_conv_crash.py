#!/usr/bin/env python
"""A torch-only reproduction of the CPU heap corruption seen when narrow models train channels-last.

One ``nn.Conv2d`` per case, forward + backward, each in its own process (a crash kills only that
process): the weight gradient of a channels-last 1x1 convolution with stride 2 and fewer than 16 input
channels aborts with ``double free or corruption`` / a segfault on AVX-512 CPUs with torch 2.14.1
once its input map is about 48 x 48 or larger; contiguous layout, stride 1, 3x3 kernels, 16+
input channels and the input gradient alone run. Prints one JSON line per case.

    python tools/channels_last_conv_crash.py [--threads 2]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys

import torch

ONE_CASE = """
import sys, torch
torch.set_num_threads({threads})
conv = torch.nn.Conv2d({cin}, 16, {kernel}, {stride}, {kernel} // 2, bias=False)
x = torch.randn(2, {cin}, {size}, {size})
if {channels_last}:
    conv, x = conv.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
conv.weight.requires_grad_({weight_grad})
x.requires_grad_(not {weight_grad})
conv(x).sum().backward()
"""

CASES = ([dict(cin=cin, kernel=1, stride=2, size=48, channels_last=True, weight_grad=True) for cin in (2, 3, 8, 15, 16, 32)]
         + [dict(cin=8, kernel=1, stride=2, size=size, channels_last=True, weight_grad=True) for size in (32, 40, 64, 96)]
         + [dict(cin=8, kernel=1, stride=2, size=48, channels_last=False, weight_grad=True),
            dict(cin=8, kernel=1, stride=2, size=48, channels_last=True, weight_grad=False),
            dict(cin=8, kernel=1, stride=1, size=48, channels_last=True, weight_grad=True),
            dict(cin=8, kernel=3, stride=2, size=48, channels_last=True, weight_grad=True)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    print(json.dumps({"torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability()}))
    for case in CASES:
        run = subprocess.run([sys.executable, "-c", ONE_CASE.format(threads=args.threads, **case)],
                             capture_output=True, text=True)
        died = run.stderr.strip().splitlines()[-1:] if run.returncode else []
        print(json.dumps({**case, "returncode": run.returncode, "crashed": run.returncode != 0,
                          "message": died[0][:80] if died else ""}))


if __name__ == "__main__":
    main()
