"""Model settings as text: the CLI's ``--set name=value`` and what our checkpoints store.

Only the cascade's knobs below are settable; values are parsed by the type of the
``ModelConfig`` field, and the changed config is validated as a whole (``ModelConfig``).
Text forms: numbers ``0.5``; lists ``0.5,0.6,0.7``; per-stage stds ``0.1,0.1,0.2,0.2/0.05,...``
(stages separated by ``/``); ``none`` for an optional value; ``backbone=timm:NAME`` for a timm
backbone (``models/backbones/timm_backbone.py``).
"""
from __future__ import annotations

import math
import types
import typing
from typing import Any

from ..errors import UserInputError
from .backbones.timm_backbone import PREFIX as TIMM_PREFIX
from .backbones.timm_backbone import TimmBackboneConfig
from .config import ModelConfig

SETTABLE = ("num_stages", "stage_ious", "stage_stds", "stage_loss_weights", "train_proposals",
            "rpn_samples_per_image", "rois_per_image", "test_proposals", "train_proposals_pre_nms",
            "test_proposals_pre_nms", "test_score_thr", "test_nms_iou", "test_max_per_image", "mask_threshold",
            "anchor_scale", "image_scale", "train_scale_range", "train_scale_choice", "train_lsj", "mask_channels",
            "backbone")
# num_stages is the length of the per-stage fields; setting it keeps their first entries.
_TYPES = {**typing.get_type_hints(ModelConfig), "num_stages": int}


def parse_settings(items: list[str], source: str = "--set") -> dict[str, Any]:
    """``["num_stages=4", "stage_ious=0.5,0.6,0.7,0.8"]`` -> {name: typed value}; ValueError
    naming ``source`` and the item for an unknown name or a malformed value."""
    settings = {}
    for item in items:
        name, separator, text = item.partition("=")
        name = name.strip()
        if not separator:
            raise UserInputError(f"{source} {item!r}: expected NAME=VALUE")
        if name not in SETTABLE:
            raise UserInputError(f"{source} {item!r}: unknown setting {name!r}; settable: {', '.join(SETTABLE)}")
        try:
            settings[name] = _parse_backbone(text.strip()) if name == "backbone" else _parse(text.strip(), _TYPES[name])
        except ValueError as error:
            raise UserInputError(f"{source} {item!r}: {error}") from None
    return settings


def apply_settings(config: ModelConfig, settings: dict[str, Any], source: str = "--set") -> ModelConfig:
    """``config`` with ``settings`` applied; ValueError naming ``source`` if they do not fit."""
    try:
        return config.with_changes(**settings)
    except ValueError as error:
        raise UserInputError(f"{source}: {error}") from None


def settings_text(config: ModelConfig) -> dict[str, str]:
    """Every settable knob of ``config`` in ``--set`` text form (what checkpoints store); the
    backbone only when it has one (a timm backbone): the zoo's are fixed by the config's name."""
    text = {name: _format(getattr(config, name)) for name in SETTABLE if name != "backbone"}
    if isinstance(config.backbone, TimmBackboneConfig):
        text["backbone"] = config.backbone.label
    return text


def _parse_backbone(text: str) -> TimmBackboneConfig:
    """``timm:NAME`` -> a timm backbone (the only backbone settable as text)."""
    if not text.startswith(TIMM_PREFIX) or len(text) == len(TIMM_PREFIX):
        raise UserInputError(f"expected {TIMM_PREFIX}NAME (a timm model with features_only), got {text!r}")
    return TimmBackboneConfig(text[len(TIMM_PREFIX):])


def _parse(text: str, kind: Any) -> Any:
    args = typing.get_args(kind)
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        if text.lower() == "none":
            return None
        return _parse(text, next(arg for arg in args if arg is not type(None)))
    if typing.get_origin(kind) is tuple:
        separator = "/" if typing.get_origin(args[0]) is tuple else ","
        parts = [part.strip() for part in text.split(separator)]
        if any(not part for part in parts):
            raise UserInputError(f"empty entry in {text!r}")
        if args[-1] is not Ellipsis and len(parts) != len(args):
            raise UserInputError(f"expected {len(args)} values separated by '{separator}', got {len(parts)}")
        return tuple(_parse(part, args[0]) for part in parts)
    try:
        value = kind(text)
    except ValueError:
        value = None
    if value is None or not math.isfinite(value):
        raise UserInputError(f"{text!r} is not {'an integer' if kind is int else 'a finite number'}")
    return value


def _format(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, tuple):
        return ("/" if value and isinstance(value[0], tuple) else ",").join(_format(v) for v in value)
    return repr(value)
