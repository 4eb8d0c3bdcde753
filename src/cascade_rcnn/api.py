"""``build_model``: a zoo name (or config) + optional weights -> a ready detector."""
from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from .detectron2_config.model import read_detectron2_model
from .errors import UserInputError, user_input
from .inference.predictor import CascadeRCNN
from .mmdet_config.checkpoint_meta import config_from_file
from .models.config import ModelConfig
from .models.settings import apply_settings
from .ops.compute_path import EXACT, FAST, check_precision
from .weights import checkpoint
from .weights.zoo import get_config, published_url


def build_model(model: str | os.PathLike | ModelConfig | None = None, weights: str | os.PathLike | None = None,
                device: str | torch.device = "cpu", class_names: list[str] | None = None,
                reinit_class_layers: bool = False, exact: bool = False,
                settings: dict[str, Any] | None = None, precision: str = "fp32") -> CascadeRCNN:
    """Build a zoo model (``"cascade_mask_rcnn_r50_fpn_1x_coco"``), an MMDetection config file
    (``"work_dirs/my_cascade/my_cascade.py"``, read as data), a custom ``ModelConfig``, or - with
    ``model=None`` - the model the checkpoint ``weights`` describes: ours name theirs, MMDetection's
    carry their whole config and class names (``mmdet_config/``).

    ``weights``: None (the default: random weights, as torchvision's ``weights=None``), a local
    ``.pth`` (MMDetection's or ours) or ``.safetensors`` (ours, or a bare state dict), a URL
    (downloaded once into the cache), a Hugging Face Hub name ``"hf://ORG/REPO[@REVISION][/FILE]"``
    (through huggingface_hub's cache; HF_HUB_OFFLINE=1 reads the cache only), or ``"zoo"`` for
    the config's published checkpoint (hash-checked). Our own checkpoints also restore the class
    names and the model settings they were trained with (``num_stages``, ``stage_ious``,
    ``image_scale``, ...); ``settings`` (e.g. ``{"test_proposals": 300}``, the CLI's ``--set``)
    override those. ``class_names`` sets another class list (the class layers must then be
    re-initialised: ``reinit_class_layers=True``, or the checkpoint must have that many classes).
    The model is returned in eval mode on ``device``. ``exact=True`` runs inference as
    MMDetection does, bit for bit; the default fast path (BatchNorm folded into the convs,
    channels-last activations, class-only mask logits) equals it up to float rounding.
    ``precision="bf16"`` (CPUs with bfloat16 instructions, CUDA) or ``"fp16"`` (CUDA) runs the fast
    path's network in that dtype, weights cast once (``models/low_precision.py``); combinations a
    device would run slowly or not at all are refused (``ops.compute_path.check_precision``).
    """
    with user_input():  # the caller's arguments: a UserInputError (a ValueError) naming the problem
        check_precision(precision, device)
        compute = replace(EXACT if exact else FAST, precision=precision)
    config = None if model is None else model_from(model)
    if weights == "zoo":
        if config is None:
            raise UserInputError("weights='zoo' needs a zoo model name")
        weights = published_url(config)
    loaded = path = None
    if weights is not None:
        path = checkpoint.resolve(weights)
        loaded = checkpoint.read(path)
        config = checkpoint.model_of(loaded, path, config)
    if config is None:
        raise UserInputError("build_model needs a model: a zoo name, a config file, or weights that carry one")
    if settings:
        with user_input():
            config = apply_settings(config, settings)
    if class_names is not None:
        config = config.with_classes(tuple(class_names))
    detector = CascadeRCNN(config)
    if loaded is not None:
        checkpoint.load_into(detector, loaded, path, reinit_class_layers=reinit_class_layers)
    detector = detector.to(device).eval()
    detector.path = compute
    return detector


def model_from(model: str | os.PathLike | ModelConfig) -> ModelConfig:
    """A ``ModelConfig`` as given, a config file read as data (MMDetection's ``.py``, Detectron2's
    ``.yaml``), or a zoo name."""
    if isinstance(model, ModelConfig):
        return model
    if str(model).endswith((".yaml", ".yml")):
        return read_detectron2_model(model)
    if str(model).endswith(".py") or isinstance(model, os.PathLike):
        return config_from_file(str(model), Path(model).stem)
    return get_config(model)
