"""An MMDetection config's data sets and training recipe -> the keyword arguments of our
``engine.train.TrainConfig``: where its COCO files are (``ann_file`` / ``data_prefix`` under
``data_root``, or under a root the user gives instead), the optimizer, lr, schedule, warm-up,
batch and the training images' filter. Training augmentations we do not have are refused by
name (the resize itself is the model's: ``model.py``)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..models.backbones.swin import NO_DECAY as SWIN_NO_DECAY
from .model import CONVNEXT_TYPES, dataset, dataset_repeats, dig, pipeline, training_epochs
from .text import ConfigError

# RandomChoice: only DETR's multi-scale crop passes the model's reader (model.MS_CROP).
SUPPORTED_TRAIN_STEPS = ("LoadImageFromFile", "LoadAnnotations", "Resize", "RandomResize", "RandomFlip",
                         "RandomChoice", "PackDetInputs", "Normalize", "Pad", "DefaultFormatBundle", "Collect")


def data_files(config: dict[str, Any], split: str, source: str, root: str | None = None) -> tuple[str, str] | None:
    """(annotation file, image folder) of the ``split`` ("train", "val" or "test") data set, or
    None if the config has none; ``root`` replaces the config's ``data_root``."""
    found = dataset(config, split)
    if "ann_file" not in found:
        return None
    images = dig(found, "data_prefix", "img") if "data_prefix" in found else found.get("img_prefix", "")
    annotations = found["ann_file"]
    if not isinstance(annotations, str) or not isinstance(images, str):
        raise ConfigError(f"{source}: {split} data set's ann_file / data_prefix are not paths")
    if "data_root" in found:  # MMDetection 3: paths relative to the data set's data_root
        data_root = found["data_root"] if root is None else root
    else:  # MMDetection 2: data_root already joined in; a given root replaces that prefix
        data_root, prefix = root or "", config.get("data_root") if root is not None else None
        if isinstance(prefix, str) and prefix:
            annotations, images = (path[len(prefix):] if path.startswith(prefix) else path
                                   for path in (annotations, images))
    return str(Path(data_root or "") / annotations), str(Path(data_root or "") / images)


def training_recipe(config: dict[str, Any], source: str, root: str | None = None) -> dict[str, Any]:
    """``TrainConfig`` keyword arguments the config states (each only where it states it); what
    our trainer would do differently (another scheduler, warm-up start, lr factor, parameter-wise
    rules) is a ``ConfigError`` naming it."""
    recipe: dict[str, Any] = {}
    for split, keys in (("train", ("train_json", "train_images")), ("val", ("val_json", "val_images"))):
        found = data_files(config, split, source, root)
        if found:
            recipe.update(zip(keys, found))
    _check_train_pipeline(config, source)
    recipe.update(_optimizer(config, source))
    epochs, repeats = training_epochs(config), dataset_repeats(config)
    if epochs is not None:
        recipe["epochs"] = epochs
    for scheduler in _schedulers(config):
        recipe.update(_scheduler(scheduler, repeats, source))
    batch = dig(config, "train_dataloader", "batch_size") or dig(config, "data", "samples_per_gpu")
    if isinstance(batch, int):
        recipe["batch_size"] = batch
    filters = dataset(config, "train").get("filter_cfg") or {}
    if "filter_empty_gt" in filters:
        recipe["filter_empty_gt"] = bool(filters["filter_empty_gt"])
    if "min_size" in filters:
        recipe["min_size"] = int(filters["min_size"])
    if dig(config, "auto_scale_lr", "enable"):
        raise ConfigError(f"{source}: auto_scale_lr.enable=True is not supported (our lr scales with the batch by "
                          "default: give --lr to fix it)")
    return recipe


