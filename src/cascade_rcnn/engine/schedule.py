"""Learning-rate schedule: linear warm-up, then x0.1 steps at given epochs (MMDetection's 1x/20e/3x)."""
from __future__ import annotations

from dataclasses import dataclass

SCHEDULES = {"1x": (12, (8, 11)), "20e": (20, (16, 19)), "3x": (36, (27, 33))}  # epochs, decay epochs


@dataclass(frozen=True)
class LRSchedule:
    """lr 0.02 per 16 images (scaled linearly with the real batch), warm-up 500 iterations from
    0.001x, x0.1 after each epoch in ``steps``."""

    base_lr: float
    steps: tuple[int, ...]
    warmup_iters: int = 500
    warmup_ratio: float = 0.001
    gamma: float = 0.1

    def lr(self, epoch: int, iteration: int) -> float:
        """lr at 0-based ``epoch`` and global ``iteration``."""
        lr = self.base_lr * self.gamma ** sum(epoch >= step for step in self.steps)
        if iteration < self.warmup_iters:
            lr *= 1 - (1 - self.warmup_ratio) * (1 - iteration / self.warmup_iters)
        return lr


def scaled_lr(total_batch_size: int, lr_per_16: float = 0.02) -> float:
    """The linear scaling rule: ``lr_per_16`` (SGD: 0.02) for 16 images per step."""
    return lr_per_16 * total_batch_size / 16
