"""Reading and writing weights: MMDetection ``.pth`` files, our own checkpoints (``.pth`` or
``.safetensors``), Detectron2's (its model zoo's ``.pkl``, a run's ``model_final.pth``), URLs and
Hugging Face Hub names.

A checkpoint is untrusted input: ``.pth`` files are read with ``torch.load(weights_only=True)``,
which builds tensors and plain containers only. Objects of any other class (e.g. version objects
in an MMDetection ``meta``) are replaced by an inert placeholder - never imported, never called.
``.safetensors`` files hold tensors and strings only; ``.pkl`` files numpy arrays and plain
containers only (``pickle_reader``).
"""
from __future__ import annotations

import os
import pickle
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..atomic_write import atomic_path
from ..detectron2_config.model import read_detectron2_model
from ..mmdet_config.checkpoint_meta import config_from_meta, config_from_text
from ..models.backbones import hooks
from ..models.config import ModelConfig
from ..models.settings import apply_settings, parse_settings, settings_text
from . import detectron2_layout, download, file_kind, hub, pickle_reader, safetensors_file, zoo
from .download import HASH_IN_NAME, cache_dir  # noqa: F401  (their home before download.py)
from .errors import CheckpointError

FORMAT = "cascade_rcnn/1"
PKL_SUFFIX = ".pkl"  # Detectron2's model-zoo files (a pickle of numpy arrays), as its own checkpointer tells them
CLASS_LAYER_SUFFIXES = ("fc_cls.weight", "fc_cls.bias", "conv_logits.weight", "conv_logits.bias")


