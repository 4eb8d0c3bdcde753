"""Learning-rate schedule: linear warm-up, then x0.1 steps at given epochs (MMDetection's 1x/20e/3x,
ViTDet's 100ep/75ep, Detectron2's 3x)."""
from __future__ import annotations

from dataclasses import dataclass

# epochs, decay epochs. ViTDet's (Detectron2's projects/ViTDet): 100 epochs decayed at 88.9 % and
# 96.3 % of its iterations (COCO 163889 and 177546 of 184375; LVIS 138889 and 150463 of 156250), and
# 75 epochs at 3/4 of those iterations (ViT-H COCO: 122916 and 133159 of 138281). Detectron2's own
# 1x and 3x (its yacs zoo rows: 90000 iterations of 16 images decayed at 60000 and 80000; 270000 at
# 210000 and 250000) in COCO train2017's 117266 images with annotations: 12.3 epochs decayed at 8.2
# and 10.9 (our 1x, rounded), and 36.8 decayed at 28.7 and 34.1: d2_3x (MMDetection's 3x decays at
# 27 and 33 of 36).
SCHEDULES = {"1x": (12, (8, 11)), "20e": (20, (16, 19)), "3x": (36, (27, 33)), "100ep": (100, (89, 96)),
             "75ep": (75, (67, 72)), "d2_3x": (37, (29, 34))}


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
