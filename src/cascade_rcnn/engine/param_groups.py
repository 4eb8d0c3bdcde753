"""Optimizer parameter groups: one group for most models; for a ConvNeXt backbone, MMDetection's
layer-wise learning-rate decay (its ``LearningRateDecayOptimizerConstructor``, 'layer_wise').

ConvNeXt rows train with AdamW where the backbone's early layers learn slower: with ``num_layers``
= 6, a parameter of layer id ``i`` (0 = stem .. 6 = the last stage, 7 = everything after the
backbone) gets ``lr_scale = decay_rate ** (7 - i)``; biases and one-dimensional parameters (norms,
layer scale) get no weight decay. The scale is kept in each group (``lr_scale``) and applied on
top of the schedule's lr at every step.

Swin rows (the official Swin detection configs' ``paramwise_cfg``): one lr, no weight decay on
parameters whose name contains ``norm`` (the backbone's LayerNorms), ``relative_position_bias_table``
or ``absolute_pos_embed``; everything else, biases included, decays (mmcv's custom keys match
substrings of the full name).
"""
from __future__ import annotations

from torch import nn

from ..models.backbones.convnext import ConvNeXt
from ..models.backbones.swin import SwinTransformer

CONVNEXT_LAYERS = 6
CONVNEXT_DECAY_RATE = 0.7
SWIN_NO_DECAY = ("norm", "relative_position_bias_table", "absolute_pos_embed")


def convnext_layer_id(name: str, num_layers: int = CONVNEXT_LAYERS) -> int:
    """The layer id of parameter ``name`` (a key of the detector's state dict)."""
    parts = name.split(".")
    if name.startswith("backbone.downsample_layers."):
        return {0: 0, 1: 2, 2: 3}.get(int(parts[2]), num_layers)
    if name.startswith("backbone.stages."):
        stage, block = int(parts[2]), int(parts[3])
        return {0: 1, 1: 2, 2: 3 + block // 3}.get(stage, num_layers)
    return num_layers + 1


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """The trainable parameters of ``model`` as optimizer groups, each with its ``lr_scale``."""
    named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    if isinstance(getattr(model, "backbone", None), SwinTransformer):
        exempt = [any(key in name for key in SWIN_NO_DECAY) for name, _ in named]
        return [{"params": [p for (_, p), no in zip(named, exempt) if not no], "weight_decay": weight_decay,
                 "lr_scale": 1.0},
                {"params": [p for (_, p), no in zip(named, exempt) if no], "weight_decay": 0.0, "lr_scale": 1.0}]
    if not isinstance(getattr(model, "backbone", None), ConvNeXt):
        return [{"params": [p for _, p in named], "weight_decay": weight_decay, "lr_scale": 1.0}]
    groups: dict[tuple[int, bool], dict] = {}
    for name, parameter in named:
        decays = parameter.dim() > 1 and not name.endswith(".bias")
        layer = convnext_layer_id(name)
        group = groups.setdefault((layer, decays), {
            "params": [], "weight_decay": weight_decay if decays else 0.0,
            "lr_scale": CONVNEXT_DECAY_RATE ** (CONVNEXT_LAYERS + 1 - layer)})
        group["params"].append(parameter)
    return list(groups.values())
