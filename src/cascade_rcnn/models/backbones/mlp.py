"""The transformer blocks' MLP (Swin's and ViTDet's ViT): (..., C) -> Linear to ``hidden``, GELU
(erf), Linear back to C; keys ``fc1`` / ``fc2``, as both frameworks name them."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))
