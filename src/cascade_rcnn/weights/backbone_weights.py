"""ImageNet-initialised backbones, as MMDetection's ``init_cfg=dict(type='Pretrained', ...)``.

What the six files of the zoo hold (from mmengine's loader and the files' public key lists; no
file was downloaded to check):

- torchvision ``resnet50/101-<hash>.pth``: a bare state dict with torchvision's names, which are
  ours (and MMDetection's), plus the ImageNet classifier ``fc.*``.
- detectron2 caffe ``resnet50/101_msra-<hash>.pth``: MMDetection's ``detectron2pytorch.py`` output
  of the MSRA Caffe2 weights: ``{"state_dict": ...}`` already renamed to our names
  (``res2_0_branch2a`` -> ``layer1.0.conv1`` ...). Its BatchNorms were frozen affine layers, so
  their running mean / variance are stored as 0 / 1, and there is no ``num_batches_tracked``. The
  stem conv kept MSRA's bias (``conv1.bias``), for which neither MMDetection's nor Detectron2's
  ResNet has a slot (both ignore it); there is no classifier.
- open-mmlab ``resnext101_32x4d/64x4d-<hash>.pth``: ResNeXt names equal to ours (MMDetection's
  ResNeXt uses torchvision's names and widths), possibly wrapped in ``state_dict``
  and ``module.``-prefixed, plus ``fc.*``.

- mmpretrain ``convnext-tiny/small_3rdparty_32xb128-noema_in1k-<hash>.pth`` (the ConvNeXt rows):
  a classifier's state dict, ``backbone.*`` (our ConvNeXt's names) plus ``head.*``; MMDetection
  loads it with ``prefix='backbone.'``, and output norms the classifier lacks keep their
  initialisation (LayerNorm: 1 and 0).

- official Swin ``swin_tiny/small/base_patch4_window7_224.pth`` (SwinTransformer/storage v1.0.0,
  the Swin rows): ``{"model": ...}`` of the ImageNet classifier in the official layout (our Swin's
  names), plus ``head.*``, its final ``norm.*`` and the ``attn_mask`` buffers of the shifted blocks
  (fixed for 224 px); the official detection code loads it with ``strict=False``, so those are
  dropped and the per-output norms keep their initialisation. A file in MMDetection's Swin layout
  is converted on reading (the spec's ``to_own_layout``).

- MAE's ``mae_pretrain_vit_base/large/huge_p14to16.pth`` (Detectron2's ImageNetPretrained/MAE, the
  ViTDet rows' ``train.init_checkpoint``): ``{"model": ...}`` of the pre-trained encoder under
  timm's ViT names (ours), with a ``cls_token`` and a final ``norm.*`` that the detection ViT has
  no place for (dropped), and no relative position tables (kept at their zero initialisation, as
  Detectron2's loader leaves them). These names carry no hash, so the download is not
  hash-checked (``download.named_hash``); ``cascade-rcnn download`` can only fetch them.

mmengine loads all of them with ``strict=False`` after unwrapping ``state_dict`` and stripping
``module.`` (or taking the ``backbone.`` prefix of a classifier), renaming nothing else; so
nothing needs renaming here either. We load strictly: only a classifier's ``head.*`` and what the
backbone spec's ``imagenet_keys`` names (``models/backbones/hooks.py``) may be left over on either
side, and a missing ``num_batches_tracked`` keeps the model's (it has no effect on BatchNorm in
eval mode); anything else is an error naming the file.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..models.backbones import hooks
from ..models.config import ModelConfig
from . import checkpoint
from .checkpoint import CheckpointError, few

IMAGENET = "imagenet"
NONE = "none"
DETECTOR_PREFIXES = ("neck.", "rpn_head.", "roi_head.")
# A classifier file's keys: mmpretrain's are all backbone.* or head.*; the official Swin files' head is head.*.
CLASSIFIER_PREFIX, CLASSIFIER_HEAD = "backbone.", "head."


@dataclass(frozen=True)
class BackboneWeightsReport:
    """What ``load_backbone_weights`` did: tensors loaded, file keys dropped, model keys kept."""

    path: Path
    loaded: int
    dropped: tuple[str, ...]
    kept: tuple[str, ...]

    def summary(self) -> str:
        kept = f"; {len(self.kept)} not in the file, kept as initialised ({few(self.kept)})" if self.kept else ""
        return (f"backbone initialised from {self.path}: {self.loaded} tensors loaded; dropped "
                f"{', '.join(self.dropped) or 'nothing'} (no place in a detection backbone){kept}")


def backbone_weights_source(config: ModelConfig, choice: str | None, detector_weights: str | None
                            ) -> str | None:
    """The file or URL that initialises the backbone, or None.

    ``choice``: None (the default: the config's ImageNet weights unless detector weights are
    given; project configs have none and train from scratch), ``"imagenet"``, ``"none"``, or a
    path / URL.
    """
    if choice is None:
        return None if detector_weights else config.backbone.imagenet_url
    if choice == NONE:
        return None
    if detector_weights:
        raise ValueError(f"backbone weights ({choice}) and detector weights ({detector_weights}) both given: "
                         "the detector weights already hold a backbone; drop one")
    if choice == IMAGENET:
        if config.backbone.imagenet_url is None:
            raise ValueError(f"{config.name} has no published ImageNet backbone (it trains from scratch); "
                             "give a path or URL, or none")
        return config.backbone.imagenet_url
    return choice


def load_backbone_weights(backbone: nn.Module, source: str | os.PathLike) -> BackboneWeightsReport:
    """Copy an ImageNet classification checkpoint (path or URL) into ``backbone``, strictly.

    URLs are downloaded once into the cache with a progress bar and hash-checked; the file is read
    weights-only. Raises ``CheckpointError`` naming the file for anything but the expected
    leftovers (a classifier's head, the spec's ``imagenet_keys``, a missing ``num_batches_tracked``).
    """
    path = checkpoint.resolve(source, check_hash=True)
    spec = getattr(backbone, "config", None)  # a module of our own families holds its spec; None: the defaults
    state = hooks.to_own_layout(spec, checkpoint.state_dict_of(checkpoint.read(path), path))
    if any(key.startswith(DETECTOR_PREFIXES) for key in state):
        raise CheckpointError(f"{path}: a detector checkpoint (keys backbone.*, neck.*, ...), not ImageNet "
                              "backbone weights; pass it as the detector weights (--weights) instead")
    classifier = all(key.startswith((CLASSIFIER_PREFIX, CLASSIFIER_HEAD)) for key in state)
    if classifier:
        state = {key[len(CLASSIFIER_PREFIX):] if key.startswith(CLASSIFIER_PREFIX) else key: value
                 for key, value in state.items()}
    has_head = classifier or any(key.startswith(CLASSIFIER_HEAD) for key in state)  # a classifier's file
    own, keys = backbone.state_dict(), hooks.imagenet_keys(spec)
    dropped = tuple(key for key in state if key not in own and (key.startswith(CLASSIFIER_HEAD) or keys.drops(key)))
    kept = tuple(key for key in own if key not in state and (
        key.endswith("num_batches_tracked") or keys.file_lacks(key) or (has_head and keys.classifier_lacks(key))))
    missing = [key for key in own if key not in state and key not in kept]
    unexpected = [key for key in state if key not in own and key not in dropped]
    what = f"{spec.label} backbone" if spec is not None else "backbone of this kind"
    if missing or unexpected:
        raise CheckpointError(
            f"{path}: not ImageNet weights of a {what}: {len(missing)} keys missing (e.g. {few(missing)}), "
            f"{len(unexpected)} unexpected (e.g. {few(unexpected)}). Weights of another depth or kind?")
    mismatched = [key for key in own if key in state and state[key].shape != own[key].shape]
    if mismatched:
        details = ", ".join(f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}" for k in mismatched[:3])
        raise CheckpointError(f"{path}: {len(mismatched)} tensors have other shapes than a {what} ({details})")
    with torch.no_grad():
        for key, tensor in own.items():
            if key in state:
                tensor.copy_(state[key])
    return BackboneWeightsReport(path, len(own) - len(kept), dropped, kept)

