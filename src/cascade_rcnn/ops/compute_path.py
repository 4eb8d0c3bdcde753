"""The switchboard: which computation the detector runs, as one frozen setting passed down.

``EXACT`` runs MMDetection's ops in MMDetection's order: detections bit-identical to
MMDetection's, training losses equal to 1e-5. ``FAST`` (the default) switches on five steps that
are faster on the CPU and equal to the exact path up to float rounding; each can be switched
alone (``dataclasses.replace(FAST, fold_batchnorm=False)``), which is how BENCHMARKS.md measures
each step's share of the noise. ``exporting`` is set only while ``deploy.export`` traces the
model: the graph-friendly forms of ``ops/onnx_forms.py`` then replace data-dependent Python.

Where each switch is read (one place each):

| switch               | read in                                   | what it changes                           |
|----------------------|-------------------------------------------|-------------------------------------------|
| fold_batchnorm       | models/conv_bn.py ``conv_bn``             | frozen BatchNorm folded into its conv     |
| channels_last        | models/detector.py ``memory_format``      | layout of the image batch (and all maps)  |
| gathered_roi_align   | ops/roi_align.py ``roi_align_kernel``     | CPU inference RoIAlign as weighted gathers|
| best_candidate_nms   | ops/nms.py ``multiclass_nms``             | NMS over the best-scored candidates only  |
| class_mask_logits    | models/cascade.py ``predict_masks``       | the detected class's mask logits only     |
| exporting            | ops/onnx_forms.py (and the two model-level| ONNX-traceable forms                      |
|                      | branches it lists)                        |                                           |
"""
from __future__ import annotations

from dataclasses import dataclass, fields

import torch


@dataclass(frozen=True)
class ComputePath:
    """Which computation runs; see the module docstring for where each switch is read."""

    fold_batchnorm: bool = True
    channels_last: bool = True
    gathered_roi_align: bool = True
    best_candidate_nms: bool = True
    class_mask_logits: bool = True
    exporting: bool = False

    @property
    def exact(self) -> bool:
        """True when no fast step is on: MMDetection's computation, bit for bit."""
        return not any(getattr(self, f.name) for f in fields(self) if f.name != "exporting")


EXACT = ComputePath(fold_batchnorm=False, channels_last=False, gathered_roi_align=False, best_candidate_nms=False,
                    class_mask_logits=False)
FAST = ComputePath()

# Autocast dtypes of ``amp=`` (predict, train, benchmark): the network's matmuls and convolutions
# in half precision; boxes, scores and NMS stay float32.
AMP_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}
