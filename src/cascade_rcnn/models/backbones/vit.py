"""A plain Vision Transformer as ViTDet's backbone (Li et al., 2022): the spec (``ViTConfig``) and
the module (``ViT``), one map at stride 16 for a simple feature pyramid (``necks/simple_pyramid.py``).

The computation, as Detectron2's ``ViT`` runs it (its op order, so that the exact path gives its
numbers bit for bit):

- the image, zero-padded bottom/right to ``square_pad`` x ``square_pad`` (ViTDet's square input;
  0: unpadded), cut into 16 x 16 patches by a strided conv -> (B, H, W, C) tokens;
- plus the absolute position table of the pretraining grid (``pretrain_size / patch`` squared, with
  a leading class-token row that is dropped), resized bicubically (align_corners False) to H x W;
- ``depth`` blocks: ``x + attn(LN(x))`` then ``x + MLP(LN(x))`` (LayerNorm eps 1e-6, MLP GELU 4x);
  the blocks of ``window_blocks`` attend within ``window`` x ``window`` windows (the token grid
  zero-padded bottom/right to whole windows, cut off after), the others over the whole grid;
- attention: per head, ``softmax(q k^T / sqrt(d) + rel_h + rel_w) v``, where ``rel_h[i, j]`` is
  ``q_i . rel_pos_h[row(i) - row(j) + L - 1]`` (``rel_w`` likewise with columns): the decomposed
  relative position bias; a table whose length is not ``2 L - 1`` is resized linearly first.

Keys are Detectron2's under ``backbone.net.`` minus that prefix (``pos_embed``,
``patch_embed.proj``, ``blocks.i.{norm1, attn.{qkv, proj, rel_pos_h, rel_pos_w}, norm2,
mlp.{fc1, fc2}}``): the key map is one row. No BatchNorm, nothing folded: in the backbone the fast
path differs from the exact one only in the attention, which runs through torch's fused
``scaled_dot_product_attention`` with the bias as its additive mask (``ComputePath.fused_attention``),
built and used a chunk of heads at a time (``MASK_CHUNK``: one head in a global block).

Training (ViTDet's recipe, as its configs set Detectron2's optimizer; hooks.py):

- stochastic depth: each block's two residual branches dropped per image with a rate linear from 0
  at the first block to ``drop_path_rate`` at the last (0.1 / 0.4 / 0.5 for B / L / H); identity
  in eval, so detections do not depend on it;
- layer-wise lr decay (Detectron2's ``get_vit_lr_decay_rate``): a parameter of layer id ``i`` gets
  ``lr_decay_rate ** (lr_decay_layers + 1 - i)``, where ``pos_embed`` and ``patch_embed`` are layer
  0, ``blocks.j`` layer j + 1, and everything after the ViT (the pyramid, the heads) layer
  ``lr_decay_layers + 1`` (factor 1); ViTDet: 0.7 / 0.8 / 0.9 over 12 / 24 / 32 layers;
- weight decay on every parameter (biases too) but the blocks' LayerNorms (``no_decay_norm``,
  Detectron2's ``weight_decay_norm: 0.0``) and ``pos_embed`` (``no_decay_pos_embed``, its
  ``overrides``); ViT-H sets neither.

ImageNet initialisation: MAE's pre-trained encoders (``mae_pretrain_vit_{base,large,huge_p14to16}.pth``,
``{"model": {name: tensor}}`` under timm's ViT names, which are ours): the class token and the final
``norm`` (and a fine-tuned classifier's ``fc_norm`` / ``head``) have no place here and are dropped;
the relative position tables are not in the files and keep their zero initialisation, as in
Detectron2 (``imagenet_keys``).
"""
from __future__ import annotations

import math
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

LAYER_NORM_EPS = 1e-6
BLOCK_NORMS = ("norm1", "norm2")  # the blocks' torch LayerNorms: the only ones in the detector
# The fast path's attention builds its float bias mask for at most this many logits at a time: a
# global block's (heads, 4096, 4096) mask at 1024 px is 800 MB at once, one head's 67 MB; the
# windowed blocks' (windows x heads, 196, 196) mask (46 MB) stays one piece.
MASK_CHUNK = 4096 * 4096


