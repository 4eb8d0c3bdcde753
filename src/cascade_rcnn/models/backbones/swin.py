"""Swin Transformer (Liu et al., 2021) as the official Swin detection repository builds it
(SwinTransformer/Swin-Transformer-Object-Detection, ``mmdet/models/backbones/swin_transformer.py``),
with that repository's key layout: the spec (``SwinConfig``) and the module (``SwinTransformer``).

Keys (under ``backbone.`` in a detector), read off the official module tree - every attribute
name below is the official one, so its checkpoints load strictly without renaming:

- ``patch_embed.proj`` (4x4 conv at stride 4, with bias) and ``patch_embed.norm`` (LayerNorm;
  the detection configs set ``patch_norm=True``);
- ``layers.{i}.blocks.{j}``: ``norm1``, ``attn.qkv`` (Linear C -> 3C, with bias), ``attn.proj``,
  ``attn.relative_position_bias_table`` ((2w-1)^2, heads) and ``attn.relative_position_index``
  (w^2, w^2) int64 - a buffer registered with ``register_buffer`` (persistent), so the official
  files store it and ours must hold it - then ``norm2``, ``mlp.fc1`` (C -> 4C), ``mlp.fc2``;
- ``layers.{i}.downsample`` for i < 3 (patch merging at the END of stage i): ``norm`` (LayerNorm
  over 4C) then ``reduction`` (Linear 4C -> 2C, no bias);
- ``norm0..3``: a LayerNorm on each returned map. No ``absolute_pos_embed`` (``ape=False``) and
  no ``attn_mask`` buffer (the detection code computes the mask in each forward; the ImageNet
  classification files do store ``attn_mask`` buffers, which a detection backbone drops).

The forward follows the official detection code step for step, so that a file trained there
computes the same here: tokens (B, H, W, C); each block normalises, pads the map with zeros to
multiples of the window (right / bottom; the padded tokens take part in attention, as there),
cyclically shifts odd blocks by ``window // 2``, attends within windows with the relative
position bias and, for shifted windows, a mask of -100 between tokens from different regions of
the padded map (computed once per stage for the padded size), reverses the shift, crops, adds the
residual; then the MLP. Patch merging pads odd sizes, concatenates each 2x2 neighbourhood in the
order (0,0), (1,0), (0,1), (1,1) (row, column offsets: the official x0, x1, x2, x3), normalises
and reduces. MMDetection 3.x's Swin names and orders these weights differently:
``swin_layout.py`` converts its files into this layout.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ...ops.compute_path import ComputePath
from ..input_norm import PYTORCH_NORM, InputNorm
from .drop_path import drop_path, drop_path_rates
from .hooks import ImageNetKeys
from .mlp import Mlp
from .swin_layout import official_to_unfold, to_official

# The official detection configs: (embed_dim, depths, num_heads).
ARCHS = {"tiny": (96, (2, 2, 6, 2), (3, 6, 12, 24)),
         "small": (96, (2, 2, 18, 2), (3, 6, 12, 24)),
         "base": (128, (2, 2, 18, 2), (4, 8, 16, 32))}
PATCH_SIZE = 4
MASK_VALUE = -100.0  # the official (and MMDetection's) additive mask between shifted-window regions
# The official detection configs' paramwise_cfg: no weight decay on the parameters whose full name
# contains one of these (mmcv's custom keys match substrings), the backbone's LayerNorms among them.
NO_DECAY = ("norm", "relative_position_bias_table", "absolute_pos_embed")


@dataclass(frozen=True)
class SwinConfig:
    embed_dim: int = 96
    depths: tuple[int, ...] = (2, 2, 6, 2)
    num_heads: tuple[int, ...] = (3, 6, 12, 24)
    window_size: int = 7
    mlp_ratio: int = 4
    drop_path_rate: float = 0.2  # stochastic depth at the last block (training), linear from 0
    imagenet_url: str | None = None
    # What the training engine asks of every backbone: nothing frozen, no BatchNorm statistics.
    frozen_stages: int = 0
    norm_eval: bool = False
    input_norm: InputNorm = PYTORCH_NORM
    # The official ImageNet files hold the classifier's final norm.* and the shifted blocks'
    # attn_mask buffers (fixed for 224 px), and no per-output norms (hooks.py).
    imagenet_keys: ClassVar[ImageNetKeys] = ImageNetKeys(unused=("norm.weight", "norm.bias", "*.attn_mask"),
                                                         not_in_classifier=("norm[0-3].*",))

    def __post_init__(self) -> None:
        if len(self.depths) != 4 or len(self.num_heads) != 4:
            raise ValueError(f"Swin needs 4 stages (depths and num_heads), got {self.depths}, {self.num_heads}")
        for i, heads in enumerate(self.num_heads):
            if (self.embed_dim << i) % heads:
                raise ValueError(f"Swin stage {i}: {self.embed_dim << i} channels do not split into {heads} heads")
        if self.window_size < 2:
            raise ValueError(f"Swin window_size must be at least 2, got {self.window_size}")

    @classmethod
    def arch(cls, name: str, **changes) -> SwinConfig:
        """Swin-T / S / B (``name`` a key of ARCHS) with ``changes``."""
        embed_dim, depths, num_heads = ARCHS[name]
        return cls(embed_dim=embed_dim, depths=depths, num_heads=num_heads, **changes)

    @property
    def out_channels(self) -> list[int]:
        return [self.embed_dim << i for i in range(4)]

    @property
    def label(self) -> str:
        for name, arch in ARCHS.items():
            if arch == (self.embed_dim, tuple(self.depths), tuple(self.num_heads)):
                return f"Swin-{name[0].upper()}"
        return f"Swin-{self.embed_dim}"

    def build(self) -> SwinTransformer:
        return SwinTransformer(self)

    def weight_decays(self, name: str, parameter: torch.Tensor) -> bool:
        """Whether the detector's parameter ``name`` decays (hooks.py): all but ``NO_DECAY``'s."""
        return not any(key in name for key in NO_DECAY)

    def to_own_layout(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``state`` with a Swin backbone in MMDetection's layout turned into the official one (hooks.py)."""
        return to_official(state)


