"""Optimizer parameter groups, by the rules of the model's backbone spec (``models/backbones/hooks.py``):
each parameter's learning-rate factor (``lr_scale``, e.g. ConvNeXt's layer-wise decay) and whether
weight decay applies to it (e.g. none on Swin's norms). A backbone without rules gives one group.

The scale is kept in each group (``lr_scale``) and applied on top of the schedule's lr at every step.
"""
from __future__ import annotations

from torch import nn

from ..models.backbones import hooks


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """The trainable parameters of ``model`` (a ``CascadeRCNN``) as optimizer groups, one per
    (lr_scale, decays or not), in the order their first parameters come."""
    spec = model.config.backbone
    groups: dict[tuple[float, bool], dict] = {}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        scale, decays = hooks.lr_scale(spec, name), hooks.weight_decays(spec, name, parameter)
        group = groups.setdefault((scale, decays), {
            "params": [], "weight_decay": weight_decay if decays else 0.0, "lr_scale": scale})
        group["params"].append(parameter)
    return list(groups.values())
