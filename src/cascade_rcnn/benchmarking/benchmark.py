"""Speed and memory, as the zoo table reports them: inference images/s ("Inf time (fps)") and peak
training memory ("Mem (GB)").

What is timed, and how it differs from MMDetection's ``tools/analysis_tools/benchmark.py``:
- inference: ``model.predict`` on decoded images held in memory, one call per image (or per
  batch), from the RGB array to detections in original-image pixels with masks pasted. That
  includes resize + normalise, which MMDetection's data loader does outside its timed region.
  Warm-up calls are not timed; fps = images / total timed seconds; latency median and p90.
- training: one optimiser step (forward with all losses, backward, SGD update) on a batch of
  random images at the zoo's training size (2 x 1333x800 per GPU) with 8 objects each.
- memory: CUDA ``max_memory_allocated`` (MMDetection's logged ``memory``), reset before the timed
  runs; on the CPU the peak resident set size of the process during the timed runs.

``run_benchmark`` is the ``benchmark`` command (the model, its images, the timings; notes on
stderr) and ``benchmark_text`` its result as the command prints it.
"""
from __future__ import annotations

import resource
import statistics
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..api import build_model
from ..data.images import list_images, read_image
from ..data.transforms import pad_batch
from ..errors import UserInputError
from ..inference.predictor import CascadeRCNN
from ..weights.zoo import reported_figure
from .synthetic import drawn_scene, spread_random_weights


@dataclass
class Timing:
    """Wall seconds of each timed call (after warm-up), and the CPU seconds (all threads) the
    process spent in it: on a shared machine, CPU time drifts less than wall time when other
    processes take cores away, so ratios of CPU times compare code more fairly."""

    seconds: list[float]
    cpu_seconds: list[float]

    @property
    def median_cpu(self) -> float:
        return statistics.median(self.cpu_seconds)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def p90(self) -> float:
        ordered = sorted(self.seconds)
        return ordered[min(len(ordered) - 1, int(np.ceil(0.9 * len(ordered))) - 1)]

    @property
    def total(self) -> float:
        return sum(self.seconds)


def time_calls(run: Callable[[], object], repeats: int, device: str | torch.device, warmup: int = 1) -> Timing:
    """Wall time of ``repeats`` calls of ``run()`` after ``warmup`` untimed ones (CUDA synchronised)."""
    synchronize = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
    for _ in range(warmup):
        run()
    seconds, cpu_seconds = [], []
    for _ in range(repeats):
        synchronize()
        start, cpu_start = time.perf_counter(), time.process_time()
        run()
        synchronize()
        seconds.append(time.perf_counter() - start)
        cpu_seconds.append(time.process_time() - cpu_start)
    return Timing(seconds, cpu_seconds)


class PeakMemory:
    """Peak memory in GB over a ``with`` block: CUDA's ``max_memory_allocated`` (reset on entry), or
    the process's resident set on the CPU, sampled every few milliseconds from /proc (falls back
    to the whole process's peak RSS where /proc is missing)."""

    def __init__(self, device: str | torch.device):
        self.device = torch.device(device)
        self.peak_gb = 0.0
        self._stop = threading.Event()

    def __enter__(self) -> "PeakMemory":
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            self._sampler = threading.Thread(target=self._sample, daemon=True)
            self._sampler.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_gb = torch.cuda.max_memory_allocated(self.device) / 2**30
        else:
            self._stop.set()
            self._sampler.join()

    def _sample(self) -> None:
        statm = Path("/proc/self/statm")
        if not statm.exists():
            self._stop.wait()
            self.peak_gb = peak_memory_gb("cpu")
            return
        page = resource.getpagesize()
        while True:
            resident = int(statm.read_text().split()[1]) * page / 2**30
            self.peak_gb = max(self.peak_gb, resident)
            if self._stop.wait(0.005):
                return


def peak_memory_gb(device: str | torch.device) -> float:
    """The process's peak so far: CUDA ``max_memory_allocated`` or the CPU's peak resident set."""
    if torch.device(device).type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    # ru_maxrss is in kilobytes on Linux, in bytes on macOS.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (2**30 if sys.platform == "darwin" else 2**20)


@dataclass
class InferenceResult:
    images_per_s: float
    median_latency_s: float  # per call (one image, or one batch)
    p90_latency_s: float
    peak_memory_gb: float
    detections_per_image: float
    images: int


def benchmark_inference(model: CascadeRCNN, images: list[np.ndarray], batch_size: int = 1,
                        warmup: int = 2, score_thr: float | None = None) -> InferenceResult:
    """Time ``model.predict`` over ``images`` (RGB uint8 arrays), ``batch_size`` per call, at the
    model's precision."""
    batches = [images[i:i + batch_size] for i in range(0, len(images), batch_size)]
    calls = iter(range(10**9))
    detections: list[int] = []

    def run() -> None:
        batch = batches[next(calls) % len(batches)]
        detections.extend(len(d) for d in model.predict(batch, score_thr=score_thr, batch_size=batch_size))

    for _ in range(warmup):
        run()
    detections.clear()
    with PeakMemory(model.device) as memory:
        timing = time_calls(run, len(batches), model.device, warmup=0)
    return InferenceResult(images_per_s=len(images) / timing.total, median_latency_s=timing.median,
                           p90_latency_s=timing.p90, peak_memory_gb=memory.peak_gb,
                           detections_per_image=sum(detections) / max(len(detections), 1), images=len(images))


@dataclass
class TrainingResult:
    s_per_iter: float  # median over the timed iterations
    peak_memory_gb: float
    images_per_iter: int
    image_size: tuple[int, int]