def relative_position_index(window: int) -> torch.Tensor:
    """(w*w, w*w) int64: entry [i, j] = row of the bias table for token j seen from token i of a
    window (tokens row-major): offsets dy = y_i - y_j and dx = x_i - x_j, each in -(w-1)..w-1,
    shifted to 0..2w-2, as (dy + w - 1) * (2w - 1) + (dx + w - 1)."""
    y, x = torch.arange(window * window).div(window, rounding_mode="floor"), torch.arange(window * window) % window
    dy = y[:, None] - y[None, :] + window - 1
    dx = x[:, None] - x[None, :] + window - 1
    return dy * (2 * window - 1) + dx


def to_windows(x: torch.Tensor, window: int) -> torch.Tensor:
    """(B, H, W, C) with H, W multiples of ``window`` -> (B * windows, window * window, C),
    windows row-major per image, tokens row-major per window."""
    b, h, w, c = x.shape
    x = x.reshape(b, h // window, window, w // window, window, c).transpose(2, 3)
    return x.reshape(-1, window * window, c)


def from_windows(windows: torch.Tensor, window: int, height: int, width: int) -> torch.Tensor:
    """``to_windows``'s inverse: (B * windows, window * window, C) -> (B, height, width, C)."""
    c = windows.shape[-1]
    x = windows.reshape(-1, height // window, width // window, window, window, c).transpose(2, 3)
    return x.reshape(-1, height, width, c)


def shifted_window_mask(height, width, window: int, shift: int, dtype: torch.dtype,
                        device: torch.device) -> torch.Tensor:
    """(windows, w*w, w*w) additive attention mask of a cyclically shifted (height, width) map
    (multiples of ``window``): 0 between tokens of the same region, ``MASK_VALUE`` otherwise.

    Rolling the map by -shift moves its first ``shift`` rows (columns) to its end, into the last
    window row (column), beside rows that are not their neighbours. Along each axis a rolled
    position belongs to band 0 (before the last window), 1 (the last window's first
    ``window - shift``) or 2 (the last ``shift``: the wrapped ones); a region is a (row band,
    column band) pair. ``height`` and ``width`` may be traced sizes (ONNX export)."""
    rows = torch.arange(height, device=device)
    cols = torch.arange(width, device=device)
    row_band = (rows >= height - window).long() + (rows >= height - shift).long()
    col_band = (cols >= width - window).long() + (cols >= width - shift).long()
    region = (row_band[:, None] * 3 + col_band[None, :])[None, :, :, None]
    region = to_windows(region, window)[..., 0]  # (windows, w*w)
    different = region[:, :, None] != region[:, None, :]
    return torch.zeros(different.shape, dtype=dtype, device=device).masked_fill(different, MASK_VALUE)


class PatchEmbed(nn.Module):
    """(B, 3, H, W) -> (B, H/4, W/4, C) tokens: 4x4 conv at stride 4 (input padded right / bottom
    to multiples of 4), LayerNorm over channels."""

    def __init__(self, embed_dim: int):
        super().__init__()
        self.proj = nn.Conv2d(3, embed_dim, PATCH_SIZE, stride=PATCH_SIZE)
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        height, width = images.shape[-2:]
        images = F.pad(images, (0, (-width) % PATCH_SIZE, 0, (-height) % PATCH_SIZE))
        return self.norm(self.proj(images).permute(0, 2, 3, 1))


class WindowAttention(nn.Module):
    """Multi-head self-attention inside each window, with a learned bias per relative position
    and head: (windows * B, w*w, C) -> same."""

    def __init__(self, dim: int, num_heads: int, window: int):
        super().__init__()
        self.num_heads = num_heads
        self.window = window
        self.scale = (dim // num_heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, num_heads))
        self.register_buffer("relative_position_index", relative_position_index(window))
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        n, t, c = tokens.shape
        # query, key and value, each (n, heads, t, c / heads)
        qkv = self.qkv(tokens).reshape(n, t, 3, self.num_heads, c // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        attn = (q * self.scale) @ k.transpose(-2, -1)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)].view(t, t, -1)
        attn = attn + bias.permute(2, 0, 1).unsqueeze(0)
        if mask is not None:  # (windows, t, t): the same for each image and head
            windows = mask.shape[0]
            attn = (attn.view(-1, windows, self.num_heads, t, t) + mask[None, :, None]).view(n, self.num_heads, t, t)
        out = (attn.softmax(dim=-1) @ v).transpose(1, 2).reshape(n, t, c)
        return self.proj(out)


class SwinBlock(nn.Module):
    """(B, H, W, C) -> same: x + W-MSA(LN(x)) (windows shifted by ``shift`` when > 0), then
    x + MLP(LN(x)); each branch under stochastic depth."""

    def __init__(self, dim: int, num_heads: int, window: int, shift: int, mlp_ratio: int, drop_path: float):
        super().__init__()
        self.window, self.shift, self.drop_path = window, shift, drop_path
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, num_heads, window)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, mlp_ratio * dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        _, height, width, _ = x.shape
        shortcut, window, shift = x, self.window, self.shift
        x = self.norm1(x)
        pad_bottom, pad_right = (-height) % window, (-width) % window
        x = F.pad(x, (0, 0, 0, pad_right, 0, pad_bottom))  # zeros: (C), (W) right, (H) bottom
        padded_height, padded_width = x.shape[1], x.shape[2]
        if shift:
            x = torch.roll(x, shifts=(-shift, -shift), dims=(1, 2))
        x = self.attn(to_windows(x, window), mask if shift else None)
        x = from_windows(x, window, padded_height, padded_width)
        if shift:
            x = torch.roll(x, shifts=(shift, shift), dims=(1, 2))
        x = x[:, :height, :width]
        x = shortcut + drop_path(x, self.drop_path, self.training)
        return x + drop_path(self.mlp(self.norm2(x)), self.drop_path, self.training)


class PatchMerging(nn.Module):
    """(B, H, W, C) -> (B, ceil(H/2), ceil(W/2), 2C): pad odd sizes (zeros, bottom / right), put
    each 2x2 neighbourhood's 4 tokens side by side, LayerNorm over the 4C, Linear to 2C without bias.

    The weights are kept in the official order - the 4 tokens concatenated as (0,0), (1,0), (0,1),
    (1,1) of (row, column) offset - but the features are laid out, and the weights permuted to
    match, in MMDetection's ``nn.Unfold`` order (feature ``c * 4 + 2 * dy + dx``): the same
    function, summed in MMDetection's order, so its outputs are MMDetection's bit for bit."""

    def __init__(self, dim: int):
        super().__init__()
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)  # registered first, as officially
        self.norm = nn.LayerNorm(4 * dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, height, width, c = x.shape
        x = F.pad(x, (0, 0, 0, width % 2, 0, height % 2))
        half_height, half_width = x.shape[1] // 2, x.shape[2] // 2
        # (B, H/2, dy, W/2, dx, C) -> (B, H/2, W/2, C, dy, dx)
        x = x.reshape(b, half_height, 2, half_width, 2, c).permute(0, 1, 3, 5, 2, 4)
        x = F.layer_norm(x.reshape(b, half_height, half_width, 4 * c), self.norm.normalized_shape,
                         official_to_unfold(self.norm.weight), official_to_unfold(self.norm.bias), self.norm.eps)
        return F.linear(x, official_to_unfold(self.reduction.weight))


class SwinStage(nn.Module):
    """One stage (the official ``BasicLayer``): ``blocks`` alternating plain and shifted windows,
    then ``downsample`` (patch merging; None in the last stage). Returns the stage's output
    (what the detector sees) and the next stage's input."""

    def __init__(self, dim: int, depth: int, num_heads: int, window: int, mlp_ratio: int,
                 drop_paths: list[float], downsample: bool):
        super().__init__()
        self.window, self.shift = window, window // 2
        self.blocks = nn.ModuleList(SwinBlock(dim, num_heads, window, self.shift if j % 2 else 0, mlp_ratio,
                                              drop_paths[j]) for j in range(depth))
        self.downsample = PatchMerging(dim) if downsample else None

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        _, height, width, _ = x.shape
        mask = None
        if len(self.blocks) > 1:  # a shifted block: one mask for the padded size, shared by them
            padded_height = height + (-height) % self.window
            padded_width = width + (-width) % self.window
            mask = shifted_window_mask(padded_height, padded_width, self.window, self.shift, x.dtype, x.device)
        for block in self.blocks:
            x = block(x, mask)
        return x, (self.downsample(x) if self.downsample is not None else x)


class SwinTransformer(nn.Module):
    """Image (B, 3, H, W) -> four LayerNorm-ed maps at strides 4, 8, 16, 32 (channels C, 2C, 4C,
    8C), sizes ceil(H/4) x ceil(W/4) and then halved, rounding up."""

    strides = (4, 8, 16, 32)

    def __init__(self, config: SwinConfig):
        super().__init__()
        self.config = config
        self.out_channels = config.out_channels
        dims = config.out_channels
        rates = drop_path_rates(config.drop_path_rate, sum(config.depths))
        starts = [sum(config.depths[:i]) for i in range(4)]
        self.patch_embed = PatchEmbed(config.embed_dim)
        self.layers = nn.ModuleList(
            SwinStage(dims[i], depth, config.num_heads[i], config.window_size, config.mlp_ratio,
                      rates[starts[i]:starts[i] + depth], downsample=i < 3)
            for i, depth in enumerate(config.depths))
        for i, channels in enumerate(dims):
            self.add_module(f"norm{i}", nn.LayerNorm(channels))
        # The official initialisation (when no weights are loaded): truncated normal linear
        # weights and bias tables, zero biases, unit LayerNorms; the patch conv keeps PyTorch's.
        for name, module in self.named_modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, WindowAttention):
                nn.init.trunc_normal_(module.relative_position_bias_table, std=0.02)

    def forward(self, images: torch.Tensor, path: ComputePath) -> list[torch.Tensor]:
        x, maps = self.patch_embed(images), []
        layout = torch.channels_last if path.channels_last else torch.contiguous_format
        for i, layer in enumerate(self.layers):
            out, x = layer(x)
            # (B, H, W, C) tokens are a channels-last map already
            maps.append(getattr(self, f"norm{i}")(out).permute(0, 3, 1, 2).contiguous(memory_format=layout))
        return maps
