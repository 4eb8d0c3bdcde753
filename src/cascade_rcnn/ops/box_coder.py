"""Delta (dx, dy, dw, dh) <-> box (x1, y1, x2, y2) encoding, as MMDetection's DeltaXYWHBBoxCoder.

Widths are ``x2 - x1`` (no +1). The operation order of :func:`decode` is MMDetection's, so that
decoded boxes agree to the last bit.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

# MMDetection clamps dw, dh to |log(16 / 1000)|: a box grows or shrinks at most 62.5x per step.
MAX_LOG_RATIO = abs(math.log(16 / 1000))


@dataclass(frozen=True)
class BoxCoder:
    """Normalises deltas by per-coordinate ``stds`` (means are zero in every Cascade config).

    The RPN uses stds (1, 1, 1, 1); the three cascade stages use tighter ones, because each stage
    sees proposals that are already closer to the objects.
    """

    stds: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0)

    def encode(self, boxes: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Deltas (N, 4) that move ``boxes`` (N, 4) onto ``targets`` (N, 4)."""
        pxy = (boxes[:, :2] + boxes[:, 2:]) * 0.5
        pwh = boxes[:, 2:] - boxes[:, :2]
        gxy = (targets[:, :2] + targets[:, 2:]) * 0.5
        gwh = targets[:, 2:] - targets[:, :2]
        deltas = torch.cat([(gxy - pxy) / pwh, torch.log(gwh / pwh)], dim=1)
        return deltas / deltas.new_tensor(self.stds)

    def decode(self, boxes: torch.Tensor, deltas: torch.Tensor, max_shape: torch.Tensor | None = None
               ) -> torch.Tensor:
        """Apply ``deltas`` (N, 4) to ``boxes`` (N, 4); clip to ``max_shape``, an (N, 2) or (1, 2)
        tensor of (height, width) per box (RoIs of several images at once) or for all."""
        deltas = deltas * deltas.new_tensor(self.stds)
        pxy = (boxes[:, :2] + boxes[:, 2:]) * 0.5
        pwh = boxes[:, 2:] - boxes[:, :2]
        dxy_wh = pwh * deltas[:, :2]
        dwh = deltas[:, 2:].clamp(min=-MAX_LOG_RATIO, max=MAX_LOG_RATIO)
        gxy = pxy + dxy_wh
        gwh = pwh * dwh.exp()
        decoded = torch.cat([gxy - gwh * 0.5, gxy + gwh * 0.5], dim=1)
        if max_shape is None:
            return decoded
        return clip_boxes(decoded, max_shape)


def clip_boxes(boxes: torch.Tensor, max_shape: torch.Tensor) -> torch.Tensor:
    """Clamp x to [0, width] and y to [0, height]; ``max_shape`` (N, 2) or (1, 2) (height, width)."""
    upper = max_shape.to(boxes.dtype).flip(1).repeat(1, 2)  # w, h, w, h
    return torch.maximum(torch.minimum(boxes, upper), boxes.new_zeros(()))


# Detectron2 clamps dw, dh from above only, at log(1000 / 16).
DETECTRON2_SCALE_CLAMP = math.log(1000.0 / 16)


@dataclass(frozen=True)
class WeightedBoxCoder:
    """Detectron2's ``Box2BoxTransform``: deltas DIVIDED by per-coordinate ``weights`` (10, 10, 5, 5),
    (20, 20, 10, 10), (30, 30, 15, 15) for the cascade stages; (1, 1, 1, 1) for the RPN), centres
    as ``x1 + 0.5 * w``, dw and dh clamped from above only, in Detectron2's order of operations,
    so that decoded boxes agree to the last bit. Same interface as :class:`BoxCoder`."""

    weights: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0)

    def encode(self, boxes: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Deltas (N, 4) that move ``boxes`` (N, 4) onto ``targets`` (N, 4)."""
        wx, wy, ww, wh = self.weights
        widths, heights = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
        ctr_x, ctr_y = boxes[:, 0] + 0.5 * widths, boxes[:, 1] + 0.5 * heights
        target_widths, target_heights = targets[:, 2] - targets[:, 0], targets[:, 3] - targets[:, 1]
        target_x, target_y = targets[:, 0] + 0.5 * target_widths, targets[:, 1] + 0.5 * target_heights
        return torch.stack([wx * (target_x - ctr_x) / widths, wy * (target_y - ctr_y) / heights,
                            ww * torch.log(target_widths / widths), wh * torch.log(target_heights / heights)], dim=1)

    def decode(self, boxes: torch.Tensor, deltas: torch.Tensor, max_shape: torch.Tensor | None = None
               ) -> torch.Tensor:
        """Apply ``deltas`` (N, 4) to ``boxes`` (N, 4); clip to ``max_shape`` ((N, 2) or (1, 2) (h, w))
        afterwards, as Detectron2 clips the boxes it passes on."""
        wx, wy, ww, wh = self.weights
        deltas = deltas.float()
        boxes = boxes.to(deltas.dtype)
        widths, heights = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
        ctr_x, ctr_y = boxes[:, 0] + 0.5 * widths, boxes[:, 1] + 0.5 * heights
        dw = torch.clamp(deltas[:, 2] / ww, max=DETECTRON2_SCALE_CLAMP)
        dh = torch.clamp(deltas[:, 3] / wh, max=DETECTRON2_SCALE_CLAMP)
        pred_x, pred_y = deltas[:, 0] / wx * widths + ctr_x, deltas[:, 1] / wy * heights + ctr_y
        pred_w, pred_h = torch.exp(dw) * widths, torch.exp(dh) * heights
        decoded = torch.stack([pred_x - 0.5 * pred_w, pred_y - 0.5 * pred_h, pred_x + 0.5 * pred_w,
                               pred_y + 0.5 * pred_h], dim=1)
        return decoded if max_shape is None else clip_boxes(decoded, max_shape)
