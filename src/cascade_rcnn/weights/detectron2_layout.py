"""Detectron2's state-dict names for a ResNet-FPN or ViTDet Cascade (Mask) R-CNN, mapped onto ours
(MMDetection's layout; ViTDet's ViT and simple feature pyramid keep Detectron2's names under our
``backbone.`` / ``neck.``), as one table of (regular expression, replacement) rows.

The tensors keep their shapes and layouts: the same convolutions and linear layers, the classifier's
background column last on both sides, class-agnostic box regression (4 outputs), RPN outputs
anchor by anchor.
Detectron2's one mask head (run on the final boxes) becomes our stage-0 mask head. Its frozen
BatchNorms store weight, bias, running_mean and running_var but no ``num_batches_tracked``; that
counter (read by neither side at inference, nor with a fixed momentum in training) is set to 0,
what a fresh BatchNorm holds. ``pixel_mean`` / ``pixel_std`` (older files keep them as entries)
are input settings, not weights: they come back separately.
"""
from __future__ import annotations

import os
import re
from collections.abc import Iterable

import torch

from .errors import CheckpointError

# Top-level modules only Detectron2's GeneralizedRCNN has (ours: backbone, neck, rpn_head, roi_head).
DETECTRON2_PREFIXES = ("backbone.bottom_up.", "proposal_generator.", "roi_heads.")
INPUT_ENTRIES = ("pixel_mean", "pixel_std")
# Buffers that hold settings, not weights: LVIS rows' federated-loss class weights (our cascade
# spec's ``fed_loss_weights`` holds them, from the config)
SETTING_ENTRIES = re.compile(r"roi_heads\.box_predictor\.\d+\.fed_loss_cls_weights")
_BN = r"(weight|bias|running_mean|running_var|num_batches_tracked)"
RESNET_STAGES = ((2, 1), (3, 2), (4, 3), (5, 4))  # Detectron2's res2..res5 are our layer1..layer4
FPN_LEVELS = ((2, 0), (3, 1), (4, 2), (5, 3))  # its fpn_*2..5 (C2..C5's convs) are our *_convs.0..3
BOX_FCS = ((1, 0), (2, 1))  # its box heads' fc1, fc2 are our shared_fcs.0, .1
BOX_CONVS = ((1, 0), (2, 1), (3, 2), (4, 3))  # its box heads' conv1..4 (ViTDet's, with LN) are our shared_convs.0..3
MASK_CONVS = ((1, 0), (2, 1), (3, 2), (4, 3))  # its mask_fcn1..4 are our convs.0..3


def _each(pairs: tuple[tuple[int, int], ...], pattern: str, replacement: str) -> list[tuple[str, str]]:
    """One row per (theirs, ours) index pair, put in for ``{d2}`` / ``{ours}``."""
    return [(pattern.replace("{d2}", str(theirs)), replacement.replace("{ours}", str(ours)))
            for theirs, ours in pairs]


