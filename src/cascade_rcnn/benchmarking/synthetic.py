"""Stand-ins for what benchmarks need but cannot download: a natural-looking picture, and random
weights whose detections spread like a trained model's.

Uniform noise and uncalibrated random weights make detectors pathologically slow or fast (every
proposal scores alike, one class wins everywhere; ``../shared/NOTES.md``), so timings made with
them say little about real use. These keep the structure a trained model has: activations of order
one, most RoIs are background, a few score high for a few classes, boxes move a little per
stage, mask logits are spread around 0.
"""
from __future__ import annotations

import cv2
import numpy as np
import torch
from torch import nn

from ..inference.predictor import CascadeRCNN
from ..ops.compute_path import EXACT

# Target spread of the prediction layers' outputs over the RoIs of a scene.
CLASS_LOGIT_STD = 2.0
BACKGROUND_LOGIT = 4.0  # most RoIs are background, as after training
DELTA_STD = 0.5  # normalised box deltas (x the stage's stds: 5 % of the box at stage 1)
MASK_LOGIT_STD = 3.0
# A ViT's relative position tables (Detectron2 and MAE leave them zero; a trained model's are
# not): entries drawn with this standard deviation over the square root of the head width.
REL_POS_STD = 0.5


def drawn_scene(height: int = 480, width: int = 640, seed: int = 0) -> np.ndarray:
    """(height, width, 3) RGB uint8: a dozen filled shapes of many sizes over a smooth gradient
    with mild sensor noise - edges, flat regions and objects, like a photo."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    image = np.stack([255 * x / width, 255 * y / height, 128 + 60 * np.sin((x + y) / 90)], axis=2)
    image = np.clip(image + rng.normal(0, 6, image.shape), 0, 255).astype(np.uint8)
    side = min(height, width)
    for _ in range(12):
        center = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        size = int(rng.integers(side // 40 + 2, side // 4))
        color = rng.integers(0, 255, 3).tolist()
        if rng.random() < 0.5:
            cv2.circle(image, center, size, color, -1)
        else:
            cv2.rectangle(image, (center[0] - size, center[1] - size // 2),
                          (center[0] + size, center[1] + size // 2), color, -1)
    return image


@torch.no_grad()
def spread_random_weights(model: CascadeRCNN, image: np.ndarray, seed: int = 0) -> CascadeRCNN:
    """Calibrate ``model``'s random weights on ``image`` in place, as ``../shared/golden``'s
    checkpoint was: BatchNorm statistics measured on the image, then the prediction layers
    rescaled so that the class logits, box deltas and mask logits have the spreads above (RPN,
    FPN and the other layers stay as initialised). A ViT's all-zero relative position tables
    (their initialisation) are drawn first (``REL_POS_STD``), so that the attention bias counts.

    Stages are calibrated in order, each on the RoIs the calibrated previous stages produce;
    the mask heads on the detections of the calibrated cascade (one prediction per stage). All of
    it runs on the exact path, so the weights are the same whichever path ``model`` is set to;
    seeded by ``seed`` (and by the torch seed the model was built under).
    """
    generator = torch.Generator().manual_seed(seed)
    path, model.path = model.path, EXACT
    try:
        _draw_relative_positions(model, generator)
        _calibrate_batchnorm(model, image)
        box_heads, mask_heads = model.roi_head.bbox_head, model.roi_head.mask_head or []
        for stage, head in enumerate(box_heads):
            last = stage == len(box_heads) - 1
            hidden, *mask_features = _capture(model, image, [head.fc_cls] + (list(mask_heads) if last else []))
            _fit(head.fc_cls, hidden, CLASS_LOGIT_STD, generator)
            head.fc_cls.bias[:-1] += torch.randn(head.fc_cls.bias.shape[0] - 1, generator=generator).to(
                head.fc_cls.bias.device)
            head.fc_cls.bias[-1] += BACKGROUND_LOGIT
            _fit(head.fc_reg, hidden, DELTA_STD, generator)
        for head, features in zip(mask_heads, mask_features):
            conv = head.conv_logits  # (classes, C, 1, 1) on (K, C, 28, 28): a linear map per pixel
            pixels = features.permute(0, 2, 3, 1).reshape(-1, features.shape[1])[::97]
            weight = torch.empty(conv.weight.shape[:2])
            _fit_weights(conv.weight, conv.bias, weight, pixels, MASK_LOGIT_STD, generator)
    finally:
        model.path = path
    return model


def _draw_relative_positions(model: CascadeRCNN, generator: torch.Generator) -> None:
    """Random entries for the backbone's relative position tables (``rel_pos_h`` / ``rel_pos_w``,
    (2 L - 1, head width)) that are all zero."""
    for name, table in model.backbone.named_parameters():
        if name.rsplit(".", 1)[-1] in ("rel_pos_h", "rel_pos_w") and not table.any():
            drawn = torch.randn(table.shape, generator=generator) * (REL_POS_STD / table.shape[1] ** 0.5)
            table.copy_(drawn.to(table.device, table.dtype))


def _calibrate_batchnorm(model: CascadeRCNN, image: np.ndarray) -> None:
    """BatchNorm statistics measured on ``image``, layer by layer, as training leaves them: one
    pass through the backbone with every BatchNorm in training mode, where each one normalises
    with the statistics of its own input and keeps them (``momentum=None``: exactly this image's),
    so the next one measures the normalised activations of the layers before it. Activations
    stay of order one through the backbone; statistics drawn at random instead let them grow
    layer by layer (to ~1e4 in caffe style, where every score saturates at 1.0), which hides
    how much float rounding moves a trained model's detections (BENCHMARKS.md)."""
    norms = [m for m in model.backbone.modules() if isinstance(m, nn.BatchNorm2d)]
    saved = [(norm.momentum, norm.training) for norm in norms]
    _, tensor = model.preprocess(image)
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # a cumulative average: exactly this image's statistics
        norm.train()
    try:
        model.backbone(tensor[None].to(model.device), EXACT)
    finally:
        for norm, (momentum, training) in zip(norms, saved):
            norm.momentum = momentum
            norm.train(training)


def _capture(model: CascadeRCNN, image: np.ndarray, layers: list[torch.nn.Module]) -> list[torch.Tensor]:
    """What each layer sees while ``model`` predicts ``image`` with every head running: the input
    of a linear layer; for a ``MaskHead``, the features its class-logit conv reads."""
    seen: dict[int, torch.Tensor] = {}
    handles = []
    for index, layer in enumerate(layers):
        if isinstance(layer, torch.nn.Linear):
            hook = (lambda i: lambda module, args: seen.setdefault(i, args[0].float().cpu()))(index)
            handles.append(layer.register_forward_pre_hook(hook))
        else:
            hook = (lambda i: lambda module, args, out: seen.setdefault(i, out.relu().float().cpu()))(index)
            handles.append(layer.upsample.register_forward_hook(hook))
    try:
        model.predict(image, score_thr=0.0)
    finally:
        for handle in handles:
            handle.remove()
    return [seen[i] for i in range(len(layers))]


def _fit(linear: torch.nn.Linear, inputs: torch.Tensor, output_std: float, generator: torch.Generator) -> None:
    """Random weights for ``linear`` so that its outputs on ``inputs`` (N, in) are centred with
    standard deviation ``output_std``."""
    _fit_weights(linear.weight, linear.bias, torch.empty(linear.weight.shape), inputs, output_std, generator)


def _fit_weights(weight_out: torch.Tensor, bias_out: torch.Tensor, weight: torch.Tensor, inputs: torch.Tensor,
                 output_std: float, generator: torch.Generator) -> None:
    weight.normal_(generator=generator)
    outputs = inputs @ weight.T
    scale = output_std / (outputs - outputs.mean(0)).std().clamp(min=1e-12)
    weight_out.copy_((weight * scale).reshape(weight_out.shape))
    bias_out.copy_(-outputs.mean(0) * scale)
