"""The offline demo: generate shapes -> train a small Cascade Mask R-CNN on the CPU -> evaluate
(per stage, per IoU threshold) -> draw predictions. About 11 minutes on 2 CPU cores."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from ..api import build_model
from ..data.coco import CocoDataset
from ..data.shapes import generate_shapes
from ..outputs.overwrite_guard import refuse_existing
from ..weights.zoo import get_config
from .evaluate import format_stage_table, write_metrics
from .predict import predict_files
from .train import TrainConfig, train
from .validate import evaluate_dataset

DEMO_MODEL = "cascade_mask_rcnn_r18w32_fpn_256"


@dataclass(frozen=True)
class DemoSettings:
    """Sized for about 11 minutes of training on 2 CPU cores (about 0.65 s per step of 4 images)."""

    train_images: int = 800
    val_images: int = 60
    image_size: int = 256
    epochs: int = 5
    lr_steps: tuple[int, ...] = (4,)
    batch_size: int = 4
    optimizer: str = "adamw"  # from scratch with little compute AdamW reaches about twice SGD's AP
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_iters: int = 100
    clip_grad: float = 10.0
    workers: int = 1
    precision: str = "fp32"  # training and inference (``--precision``)


def generate_demo_data(data: Path, settings: DemoSettings) -> None:
    """``data/train`` and ``data/val`` shapes sets (seeds 0 and 1)."""
    generate_shapes(data / "train", settings.train_images, settings.image_size, seed=0)
    generate_shapes(data / "val", settings.val_images, settings.image_size, seed=1)


def demo_train_config(data: Path, out_dir: Path, settings: DemoSettings, eval_every: int = 0) -> TrainConfig:
    """The demo's training run on ``generate_demo_data``'s sets (also used by benchmarks/stages.py)."""
    return TrainConfig(
        train_json=str(data / "train" / "annotations.json"), train_images=str(data / "train" / "images"),
        val_json=str(data / "val" / "annotations.json"), val_images=str(data / "val" / "images"),
        out_dir=str(out_dir), epochs=settings.epochs, lr_steps=settings.lr_steps, lr=settings.lr,
        optimizer=settings.optimizer, weight_decay=settings.weight_decay, batch_size=settings.batch_size,
        warmup_iters=settings.warmup_iters, workers=settings.workers, clip_grad=settings.clip_grad,
        eval_every=eval_every, precision=settings.precision)


def run_demo(out: Path, settings: DemoSettings = DemoSettings()) -> dict:
    """Run the whole job into ``out`` (a new or empty folder); returns the ensemble metrics
    written to metrics.json."""
    refuse_existing([out], "the demo would write a new run over it; give a new --out folder")
    start = time.perf_counter()
    data = out / "data"
    print(f"demo: generating shapes in {data}")
    generate_demo_data(data, settings)
    config = get_config(DEMO_MODEL)
    print(f"demo: training {DEMO_MODEL} from scratch for {settings.epochs} epochs on "
          f"{settings.train_images} images (CPU)")
    final = train(config, demo_train_config(data, out / "train", settings, eval_every=1))
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
