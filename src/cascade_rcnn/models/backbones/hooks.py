"""The optional hooks of a backbone spec (the contract: ``models/backbones/__init__.py``) and what a
spec without them gets, in one place: training and weight loading ask the spec, never which family
it is.

- ``lr_scale(name) -> float``: the learning-rate factor of the detector's parameter ``name``
  (default 1.0: one learning rate);
- ``weight_decays(name, parameter) -> bool``: whether weight decay applies to it (default: yes,
  to every parameter);
- ``to_own_layout(state) -> state``: a checkpoint's tensors (a detector's, keys under
  ``backbone.``, or a bare backbone's) with the backbone's keys in the layout its module uses
  (default: unchanged);
- ``imagenet_keys``: an ``ImageNetKeys``, the keys of the family's ImageNet classification files
  that do not pair up with the detection backbone's (default: none).
"""
from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase

import torch


@dataclass(frozen=True)
class ImageNetKeys:
    """Keys, as ``fnmatch`` patterns on the backbone's names, that an ImageNet classification file
    and the detection backbone do not share."""

    unused: tuple[str, ...] = ()  # in the file, with no slot in the detection backbone: dropped
    not_in_classifier: tuple[str, ...] = ()  # the backbone's, missing from a classifier's file: kept as initialised
    not_in_file: tuple[str, ...] = ()  # the backbone's, missing from every such file: kept as initialised

    def drops(self, key: str) -> bool:
        """Whether the file's ``key`` has no slot in the detection backbone."""
        return any(fnmatchcase(key, pattern) for pattern in self.unused)

    def classifier_lacks(self, key: str) -> bool:
        """Whether the backbone's ``key`` is one that a classifier's file does not hold."""
        return any(fnmatchcase(key, pattern) for pattern in self.not_in_classifier)

    def file_lacks(self, key: str) -> bool:
        """Whether the backbone's ``key`` is one that no file of the family holds."""
        return any(fnmatchcase(key, pattern) for pattern in self.not_in_file)


def lr_scale(spec: object, name: str) -> float:
    """``spec.lr_scale(name)``, or 1.0."""
    return getattr(spec, "lr_scale", lambda _: 1.0)(name)


def weight_decays(spec: object, name: str, parameter: torch.Tensor) -> bool:
    """``spec.weight_decays(name, parameter)``, or True."""
    return getattr(spec, "weight_decays", lambda *_: True)(name, parameter)


def to_own_layout(spec: object, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``spec.to_own_layout(state)``, or ``state`` unchanged."""
    return getattr(spec, "to_own_layout", lambda same: same)(state)


def imagenet_keys(spec: object) -> ImageNetKeys:
    """``spec.imagenet_keys``, or an ``ImageNetKeys`` naming none."""
    return getattr(spec, "imagenet_keys", ImageNetKeys())
