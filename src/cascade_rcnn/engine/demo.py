"""The offline demo: generate shapes -> fine-tune a small Cascade Mask R-CNN on the CPU -> evaluate
(per stage, per IoU threshold) -> draw predictions. About 3 minutes on 2 CPU cores (BENCHMARKS.md).

The network starts from ``DEMO_TRUNK``: the backbone, FPN and RPN of the same model trained from
scratch on 1000 other generated images (``make_trunk``, seed 2; the demo's own sets are seeds 0
and 1), the stand-in for the ImageNet weights a real run starts from and that cannot be
downloaded offline. The three cascade stages' box and mask heads start from scratch."""
from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from ..api import build_model
from ..atomic_write import atomic_path
from ..data.coco import CocoDataset
from ..data.shapes import generate_shapes
from ..models.config import ModelConfig
from ..outputs.overwrite_guard import refuse_existing
from ..weights import checkpoint
from ..weights.zoo import get_config
from .evaluate import format_stage_table, write_metrics
from .predict import predict_files
from .train import TrainConfig, train
from .validate import evaluate_dataset

DEMO_MODEL = "cascade_mask_rcnn_r18w32_fpn_256"
DEMO_TRUNK = Path(__file__).with_name("demo_trunk.pth")
TRUNK_PARTS = ("backbone", "neck", "rpn_head")


@dataclass(frozen=True)
class DemoSettings:
    """The demo's run: 352 steps of 4 images (about 0.4 s each on 2 CPU cores) from ``DEMO_TRUNK``,
    lr x0.1 for the last 88."""

    train_images: int = 350
    val_images: int = 60
    image_size: int = 256
    epochs: int = 4
    lr_steps: tuple[int, ...] = (3,)
    batch_size: int = 4
    optimizer: str = "adamw"  # with little compute AdamW reaches about twice SGD's AP (BENCHMARKS.md)
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_iters: int = 50
    clip_grad: float = 10.0
    workers: int = 1
    precision: str = "fp32"  # training and inference (``--precision``)
    init_weights: str | None = str(DEMO_TRUNK)  # TrainConfig.weights; None: everything from scratch
    rois_per_image: int = 32  # per stage and image (DEMO_MODEL's own 64: a slower step, BENCHMARKS.md)
    eval_every: int = 0  # epochs; the demo evaluates its final weights per stage in any case

    @classmethod
    def from_scratch(cls, **changes) -> DemoSettings:
        """Everything from random weights: 1000 steps (800 images x 5 epochs), AP after every epoch
        (``cascade-rcnn demo --from-scratch``; also how ``make_trunk`` trains)."""
        return replace(cls(train_images=800, epochs=5, lr_steps=(4,), warmup_iters=100, init_weights=None,
                           rois_per_image=64, eval_every=1), **changes)


def demo_model_config(settings: DemoSettings) -> ModelConfig:
    """``DEMO_MODEL`` with the settings' RoIs per image."""
    return get_config(DEMO_MODEL).with_changes(rois_per_image=settings.rois_per_image)


def generate_demo_data(data: Path, settings: DemoSettings) -> None:
    """``data/train`` and ``data/val`` shapes sets (seeds 0 and 1)."""
    generate_shapes(data / "train", settings.train_images, settings.image_size, seed=0)
    generate_shapes(data / "val", settings.val_images, settings.image_size, seed=1)


def demo_train_config(data: Path, out_dir: Path, settings: DemoSettings) -> TrainConfig:
    """The demo's training run on ``generate_demo_data``'s sets (also used by benchmarks/stages.py)."""
    return TrainConfig(
        train_json=str(data / "train" / "annotations.json"), train_images=str(data / "train" / "images"),
        val_json=str(data / "val" / "annotations.json"), val_images=str(data / "val" / "images"),
        out_dir=str(out_dir), epochs=settings.epochs, lr_steps=settings.lr_steps, lr=settings.lr,
        optimizer=settings.optimizer, weight_decay=settings.weight_decay, batch_size=settings.batch_size,
        warmup_iters=settings.warmup_iters, workers=settings.workers, clip_grad=settings.clip_grad,
        eval_every=settings.eval_every, precision=settings.precision, weights=settings.init_weights)


def make_trunk(out_file: Path, work: Path, settings: DemoSettings = DemoSettings.from_scratch(train_images=1000),
               seed: int = 2) -> Path:
    """Train ``DEMO_MODEL`` from scratch with ``settings`` on generated shapes of ``seed`` in
    ``work`` (a new or empty folder) and write its ``TRUNK_PARTS`` to ``out_file`` in float16
    (about 6 MB): how ``DEMO_TRUNK`` was made (tools/make_demo_trunk.py)."""
    refuse_existing([work], "the trunk's training would write over it; give a new folder")
    generate_shapes(work / "data" / "train", settings.train_images, settings.image_size, seed=seed)
    config = replace(demo_train_config(work / "data", work / "train", settings),
                     val_json=None, val_images=None, eval_every=0)
    final = train(demo_model_config(settings), config)
    loaded = checkpoint.read(final)
    trunk = {key: value.half() if value.is_floating_point() else value
             for key, value in checkpoint.state_dict_of(loaded, final).items() if key.split(".", 1)[0] in TRUNK_PARTS}
    with atomic_path(out_file) as temporary:
        torch.save({"state_dict": trunk, "meta": loaded["meta"]}, temporary)
    return out_file


def run_demo(out: Path, settings: DemoSettings = DemoSettings()) -> dict:
    """Run the whole job into ``out`` (a new or empty folder); returns the ensemble metrics
    written to metrics.json."""
    refuse_existing([out], "the demo would write a new run over it; give a new --out folder")
    start = time.perf_counter()
    data = out / "data"
    print(f"demo: generating shapes in {data}")
    generate_demo_data(data, settings)
    config = demo_model_config(settings)
    start_from = f"from {settings.init_weights}" if settings.init_weights else "from scratch"
    print(f"demo: training {DEMO_MODEL} {start_from} for {settings.epochs} epochs on "
          f"{settings.train_images} images (CPU)")
    final = train(config, demo_train_config(data, out / "train", settings))
    model = build_model(config, weights=final, precision=settings.precision)
    val_json = data / "val" / "annotations.json"
    per_stage = evaluate_dataset(model, CocoDataset(val_json, data / "val" / "images"), val_json, per_stage=True)
    write_metrics(out / "metrics.json", per_stage["ensemble"])
    write_metrics(out / "metrics_per_stage.json", per_stage)
    print(format_stage_table(per_stage))
    pictures = sorted((data / "val" / "images").iterdir())[:12]
    predict_files(model, pictures, out / "pictures", score_thr=0.5)
    minutes = (time.perf_counter() - start) / 60
    print(f"demo done in {minutes:.1f} min: metrics {out / 'metrics.json'}, curves "
          f"{out / 'train' / 'curves.png'}, pictures {out / 'pictures'}/")
    return per_stage["ensemble"]
