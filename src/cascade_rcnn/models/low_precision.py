"""The network at bf16 / fp16 (``ComputePath.precision``): where the switch takes effect.

Inference (no gradients): every floating parameter and buffer is cast ONCE to the precision's
dtype and cached on the network (recast only when a weight changes: an optimizer step,
``load_state_dict``, ``.to()``); for each call the cached copies stand in for the float32
masters, so the image batch and every map stay in that dtype, channels-last, from the stem to the
heads, with no per-call casts of weights. The float32 masters are untouched: switching back to
fp32 gives fp32's detections again. Each copy keeps a reference to its master
(``float32_master``), so that the BatchNorm fold (``conv_bn``) is computed from the masters and
rounded once, as autocast would: folding the already rounded copies rounds twice, which raised
the relative error of a ResNet's C5 map from 8.8 % to 11.8 % on a random-weight model.

Training (gradients on): autocast, so the optimizer's master weights and the loss terms stay
float32 (with a gradient scaler for fp16, ``engine/train.py``).

What stays float32 in both, and why: anchors and proposals (``rpn.propose`` takes the RPN's
outputs as float32), box decoding and each cascade stage's refined boxes (a bf16 box coordinate
near 800 px is only good to 4 px), the class scores' softmax and the mask sigmoid (``cascade.py``
casts the logits), NMS, and the mask paste (``outputs/``). RoIAlign samples the low-precision maps
at float32 RoI coordinates and returns features in the maps' dtype (``ops/roi_align.py``).
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import nn

from ..ops.compute_path import ComputePath, check_precision


@contextlib.contextmanager
def at_precision(network: nn.Module, path: ComputePath) -> Iterator[None]:
    """Run ``network`` inside this block at ``path.precision`` (see the module docstring)."""
    if path.precision == "fp32":
        yield
        return
    device = next(network.parameters()).device
    check_precision(path.precision, device)
    if path.exporting:
        raise ValueError(f"ONNX export runs at fp32; the model's precision is {path.precision}")
    if torch.is_grad_enabled():
        with torch.autocast(device.type, dtype=path.dtype):
            yield
        return
    swapped = []
    try:
        for table, name, copy in _cast_copies(network, path.dtype):
            swapped.append((table, name, table[name]))
            table[name] = copy
        yield
    finally:
        for table, name, master in swapped:
            table[name] = master


def _cast_copies(network: nn.Module, dtype: torch.dtype) -> list[tuple[dict, str, torch.Tensor]]:
    """(a module's ``_parameters`` or ``_buffers``, name, cast copy) for every floating tensor,
    cached on ``network`` until one of the masters changes (data pointer or version counter)."""
    masters = [(table, name, tensor) for module in network.modules()
               for table in (module._parameters, module._buffers)
               for name, tensor in table.items() if tensor is not None and tensor.is_floating_point()]
    key = (dtype, tuple((t.data_ptr(), 0 if t.is_inference() else t._version) for *_, t in masters))
    cached = network.__dict__.get("_low_precision_cache")
    if cached is None or cached[0] != key:
        with torch.no_grad():
            copies = [(table, name, _cast(tensor, dtype)) for table, name, tensor in masters]
        cached = (key, copies)
        network.__dict__["_low_precision_cache"] = cached  # a plain attribute: never in the state dict
    return cached[1]


def _cast(master: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    copy = master.detach().to(dtype)
    copy.float32_master = master
    return copy


def float32_master(tensor: torch.Tensor) -> torch.Tensor:
    """The float32 tensor a low-precision copy was cast from (the tensor itself otherwise)."""
    return getattr(tensor, "float32_master", tensor)
