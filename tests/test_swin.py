"""The Swin rows' parts: the Swin Transformer backbone in the official detection repository's key
layout (SwinTransformer/Swin-Transformer-Object-Detection), MMDetection 3.x's Swin layout through
``models/backbones/swin_layout.py`` (patch-merging weights reordered), shifted-window attention checked
against a brute-force reference, and a small Swin cascade that trains, predicts, reloads and
exports to ONNX."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from conftest import MODERN_KEYS_DIR, assert_paths_agree_and_export, tiny_config, two_image_training_batch

import cascade_rcnn
from cascade_rcnn.benchmarking.agreement import agreement
from cascade_rcnn.benchmarking.synthetic import drawn_scene, spread_random_weights
from cascade_rcnn.models.backbones import swin_layout
from cascade_rcnn.models.backbones.swin import (
    MASK_VALUE,
    PatchMerging,
    SwinBlock,
    SwinConfig,
    shifted_window_mask,
)
from cascade_rcnn.models.heads.box_head import ConvFCBoxHeadConfig
from cascade_rcnn.ops.compute_path import EXACT
from cascade_rcnn.weights import checkpoint

# name: arch, embed dim, depths, heads, reported box / mask AP and parameters (millions; the official README)
SWIN_ROWS = {
    "cascade_mask_rcnn_swin_tiny_patch4_window7": ("tiny", 96, (2, 2, 6, 2), (3, 6, 12, 24), 50.4, 43.7, 86),
    "cascade_mask_rcnn_swin_small_patch4_window7": ("small", 96, (2, 2, 18, 2), (3, 6, 12, 24), 51.9, 45.0, 107),
    "cascade_mask_rcnn_swin_base_patch4_window7": ("base", 128, (2, 2, 18, 2), (4, 8, 16, 32), 51.9, 45.0, 145)}
CONVNEXT_T = "cascade_mask_rcnn_convnext-t_p4_w7_fpn_giou_4conv1f_fp16_ms-crop_3x_coco"
TINY = SwinConfig(embed_dim=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4), drop_path_rate=0.1)


# --- the expected key layouts, written down from the two code bases ----------------------------

def official_keys(embed: int, depths, heads, window: int = 7) -> list[tuple[str, list[int]]]:
    """The state dict of the official detection ``SwinTransformer`` (ape=False, patch_norm=True,
    out_indices=(0, 1, 2, 3)) in its registration order, read off its
    ``mmdet/models/backbones/swin_transformer.py``: PatchEmbed (proj conv, norm); per BasicLayer
    the blocks (norm1; WindowAttention: the bias-table Parameter, then the
    ``register_buffer("relative_position_index")`` - persistent, so stored -, qkv, proj; norm2;
    Mlp fc1, fc2) and the PatchMerging (``reduction`` Linear 4C->2C without bias, then ``norm``
    over 4C) of stages 0-2; then ``norm{i}`` per output."""
    keys = [("patch_embed.proj.weight", [embed, 3, 4, 4]), ("patch_embed.proj.bias", [embed]),
            ("patch_embed.norm.weight", [embed]), ("patch_embed.norm.bias", [embed])]
    for i, depth in enumerate(depths):
        c = embed * 2 ** i
        for j in range(depth):
            block = f"layers.{i}.blocks.{j}."
            keys += [(block + name, shape) for name, shape in [
                ("norm1.weight", [c]), ("norm1.bias", [c]),
                ("attn.relative_position_bias_table", [(2 * window - 1) ** 2, heads[i]]),
                ("attn.relative_position_index", [window ** 2, window ** 2]),
                ("attn.qkv.weight", [3 * c, c]), ("attn.qkv.bias", [3 * c]),
                ("attn.proj.weight", [c, c]), ("attn.proj.bias", [c]),
                ("norm2.weight", [c]), ("norm2.bias", [c]),
                ("mlp.fc1.weight", [4 * c, c]), ("mlp.fc1.bias", [4 * c]),
                ("mlp.fc2.weight", [c, 4 * c]), ("mlp.fc2.bias", [c])]]
        if i < 3:
            keys += [(f"layers.{i}.downsample.reduction.weight", [2 * c, 4 * c]),
                     (f"layers.{i}.downsample.norm.weight", [4 * c]), (f"layers.{i}.downsample.norm.bias", [4 * c])]
    for i in range(4):
        keys += [(f"norm{i}.weight", [embed * 2 ** i]), (f"norm{i}.bias", [embed * 2 ** i])]
    return keys


def mmdet_keys(embed: int, depths, heads, window: int = 7) -> dict[str, list[int]]:
    """MMDetection 3.x's ``SwinTransformer`` (``mmdet/models/backbones/swin.py``): PatchEmbed's
    conv is ``projection``; ``stages.{i}.blocks.{j}`` hold ``attn.w_msa`` (ShiftWindowMSA ->
    WindowMSA) and an FFN whose Linears are ``layers.0.0`` and ``layers.1``; the PatchMerging
    (``nn.Unfold`` sampler, ``norm``, ``reduction``) is ``stages.{i}.downsample``."""
    keys = {"patch_embed.projection.weight": [embed, 3, 4, 4], "patch_embed.projection.bias": [embed],
            "patch_embed.norm.weight": [embed], "patch_embed.norm.bias": [embed]}
    for i, depth in enumerate(depths):
        c = embed * 2 ** i
        for j in range(depth):
            block = f"stages.{i}.blocks.{j}."
            keys.update({block + "norm1.weight": [c], block + "norm1.bias": [c],
                         block + "attn.w_msa.relative_position_bias_table": [(2 * window - 1) ** 2, heads[i]],
                         block + "attn.w_msa.relative_position_index": [window ** 2, window ** 2],
                         block + "attn.w_msa.qkv.weight": [3 * c, c], block + "attn.w_msa.qkv.bias": [3 * c],
                         block + "attn.w_msa.proj.weight": [c, c], block + "attn.w_msa.proj.bias": [c],
                         block + "norm2.weight": [c], block + "norm2.bias": [c],
                         block + "ffn.layers.0.0.weight": [4 * c, c], block + "ffn.layers.0.0.bias": [4 * c],
                         block + "ffn.layers.1.weight": [c, 4 * c], block + "ffn.layers.1.bias": [c]})
        if i < 3:
            keys.update({f"stages.{i}.downsample.norm.weight": [4 * c], f"stages.{i}.downsample.norm.bias": [4 * c],
                         f"stages.{i}.downsample.reduction.weight": [2 * c, 4 * c]})
    for i in range(4):
        keys.update({f"norm{i}.weight": [embed * 2 ** i], f"norm{i}.bias": [embed * 2 ** i]})
    return keys


def shapes(state) -> list[tuple[str, list[int]]]:
    return [(key, list(tensor.shape)) for key, tensor in state.items()]


@pytest.mark.parametrize("arch", ["tiny", "small", "base"])
def test_the_backbone_has_the_official_key_layout_in_its_order(arch):
    embed, depths, heads = {"tiny": (96, (2, 2, 6, 2), (3, 6, 12, 24)), "small": (96, (2, 2, 18, 2), (3, 6, 12, 24)),
                            "base": (128, (2, 2, 18, 2), (4, 8, 16, 32))}[arch]
    with torch.device("meta"):
        backbone = SwinConfig.arch(arch).build()
    assert shapes(backbone.state_dict()) == official_keys(embed, depths, heads)
    assert backbone.state_dict()["layers.0.blocks.0.attn.relative_position_index"].dtype == torch.int64


def test_mmdetection_layout_converts_key_for_key_and_back():
    expected = mmdet_keys(96, (2, 2, 6, 2), (3, 6, 12, 24))
    theirs = {f"backbone.{key}": torch.randn(shape) for key, shape in expected.items()}
    theirs["neck.fpn_convs.0.conv.weight"] = torch.randn(2, 2, 3, 3)
    assert swin_layout.is_mmdet_swin(theirs)
    ours = swin_layout.mmdet_to_official(theirs)
    with torch.device("meta"):
        backbone = SwinConfig.arch("tiny").build()
    wanted = {f"backbone.{key}": shape for key, shape in official_keys(96, (2, 2, 6, 2), (3, 6, 12, 24))}
    wanted["neck.fpn_convs.0.conv.weight"] = [2, 2, 3, 3]
    assert dict(shapes(ours)) == wanted
    assert {k[len("backbone."):] for k in wanted if k.startswith("backbone.")} == set(backbone.state_dict())
    assert not swin_layout.is_mmdet_swin(ours) and swin_layout.to_official(ours) is ours
    back = swin_layout.official_to_mmdet(ours)
    assert list(back) == list(theirs) and all(torch.equal(back[k], theirs[k]) for k in theirs)
    # only the merging's norm and reduction change values; the rest is renamed
    assert torch.equal(ours["backbone.layers.1.blocks.0.mlp.fc1.weight"],
                       theirs["backbone.stages.1.blocks.0.ffn.layers.0.0.weight"])
    assert not torch.equal(ours["backbone.layers.1.downsample.norm.weight"],
                           theirs["backbone.stages.1.downsample.norm.weight"])


def test_the_relative_position_index_is_mmdetections_too():
    """MMDetection computes the index another way (a double-step sequence plus its transpose,
    flipped); the matrix is the same, so converted files carry a valid one."""
    window = 7
    rows = torch.arange(0, (2 * window - 1) * window, 2 * window - 1)
    seq = (rows[:, None] + torch.arange(window)[None]).reshape(1, -1)
    theirs = (seq + seq.T).flip(1)
    ours = TINY.build().layers[0].blocks[0].attn.relative_position_index
    assert torch.equal(ours, theirs)


# --- the patch-merging reorder, numerically ----------------------------------------------------

def test_patch_merging_with_converted_weights_equals_mmdetections_unfold_merging():
    """MMDetection merges with nn.Unfold (channel-major 4C features); converted into the official
    order, its norm and reduction weights give the same output, bit for bit (our merging sums in
    MMDetection's order)."""
    torch.manual_seed(0)
    channels, height, width = 5, 6, 10
    x = torch.randn(2, height, width, channels)
    norm_weight, norm_bias = torch.randn(4 * channels), torch.randn(4 * channels)
    reduction = torch.randn(2 * channels, 4 * channels)
    # MMDetection's way: (B, C, H, W) -> unfold 2x2 / stride 2 -> (B, L, 4C) -> LayerNorm -> Linear
    unfolded = F.unfold(x.permute(0, 3, 1, 2), kernel_size=2, stride=2).transpose(1, 2)
    theirs = F.linear(F.layer_norm(unfolded, (4 * channels,), norm_weight, norm_bias), reduction)
    state = swin_layout.mmdet_to_official({
        "backbone.stages.0.downsample.norm.weight": norm_weight, "backbone.stages.0.downsample.norm.bias": norm_bias,
        "backbone.stages.0.downsample.reduction.weight": reduction,
        "backbone.stages.0.blocks.0.attn.w_msa.qkv.bias": torch.zeros(1)})  # marks the layout
    merging = PatchMerging(channels)
    merging.load_state_dict({"norm.weight": state["backbone.layers.0.downsample.norm.weight"],
                             "norm.bias": state["backbone.layers.0.downsample.norm.bias"],
                             "reduction.weight": state["backbone.layers.0.downsample.reduction.weight"]})
    ours = merging(x).reshape(2, -1, 2 * channels)
    assert torch.equal(ours, theirs)
    # the unconverted weights would not do (the direction matters)
    merging.load_state_dict({"norm.weight": norm_weight, "norm.bias": norm_bias, "reduction.weight": reduction})
    assert (merging(x).reshape(2, -1, 2 * channels) - theirs).abs().max() > 0.1


def test_patch_merging_concatenates_the_official_x0_x1_x2_x3():
    """The official function (equal up to float rounding: the sums run in MMDetection's order)."""
    torch.manual_seed(0)
    merging = PatchMerging(3)
    x = torch.randn(1, 5, 7, 3)  # odd sizes: padded with zeros at the bottom / right
    padded = F.pad(x, (0, 0, 0, 1, 0, 1))
    chunks = [padded[:, 0::2, 0::2], padded[:, 1::2, 0::2], padded[:, 0::2, 1::2], padded[:, 1::2, 1::2]]
    expected = merging.reduction(merging.norm(torch.cat(chunks, -1)))
    torch.testing.assert_close(merging(x), expected, rtol=1e-6, atol=1e-6)
    assert merging(x).shape == (1, 3, 4, 6)


# --- forward shapes, shifted windows -----------------------------------------------------------

@pytest.mark.parametrize("size", [(75, 101), (64, 96), (33, 29)])
def test_a_tiny_swin_gives_four_maps_at_strides_4_to_32(size):
    torch.manual_seed(0)
    backbone = TINY.build().eval()
    maps = backbone(torch.randn(2, 3, *size), EXACT)
    h, w = -(-size[0] // 4), -(-size[1] // 4)
    expected = []
    for i in range(4):
        expected.append((2, 16 * 2 ** i, h, w))
        h, w = -(-h // 2), -(-w // 2)
    assert [tuple(m.shape) for m in maps] == expected
    assert all(torch.isfinite(m).all() for m in maps)
    assert backbone.out_channels == [16, 32, 64, 128] and backbone.strides == (4, 8, 16, 32)


def test_shifted_window_mask_blocks_exactly_the_wrapped_around_pairs():
    """Brute force: after rolling the padded map by -shift, two tokens of one window may attend to
    each other iff neither axis wrapped one of them around and not the other (their displacement
    is the same as before the roll)."""
    window, shift, height, width = 7, 3, 14, 21
    mask = shifted_window_mask(height, width, window, shift, torch.float32, torch.device("cpu"))
    assert mask.shape == ((height // window) * (width // window), window ** 2, window ** 2)
    for n in range(mask.shape[0]):
        top, left = (n // (width // window)) * window, (n % (width // window)) * window
        cells = [(top + t // window, left + t % window) for t in range(window ** 2)]
        for a, (ya, xa) in enumerate(cells):
            for b, (yb, xb) in enumerate(cells):
                wraps = [(ya + shift >= height) != (yb + shift >= height),
                         (xa + shift >= width) != (xb + shift >= width)]
                assert mask[n, a, b] == (MASK_VALUE if any(wraps) else 0.0)


def test_a_shifted_block_attends_like_a_brute_force_reference():
    """One shifted block's attention branch on a map that needs padding (10 x 12 -> 14 x 14),
    against attention computed token by token in map coordinates: each token attends to the
    tokens of its shifted window that are real neighbours (same region), with the bias of their
    displacement. Pairs across regions get exp(-100): nothing."""
    torch.manual_seed(0)
    dim, heads, window, shift, height, width = 8, 2, 7, 3, 10, 12
    block = SwinBlock(dim, heads, window, shift, mlp_ratio=4, drop_path=0.0).eval()
    with torch.no_grad():
        block.attn.relative_position_bias_table.normal_()
        block.mlp.fc2.weight.zero_()  # the MLP branch adds nothing
        block.mlp.fc2.bias.zero_()
    x = torch.randn(1, height, width, dim)
    mask = shifted_window_mask(14, 14, window, shift, torch.float32, torch.device("cpu"))
    with torch.no_grad():
        ours = block(x, mask) - x  # the attention branch alone
        tokens = F.pad(block.norm1(x), (0, 0, 0, 2, 0, 4))[0]  # (14, 14, C): zeros in the padding
        q, k, v = block.attn.qkv(tokens).reshape(14, 14, 3, heads, dim // heads).unbind(2)
        table = block.attn.relative_position_bias_table
        reference = torch.zeros(height, width, dim)
        for y in range(height):
            for x_ in range(width):
                ry, rx = (y - shift) % 14, (x_ - shift) % 14  # where the roll puts this token
                members = [(yy, xx) for yy in range(14) for xx in range(14)
                           if ((yy - shift) % 14) // window == ry // window
                           and ((xx - shift) % 14) // window == rx // window
                           and (yy < shift) == (y < shift) and (xx < shift) == (x_ < shift)]
                out = []
                for h in range(heads):
                    logits = torch.stack([
                        (q[y, x_, h] * block.attn.scale) @ k[yy, xx, h]
                        + table[(ry - (yy - shift) % 14 + window - 1) * (2 * window - 1)
                                + (rx - (xx - shift) % 14 + window - 1), h]
                        for yy, xx in members])
                    out.append(logits.softmax(0) @ torch.stack([v[yy, xx, h] for yy, xx in members]))
                reference[y, x_] = block.attn.proj(torch.cat(out))
    torch.testing.assert_close(ours[0], reference, rtol=1e-4, atol=1e-5)


def test_stochastic_depth_acts_in_training_only():
    torch.manual_seed(0)
    backbone = SwinConfig(embed_dim=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4), drop_path_rate=0.9).build()
    images = torch.randn(4, 3, 32, 32)
    backbone.eval()
    first, second = backbone(images, EXACT)[3], backbone(images, EXACT)[3]
    assert torch.equal(first, second)
    backbone.train()
    assert not torch.equal(backbone(images, EXACT)[3], backbone(images, EXACT)[3])


# --- loading: the two layouts, ImageNet files ----------------------------------------------------

def test_a_detector_file_in_mmdetection_layout_loads_strictly(tmp_path):
    torch.manual_seed(0)
    model = cascade_rcnn.CascadeRCNN(tiny_config(backbone=TINY, box_head=ConvFCBoxHeadConfig(conv_channels=8))).eval()
    state = swin_layout.official_to_mmdet(model.state_dict())
    assert {"backbone.stages.2.blocks.1.attn.w_msa.qkv.weight", "backbone.patch_embed.projection.weight"} <= set(state)
    path = tmp_path / "mmdet_swin.pth"
    torch.save({"state_dict": state, "meta": {}}, path)
    loaded = cascade_rcnn.build_model(model.config, weights=path)
    for key, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], tensor), key


def test_official_imagenet_files_initialise_the_backbone(tmp_path):
    """The classification files: {"model": ...} with the official names, plus head.*, the final
    norm.* and the shifted blocks' attn_mask buffers, all dropped; norm0..3 keep 1 and 0."""
    from cascade_rcnn.weights.backbone_weights import load_backbone_weights
    torch.manual_seed(0)
    source = TINY.build()
    state = {k: v for k, v in source.state_dict().items() if not k.startswith(("norm0", "norm1", "norm2", "norm3"))}
    state.update({"norm.weight": torch.ones(128), "norm.bias": torch.zeros(128), "head.weight": torch.zeros(1000, 128),
                  "head.bias": torch.zeros(1000), "layers.0.blocks.1.attn_mask": torch.zeros(64, 49, 49)})
    path = tmp_path / "swin_tiny_patch4_window7_224.pth"
    torch.save({"model": state}, path)
    target = TINY.build()
    report = load_backbone_weights(target, path)
    assert torch.equal(target.layers[2].blocks[1].attn.qkv.weight, source.layers[2].blocks[1].attn.qkv.weight)
    assert set(report.dropped) == {"norm.weight", "norm.bias", "head.weight", "head.bias",
                                   "layers.0.blocks.1.attn_mask"}
    assert {k.split(".")[0] for k in report.kept} == {"norm0", "norm1", "norm2", "norm3"}
    assert torch.equal(target.norm2.weight, torch.ones(64))
    # the same file in MMDetection's layout (e.g. mmpretrain's, under backbone.) loads the same
    torch.save({"state_dict": swin_layout.official_to_mmdet({f"backbone.{k}": v for k, v in state.items()
                                                            if not k.startswith(("head.", "norm."))})}, path)
    other = TINY.build()
    load_backbone_weights(other, path)
    assert torch.equal(other.layers[1].downsample.reduction.weight, source.layers[1].downsample.reduction.weight)
    del state["layers.1.blocks.0.mlp.fc1.bias"]
    torch.save({"model": state}, path)
    with pytest.raises(cascade_rcnn.CheckpointError, match="not ImageNet weights of a Swin-16"):
        load_backbone_weights(TINY.build(), path)


# --- the zoo rows --------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(SWIN_ROWS))
def test_the_zoo_rows_build_the_official_checkpoints_layout(name):
    """The whole detector on the meta device: backbone keys = the official code's, everything
    else = MMDetection's ConvNeXt-T cascade (same 4-conv heads, FPN from 96 * 2^i channels; the
    official repository's heads and neck are MMDetection 2's, whose names these are), with the
    FPN's lateral convs widened for Swin-B. Parameter counts = the official README's (86M, 107M,
    145M)."""
    arch, embed, depths, heads, box_ap, mask_ap, millions = SWIN_ROWS[name]
    config = cascade_rcnn.get_config(name)
    assert (config.reported_box_ap, config.reported_mask_ap, config.reported_mem_gb) == (box_ap, mask_ap, None)
    assert config.url == f"https://github.com/SwinTransformer/storage/releases/download/v1.0.2/{name}.pth"
    assert config.backbone.imagenet_url == ("https://github.com/SwinTransformer/storage/releases/download/v1.0.0/"
                                            f"swin_{arch}_patch4_window7_224.pth")
    assert config.train_resize_crop and config.schedule == "3x" and config.box_head == ConvFCBoxHeadConfig()
    assert config.backbone.drop_path_rate == {"tiny": 0.2, "small": 0.2, "base": 0.3}[arch]
    with torch.device("meta"):
        model = cascade_rcnn.CascadeRCNN(config)
    ours = dict(shapes(model.state_dict()))
    convnext = json.loads((MODERN_KEYS_DIR / f"{CONVNEXT_T}.json").read_text())
    expected = {f"backbone.{key}": shape for key, shape in official_keys(embed, depths, heads)}
    for key, shape in convnext:
        if not key.startswith("backbone."):
            if key.startswith("neck.lateral_convs.") and key.endswith(".weight"):
                shape = [256, embed * 2 ** int(key.split(".")[2]), 1, 1]
            expected[key] = shape
    assert ours == expected
    assert round(sum(p.numel() for p in model.parameters()) / 1e6) == millions


def test_cascade_rcnn_models_lists_the_swin_rows(capsys):
    from cascade_rcnn.cli import main
    assert main(["models", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    for name, (arch, *_, box_ap, mask_ap, _millions) in SWIN_ROWS.items():
        assert rows[name]["backbone"] == f"Swin-{arch[0].upper()}"
        assert (rows[name]["box_ap"], rows[name]["mask_ap"], rows[name]["mem_gb"]) == (box_ap, mask_ap, None)


def test_swin_parameter_groups_follow_the_official_paramwise_cfg():
    from cascade_rcnn.engine.param_groups import parameter_groups
    torch.manual_seed(0)
    model = cascade_rcnn.CascadeRCNN(tiny_config(backbone=TINY, box_head=ConvFCBoxHeadConfig(conv_channels=8)))
    groups = parameter_groups(model, weight_decay=0.05)
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for g in groups if g["weight_decay"] == 0.05 for p in g["params"]}
    exempt = {names[id(p)] for g in groups if g["weight_decay"] == 0.0 for p in g["params"]}
    assert all(g["lr_scale"] == 1.0 for g in groups)
    assert decayed | exempt == set(names.values()) and not decayed & exempt
    assert "backbone.layers.0.blocks.1.attn.relative_position_bias_table" in exempt
    assert {"backbone.norm3.weight", "backbone.patch_embed.norm.bias", "backbone.layers.1.downsample.norm.weight",
            "backbone.layers.2.blocks.0.norm1.weight"} <= exempt
    assert {"backbone.layers.0.blocks.0.attn.qkv.bias", "backbone.patch_embed.proj.weight",
            "roi_head.bbox_head.0.shared_convs.0.bn.weight", "neck.lateral_convs.0.conv.bias"} <= decayed


# --- a small Swin cascade end to end -------------------------------------------------------------

def swin_model(with_mask: bool = True) -> cascade_rcnn.CascadeRCNN:
    torch.manual_seed(0)
    return cascade_rcnn.CascadeRCNN(tiny_config(with_mask, backbone=TINY,
                                                box_head=ConvFCBoxHeadConfig(conv_channels=8))).eval()


def test_a_swin_cascade_trains_a_step_and_reloads_its_state_strictly(tmp_path):
    model = swin_model().train()
    losses = model.loss(*two_image_training_batch())
    total = sum(value for name, value in losses.items() if not name.endswith("_acc"))
    assert torch.isfinite(total) and losses["s0_box"] > 0
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    before = model.backbone.layers[0].blocks[1].attn.relative_position_bias_table.detach().clone()
    total.backward()
    assert model.backbone.patch_embed.proj.weight.grad.abs().sum() > 0
    assert model.backbone.layers[3].blocks[1].mlp.fc2.weight.grad.abs().sum() > 0
    optimizer.step()
    assert not torch.equal(model.backbone.layers[0].blocks[1].attn.relative_position_bias_table, before)
    path = tmp_path / "swin.pth"
    checkpoint.save(path, model)
    again = cascade_rcnn.build_model(model.config, weights=path)
    assert all(torch.equal(again.state_dict()[k], v) for k, v in model.state_dict().items())
    fresh = swin_model()
    fresh.load_state_dict(model.state_dict(), strict=True)


@pytest.mark.parametrize("with_mask", [True, False], ids=["mask", "box"])
def test_a_swin_cascade_predicts_the_same_on_both_paths_and_exports(with_mask, tmp_path):
    pytest.importorskip("onnxruntime")
    scene = drawn_scene(150, 200, seed=4)
    model = spread_random_weights(swin_model(with_mask), scene)
    runtime = assert_paths_agree_and_export(model, scene, tmp_path / "swin.onnx")
    other = drawn_scene(200, 120, seed=5)  # another padded size (96 x 64): the graph's windows follow it
    ours, theirs = model.predict(other)[0], runtime.predict(other)[0]
    match = agreement(ours, theirs, min_iou=0.99)
    assert match.matched == len(ours) == len(theirs) and match.max_score_diff <= 1e-3