# Each row's pattern must match a whole Detectron2 key; \1, \2 are its groups. For the shapes the two
# sides hold, see tests/data/detectron2_keys (the R-50 FPN 3x zoo row, the R-18 golden model).
RULES: tuple[tuple[str, str], ...] = (
    (r"backbone\.bottom_up\.stem\.conv1\.weight", "backbone.conv1.weight"),
    (rf"backbone\.bottom_up\.stem\.conv1\.norm\.{_BN}", r"backbone.bn1.\1"),
    *_each(RESNET_STAGES, r"backbone\.bottom_up\.res{d2}\.(\d+)\.conv([123])\.weight",
           r"backbone.layer{ours}.\1.conv\2.weight"),
    *_each(RESNET_STAGES, rf"backbone\.bottom_up\.res{{d2}}\.(\d+)\.conv([123])\.norm\.{_BN}",
           r"backbone.layer{ours}.\1.bn\2.\3"),
    *_each(RESNET_STAGES, r"backbone\.bottom_up\.res{d2}\.(\d+)\.shortcut\.weight",
           r"backbone.layer{ours}.\1.downsample.0.weight"),
    *_each(RESNET_STAGES, rf"backbone\.bottom_up\.res{{d2}}\.(\d+)\.shortcut\.norm\.{_BN}",
           r"backbone.layer{ours}.\1.downsample.1.\2"),
    *_each(FPN_LEVELS, r"backbone\.fpn_lateral{d2}\.(weight|bias)", r"neck.lateral_convs.{ours}.conv.\1"),
    *_each(FPN_LEVELS, r"backbone\.fpn_output{d2}\.(weight|bias)", r"neck.fpn_convs.{ours}.conv.\1"),
    # ViTDet: its ViT (``backbone.net``) is our backbone under the same names (models/backbones/vit.py),
    # its simple feature pyramid our neck, also under the same names (necks/simple_pyramid.py).
    (r"backbone\.net\.(.+)", r"backbone.\1"),
    (r"backbone\.(simfp_\d+\..+)", r"neck.\1"),
    (r"proposal_generator\.rpn_head\.conv\.(weight|bias)", r"rpn_head.rpn_conv.\1"),
    (r"proposal_generator\.rpn_head\.conv\.conv(\d+)\.(weight|bias)", r"rpn_head.rpn_conv.\1.\2"),  # 2+ convs
    (r"proposal_generator\.rpn_head\.objectness_logits\.(weight|bias)", r"rpn_head.rpn_cls.\1"),
    (r"proposal_generator\.rpn_head\.anchor_deltas\.(weight|bias)", r"rpn_head.rpn_reg.\1"),
    *_each(BOX_FCS, r"roi_heads\.box_head\.(\d+)\.fc{d2}\.(weight|bias)",
           r"roi_head.bbox_head.\1.shared_fcs.{ours}.\2"),
    *_each(BOX_CONVS, r"roi_heads\.box_head\.(\d+)\.conv{d2}\.weight", r"roi_head.bbox_head.\1.shared_convs.{ours}.conv.weight"),
    *_each(BOX_CONVS, r"roi_heads\.box_head\.(\d+)\.conv{d2}\.norm\.(weight|bias)",
           r"roi_head.bbox_head.\1.shared_convs.{ours}.norm.\2"),
    (r"roi_heads\.box_predictor\.(\d+)\.cls_score\.(weight|bias)", r"roi_head.bbox_head.\1.fc_cls.\2"),
    (r"roi_heads\.box_predictor\.(\d+)\.bbox_pred\.(weight|bias)", r"roi_head.bbox_head.\1.fc_reg.\2"),
    *_each(MASK_CONVS, r"roi_heads\.mask_head\.mask_fcn{d2}\.(weight|bias)",
           r"roi_head.mask_head.0.convs.{ours}.conv.\1"),
    *_each(MASK_CONVS, r"roi_heads\.mask_head\.mask_fcn{d2}\.norm\.(weight|bias)",
           r"roi_head.mask_head.0.convs.{ours}.norm.\1"),
    (r"roi_heads\.mask_head\.deconv\.(weight|bias)", r"roi_head.mask_head.0.upsample.\1"),
    (r"roi_heads\.mask_head\.predictor\.(weight|bias)", r"roi_head.mask_head.0.conv_logits.\1"),
)
_COMPILED = tuple((re.compile(pattern), replacement) for pattern, replacement in RULES)


def is_detectron2(keys: Iterable[str]) -> bool:
    """Whether state-dict ``keys`` are Detectron2's (a module only its GeneralizedRCNN has)."""
    return any(key.startswith(DETECTRON2_PREFIXES) for key in keys)


def our_name(key: str) -> str | None:
    """The name in our layout of Detectron2's ``key`` (the first row matching it whole), or None."""
    for pattern, replacement in _COMPILED:
        match = pattern.fullmatch(key)
        if match:
            return match.expand(replacement)
    return None


def to_our_layout(state: dict[str, torch.Tensor], path: str | os.PathLike = "checkpoint"
                  ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Detectron2's ``state`` under our names, and its entries that are not weights (``pixel_mean``,
    ``pixel_std``, ``SETTING_ENTRIES``; those present). Every other key must have a row:
    ``CheckpointError`` naming those that do not. Each BatchNorm without ``num_batches_tracked``
    gets a 0."""
    extras = {key: tensor for key, tensor in state.items() if key in INPUT_ENTRIES or SETTING_ENTRIES.fullmatch(key)}
    ours, unmapped = {}, []
    for key, tensor in state.items():
        name = our_name(key)
        if name is not None:
            ours[name] = tensor
        elif key not in extras:
            unmapped.append(key)
    if unmapped:
        shown = ", ".join(unmapped[:3]) + (", ..." if len(unmapped) > 3 else "")
        raise CheckpointError(f"{path}: {len(unmapped)} Detectron2 keys have no counterpart in our "
                              f"Cascade (Mask) R-CNN (ResNet-FPN or ViTDet): {shown}")
    for norm in [name[:-len("running_mean")] for name in ours if name.endswith(".running_mean")]:
        ours.setdefault(norm + "num_batches_tracked", torch.zeros((), dtype=torch.long))
    return ours, extras
