"""Stochastic depth (Huang et al., 2016), as the transformer backbones train: a residual branch
dropped per image."""
from __future__ import annotations

import torch


def drop_path(branch: torch.Tensor, rate: float, training: bool) -> torch.Tensor:
    """Stochastic depth: in training drop the residual ``branch`` of each image with probability
    ``rate`` and scale the kept ones by 1 / (1 - rate); the identity otherwise. Draws from the
    global RNG (the trainer seeds it and restores it on resume)."""
    if not training or rate == 0:
        return branch
    keep = torch.rand((branch.shape[0],) + (1,) * (branch.dim() - 1), device=branch.device) >= rate
    return branch * keep.to(branch.dtype) / (1 - rate)


def drop_path_rates(rate: float, blocks: int) -> list[float]:
    """Each block's rate: linear from 0 at the first to ``rate`` at the last."""
    return torch.linspace(0, rate, blocks, device="cpu").tolist()