def _optimizer(config: dict[str, Any], source: str) -> dict[str, Any]:
    optimizer = dig(config, "optim_wrapper", "optimizer") or config.get("optimizer")
    found: dict[str, Any] = {}
    if not isinstance(optimizer, dict):
        return found
    kind = str(optimizer.get("type", "")).lower()
    if kind not in ("sgd", "adamw"):
        raise ConfigError(f"{source}: optimizer type={optimizer.get('type')!r} is not supported (supported: SGD, "
                          "AdamW)")
    found["optimizer"] = kind
    for key in ("lr", "momentum", "weight_decay"):
        if key in optimizer:
            found[key] = float(optimizer[key])
    unknown = [key for key in optimizer if key not in ("type", "lr", "momentum", "weight_decay")
               and not (key == "betas" and tuple(optimizer[key]) == (0.9, 0.999))]
    paramwise = dig(config, "optim_wrapper", "paramwise_cfg") or config.get("paramwise_cfg")
    if paramwise and not _backbone_rules(dig(config, "model", "backbone", "type"), paramwise):
        unknown.append("paramwise_cfg")
    if unknown:
        raise ConfigError(f"{source}: optimizer {unknown[0]}={optimizer.get(unknown[0], '...')!r} is not supported "
                          "(supported: type, lr, momentum, weight_decay)")
    clip = dig(config, "optim_wrapper", "clip_grad") or dig(config, "optimizer_config", "grad_clip")
    if isinstance(clip, dict) and "max_norm" in clip:
        found["clip_grad"] = float(clip["max_norm"])
    return found


def _backbone_rules(backbone: str | None, paramwise: dict[str, Any]) -> bool:
    """Whether ``paramwise_cfg`` is what the backbone spec's own rules do (hooks.py): ConvNeXt's
    layer-wise lr decay (its numbers are read into the spec: model.py), Swin's norms and
    position tables without weight decay."""
    if backbone in CONVNEXT_TYPES:
        return paramwise.get("decay_type") == "layer_wise"
    if backbone == "SwinTransformer":
        return paramwise == {"custom_keys": {key: {"decay_mult": 0.0} for key in SWIN_NO_DECAY}}
    return False


def _scheduler(scheduler: dict[str, Any], repeats: int, source: str) -> dict[str, Any]:
    """One lr scheduler as our schedule's knobs: MultiStepLR (x0.1 at epochs) and LinearLR warm-up
    from 0.001x (MMDetection 3), or ``lr_config`` step / linear warm-up (2)."""
    kind = scheduler.get("type", scheduler.get("policy"))
    found: dict[str, Any] = {}
    if kind in ("MultiStepLR", "step"):
        steps = scheduler.get("milestones", scheduler.get("step"))
        if not scheduler.get("by_epoch", True) or scheduler.get("gamma", 0.1) != 0.1 or steps is None:
            raise ConfigError(f"{source}: {kind} {scheduler!r} is not supported (supported: milestones in epochs, "
                              "gamma 0.1)")
        found["lr_steps"] = tuple(int(step) * repeats for step in ([steps] if isinstance(steps, int) else steps))
    if kind == "LinearLR":
        if scheduler.get("by_epoch", True) or scheduler.get("start_factor", 0.001) != 0.001:
            raise ConfigError(f"{source}: LinearLR {scheduler!r} is not supported (supported: a warm-up by "
                              "iteration from start_factor 0.001)")
        found["warmup_iters"] = int(scheduler.get("end", 0))
    elif kind not in ("MultiStepLR", "step"):
        raise ConfigError(f"{source}: lr scheduler {kind!r} is not supported (supported: MultiStepLR, LinearLR)")
    if scheduler.get("warmup") is not None:
        if scheduler.get("warmup") != "linear" or scheduler.get("warmup_ratio", 0.001) != 0.001:
            raise ConfigError(f"{source}: warmup={scheduler.get('warmup')!r} ratio "
                              f"{scheduler.get('warmup_ratio')!r} is not supported (supported: linear from 0.001)")
        found["warmup_iters"] = int(scheduler.get("warmup_iters", 0))
    return found


def _schedulers(config: dict[str, Any]) -> list[dict[str, Any]]:
    found = config.get("param_scheduler", config.get("lr_config")) or []
    return [s for s in ([found] if isinstance(found, dict) else found) if isinstance(s, dict)]


def _check_train_pipeline(config: dict[str, Any], source: str) -> None:
    for index, step in enumerate(pipeline(config, "train")):
        kind = step.get("type") if isinstance(step, dict) else None
        if kind not in SUPPORTED_TRAIN_STEPS:
            raise ConfigError(f"{source}: training pipeline step {index} type={kind!r} is not supported "
                              f"(supported: {', '.join(SUPPORTED_TRAIN_STEPS)})")
        if kind == "RandomFlip" and step.get("prob", step.get("flip_ratio", 0.5)) != 0.5:
            raise ConfigError(f"{source}: RandomFlip prob={step.get('prob', step.get('flip_ratio'))!r} is not "
                              "supported (supported: 0.5)")