@dataclass(frozen=True)
class ViTConfig:
    """``ModelConfig.backbone``: ViTDet's ViT (defaults: ViT-B, 1024 px, as its COCO configs)."""

    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    patch_size: int = 16
    img_size: int = 1024  # the size the relative position tables of the global blocks are made for
    window_size: int = 14
    window_blocks: tuple[int, ...] = (0, 1, 3, 4, 6, 7, 9, 10)
    pretrain_size: int = 224  # the grid of the absolute position table: (224 / 16)^2 (+ a class token)
    pretrain_cls_token: bool = True
    qkv_bias: bool = True
    square_pad: int = 1024  # input zero-padded to this square; 0: no padding (a multiple of 16 expected)
    imagenet_url: str | None = None
    frozen_stages: int = 0
    norm_eval: bool = False
    input_norm: InputNorm = PYTORCH_NORM
    # Training (module docstring): stochastic depth at the last block, the layer-wise lr decay
    # (rate, Detectron2's num_layers) and the weight-decay exemptions. Defaults: Detectron2's (none
    # of them); the ViTDet rows read theirs from their configs (ViT-B: 0.1, 0.7, 12, True, True).
    drop_path_rate: float = 0.0
    lr_decay_rate: float = 1.0
    lr_decay_layers: int = 12
    no_decay_norm: bool = False
    no_decay_pos_embed: bool = False
    # MAE's files: the class token, the final norm (and a classifier's) dropped; no relative tables.
    imagenet_keys: ClassVar[ImageNetKeys] = ImageNetKeys(
        unused=("cls_token", "norm.weight", "norm.bias", "fc_norm.*"),
        not_in_file=("blocks.*.attn.rel_pos_h", "blocks.*.attn.rel_pos_w"))

    @property
    def label(self) -> str:
        return f"ViT ({self.embed_dim}, depth {self.depth})"

    def lr_scale(self, name: str) -> float:
        """The layer-wise lr factor of the detector's parameter ``name`` (hooks.py)."""
        return self.lr_decay_rate ** (self.lr_decay_layers + 1 - layer_id(name, self.lr_decay_layers))

    def weight_decays(self, name: str, parameter: torch.Tensor) -> bool:
        """Whether the detector's parameter ``name`` decays (hooks.py): all but the exempt ones."""
        parts = name.split(".")
        if self.no_decay_norm and name.startswith("backbone.blocks.") and parts[3] in BLOCK_NORMS:
            return False
        return not (self.no_decay_pos_embed and name == "backbone.pos_embed")

    @property
    def out_channels(self) -> list[int]:
        return [self.embed_dim]

    def build(self) -> "ViT":
        return ViT(self)


def layer_id(name: str, num_layers: int) -> int:
    """The layer id of the detector's parameter ``name`` for the lr decay: 0 for the position table
    and the patch embedding, j + 1 for block j, ``num_layers + 1`` for everything else."""
    if name in ("backbone.pos_embed",) or name.startswith("backbone.patch_embed."):
        return 0
    if name.startswith("backbone.blocks."):
        return int(name.split(".")[2]) + 1
    return num_layers + 1