class _Inert:
    """Stands in for a non-allowlisted object found in a checkpoint; holds nothing, runs nothing."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        pass


def resolve(source: str | os.PathLike, check_hash: bool = False) -> Path:
    """A local path for ``source``: the path itself; a URL downloaded once into the cache; or a
    Hugging Face Hub name ``hf://ORG/REPO[@REVISION][/FILE]`` fetched through huggingface_hub's cache.

    With ``check_hash`` (always for the zoo's own URLs) a download whose file name ends in
    ``-<hex>.<ext>`` (torch.hub's convention) must have a SHA-256 starting with that hex, or it is
    deleted and refused.
    """
    text = str(source)
    if hub.is_hub_name(text):
        return hub.hub_file(text)
    if download.is_url(text):
        return download.fetch(text, check_hash=check_hash or zoo.is_published(text))[0]
    return Path(text)


def read(path: Path) -> dict[str, Any]:
    """The checkpoint object at local ``path``, loaded without running any of its code."""
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if path.suffix == safetensors_file.SUFFIX or safetensors_file.looks_like_safetensors(path):
        return safetensors_file.read(path)
    if path.suffix == PKL_SUFFIX:
        return pickle_reader.read_pkl_checkpoint(path)
    try:
        with warnings.catch_warnings():  # a foreign pickle's protocol: the error below says what the file is
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            loaded = _weights_only_load(path)
    except Exception:  # the weights-only unpickler raises many types on foreign bytes
        raise CheckpointError(f"{path}: {file_kind.describe(path)}") from None
    if not isinstance(loaded, dict):
        raise CheckpointError(f"{path}: not a checkpoint (holds a {type(loaded).__name__}, not a dict)")
    return loaded


def _weights_only_load(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        find_unsafe = getattr(torch.serialization, "get_unsafe_globals_in_checkpoint", None)
        if find_unsafe is None:
            raise
        unsafe = find_unsafe(str(path))
        if not unsafe:
            raise
        with torch.serialization.safe_globals([(_Inert, name) for name in unsafe]):
            return torch.load(path, map_location="cpu", weights_only=True)


def state_dict_of(checkpoint: dict[str, Any], path: str | os.PathLike = "checkpoint") -> dict[str, torch.Tensor]:
    """The tensors of an MMDetection (``state_dict`` + ``meta``), official Swin ImageNet (``model``)
    or bare state dict, under the file's own key names (``load_into`` turns them into the model's
    backbone layout); a Detectron2 checkpoint's (``model``) under ours (``detectron2_layout``;
    its ``pixel_mean`` / ``pixel_std``, if any, left out: ``read_detectron2_state_dict``)."""
    state = _file_state_dict(checkpoint, path)
    if detectron2_layout.is_detectron2(state):
        return detectron2_layout.to_our_layout(state, path)[0]
    return state


def read_detectron2_state_dict(source: str | os.PathLike
                               ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """A Detectron2 checkpoint (a model-zoo ``.pkl``, or a run's ``model_final.pth``:
    ``{"model": state_dict, "optimizer": ..., "iteration": ...}``; a path, URL or Hub name, as
    ``resolve`` takes) as ``(tensors under our names, extras)``; extras are its ``pixel_mean`` /
    ``pixel_std`` entries, those it holds."""
    path = resolve(source)
    state = _file_state_dict(read(path), path)
    if not detectron2_layout.is_detectron2(state):
        raise CheckpointError(f"{path}: not a Detectron2 checkpoint (no keys under "
                              f"{', '.join(detectron2_layout.DETECTRON2_PREFIXES)}; keys: {few(list(state))})")
    return detectron2_layout.to_our_layout(state, path)


def _file_state_dict(checkpoint: dict[str, Any], path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint under the file's own key names."""
    state = checkpoint.get("state_dict", checkpoint)
    if "state_dict" not in checkpoint and isinstance(checkpoint.get("model"), dict):
        state = checkpoint["model"]
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: no state dict of tensors found (keys: {few(list(checkpoint))})")
    # Checkpoints saved from DistributedDataParallel prefix every key with "module.".
    if all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def meta_of(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """Our metadata (config name, class names, category ids), empty for foreign checkpoints."""
    meta = checkpoint.get("meta")
    return meta if isinstance(meta, dict) and meta.get("format") == FORMAT else {}


def config_of(loaded: dict[str, Any], path: str | os.PathLike) -> ModelConfig | None:
    """The model a checkpoint describes, or None if it names none: ours by its zoo name or the
    MMDetection config it was converted from; MMDetection's by the merged config in its ``meta``
    (named after the file), with its class names; Detectron2's by the ``config.yaml`` its run wrote
    beside it (Detectron2's checkpoints carry none)."""
    ours = meta_of(loaded)
    if ours:
        if isinstance(ours.get("mmdet_config"), str):
            return config_from_text(ours["mmdet_config"], str(ours.get("config_name", Path(path).stem)), str(path))
        return zoo.MODEL_ZOO.get(ours.get("config_name"))
    beside = Path(path).with_name("config.yaml")
    if detectron2_layout.is_detectron2(_file_state_dict(loaded, path)) and beside.is_file():
        return read_detectron2_model(beside, Path(path).resolve().parent.name)
    return config_from_meta(loaded.get("meta"), Path(path).stem.split(".")[0], str(path))


def model_of(loaded: dict[str, Any], path: str | os.PathLike, config: ModelConfig | None = None) -> ModelConfig:
    """The model to load a checkpoint into: ``config``, or the one the checkpoint describes
    (``config_of``); with our checkpoints' class names and model settings restored."""
    config = config or config_of(loaded, path)
    if config is None:
        raise CheckpointError(f"{path}: carries no config: give the model (a zoo name, --model) or its config "
                              "file (--config: MMDetection's .py, or the config.yaml a Detectron2 run writes)")
    meta = meta_of(loaded)
    if meta.get("class_names"):
        config = config.with_classes(tuple(meta["class_names"]), meta.get("category_ids"))
    return restore_settings(config, loaded, path)


def restore_settings(config: ModelConfig, loaded: dict[str, Any], path: str | os.PathLike) -> ModelConfig:
    """``config`` with the model settings our checkpoint was written with; unchanged for older
    checkpoints of ours and for MMDetection's (they store none)."""
    stored = meta_of(loaded).get("model_settings")
    if stored is None:
        return config
    if not isinstance(stored, dict) or not all(isinstance(v, str) for v in stored.values()):
        raise CheckpointError(f"{path}: its model_settings are not a table of name -> text")
    try:
        return apply_settings(config, parse_settings([f"{k}={v}" for k, v in stored.items()], "stored"), "stored")
    except ValueError as error:
        raise CheckpointError(f"{path}: {error}") from None


def load_into(model: nn.Module, loaded: dict[str, Any], path: str | os.PathLike,
              reinit_class_layers: bool = False, absent_parts_fresh: bool = False) -> list[str]:
    """Load a checkpoint read from ``path`` into ``model``, strictly: every key must exist on both
    sides with equal shape, after the backbone spec's ``to_own_layout`` (e.g. a Swin backbone in
    MMDetection's layout turned into the official one).

    With ``reinit_class_layers`` the class-dependent layers (``fc_cls``, ``conv_logits`` of every
    stage) keep the model's fresh initialisation - for fine-tuning on another class count. With
    ``absent_parts_fresh`` a part of the detector (``backbone``, ``neck``, ``rpn_head``,
    ``roi_head``) that the file holds no key of keeps it too - initial weights for training (e.g.
    a trunk without RoI heads); a part the file holds is still loaded whole.
    Returns the names of the keys that were not loaded for these reasons.
    """
    state = dict(hooks.to_own_layout(model.config.backbone, state_dict_of(loaded, path)))
    own = model.state_dict()
    held_parts = {key.split(".", 1)[0] for key in state}
    skipped = [k for k in own if (reinit_class_layers and k.endswith(CLASS_LAYER_SUFFIXES))
               or (absent_parts_fresh and k.split(".", 1)[0] not in held_parts)]
    for key in skipped:
        state.pop(key, None)
    missing = [k for k in own if k not in state and k not in skipped]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        raise CheckpointError(
            f"{path}: keys do not match the model {model.config.name}: "
            f"{len(missing)} missing (e.g. {few(missing)}), {len(unexpected)} unexpected "
            f"(e.g. {few(unexpected)}). Is it a checkpoint of another architecture "
            "(box-only vs mask, R-50 vs R-101)?")
    mismatched = [k for k in state if state[k].shape != own[k].shape]
    if mismatched:
        if all(k.endswith(CLASS_LAYER_SUFFIXES) for k in mismatched):
            key = next(k for k in mismatched if k.endswith("fc_cls.weight"))
            raise CheckpointError(
                f"{path}: the checkpoint has {state[key].shape[0] - 1} classes, the model "
                f"{own[key].shape[0] - 1}. To predict or evaluate with it, give its class names: "
                "build_model(..., class_names=[...]) (CLI: --class-names NAME,NAME,...). To fine-tune "
                "it on your classes: build_model(..., reinit_class_layers=True) re-initialises only "
                "the classification layers (cascade-rcnn train does so by itself when the data set's "
                "classes differ).")
        details = ", ".join(f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
                            for k in mismatched[:3])
        raise CheckpointError(f"{path}: {len(mismatched)} tensors have other shapes ({details}). "
                              "Is it a checkpoint of another architecture?")
    model.load_state_dict(state, strict=not skipped)
    return skipped


def save(path: str | os.PathLike, model: nn.Module, **extra: Any) -> None:
    """Write ``{"state_dict", "meta", **extra}`` atomically (temp file + rename).

    ``meta`` records the config name, class names, category ids and the model settings (the
    ``--set`` knobs, as text), so the file alone rebuilds the model. Keys are the same as
    MMDetection's. A path ending in ``.safetensors`` gets a safetensors file (the meta as its
    string metadata; no ``extra``: training state stays in ``.pth``), anything else a ``.pth``.
    """
    config = model.config
    meta = {"format": FORMAT, "config_name": config.name, "class_names": list(config.class_names),
            "category_ids": None if config.category_ids is None else list(config.category_ids),
            "model_settings": settings_text(config)}
    if config.mmdet_config is not None:
        meta["mmdet_config"] = config.mmdet_config
    path = Path(path)
    as_safetensors = path.suffix == safetensors_file.SUFFIX
    if as_safetensors and extra:
        raise CheckpointError(f"{path}: a .safetensors file holds the weights and their metadata only, not "
                              f"{', '.join(extra)}; save training state as .pth")
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as temporary:
        if as_safetensors:
            safetensors_file.write(str(temporary), model.state_dict(), meta)
        else:
            torch.save({"state_dict": model.state_dict(), "meta": meta, **extra}, temporary)


def few(names: list[str], count: int = 3) -> str:
    """The first ``count`` names, comma-separated, for error messages."""
    return ", ".join(names[:count]) + (", ..." if len(names) > count else "") if names else "none"
