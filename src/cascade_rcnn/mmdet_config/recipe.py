"""An MMDetection config's data sets and training recipe -> the keyword arguments of our
``engine.train.TrainConfig``: where its COCO files are (``ann_file`` / ``data_prefix`` under
``data_root``, or under a root the user gives instead), the optimizer, lr, schedule, warm-up,
batch and the training images' filter. Training augmentations we do not have are refused by
name (the resize itself is the model's: ``model.py``)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from .model import dig
from .text import ConfigError

SUPPORTED_TRAIN_STEPS = ("LoadImageFromFile", "LoadAnnotations", "Resize", "RandomResize", "RandomFlip",
                         "PackDetInputs", "Normalize", "Pad", "DefaultFormatBundle", "Collect")


def data_files(config: dict[str, Any], split: str, source: str, root: str | None = None) -> tuple[str, str] | None:
    """(annotation file, image folder) of the ``split`` ("train", "val" or "test") data set, or
    None if the config has none; ``root`` replaces the config's ``data_root``."""
    dataset = dig(config, f"{split}_dataloader", "dataset") or dig(config, "data", split)
    while isinstance(dataset, dict) and isinstance(dataset.get("dataset"), dict):  # RepeatDataset and the like
        dataset = dataset["dataset"]
    if not isinstance(dataset, dict) or "ann_file" not in dataset:
        return None
    images = dig(dataset, "data_prefix", "img") if "data_prefix" in dataset else dataset.get("img_prefix", "")
    annotations = dataset["ann_file"]
    if not isinstance(annotations, str) or not isinstance(images, str):
        raise ConfigError(f"{source}: {split} data set's ann_file / data_prefix are not paths")
    if "data_root" in dataset:  # MMDetection 3: paths relative to the data set's data_root
        data_root = dataset["data_root"] if root is None else root
    else:  # MMDetection 2: data_root already joined in; a given root replaces that prefix
        data_root, prefix = root or "", config.get("data_root") if root is not None else None
        if isinstance(prefix, str) and prefix:
            annotations, images = (path[len(prefix):] if path.startswith(prefix) else path
                                   for path in (annotations, images))
    return str(Path(data_root or "") / annotations), str(Path(data_root or "") / images)


def training_recipe(config: dict[str, Any], source: str, root: str | None = None) -> dict[str, Any]:
    """``TrainConfig`` keyword arguments the config states (each only where it states it)."""
    recipe: dict[str, Any] = {}
    for split, keys in (("train", ("train_json", "train_images")), ("val", ("val_json", "val_images"))):
        found = data_files(config, split, source, root)
        if found:
            recipe.update(zip(keys, found))
    _check_train_pipeline(config, source)
    optimizer = dig(config, "optim_wrapper", "optimizer") or config.get("optimizer")
    if isinstance(optimizer, dict):
        kind = str(optimizer.get("type", "")).lower()
        if kind not in ("sgd", "adamw"):
            raise ConfigError(f"{source}: optimizer type={optimizer.get('type')!r} is not supported "
                              "(supported: SGD, AdamW)")
        recipe["optimizer"] = kind
        for key, ours in (("lr", "lr"), ("momentum", "momentum"), ("weight_decay", "weight_decay")):
            if key in optimizer:
                recipe[ours] = float(optimizer[key])
    clip = dig(config, "optim_wrapper", "clip_grad") or dig(config, "optimizer_config", "grad_clip")
    if isinstance(clip, dict) and "max_norm" in clip:
        recipe["clip_grad"] = float(clip["max_norm"])
    epochs = dig(config, "train_cfg", "max_epochs") or dig(config, "runner", "max_epochs")
    train_set = dig(config, "train_dataloader", "dataset") or dig(config, "data", "train") or {}
    repeats = train_set.get("times", 1) if train_set.get("type") == "RepeatDataset" else 1
    if isinstance(epochs, int):
        recipe["epochs"] = epochs * repeats
    for scheduler in _schedulers(config):
        if scheduler.get("type") == "MultiStepLR" or scheduler.get("policy") == "step":
            steps = scheduler.get("milestones", scheduler.get("step"))
            recipe["lr_steps"] = tuple(int(step) * repeats for step in ([steps] if isinstance(steps, int) else steps))
        if scheduler.get("type") == "LinearLR" and not scheduler.get("by_epoch", True):
            recipe["warmup_iters"] = int(scheduler.get("end", 0))
        if scheduler.get("warmup") == "linear":
            recipe["warmup_iters"] = int(scheduler.get("warmup_iters", 0))
    batch = dig(config, "train_dataloader", "batch_size") or dig(config, "data", "samples_per_gpu")
    if isinstance(batch, int):
        recipe["batch_size"] = batch
    filters = dig(config, "train_dataloader", "dataset", "filter_cfg") or {}
    if "filter_empty_gt" in filters:
        recipe["filter_empty_gt"] = bool(filters["filter_empty_gt"])
    if "min_size" in filters:
        recipe["min_size"] = int(filters["min_size"])
    return recipe


def _schedulers(config: dict[str, Any]) -> list[dict[str, Any]]:
    found = config.get("param_scheduler", config.get("lr_config")) or []
    return [s for s in ([found] if isinstance(found, dict) else found) if isinstance(s, dict)]


def _check_train_pipeline(config: dict[str, Any], source: str) -> None:
    train_set = dig(config, "train_dataloader", "dataset") or dig(config, "data", "train") or {}
    while isinstance(train_set, dict) and isinstance(train_set.get("dataset"), dict):
        train_set = train_set["dataset"]
    pipeline = (train_set.get("pipeline") if isinstance(train_set, dict) else None) or config.get("train_pipeline") \
        or []
    for index, step in enumerate(pipeline):
        kind = step.get("type") if isinstance(step, dict) else None
        if kind not in SUPPORTED_TRAIN_STEPS:
            raise ConfigError(f"{source}: training pipeline step {index} type={kind!r} is not supported "
                              f"(supported: {', '.join(SUPPORTED_TRAIN_STEPS)})")
        if kind == "RandomFlip" and step.get("prob", step.get("flip_ratio", 0.5)) != 0.5:
            raise ConfigError(f"{source}: RandomFlip prob={step.get('prob', step.get('flip_ratio'))!r} is not "
                              "supported (supported: 0.5)")
