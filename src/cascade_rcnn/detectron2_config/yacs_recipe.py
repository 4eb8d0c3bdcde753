"""A Detectron2 yacs config's training recipe -> the keyword arguments of our
``engine.train.TrainConfig`` (and notes for what maps only in part); a value we cannot follow is
refused by key (``supported.refuse_unsupported``: anything not below must be Detectron2's default).

- ``SOLVER``: SGD (``MOMENTUM``, ``NESTEROV`` false: both ``torch.optim.SGD``), ``WEIGHT_DECAY`` on
  every trained parameter, biases included (``WEIGHT_DECAY_BIAS`` null or the same,
  ``BIAS_LR_FACTOR`` 1). ``BASE_LR`` is for ``IMS_PER_BATCH`` images: as our trainer scales the lr
  linearly with the real batch, it becomes ``lr_per_16``. ``WEIGHT_DECAY_NORM`` may be anything: the
  model we build from a yacs config has no trained norm parameter (FrozenBN backbone, no norm in
  the FPN or heads: ``model.REQUIRED``).
- ``WarmupMultiStepLR``: a linear warm-up from ``WARMUP_FACTOR`` 0.001 over ``WARMUP_ITERS``
  iterations (at most ``MAX_ITER``), then x ``GAMMA`` 0.1 at each of ``STEPS``. Our schedule is in
  epochs: a zoo row's ``STEPS``, ``MAX_ITER`` and ``IMS_PER_BATCH`` take that row's schedule
  (``ZOO_SCHEDULES``); any other leaves epochs and lr steps to the command's options, in a note.
- ``CLIP_GRADIENTS``: refused when enabled: Detectron2 clips each parameter's gradient on its own
  (by value, or by that parameter's norm); ours (``clip_grad``) clips the norm of all together.
- ``AMP.ENABLED`` -> fp16 on CUDA, bf16 on a CPU with bfloat16 instructions, else a note
  (``recipe_parts.amp_precision``). ``CHECKPOINT_PERIOD`` -> ``checkpoint_every`` (iterations).
- ``DATALOADER``: ``FILTER_EMPTY_ANNOTATIONS`` -> ``filter_empty_gt``; no size filter (``min_size``
  0, as Detectron2); ``TrainingSampler`` with aspect-ratio grouping only (ours groups landscape and
  portrait images apart, as Detectron2 does).
- ``INPUT``: the training resize (``MIN_SIZE_TRAIN``, ``MAX_SIZE_TRAIN``, ``MIN_SIZE_TRAIN_SAMPLING``)
  is the model's (``model.py``: ``ModelConfig.train_scale_choice``); ``RANDOM_FLIP`` horizontal
  only (ours flips half the images); ``CROP`` off only; ``MASK_FORMAT`` polygon or bitmask: ours
  rasterises polygons once, when loading, and resizes the bitmaps (Detectron2's "bitmask" way).
- ``DATASETS``: Detectron2's registered names, not files: the files come from the command.

The model's own keys (``MODEL``, ``TEST``, the test and training sizes, ``INPUT.FORMAT``) are the
model reader's (``model.py``); the batch is the command's (``--batch-size``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import ConfigError
from . import ZOO_FILES
from .recipe_parts import amp_precision, iterations_note, lr_per_16
from .resolved import Detectron2Config, short_repr
from .supported import ANY, refuse_unsupported
from .yacs_file import read_yacs_config

# A zoo row's config (under ZOO_FILES) -> our schedule of the same epochs, its
# iterations at 16 images over COCO train2017 (engine/schedule.py).
ZOO_SCHEDULES = {"Misc/cascade_mask_rcnn_R_50_FPN_1x": "1x", "Misc/cascade_mask_rcnn_R_50_FPN_3x": "d2_3x"}
SCHEDULE_KEYS = ("SOLVER.STEPS", "SOLVER.MAX_ITER", "SOLVER.IMS_PER_BATCH")


def _number(least: float, below: float = float("inf"), least_allowed: bool = True):
    """A predicate: a number in [least, below) (or (least, below))."""
    return lambda value: type(value) in (int, float) and (value >= least if least_allowed else value > least) \
        and value < below


def _whole(least: int):
    return lambda value: type(value) is int and value >= least


def _steps(value: Any) -> bool:
    return isinstance(value, tuple) and all(type(step) is int and step > 0 for step in value) \
        and list(value) == sorted(set(value))


SUPPORTED = {
    # the model reader's (model.py)
    "MODEL": ANY, "TEST": ANY, "INPUT.MIN_SIZE_TRAIN": ANY, "INPUT.MAX_SIZE_TRAIN": ANY,
    "INPUT.MIN_SIZE_TRAIN_SAMPLING": ANY, "INPUT.MIN_SIZE_TEST": ANY, "INPUT.MAX_SIZE_TEST": ANY, "INPUT.FORMAT": ANY,
    # read here
    "SOLVER.BASE_LR": _number(0, least_allowed=False), "SOLVER.IMS_PER_BATCH": _whole(1),
    "SOLVER.MOMENTUM": _number(0, 1), "SOLVER.WEIGHT_DECAY": _number(0),
    "SOLVER.WEIGHT_DECAY_BIAS": ANY, "SOLVER.CLIP_GRADIENTS": ANY,  # both checked in _optimizer
    "SOLVER.WEIGHT_DECAY_NORM": ANY, "SOLVER.STEPS": _steps, "SOLVER.MAX_ITER": _whole(1),
    "SOLVER.WARMUP_ITERS": _whole(0), "SOLVER.AMP.ENABLED": (True, False),
    "DATALOADER.FILTER_EMPTY_ANNOTATIONS": (True, False), "INPUT.MASK_FORMAT": ("polygon", "bitmask"),
    "DATASETS.TRAIN": ANY, "DATASETS.TEST": ANY,
    # without effect in this recipe: other schedulers', the repeat-factor sampler's, precomputed proposals'
    "SOLVER.NUM_DECAYS": ANY, "SOLVER.BASE_LR_END": ANY, "DATALOADER.REPEAT_THRESHOLD": ANY,
    "DATALOADER.REPEAT_SQRT": ANY, "DATASETS.PRECOMPUTED_PROPOSAL_TOPK_TRAIN": ANY,
    "DATASETS.PRECOMPUTED_PROPOSAL_TOPK_TEST": ANY,
}


def training_recipe(path: str | Path, device: str = "cpu") -> tuple[dict[str, Any], list[str]]:
    """(``TrainConfig`` keyword arguments, notes) of the yacs config at ``path`` for a run on
    ``device``; ``ConfigError`` naming the file and the first key we do not follow."""
    config = read_yacs_config(path)
    refuse_unsupported(config, SUPPORTED)
    value = config.value
    notes: list[str] = []
    recipe: dict[str, Any] = {
        **_optimizer(config), "warmup_iters": min(value("SOLVER.WARMUP_ITERS"), value("SOLVER.MAX_ITER")),
        "filter_empty_gt": value("DATALOADER.FILTER_EMPTY_ANNOTATIONS"), "min_size": 0}
    schedule = zoo_schedule(config)
    if schedule:
        recipe["schedule"] = schedule
    else:
        notes.append(iterations_note(config.source("SOLVER.STEPS"), f"SOLVER.STEPS {list(value('SOLVER.STEPS'))} of "
                                     f"SOLVER.MAX_ITER {value('SOLVER.MAX_ITER')}"))
    period = value("SOLVER.CHECKPOINT_PERIOD")  # a run-only key: any value passes refuse_unsupported
    if type(period) is int and period > 0:
        recipe["checkpoint_every"] = period
    precision = amp_precision("SOLVER.AMP.ENABLED", value("SOLVER.AMP.ENABLED"), device,
                              config.source("SOLVER.AMP.ENABLED"), notes)
    if precision:
        recipe["precision"] = precision
    return recipe, notes


def _optimizer(config: Detectron2Config) -> dict[str, Any]:
    value = config.value
    decay, bias_decay = value("SOLVER.WEIGHT_DECAY"), value("SOLVER.WEIGHT_DECAY_BIAS")
    if bias_decay is not None and bias_decay != decay:
        raise ConfigError(f"{config.source('SOLVER.WEIGHT_DECAY_BIAS')}: SOLVER.WEIGHT_DECAY_BIAS = "
                          f"{short_repr(bias_decay)} is not supported (only null or SOLVER.WEIGHT_DECAY, {decay!r})")
    if value("SOLVER.CLIP_GRADIENTS.ENABLED"):
        raise ConfigError(f"{config.source('SOLVER.CLIP_GRADIENTS.ENABLED')}: SOLVER.CLIP_GRADIENTS.ENABLED = True is "
                          f"not supported (Detectron2 clips each parameter's gradient on its own, by "
                          f"{value('SOLVER.CLIP_GRADIENTS.CLIP_TYPE')}; ours, --clip-grad, clips the norm of all "
                          "gradients together)")
    return {"optimizer": "sgd", "lr_per_16": lr_per_16(float(value("SOLVER.BASE_LR")), value("SOLVER.IMS_PER_BATCH")),
            "momentum": float(value("SOLVER.MOMENTUM")), "weight_decay": float(decay)}


def zoo_schedule(config: Detectron2Config) -> str | None:
    """Our schedule (``ZOO_SCHEDULES``) of the zoo row whose config has the same lr steps, length
    and batch as ``config``, or None."""
    def steps(found: Detectron2Config) -> tuple:
        return tuple(found.value(key) for key in SCHEDULE_KEYS)

    wanted = steps(config)
    for row, schedule in ZOO_SCHEDULES.items():
        if steps(read_yacs_config(ZOO_FILES / f"{row}.yaml")) == wanted:
            return schedule
    return None
