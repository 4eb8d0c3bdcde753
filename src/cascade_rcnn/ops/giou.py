"""Generalized IoU loss (Rezatofighi et al., 2019) of aligned box pairs, as MMDetection's
``GIoULoss`` computes it: unions and enclosing areas floored at ``eps`` = 1e-6."""
from __future__ import annotations

import torch


def giou_loss(boxes: torch.Tensor, targets: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """(N,) ``1 - GIoU`` of (N, 4) xyxy ``boxes`` against (N, 4) ``targets``, pair by pair."""
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    target_area = (targets[:, 2] - targets[:, 0]) * (targets[:, 3] - targets[:, 1])
    inner = (torch.minimum(boxes[:, 2:], targets[:, 2:]) - torch.maximum(boxes[:, :2], targets[:, :2])).clamp(min=0)
    overlap = inner[:, 0] * inner[:, 1]
    floor = boxes.new_tensor([eps])
    union = torch.maximum(area + target_area - overlap, floor)
    outer = (torch.maximum(boxes[:, 2:], targets[:, 2:]) - torch.minimum(boxes[:, :2], targets[:, :2])).clamp(min=0)
    enclosing = torch.maximum(outer[:, 0] * outer[:, 1], floor)
    return 1 - (overlap / union - (enclosing - union) / enclosing)
