"""What the two readers of a Detectron2 training recipe (``yacs_recipe.py`` for a yacs
``config.yaml``, ``lazy_recipe.py`` for a LazyConfig dump) share: Detectron2's AMP as our
precision, the lr per 16 images of a config's lr, and the note for an iteration schedule that is no
zoo row's."""
from __future__ import annotations

from pathlib import Path

import torch

from ..ops.compute_path import cpu_has_bf16_instructions


def amp_precision(key: str, amp: bool, device: str, path: Path, notes: list[str]) -> str | None:
    """Detectron2's AMP (float16 autocast, gradient scaler), switched on by ``key``, as our
    precision on ``device``: fp16 on CUDA, bf16 on a CPU with bfloat16 instructions; None (fp32)
    otherwise, with a note."""
    if not amp:
        return None
    if torch.device(device).type == "cuda":
        return "fp16"
    if torch.device(device).type == "cpu" and cpu_has_bf16_instructions():
        return "bf16"
    notes.append(f"{path}: {key}: this {device} has no fast float16 or bfloat16 kernels; the run is in fp32 "
                 "(--precision sets it)")
    return None


def iterations_note(path: Path, steps: str) -> str:
    """The note for lr ``steps`` (and length) in Detectron2's iterations that are no zoo row's."""
    return (f"{path}: {steps} are iterations of Detectron2's batches, not a zoo row's; our schedule is in epochs: "
            "this run's epochs and lr steps come from this command's options (--schedule, --epochs, --lr-steps)")


def lr_per_16(lr: float, total_batch_size: int) -> float:
    """The lr for 16 images of ``lr``, given for ``total_batch_size`` images: our trainer scales it
    linearly with the real batch (``engine.schedule.scaled_lr``)."""
    return lr * 16 / total_batch_size
