"""What a ViTDet LazyConfig dump says about training that our model specs hold: the ViT's
optimizer rules (``optimizer.params``: Detectron2's ``get_vit_lr_decay_rate`` layer-wise lr decay,
``weight_decay_norm``, ``overrides``), its initial weights (``train.init_checkpoint``: MAE's
encoder, Detectron2's ImageNetPretrained files) and the training resize
(``dataloader.train.mapper.augmentations``: large-scale jitter).

Each is read where the dump states it in a form we follow; anything else is listed, by dotted
key, as not followed. The model reader (``lazy_model.py``) keeps Detectron2's defaults for those (a
model is still built, for prediction); the recipe reader (``lazy_recipe.py``) refuses them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..data.lsj import LSJ_SCALES

VIT_LR_DECAY = "detectron2.modeling.backbone.vit.get_vit_lr_decay_rate"
LR_DECAY_DEFAULTS = {"lr_decay_rate": 1.0, "num_layers": 12}  # get_vit_lr_decay_rate's
IMAGENET_PRETRAINED = "detectron2://ImageNetPretrained/"
DETECTRON2_FILES = "https://dl.fbaipublicfiles.com/detectron2/"  # what detectron2:// stands for
_T = "detectron2.data.transforms."
LSJ_STEPS = (_T + "RandomFlip", _T + "ResizeScale", _T + "FixedSizeCrop")


@dataclass
class TrainingParts:
    """``vit``: ViTConfig changes; ``train_lsj``: the LSJ side (0: none); ``not_followed``: one
    line per dotted key we do not follow (``key = value is not supported (...)``)."""

    vit: dict[str, Any] = field(default_factory=dict)
    train_lsj: int = 0
    not_followed: list[str] = field(default_factory=list)


def read_training_parts(tree: dict[str, Any]) -> TrainingParts:
    """The training parts of a resolved dump (``lazy_file.read_lazy_dump``)."""
    parts = TrainingParts()
    params = (tree.get("optimizer") or {}).get("params") or {}
    _lr_decay(params.get("lr_factor_func"), parts)
    norm = params.get("weight_decay_norm")
    if norm not in (None, 0.0):
        parts.not_followed.append(f"optimizer.params.weight_decay_norm = {norm!r} is not supported (only 0.0 or "
                                  "null)")
    parts.vit["no_decay_norm"] = norm == 0.0
    overrides = params.get("overrides") or {}
    if overrides not in ({}, {"pos_embed": {"weight_decay": 0.0}}):
        parts.not_followed.append(f"optimizer.params.overrides = {overrides!r} is not supported (only "
                                  "{pos_embed: {weight_decay: 0.0}} or none)")
    parts.vit["no_decay_pos_embed"] = overrides == {"pos_embed": {"weight_decay": 0.0}}
    _init_checkpoint((tree.get("train") or {}).get("init_checkpoint"), parts)
    _augmentations(((tree.get("dataloader") or {}).get("train") or {}).get("mapper") or {}, parts)
    return parts


def _lr_decay(func: Any, parts: TrainingParts) -> None:
    """``functools.partial(get_vit_lr_decay_rate, lr_decay_rate=..., num_layers=...)`` as data."""
    if func is None:
        parts.vit.update(lr_decay_rate=1.0)
        return
    state = func.get("state") if isinstance(func, dict) and func.get("_apply_") == "functools.partial" else None
    if not (state and state[0] == {"_name_": VIT_LR_DECAY} and not state[1]
            and set(state[2] or {}) <= set(LR_DECAY_DEFAULTS)):
        parts.not_followed.append(f"optimizer.params.lr_factor_func = {func!r} is not supported (only "
                                  f"functools.partial({VIT_LR_DECAY}, lr_decay_rate, num_layers))")
        parts.vit.update(lr_decay_rate=1.0)
        return
    found = {**LR_DECAY_DEFAULTS, **(state[2] or {})}
    parts.vit.update(lr_decay_rate=float(found["lr_decay_rate"]), lr_decay_layers=int(found["num_layers"]))


def imagenet_url(init_checkpoint: str) -> str:
    """``detectron2://ImageNetPretrained/...pth?matching_heuristics=True`` -> its https URL."""
    return DETECTRON2_FILES + init_checkpoint[len("detectron2://"):].split("?")[0]


def _init_checkpoint(value: Any, parts: TrainingParts) -> None:
    if not value:
        return  # from scratch
    if isinstance(value, str) and value.startswith(IMAGENET_PRETRAINED):
        parts.vit["imagenet_url"] = imagenet_url(value)
        return
    parts.not_followed.append(f"train.init_checkpoint = {value!r} is not supported (only Detectron2's "
                              f"{IMAGENET_PRETRAINED}... files; give other initial weights with --weights)")


def _augmentations(mapper: dict[str, Any], parts: TrainingParts) -> None:
    """ViTDet's large-scale jitter: RandomFlip (horizontal, p 0.5), ResizeScale(0.1..2.0 of T x T),
    FixedSizeCrop(T x T, pad false)."""
    steps = mapper.get("augmentations") or []
    targets = tuple(step.get("_target_") if isinstance(step, dict) else None for step in steps)
    key = "dataloader.train.mapper.augmentations"
    if targets != LSJ_STEPS:
        parts.not_followed.append(f"{key} = {list(targets)!r} is not supported (only ViTDet's large-scale jitter: "
                                  f"{', '.join(t[len(_T):] for t in LSJ_STEPS)})")
        return
    flip, resize, crop = steps
    side = resize.get("target_height")
    wanted = ((0, flip, {"horizontal": True, "vertical": False, "prob": 0.5}),
              (1, resize, {"min_scale": LSJ_SCALES[0], "max_scale": LSJ_SCALES[1], "target_width": side,
                           "interp": 2}),  # PIL's BILINEAR
              (2, crop, {"crop_size": [side, side], "pad": False}))
    for index, step, values in wanted:
        for name, value in values.items():
            found = step.get(name, value if name in ("vertical", "prob", "interp") else None)
            if found != value:
                parts.not_followed.append(f"{key}.{index}.{name} = {found!r} is not supported (only {value!r})")
                return
        extra = [name for name in step if name != "_target_" and name not in values and name != "target_height"]
        if extra:
            parts.not_followed.append(f"{key}.{index}.{extra[0]} is not supported (we follow "
                                      f"{', '.join(values)})")
            return
    if not isinstance(side, int) or side < 1:
        parts.not_followed.append(f"{key}.1.target_height = {side!r} is not supported (a positive size)")
        return
    parts.train_lsj = side