class Attention(nn.Module):
    """(B, H, W, C) tokens -> same: multi-head self-attention over all H x W tokens, with the
    decomposed relative position bias (tables ``rel_pos_h`` / ``rel_pos_w`` of (2 L - 1, d), L the
    grid side they were made for)."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool, grid: tuple[int, int]):
        super().__init__()
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.scale = head_dim ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.rel_pos_h = nn.Parameter(torch.zeros(2 * grid[0] - 1, head_dim))
        self.rel_pos_w = nn.Parameter(torch.zeros(2 * grid[1] - 1, head_dim))

    def forward(self, x: torch.Tensor, fused: bool = False) -> torch.Tensor:
        """``fused``: torch's ``scaled_dot_product_attention`` with the bias as its additive mask
        (the fast path; float noise apart, the same attention)."""
        batch, height, width, _ = x.shape
        tokens = height * width
        # (B, N, 3 C) -> (3, B, heads, N, d) -> three (B * heads, N, d)
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.reshape(3, batch * self.num_heads, tokens, -1).unbind(0)
        bias_h, bias_w = relative_position_terms(q, self.rel_pos_h, self.rel_pos_w, (height, width))
        if fused:  # the (rows, N, N) bias mask in chunks of MASK_CHUNK elements: one head at a time in global blocks
            out = torch.empty_like(q)
            step = max(1, MASK_CHUNK // (tokens * tokens))
            for start in range(0, q.shape[0], step):
                rows = slice(start, start + step)
                mask = (bias_h[rows, ..., :, None] + bias_w[rows, ..., None, :]).reshape(-1, tokens, tokens)
                out[rows] = F.scaled_dot_product_attention(q[rows], k[rows], v[rows], attn_mask=mask, scale=self.scale)
        else:
            logits = (q * self.scale) @ k.transpose(-2, -1)  # (B * heads, N, N)
            logits = logits.view(q.shape[0], height, width, height, width) + bias_h[..., :, None] + bias_w[..., None, :]
            out = logits.view(q.shape[0], tokens, tokens).softmax(dim=-1) @ v  # (B * heads, N, d)
        out = out.view(batch, self.num_heads, height, width, -1).permute(0, 2, 3, 1, 4).reshape(batch, height, width, -1)
        return self.proj(out)


def relative_table(table: torch.Tensor, size: int) -> torch.Tensor:
    """(size, size, d): the row of ``table`` ((L, d), resized linearly to 2 size - 1 rows if L
    differs) for each (query, key) offset ``q - k + size - 1`` along one axis."""
    rows = 2 * size - 1
    if table.shape[0] != rows:
        table = F.interpolate(table.reshape(1, table.shape[0], -1).permute(0, 2, 1), size=rows, mode="linear")
        table = table.reshape(-1, rows).permute(1, 0)
    steps = torch.arange(size, device=table.device)
    offsets = steps[:, None] - steps[None, :] + (size - 1)
    return table[offsets]


def relative_position_terms(q: torch.Tensor, rel_pos_h: torch.Tensor, rel_pos_w: torch.Tensor,
                            grid: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """The decomposed relative position bias of queries q (B', N, d), N = grid[0] * grid[1]: each
    query's dot product with the table row of its vertical offset to each key row (B', H, W, H)
    and of its horizontal offset to each key column (B', H, W, W). The logit of query (h, w) for
    key (h', w') gains ``bias_h[..., h, w, h'] + bias_w[..., h, w, w']``."""
    height, width = grid
    table_h, table_w = relative_table(rel_pos_h, height), relative_table(rel_pos_w, width)
    q_grid = q.reshape(q.shape[0], height, width, q.shape[-1])
    return torch.einsum("bhwc,hkc->bhwk", q_grid, table_h), torch.einsum("bhwc,wkc->bhwk", q_grid, table_w)


def to_windows(x: torch.Tensor, window: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """(B, H, W, C) -> (B * windows, window, window, C), the grid zero-padded bottom/right to
    whole windows first; and the padded (Hp, Wp)."""
    batch, height, width, channels = x.shape
    pad_h, pad_w = (window - height % window) % window, (window - width % window) % window
    if pad_h or pad_w:
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    padded_h, padded_w = height + pad_h, width + pad_w
    x = x.view(batch, padded_h // window, window, padded_w // window, window, channels)
    return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(-1, window, window, channels), (padded_h, padded_w)


def from_windows(windows: torch.Tensor, window: int, padded: tuple[int, int], size: tuple[int, int]) -> torch.Tensor:
    """The inverse of ``to_windows``: (B * windows, window, window, C) -> (B, H, W, C)."""
    (padded_h, padded_w), (height, width) = padded, size
    batch = windows.shape[0] // (padded_h * padded_w // window // window)
    x = windows.view(batch, padded_h // window, padded_w // window, window, window, -1)
    x = x.permute(0, 1, 3, 2, 4, 5).contiguous().view(batch, padded_h, padded_w, -1)
    if padded_h > height or padded_w > width:
        x = x[:, :height, :width, :].contiguous()
    return x


class Block(nn.Module):
    """(B, H, W, C) -> same: pre-norm attention (windowed when ``window`` > 0) and MLP, each residual."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, qkv_bias: bool, window: int,
                 grid: tuple[int, int], drop_path: float = 0.0):
        super().__init__()
        self.window, self.drop_path = window, drop_path
        self.norm1 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.attn = Attention(dim, num_heads, qkv_bias, (window, window) if window else grid)
        self.norm2 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, fused: bool = False) -> torch.Tensor:
        out = self.norm1(x)
        if self.window:
            size = (out.shape[1], out.shape[2])
            out, padded = to_windows(out, self.window)
            out = from_windows(self.attn(out, fused), self.window, padded, size)
        else:
            out = self.attn(out, fused)
        x = x + drop_path(out, self.drop_path, self.training)
        return x + drop_path(self.mlp(self.norm2(x)), self.drop_path, self.training)


