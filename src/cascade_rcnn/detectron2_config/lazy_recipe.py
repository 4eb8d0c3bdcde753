"""A ViTDet LazyConfig dump's training recipe -> the keyword arguments of our
``engine.train.TrainConfig`` (and notes for what maps only in part), refusing by dotted key what
we cannot follow.

- ``optimizer``: AdamW (betas (0.9, 0.999), eps 1e-8), its weight decay, and its lr, given for
  ``dataloader.train.total_batch_size`` images: as our trainer scales the lr linearly with the real
  batch, it becomes ``lr_per_16 = lr * 16 / total_batch_size`` (ViT-B COCO: 1e-4 for 64 images ->
  2.5e-5 per 16). ``optimizer.params``' layer-wise decay and exemptions are the model's
  (``lazy_training.py``, read into ``ViTConfig``), refused here when not followed.
- ``lr_multiplier``: a linear warm-up from 0.001x over ``warmup_length`` of ``train.max_iter``
  iterations (rounded up: the iterations Detectron2 warms up), then x0.1 at each milestone. Our
  schedule is in epochs: a zoo row's dump (the same milestones and length as one of the shipped
  ViTDet dumps) takes that row's schedule (100ep / 75ep: ``engine/schedule.py``); any other
  leaves epochs and lr steps to the command's options, said in a note.
- ``train.amp.enabled``: Detectron2's AMP (float16 autocast, gradient scaler) -> ``fp16`` on CUDA,
  ``bf16`` on a CPU with bfloat16 instructions; elsewhere fp32, said in a note.
- ``dataloader.train``: ``dataset.filter_empty`` -> ``filter_empty_gt``; no size filter
  (``min_size`` 0, as Detectron2); the data set itself is Detectron2's registered name, so the
  files come from the command. The batch is the command's (``--batch-size``).

What does not change the trained weights (``train.checkpointer``, ``ddp``, ``device``,
``eval_period``, ``log_period``, ``output_dir``, loader workers, the test loader and evaluator)
is not read.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from . import ZOO_FILES
from .lazy_file import read_lazy_dump
from .lazy_node import DumpNode
from .lazy_training import read_training_parts
from .recipe_parts import amp_precision, iterations_note, lr_per_16

ADAMW = "torch.optim.AdamW"
OPTIMIZER_DEFAULTS = {"betas": [0.9, 0.999], "eps": 1e-8, "amsgrad": False}
PARAMS = "detectron2.solver.get_default_optimizer_params"
PARAMS_DEFAULTS = {"bias_lr_factor": 1.0, "weight_decay_bias": None}
READ_ELSEWHERE = ("lr_factor_func", "weight_decay_norm", "overrides")  # lazy_training.py
WARMUP = "detectron2.solver.WarmupParamScheduler"
MULTI_STEP = "fvcore.common.param_scheduler.MultiStepParamScheduler"
TRAIN_LOADER = "detectron2.data.build_detection_train_loader"
MAPPER = "detectron2.data.DatasetMapper"
NOT_READ = {"train": ("checkpointer", "ddp", "device", "eval_period", "log_period", "output_dir"),
            "dataloader.train": ("num_workers",), "dataloader": ("test", "evaluator")}


def training_recipe(path: str | Path, device: str = "cpu") -> tuple[dict[str, Any], list[str]]:
    """(``TrainConfig`` keyword arguments, notes) of the dump at ``path`` for a run on ``device``;
    ``ConfigError`` naming the file and the first key we do not follow."""
    path = Path(path)
    tree = read_lazy_dump(path)
    root = DumpNode(tree, "", path)
    root.only("model", "optimizer", "lr_multiplier", "dataloader", "train")
    parts = read_training_parts(tree)
    if parts.not_followed:
        raise ConfigError(f"{path}: {parts.not_followed[0]}")
    train = root.node("train")
    train.only("amp", "init_checkpoint", "max_iter", *NOT_READ["train"])
    loader = root.node("dataloader").node("train")
    recipe = {**_optimizer(root.node("optimizer"), loader), **_data(root, loader)}
    notes: list[str] = []
    recipe.update(_schedule(root, notes))
    precision = amp_precision("train.amp.enabled", bool((train.get("amp") or {}).get("enabled", False)), device,
                              path, notes)
    if precision:
        recipe["precision"] = precision
    return recipe, notes


def _optimizer(optimizer: DumpNode, loader: DumpNode) -> dict[str, Any]:
    optimizer.need("_target_", ADAMW)
    optimizer.only("params", "lr", "weight_decay", *OPTIMIZER_DEFAULTS)
    for name, default in OPTIMIZER_DEFAULTS.items():
        optimizer.need(name, default, default)
    params = optimizer.node("params")
    params.need("_target_", PARAMS)
    params.only("base_lr", "weight_decay", *READ_ELSEWHERE, *PARAMS_DEFAULTS)
    lr = params.get("base_lr", optimizer.get("lr"))
    weight_decay = params.get("weight_decay", optimizer.get("weight_decay", 0.01))  # AdamW's default
    params.need("bias_lr_factor", 1.0, 1.0)
    if params.get("weight_decay_bias") not in (None, weight_decay):
        raise params.refuse("weight_decay_bias", params.get("weight_decay_bias"), "only null or the weight decay")
    batch = loader.get("total_batch_size")
    if not isinstance(lr, (int, float)) or lr <= 0:
        raise optimizer.refuse("lr", lr, "a positive number")
    if not isinstance(batch, int) or batch < 1:
        raise loader.refuse("total_batch_size", batch, "a positive count")
    return {"optimizer": "adamw", "lr_per_16": lr_per_16(float(lr), batch), "weight_decay": float(weight_decay)}


def _data(root: DumpNode, loader: DumpNode) -> dict[str, Any]:
    loader.need("_target_", TRAIN_LOADER)
    loader.only("dataset", "mapper", "total_batch_size", "aspect_ratio_grouping", *NOT_READ["dataloader.train"])
    loader.need("aspect_ratio_grouping", True, True)  # ours: by orientation
    dataset = loader.node("dataset")
    dataset.only("names", "filter_empty")
    mapper = loader.node("mapper")
    mapper.need("_target_", MAPPER)
    mapper.only("augmentations", "image_format", "is_train", "recompute_boxes", "use_instance_mask",
                "instance_mask_format", "use_keypoint")
    mapper.need("is_train", True, True)
    mapper.need("use_keypoint", False, False)
    with_mask = "mask_head" in (root.get("model", {}).get("roi_heads") or {})
    mapper.need("use_instance_mask", with_mask, False)
    # Our large-scale jitter recomputes boxes from the masks whenever it has them (data/lsj.py).
    mapper.need("recompute_boxes", with_mask, False)
    return {"filter_empty_gt": bool(dataset.get("filter_empty", True)), "min_size": 0}


def _schedule(root: DumpNode, notes: list[str]) -> dict[str, Any]:
    multiplier = root.node("lr_multiplier")
    multiplier.need("_target_", WARMUP)
    multiplier.only("scheduler", "warmup_factor", "warmup_length", "warmup_method", "rescale_interval")
    multiplier.need("warmup_factor", 0.001)
    multiplier.need("warmup_method", "linear", "linear")
    multiplier.need("rescale_interval", False, False)
    steps = multiplier.node("scheduler")
    steps.need("_target_", MULTI_STEP)
    steps.only("milestones", "num_updates", "values")
    milestones = list(steps.get("milestones") or [])
    values = steps.get("values")
    if not (isinstance(values, list) and len(values) == len(milestones) + 1
            and all(math.isclose(v, 0.1 ** i) for i, v in enumerate(values))):
        raise steps.refuse("values", values, "only 1.0, then x0.1 at each milestone")
    train = root.node("train")
    max_iter = train.get("max_iter")
    if not isinstance(max_iter, int) or max_iter < 1:
        raise train.refuse("max_iter", max_iter, "a positive count")
    length = multiplier.get("warmup_length", 0.0)
    recipe: dict[str, Any] = {"warmup_iters": math.ceil(length * max_iter - 1e-6)}
    schedule = zoo_schedule(root.tree)
    if schedule:
        recipe["schedule"] = schedule
    else:
        notes.append(iterations_note(root.path, f"lr_multiplier's milestones {milestones} of {max_iter}"))
    return recipe


def zoo_schedule(tree: dict) -> str | None:
    """The schedule name (100ep, 75ep) of the shipped ViTDet dump with the same lr steps, length
    and batch as ``tree``, or None."""
    def steps(found: dict) -> tuple:
        return (found.get("lr_multiplier"), (found.get("train") or {}).get("max_iter"),
                (found.get("dataloader", {}).get("train") or {}).get("total_batch_size"))

    wanted = steps(tree)
    for dump in sorted((ZOO_FILES / "ViTDet").glob("*/*.yaml")):
        if steps(read_lazy_dump(dump)) == wanted:
            return dump.stem.rsplit("_", 1)[1]
    return None