def benchmark_training(model: CascadeRCNN, iterations: int = 3, batch_size: int = 2,
                       image_size: tuple[int, int] = (800, 1333), seed: int = 0) -> TrainingResult:
    """Seconds per SGD step and peak memory on random images of ``image_size`` (h, w), 8 boxes
    each, at the model's precision (autocast; a gradient scaler for fp16)."""
    device = model.device
    generator = torch.Generator().manual_seed(seed)
    height, width = image_size
    images = pad_batch([torch.randn(3, height, width, generator=generator) for _ in range(batch_size)]).to(device)
    targets = [synthetic_targets(height, width, model.config.num_classes, model.config.with_mask, generator, device)
               for _ in range(batch_size)]
    model.train()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-4, momentum=0.9)
    scaler = torch.amp.GradScaler(device.type, enabled=model.path.precision == "fp16")

    def step() -> None:
        losses = model(images, targets, torch.tensor([image_size] * batch_size))
        loss = sum(value for key, value in losses.items() if not key.endswith("_acc"))
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    try:
        step()
        with PeakMemory(device) as memory:
            timing = time_calls(step, iterations, device, warmup=0)
    finally:
        model.eval()
    return TrainingResult(timing.median, memory.peak_gb, batch_size, image_size)


def synthetic_targets(height: int, width: int, num_classes: int, with_mask: bool, generator: torch.Generator,
                      device: torch.device, count: int = 8) -> dict:
    """``count`` random boxes (32-280 px) with filled-box masks and random labels, for one image."""
    xy = torch.rand(count, 2, generator=generator) * torch.tensor([max(width - 300, 1), max(height - 300, 1)])
    wh = 32 + torch.rand(count, 2, generator=generator) * 250
    boxes = torch.minimum(torch.cat([xy, xy + wh], dim=1), torch.tensor([width, height] * 2) - 1.0)
    target = {"boxes": boxes.to(device), "labels": torch.randint(0, num_classes, (count,), generator=generator).to(device)}
    if with_mask:
        masks = torch.zeros(count, height, width, dtype=torch.uint8)
        for mask, (x1, y1, x2, y2) in zip(masks, boxes.round().long().tolist()):
            mask[y1:y2, x1:x2] = 1
        target["masks"] = masks.to(device)
    return target


def run_benchmark(model_name: str | None, weights: str | None = None, device: str = "cpu", exact: bool = False,
                  image_dir: str | None = None, num_images: int | None = None, size: tuple[int, int] = (480, 640),
                  batch_size: int = 1, precision: str = "fp32", threads: int | None = None, train: bool = False,
                  train_batch_size: int = 2, iterations: int = 3) -> dict:
    """The ``benchmark`` command: ``model_name`` (a zoo name or a config file, as ``build_model``
    takes it; None: the model ``weights`` carries; without ``weights``: random weights spread like a
    trained model's) timed on the first ``num_images`` of ``image_dir``, or on ``num_images`` (default
    10) drawn scenes of ``size`` (h, w); with ``train``, also ``iterations`` training steps. Returns
    the record ``--json`` prints; notes on what is timed go to stderr."""
    if threads:
        torch.set_num_threads(threads)
    if image_dir:
        paths = list_images(image_dir)[:num_images]
        if not paths:
            raise UserInputError(f"{image_dir}: no images found")
        images = [read_image(path) for path in paths]
    else:
        images = [drawn_scene(*size, seed=i) for i in range(num_images or 10)]
    model = build_model(model_name, weights=weights, device=device, exact=exact, precision=precision)
    config = model.config
    result = {"model": config.name, "device": str(model.device), "threads": torch.get_num_threads(),
              "precision": precision, "path": "exact" if exact else "fast",
              "weights": weights or "random (spread like a trained model's)",
              "reported_fps_v100": config.reported_fps, "reported_mem_gb": config.reported_mem_gb}
    if weights is None:
        _note("no --weights: random weights, rescaled so that detections spread like a trained model's")
        spread_random_weights(model, images[0])
    _note(f"inference: {len(images)} image(s) of {images[0].shape[0]}x{images[0].shape[1]}, "
          f"batch {batch_size}, after 2 warm-up calls")
    result["inference"] = asdict(benchmark_inference(model, images, batch_size=batch_size))
    if train:
        long_side, short_side = config.image_scale
        _note(f"training: {iterations} step(s) of {train_batch_size} x {short_side}x{long_side}")
        result["training"] = asdict(benchmark_training(model, iterations=iterations, batch_size=train_batch_size,
                                                       image_size=(short_side, long_side)))
    return result


def benchmark_text(result: dict) -> str:
    """``run_benchmark``'s record for a person: our figures beside the zoo's (measured on a V100)."""
    inference, training = result["inference"], result.get("training")
    lines = [f"{result['model']} on {result['device']} ({result['threads']} threads, {result['path']} path, "
             f"{result['precision']}, weights: {result['weights']})",
             f"  inference: {inference['images_per_s']:.3f} img/s  median {inference['median_latency_s']:.3f} s  "
             f"p90 {inference['p90_latency_s']:.3f} s  peak memory {inference['peak_memory_gb']:.2f} GB  "
             f"{inference['detections_per_image']:.1f} detections/img   "
             f"(zoo, V100: {reported_figure(result['reported_fps_v100'])} fps)"]
    if training:
        height, width = training["image_size"]
        lines.append(f"  training:  {training['s_per_iter']:.3f} s/iter  peak memory "
                     f"{training['peak_memory_gb']:.2f} GB  ({training['images_per_iter']} x {height}x{width})   "
                     f"(zoo: {reported_figure(result['reported_mem_gb'])} GB per V100)")
    return "\n".join(lines)


def _note(message: str) -> None:
    print(f"note: {message}", file=sys.stderr)
