"""Convolution + frozen BatchNorm, folded into one convolution.

In eval mode BatchNorm is a constant per-channel affine map, ``y = x * scale + shift``, so
``bn(conv(x)) == conv'(x)`` with ``conv'`` the convolution whose weight is scaled by ``scale``
and whose bias is ``shift``: one op instead of two, and one pass over the activations less
(forward and backward). The result equals the unfolded pair up to float rounding (not bit for
bit), so the exact path keeps the two ops.

Training with frozen statistics (``norm_eval``) folds too: the fold is recomputed each step
inside the autograd graph, so the conv weight and BatchNorm's affine parameters get their
gradients through it. Where nothing needs gradients (inference, frozen stages) the folded
weights are cached; ``ResNet.train()``/``eval()`` (which ``predict`` calls) and ``.to()`` drop
the cache, and a changed version counter or storage of a parameter or buffer (an optimizer
step, ``load_state_dict``) refreshes it.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..ops.compute_path import ComputePath
from .low_precision import float32_master


def conv_bn(x: torch.Tensor, conv: nn.Conv2d, bn: nn.BatchNorm2d, path: ComputePath,
            residual: torch.Tensor | None = None, relu: bool = False) -> torch.Tensor:
    """``bn(conv(x)) [+ residual] [then ReLU]``, folded into one convolution when
    ``path.fold_batchnorm`` and BatchNorm is frozen (eval mode). The ReLU runs in place: neither
    BatchNorm's nor a conv's backward needs its output."""
    if not path.fold_batchnorm or bn.training:
        out = bn(conv(x))
        out = out if residual is None else out + residual
        return out.relu_() if relu else out
    trains = torch.is_grad_enabled() and any(t is not None and t.requires_grad
                                             for t in (conv.weight, conv.bias, bn.weight, bn.bias))
    weight, bias = _fold(conv, bn) if trains else _folded(conv, bn)  # frozen stages: the cached fold
    out = F.conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups)
    if residual is not None:
        out += residual
    return out.relu_() if relu else out


def _fold(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """The folded (weight, bias), computed from the current parameters (differentiable); for
    bf16/fp16 copies (``low_precision.py``) from their float32 masters, rounded once to the
    conv's dtype."""
    weight, conv_bias, running_mean, running_var, bn_weight, bn_bias = (
        None if t is None else float32_master(t)
        for t in (conv.weight, conv.bias, bn.running_mean, bn.running_var, bn.weight, bn.bias))
    scale = running_var.add(bn.eps).rsqrt()
    if bn_weight is not None:
        scale = scale * bn_weight
    shift = -running_mean * scale
    if bn_bias is not None:
        shift = shift + bn_bias
    if conv_bias is not None:
        shift = shift + conv_bias * scale
    dtype = conv.weight.dtype
    return (weight * scale.reshape(-1, 1, 1, 1)).to(dtype), shift.to(dtype)


def _folded(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """``_fold`` cached on ``bn`` until a parameter or buffer changes (inference)."""
    tensors = [t for t in (conv.weight, conv.bias, bn.weight, bn.bias, bn.running_mean, bn.running_var)
               if t is not None]
    # A tensor's version counter moves on in-place changes (not on ``.data`` edits, hence the
    # cache drop in ``ResNet.train``); tensors made under inference_mode have none.
    key = tuple((t.data_ptr(), 0 if t.is_inference() else t._version, t.dtype) for t in tensors)
    cached = getattr(bn, "_folded_cache", None)
    if cached is None or cached[0] != key:
        cached = (key, *_fold(conv, bn))
        bn._folded_cache = cached  # a plain attribute: never part of the state dict
    return cached[1], cached[2]


def drop_folded(module: nn.Module) -> None:
    """Forget the folded weights cached under ``module`` (they are recomputed on next use)."""
    for child in module.modules():
        if isinstance(child, nn.BatchNorm2d):
            child.__dict__.pop("_folded_cache", None)
