"""The switchboard: which computation the detector runs, as one frozen setting passed down.

``EXACT`` runs MMDetection's ops in MMDetection's order: detections bit-identical to
MMDetection's, training losses equal to 1e-5. ``FAST`` (the default) switches on seven steps that
are faster on the CPU and equal to the exact path up to float rounding; each can be switched
alone (``dataclasses.replace(FAST, fold_batchnorm=False)``), which is how BENCHMARKS.md measures
each step's share of the noise. ``exporting`` is set only while ``deploy.export`` traces the
model: the graph-friendly forms of ``ops/onnx_forms.py`` then replace data-dependent Python.
``precision`` (``"fp32"``, ``"bf16"``, ``"fp16"``) is the dtype of the network's matrix work; the
exact path is float32 only (``check_precision`` says which combinations run at all).

Where each switch is read (one place each):

| switch               | read in                                   | what it changes                           |
|----------------------|-------------------------------------------|-------------------------------------------|
| fold_batchnorm       | models/conv_bn.py ``conv_bn``             | frozen BatchNorm folded into its conv     |
| channels_last        | models/detector.py ``memory_format``      | layout of the image batch (and all maps)  |
|                      | (and heads/box_head.py ``BoxHead``; the   | (and the RoIs of conv box heads)          |
|                      | trainer turns it off on AVX2-only CPUs:   |                                           |
|                      | ``channels_last_trains_faster``, and for  |                                           |
|                      | torch's crash: ``..._trains_safely``)     |                                           |
| gathered_roi_align   | ops/roi_align.py ``roi_align_kernel``     | CPU inference RoIAlign as weighted gathers|
|                      |                                           | (training: as two matrix products)        |
| best_candidate_nms   | ops/nms.py ``multiclass_nms``             | NMS over the best-scored candidates only  |
| class_mask_logits    | models/roi_heads/cascade.py               | the detected class's mask logits only     |
|                      | ``predict_masks``                         |                                           |
| fused_attention      | models/backbones/vit.py ``Attention``     | ViT attention through torch's fused       |
|                      |                                           | ``scaled_dot_product_attention``          |
| fused_layer_norm     | models/detector.py ``detect_batch`` (via  | inference's channel LayerNorms (ViTDet's  |
|                      | models/channel_norm.py                    | pyramid and heads) as torch's one-kernel  |
|                      | ``fused_layer_norms``)                    | ``layer_norm``                            |
| exporting            | the ops that have a form in               | ONNX-traceable forms of single ops; the   |
|                      | ops/onnx_forms.py (its docstring lists    | one inference function is the same        |
|                      | where each is chosen)                     |                                           |
| precision            | models/low_precision.py ``at_precision``  | bf16/fp16 weights and activations         |
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, fields

import torch

from ..errors import UserInputError

PRECISION_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class ComputePath:
    """Which computation runs; see the module docstring for where each switch is read."""

    fold_batchnorm: bool = True
    channels_last: bool = True
    gathered_roi_align: bool = True
    best_candidate_nms: bool = True
    class_mask_logits: bool = True
    fused_attention: bool = True
    fused_layer_norm: bool = True
    exporting: bool = False
    precision: str = "fp32"

    def __post_init__(self) -> None:
        if self.precision not in PRECISION_DTYPES:
            raise UserInputError(f"precision must be one of {', '.join(PRECISION_DTYPES)}, got {self.precision!r}")
        if self.precision != "fp32" and not any(getattr(self, f.name) for f in fields(self)
                                                if f.name not in ("exporting", "precision")):
            raise UserInputError(f"the exact path runs in fp32 only (MMDetection's numbers); "
                                 f"precision {self.precision} needs the fast path")

    @property
    def exact(self) -> bool:
        """True when no fast step is on: MMDetection's computation, bit for bit."""
        return self.precision == "fp32" and not any(
            getattr(self, f.name) for f in fields(self) if f.name not in ("exporting", "precision"))

    @property
    def dtype(self) -> torch.dtype:
        return PRECISION_DTYPES[self.precision]


EXACT = ComputePath(fold_batchnorm=False, channels_last=False, gathered_roi_align=False, best_candidate_nms=False,
                    class_mask_logits=False, fused_attention=False, fused_layer_norm=False)
FAST = ComputePath()


@functools.cache
def cpu_has_bf16_instructions() -> bool:
    """True where the CPU multiplies bfloat16 natively (AVX512-BF16 or AMX tiles, as PyTorch's
    CPU feature probe reports them). Without them oneDNN emulates bf16 through fp32 and a
    convolution runs several times slower than in fp32 (measured: 7.5x on an AVX2 CPU)."""
    probes = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return any(probe() for probe in probes if probe is not None)


def channels_last_trains_faster(device: torch.device | str) -> bool:
    """Whether channels-last activations speed training up on ``device``: on CUDA and on CPUs with
    AVX-512 they do (a CPU step 0.77x torchvision's), on an AVX2-only CPU torch's channels-last
    convolution backward is the slower one (a step 1.35x the contiguous layout's; BENCHMARKS.md),
    so the trainer turns the switch off there. Inference keeps channels-last everywhere."""
    device = torch.device(device)
    return device.type != "cpu" or torch.backends.cpu.get_cpu_capability().startswith("AVX512")


def channels_last_trains_safely(model: torch.nn.Module, device: torch.device | str) -> bool:
    """Whether ``model`` can train channels-last on ``device`` without hitting torch's CPU crash:
    the weight gradient of a channels-last 1x1 convolution with stride > 1 and fewer than 16 input
    channels corrupts the heap (``double free``) on AVX-512 CPUs with torch 2.14.1 from about
    48 x 48 maps on (tools/channels_last_conv_crash.py reproduces it with one ``nn.Conv2d``;
    BENCHMARKS.md). Narrow ResNets' first downsample convs are such convs; a model that has one
    trains contiguous there instead."""
    if torch.device(device).type != "cpu":
        return True
    return not any(isinstance(module, torch.nn.Conv2d) and module.kernel_size == (1, 1)
                   and max(module.stride) > 1 and module.in_channels // module.groups < 16
                   for module in model.modules())


def check_precision(precision: str, device: torch.device | str) -> None:
    """Refuse, in one line, a precision that ``device`` would run slowly or not at all."""
    if precision not in PRECISION_DTYPES:
        raise UserInputError(f"precision must be one of {', '.join(PRECISION_DTYPES)}, got {precision!r}")
    device_type = torch.device(device).type
    if precision == "fp16" and device_type != "cuda":
        raise UserInputError(f"precision fp16 runs on CUDA only ({device_type} has no fast float16 kernels): "
                             "use fp32, or bf16 on a CPU with bfloat16 instructions")
    if precision == "bf16" and device_type == "cpu" and not cpu_has_bf16_instructions():
        raise UserInputError("precision bf16 needs a CPU with bfloat16 instructions (AVX512-BF16 or AMX); this "
                             "one has neither and would run bf16 several times slower than fp32: use fp32")
    if precision == "bf16" and device_type == "cuda" and not torch.cuda.is_bf16_supported():
        raise UserInputError("precision bf16: this CUDA device has no bfloat16 support: use fp16 or fp32")
