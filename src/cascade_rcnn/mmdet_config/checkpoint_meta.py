"""The model an MMDetection checkpoint describes: its ``meta`` carries the whole merged config
(MMDetection 3: ``meta["cfg"]``, 2: ``meta["config"]``, as text) and the class names (3:
``meta["dataset_meta"]["classes"]``, 2: ``meta["CLASSES"]``)."""
from __future__ import annotations

from dataclasses import replace
from typing import Any

from ..models.config import ModelConfig
from .model import model_config
from .text import ConfigError, config_text, parse_config_text, read_config


def config_from_meta(meta: Any, name: str, source: str) -> ModelConfig | None:
    """The ``ModelConfig`` of a checkpoint's ``meta`` (MMDetection's), or None if it has no config."""
    if not isinstance(meta, dict):
        return None
    text = meta.get("cfg", meta.get("config"))
    if text is None:
        return None
    if not isinstance(text, str):
        raise ConfigError(f"{source}: its config (meta cfg/config) is a {type(text).__name__}, not text")
    classes = (meta.get("dataset_meta") or {}).get("classes") if isinstance(meta.get("dataset_meta"), dict) \
        else None
    classes = classes or meta.get("CLASSES")
    if classes is not None and not (isinstance(classes, (list, tuple)) and all(isinstance(c, str) for c in classes)):
        raise ConfigError(f"{source}: its class names are not a list of text")
    return config_from_text(text, name, f"{source} (its config)", tuple(classes) if classes else None)


def config_from_text(text: str, name: str, source: str, class_names: tuple[str, ...] | None = None) -> ModelConfig:
    """The ``ModelConfig`` of a merged config's text (a checkpoint's, or ours)."""
    merged = parse_config_text(text, source)
    return _with_text(model_config(merged, name, source, class_names), merged)


def config_from_file(path: str, name: str, class_names: tuple[str, ...] | None = None) -> ModelConfig:
    """The ``ModelConfig`` of a config file (``_base_`` files resolved beside it)."""
    merged = read_config(path)
    return _with_text(model_config(merged, name, str(path), class_names), merged)


def _with_text(config: ModelConfig, merged: dict[str, Any]) -> ModelConfig:
    return replace(config, mmdet_config=config_text(merged))
