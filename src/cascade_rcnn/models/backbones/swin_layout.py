"""Swin Transformer weights in MMDetection 3.x's layout -> the official layout our ``SwinTransformer``
uses (``swin.py``), and back.

Two layouts of the same network exist:

- official (SwinTransformer/Swin-Transformer-Object-Detection, and the ImageNet classification
  files of microsoft/Swin-Transformer): ``patch_embed.proj``, ``layers.{i}.blocks.{j}.attn.{qkv,
  proj,relative_position_bias_table,relative_position_index}``, ``mlp.fc1`` / ``mlp.fc2``,
  ``layers.{i}.downsample.{norm,reduction}``;
- MMDetection 3.x (``mmdet/models/backbones/swin.py``; mmpretrain's Swin names the same parts
  alike): ``patch_embed.projection``, ``stages.{i}.blocks.{j}.attn.w_msa.{...}``,
  ``ffn.layers.0.0`` / ``ffn.layers.1``, ``stages.{i}.downsample.{norm,reduction}``.

Renaming is not all: MMDetection's patch merging gathers each 2x2 neighbourhood with
``nn.Unfold``, whose 4C features run channel-major - feature ``c * 4 + 2 * dy + dx`` is channel c
at row offset dy, column offset dx - while the official merging concatenates four C-wide chunks
for (dy, dx) = (0,0), (1,0), (0,1), (1,1): feature ``(2 * dx + dy) * C + c``. The merging's
LayerNorm (weight, bias over 4C) and the reduction's input columns follow that order, so they are
permuted here (MMDetection's own ``swin_converter`` does the opposite permutation when it loads
official files). The relative position index is the same matrix in both (MMDetection computes it
another way), and everything else is renamed only.

The layout of a state dict is told from its keys (``attn.w_msa.`` is MMDetection's); keys
outside a Swin backbone (``neck.*``, heads, ...) pass unchanged.
"""
from __future__ import annotations

import re

import torch


def unfold_to_official(tensor: torch.Tensor) -> torch.Tensor:
    """Permute the last axis (4C features of a patch merging) from nn.Unfold's order to the
    official concatenation order (the module docstring)."""
    *lead, features = tensor.shape
    channels = features // 4
    by_offset = tensor.reshape(*lead, channels, 2, 2)  # [..., c, dy, dx]
    chunks = by_offset.transpose(-1, -2).reshape(*lead, channels, 4)  # [..., c, 2 * dx + dy]
    return chunks.transpose(-1, -2).reshape(*lead, features).contiguous()


def official_to_unfold(tensor: torch.Tensor) -> torch.Tensor:
    """``unfold_to_official``'s inverse: the official order -> nn.Unfold's."""
    *lead, features = tensor.shape
    channels = features // 4
    chunks = tensor.reshape(*lead, 2, 2, channels)  # [..., dx, dy, c]
    by_offset = chunks.permute(*range(len(lead)), -1, -2, -3)  # [..., c, dy, dx]
    return by_offset.reshape(*lead, features).contiguous()


MMDET_MARK = ".attn.w_msa."
_STAGE = re.compile(r"^((?:backbone\.)?)stages\.(\d+)\.(.+)$")
_PATCH_EMBED = re.compile(r"^((?:backbone\.)?)patch_embed\.projection\.(.+)$")
_RENAMES = ((".attn.w_msa.", ".attn."), (".ffn.layers.0.0.", ".mlp.fc1."), (".ffn.layers.1.", ".mlp.fc2."))


def is_mmdet_swin(state: dict[str, torch.Tensor]) -> bool:
    """Whether ``state`` holds a Swin backbone in MMDetection's (or mmpretrain's) layout."""
    return any(MMDET_MARK in key for key in state)


_MERGING = (".downsample.reduction.weight", ".downsample.norm.weight", ".downsample.norm.bias")
_OFFICIAL_STAGE = re.compile(r"^((?:backbone\.)?)layers\.(\d+)\.(.+)$")
_OFFICIAL_PATCH_EMBED = re.compile(r"^((?:backbone\.)?)patch_embed\.proj\.(.+)$")


def mmdet_to_official(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` (a detector's ``backbone.*`` keys, or a bare backbone's) with MMDetection's Swin
    names and patch-merging order turned into the official ones; other keys unchanged."""
    return _convert(state, to_official=True)


def official_to_mmdet(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The opposite conversion (what MMDetection's ``swin_converter`` does to an official file's
    backbone), for writing files MMDetection 3.x reads and for tests."""
    return _convert(state, to_official=False)


def _convert(state: dict[str, torch.Tensor], to_official: bool) -> dict[str, torch.Tensor]:
    stage_key, embed_key = (_STAGE, _PATCH_EMBED) if to_official else (_OFFICIAL_STAGE, _OFFICIAL_PATCH_EMBED)
    stages, embed_name = ("layers", "proj") if to_official else ("stages", "projection")
    reorder = unfold_to_official if to_official else official_to_unfold
    converted = {}
    for key, value in state.items():
        stage, embed = stage_key.match(key), embed_key.match(key)
        if embed:
            key = f"{embed.group(1)}patch_embed.{embed_name}.{embed.group(2)}"
        elif stage:
            prefix, index, rest = stage.groups()
            rest = "." + rest
            for mmdet, official in _RENAMES:
                rest = rest.replace(mmdet, official) if to_official else rest.replace(official, mmdet)
            if rest in _MERGING:
                value = reorder(value)
            key = f"{prefix}{stages}.{index}{rest}"
        converted[key] = value
    return converted


def to_official(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` in the official layout: converted when it is MMDetection's, else unchanged."""
    return mmdet_to_official(state) if is_mmdet_swin(state) else state