class PatchEmbed(nn.Module):
    """(B, 3, H, W) -> (B, H / p, W / p, C): one p x p conv at stride p, channels last."""

    def __init__(self, patch: int, dim: int):
        super().__init__()
        self.proj = nn.Conv2d(3, dim, patch, stride=patch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).permute(0, 2, 3, 1)


def absolute_positions(table: torch.Tensor, has_cls_token: bool, grid: tuple[int, int]) -> torch.Tensor:
    """(1, H, W, C) position embedding for an H x W token grid from the (1, [1 +] S*S, C) table of
    the pretraining grid: its class-token row dropped, resized bicubically when S x S differs."""
    if has_cls_token:
        table = table[:, 1:]
    side = math.isqrt(table.shape[1])
    if side * side != table.shape[1]:
        raise ValueError(f"the position table has {table.shape[1]} grid rows, not a square")
    if (side, side) == tuple(grid):
        return table.reshape(1, grid[0], grid[1], -1)
    resized = F.interpolate(table.reshape(1, side, side, -1).permute(0, 3, 1, 2), size=tuple(grid),
                            mode="bicubic", align_corners=False)
    return resized.permute(0, 2, 3, 1)


class ViT(nn.Module):
    """Normalised images (B, 3, H, W) -> [(B, C, H', W')], the last block's tokens at stride 16
    (H' = square_pad / 16 with the square padding)."""

    def __init__(self, config: ViTConfig):
        super().__init__()
        self.config = config
        self.out_channels = config.out_channels
        self.strides = (config.patch_size,)
        self.patch_embed = PatchEmbed(config.patch_size, config.embed_dim)
        pretrain_grid = config.pretrain_size // config.patch_size
        self.pos_embed = nn.Parameter(torch.zeros(1, pretrain_grid ** 2 + int(config.pretrain_cls_token),
                                                  config.embed_dim))
        grid = (config.img_size // config.patch_size,) * 2
        rates = drop_path_rates(config.drop_path_rate, config.depth)
        self.blocks = nn.ModuleList(
            Block(config.embed_dim, config.num_heads, config.mlp_ratio, config.qkv_bias,
                  config.window_size if i in config.window_blocks else 0, grid, rates[i])
            for i in range(config.depth))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)

    def forward(self, images: torch.Tensor, path: ComputePath | None = None) -> list[torch.Tensor]:
        side = self.config.square_pad
        if side:
            height, width = images.shape[-2:]
            if height > side or width > side:
                raise ValueError(f"a {height}x{width} batch does not fit ViTDet's {side}x{side} square input")
            images = F.pad(images, (0, side - width, 0, side - height))
        x = self.patch_embed(images)
        x = x + absolute_positions(self.pos_embed, self.config.pretrain_cls_token, (x.shape[1], x.shape[2]))
        fused = path is not None and path.fused_attention
        for block in self.blocks:
            x = block(x, fused)
        return [x.permute(0, 3, 1, 2)]
