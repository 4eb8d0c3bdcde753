"""Our checkpoints as ``.safetensors``: the tensors, plus the metadata as text.

safetensors holds tensors and a table of strings only - nothing in it can run code. Our metadata
(config name, class names, category ids, model settings) is stored as one string per field, lists
and tables as JSON, next to the ``"format": "pt"`` entry Hugging Face's tools expect:

    {"format": "pt", "checkpoint_format": "cascade_rcnn/1", "config_name": "...",
     "class_names": "[\"person\", ...]", "category_ids": "[1, 2, ...]" or "null",
     "model_settings": "{\"num_stages\": \"3\", ...}", "mmdet_config": "model = {...}" (if converted)}
"""
from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import torch

from .errors import CheckpointError

SUFFIX = ".safetensors"
JSON_FIELDS = ("class_names", "category_ids", "model_settings")
TEXT_FIELDS = ("mmdet_config",)  # optional: the MMDetection config a converted model was read from


def looks_like_safetensors(path: Path) -> bool:
    """Whether ``path`` starts as a safetensors file does: an 8-byte little-endian header length,
    then a JSON object that fits in the file. (PyTorch's files start with ``PK`` or a pickle.)"""
    with open(path, "rb") as file:
        head = file.read(9)
    if len(head) < 9:
        return False
    (length,) = struct.unpack("<Q", head[:8])
    return head[8:9] == b"{" and 8 + length <= path.stat().st_size


def read(path: Path) -> dict[str, Any]:
    """``{"state_dict": tensors, "meta": our metadata or {}}`` from a safetensors file."""
    safetensors = _require(path)
    try:
        with safetensors.safe_open(str(path), framework="pt", device="cpu") as file:
            metadata = file.metadata() or {}
            state = {key: file.get_tensor(key) for key in file.keys()}  # noqa: SIM118 (a safe_open, not a dict)
    except Exception as error:  # safetensors raises its own error type for damaged files
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise CheckpointError(f"{path}: not a readable safetensors file ({reason})") from None
    if not state:
        raise CheckpointError(f"{path}: a safetensors file without tensors")
    return {"state_dict": state, "meta": _meta_from_text(metadata, path)}


def write(path: str, state: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Write ``state`` and ``meta`` (our metadata) to ``path`` (the caller renames it into place)."""
    safetensors = _require(Path(path))
    text = {"format": "pt", "checkpoint_format": meta["format"], "config_name": meta["config_name"],
            **{field: json.dumps(meta[field]) for field in JSON_FIELDS},
            **{field: meta[field] for field in TEXT_FIELDS if field in meta}}
    # safetensors stores dense row-major tensors: channels-last weights are copied to that layout.
    safetensors.torch.save_file({k: v.detach().cpu().contiguous() for k, v in state.items()}, path, metadata=text)


def _meta_from_text(metadata: dict[str, str], path: Path) -> dict[str, Any]:
    if "checkpoint_format" not in metadata:
        return {}  # a foreign file: tensors only, as an MMDetection or bare state dict
    meta: dict[str, Any] = {"format": metadata["checkpoint_format"], "config_name": metadata.get("config_name")}
    for field in JSON_FIELDS:
        try:
            meta[field] = json.loads(metadata.get(field, "null"))
        except json.JSONDecodeError as error:
            raise CheckpointError(f"{path}: its metadata {field!r} is not JSON ({error})") from None
    meta.update({field: metadata[field] for field in TEXT_FIELDS if field in metadata})
    return meta


def _require(path: Path):
    try:
        import safetensors.torch
    except ImportError:
        raise CheckpointError(f"{path}: .safetensors files need the safetensors package: "
                              "pip install \"cascade_rcnn[safetensors]\"") from None
    return safetensors
