"""The box-regression loss of both frameworks: smooth L1, summed."""
from __future__ import annotations

import torch
import torch.nn.functional as F

# Detectron2 (fvcore's smooth_l1_loss) computes a beta below this as the plain L1 loss; its
# configs' SMOOTH_L1_BETA is 0.
L1_BELOW_BETA = 1e-5


def smooth_l1_sum(deltas: torch.Tensor, targets: torch.Tensor, beta: float) -> torch.Tensor:
    """Sum of smooth L1 (0.5 x^2 / beta below ``beta``, |x| - 0.5 beta above) over all elements:
    MMDetection's beta 1/9 (RPN) and 1 (RoI stages); Detectron2's, with 0 meaning L1, |x|."""
    if beta < L1_BELOW_BETA:
        return (deltas - targets).abs().sum()
    return F.smooth_l1_loss(deltas, targets, beta=beta, reduction="sum")
