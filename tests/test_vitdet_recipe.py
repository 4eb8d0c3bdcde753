"""ViTDet's training recipe: Detectron2's optimizer rules for the ViT (layer-wise lr decay, weight
decay exemptions) against its formulas written out here, drop path, large-scale jitter, the dump's
recipe as TrainConfig arguments (and refusals by key), MAE initialisation, and a tiny run of it all
through the CLI."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import cascade_rcnn
from cascade_rcnn.cli import main
from cascade_rcnn.data.lsj import large_scale_jitter
from cascade_rcnn.data.shapes import generate_shapes
from cascade_rcnn.detectron2_config import lazy_recipe, recipe_parts
from cascade_rcnn.detectron2_config.lazy_model import read_lazy_model
from cascade_rcnn.engine.param_groups import parameter_groups
from cascade_rcnn.errors import ConfigError
from cascade_rcnn.inference.predictor import CascadeRCNN
from cascade_rcnn.models.backbones.vit import ViTConfig
from cascade_rcnn.weights import checkpoint
from cascade_rcnn.weights.backbone_weights import load_backbone_weights
from cascade_rcnn.weights.checkpoint import CheckpointError
from cascade_rcnn.weights.zoo import DETECTRON2_CONFIGS

TINY = Path(__file__).resolve().parents[2] / "shared" / "golden" / "vitdet_cascade_mask_rcnn_tiny" / "config.yaml"
VITDET = DETECTRON2_CONFIGS / "ViTDet"
# row: (lr_decay_rate, num_layers, weight_decay_norm, overrides, drop_path_rate), as the configs set them
ROWS = {"COCO/cascade_mask_rcnn_vitdet_b_100ep": (0.7, 12, 0.0, {"pos_embed": {"weight_decay": 0.0}}, 0.1),
        "COCO/cascade_mask_rcnn_vitdet_l_100ep": (0.8, 24, 0.0, {"pos_embed": {"weight_decay": 0.0}}, 0.4),
        "COCO/cascade_mask_rcnn_vitdet_h_75ep": (0.9, 32, None, {}, 0.5)}


def detectron2_lr_factor(name: str, lr_decay_rate: float, num_layers: int) -> float:
    """Detectron2's get_vit_lr_decay_rate on its own parameter name, written out."""
    layer_id = num_layers + 1
    if name.startswith("backbone"):
        if ".pos_embed" in name or ".patch_embed" in name:
            layer_id = 0
        elif ".blocks." in name and ".residual." not in name:
            layer_id = int(name[name.find(".blocks."):].split(".")[2]) + 1
    return lr_decay_rate ** (num_layers + 1 - layer_id)


def detectron2_name(ours: str) -> str:
    """Our ViT sits at Detectron2's backbone.net (the pyramid, our neck., is not in the ViT)."""
    return "backbone.net." + ours[len("backbone."):] if ours.startswith("backbone.") else ours


@pytest.mark.parametrize("row", ROWS)
def test_lr_factors_and_weight_decay_are_detectron2s(row):
    rate, layers, decay_norm, overrides, drop = ROWS[row]
    config = cascade_rcnn.get_config(row)
    assert config.backbone.drop_path_rate == drop and config.train_lsj == 1024
    with torch.device("meta"):
        model = CascadeRCNN(config)
    groups = parameter_groups(model, 0.1)
    group_of = {id(p): g for g in groups for p in g["params"]}
    # get_default_optimizer_params: weight_decay_norm on torch norm modules, then overrides by parameter name
    expected_decay = {}
    for module_name, module in model.named_modules():
        for param_name, parameter in module.named_parameters(recurse=False):
            decay = 0.1
            if isinstance(module, torch.nn.LayerNorm) and decay_norm is not None:
                decay = decay_norm
            decay = overrides.get(param_name, {}).get("weight_decay", decay)
            expected_decay[f"{module_name}.{param_name}"] = decay
    scales = set()
    for name, parameter in model.named_parameters():
        group = group_of[id(parameter)]
        assert group["lr_scale"] == pytest.approx(detectron2_lr_factor(detectron2_name(name), rate, layers),
                                                  rel=1e-12), name
        assert group["weight_decay"] == expected_decay[name], name
        scales.add(group["lr_scale"])
    assert len(scales) == config.backbone.depth + 2  # patch and position, each block, the rest
    exempt = sum(g["weight_decay"] == 0 for g in groups)
    assert exempt == (0 if decay_norm is None else config.backbone.depth + 1)  # each block's norms, pos_embed


def test_drop_path_is_active_in_training_only():
    vit = ViTConfig(embed_dim=32, depth=3, num_heads=2, img_size=64, window_size=0, window_blocks=(),
                    square_pad=64, drop_path_rate=0.5).build()
    assert [block.drop_path for block in vit.blocks] == [0.0, 0.25, 0.5]
    same = ViTConfig(embed_dim=32, depth=3, num_heads=2, img_size=64, window_size=0, window_blocks=(),
                     square_pad=64, drop_path_rate=0.0).build()
    same.load_state_dict(vit.state_dict())
    images = torch.randn(8, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    vit.eval(), same.eval()
    assert torch.equal(vit(images)[0], same(images)[0])  # eval: the identity, detections unchanged
    vit.train(), same.train()
    torch.manual_seed(1)
    first = vit(images)[0]
    torch.manual_seed(1)
    assert torch.equal(vit(images)[0], first)  # deterministic given the global seed (the trainer's)
    assert not torch.equal(first, same(images)[0])
    dropped = (first - same(images)[0]).flatten(1).abs().amax(1) > 0
    assert 0 < dropped.sum() < 8 or dropped.all()  # per image


def _sample(height=120, width=200):
    masks = np.zeros((3, height, width), np.uint8)
    masks[0, 10:50, 20:80] = 1
    masks[1, 100:119, 150:199] = 1
    masks[2, 0:4, 0:4] = 1
    boxes = torch.tensor([[20, 10, 80, 50], [150, 100, 199, 119], [0, 0, 4, 4]], dtype=torch.float32)
    image = np.random.default_rng(0).integers(0, 255, (height, width, 3), dtype=np.uint8)
    return {"image": image, "boxes": boxes, "labels": torch.tensor([1, 2, 3]), "masks": masks,
            "crowd_boxes": torch.zeros(0, 4)}


@pytest.mark.parametrize("seed", range(6))
def test_large_scale_jitter_follows_resize_scale_and_fixed_size_crop(seed):
    sample, side = _sample(), 64
    out, scale = large_scale_jitter(sample, side, torch.Generator().manual_seed(seed))
    # Detectron2's ResizeScale and FixedSizeCrop with the same two draws, written out
    draws = torch.Generator().manual_seed(seed)
    s = 0.1 + 1.9 * float(torch.rand((), dtype=torch.float64, generator=draws))
    factor = np.minimum(side * s / 120, side * s / 200)
    size = np.round(np.multiply((120, 200), factor)).astype(int)
    offset = np.round(np.maximum(size - side, 0) * float(torch.rand((), dtype=torch.float64, generator=draws)))
    crop = np.minimum(size, side)
    assert out["image"].shape[:2] == tuple(crop) and scale == (max(crop), min(crop))
    assert out["masks"].shape[1:] == tuple(crop) and len(out["masks"]) == len(out["boxes"]) == len(out["labels"])
    for box, mask in zip(out["boxes"], out["masks"]):  # recompute_boxes: each box spans its mask's pixels
        ys, xs = np.nonzero(mask)
        assert box.tolist() == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
    # an object is kept iff its scaled box overlaps the window
    scaled = sample["boxes"] * torch.tensor([size[1] / 200, size[0] / 120] * 2)
    top, left = offset
    inside = ((scaled[:, 2] > left) & (scaled[:, 0] < left + crop[1]) & (scaled[:, 3] > top)
              & (scaled[:, 1] < top + crop[0]))
    assert len(out["labels"]) <= int(inside.sum())


def _dump(tmp_path: Path, old: str = "", new: str = "", source: Path = VITDET / "COCO" /
          "cascade_mask_rcnn_vitdet_b_100ep.yaml") -> Path:
    text = source.read_text()
    assert old in text
    path = tmp_path / "config.yaml"
    path.write_text(text.replace(old, new))
    return path


def test_the_zoo_dumps_recipes_become_train_config_arguments(monkeypatch):
    monkeypatch.setattr(recipe_parts, "cpu_has_bf16_instructions", lambda: True)
    for row, warmup, schedule in (("COCO/cascade_mask_rcnn_vitdet_b_100ep", 250, "100ep"),
                                  ("COCO/cascade_mask_rcnn_vitdet_h_75ep", 188, "75ep")):
        recipe, notes = lazy_recipe.training_recipe(VITDET / f"{row}.yaml")
        # 1e-4 for 64 images -> per 16; warm-up 250 (187.5 -> the 188 iterations Detectron2 warms up)
        assert recipe == {"optimizer": "adamw", "lr_per_16": pytest.approx(2.5e-5), "weight_decay": 0.1,
                          "filter_empty_gt": True, "min_size": 0, "warmup_iters": warmup, "schedule": schedule,
                          "precision": "bf16"} and not notes
    assert lazy_recipe.training_recipe(VITDET / "COCO/cascade_mask_rcnn_vitdet_b_100ep.yaml",
                                       "cuda")[0]["precision"] == "fp16"
    monkeypatch.setattr(recipe_parts, "cpu_has_bf16_instructions", lambda: False)
    recipe, notes = lazy_recipe.training_recipe(VITDET / "COCO/cascade_mask_rcnn_vitdet_b_100ep.yaml")
    assert "precision" not in recipe and "train.amp.enabled" in notes[0]


def test_a_schedule_that_is_no_zoo_rows_leaves_epochs_to_the_command(tmp_path):
    recipe, notes = lazy_recipe.training_recipe(_dump(tmp_path, "milestones: [163889, 177546]",
                                                      "milestones: [100000, 177546]"))
    assert "schedule" not in recipe and len(notes) >= 1 and "--epochs" in notes[0]


@pytest.mark.parametrize("old, new, key", [
    ("_target_: torch.optim.AdamW", "_target_: torch.optim.SGD", "optimizer._target_"),
    ("betas: [0.9, 0.999]", "betas: [0.9, 0.98]", "optimizer.betas"),
    ("weight_decay_norm: 0.0", "weight_decay_norm: 0.5", "optimizer.params.weight_decay_norm"),
    ("pos_embed: {weight_decay: 0.0}", "rel_pos_h: {weight_decay: 0.0}", "optimizer.params.overrides"),
    ("lr_decay_rate: 0.7, num_layers: 12", "lr_decay_rate: 0.7, num_layers: 12, skip: 1",
     "optimizer.params.lr_factor_func"),
    ("values: [1.0, 0.1, 0.01]", "values: [1.0, 0.5, 0.01]", "lr_multiplier.scheduler.values"),
    ("warmup_factor: 0.001", "warmup_factor: 0.01", "lr_multiplier.warmup_factor"),
    ("min_scale: 0.1", "min_scale: 0.5", "dataloader.train.mapper.augmentations.1.min_scale"),
    ("pad: false", "pad: true", "dataloader.train.mapper.augmentations.2.pad"),
    ("recompute_boxes: true", "recompute_boxes: false", "dataloader.train.mapper.recompute_boxes"),
    ("total_batch_size: 64", "total_batch_size: 64\n    sampler: {_target_: my.Sampler}", "dataloader.train.sampler"),
    ("init_checkpoint: detectron2://ImageNetPretrained/MAE", "init_checkpoint: detectron2://Misc/MAE",
     "train.init_checkpoint"),
    ("log_period: 20", "log_period: 20\n  grad_clip: 1.0", "train.grad_clip"),
])
def test_a_recipe_key_we_do_not_follow_is_refused_by_key(tmp_path, old, new, key):
    path = _dump(tmp_path, old, new)
    with pytest.raises(ConfigError, match=rf"config\.yaml: {key.replace('.', '[.]')}\b"):
        lazy_recipe.training_recipe(path)
    read_lazy_model(path)  # the model itself is still read (for prediction), with Detectron2's defaults


def test_augmentations_other_than_lsj_are_refused_by_key(tmp_path):
    text = (VITDET / "COCO" / "cascade_mask_rcnn_vitdet_b_100ep.yaml").read_text()
    start, end = text.index("      - {_target_: detectron2.data.transforms.RandomFlip"), text.index("      image_format: RGB")
    path = tmp_path / "config.yaml"
    path.write_text(text[:start] + "      - {_target_: detectron2.data.transforms.ResizeShortestEdge, "
                    "short_edge_length: 800}\n" + text[end:])
    with pytest.raises(ConfigError, match=r"dataloader\.train\.mapper\.augmentations = .*ResizeShortestEdge"):
        lazy_recipe.training_recipe(path)
    assert read_lazy_model(path).train_lsj == 0


def mae_file(path: Path, vit: torch.nn.Module, seed: int = 0) -> dict[str, torch.Tensor]:
    """A synthetic file in MAE's format for ``vit``: {"model": ...} under timm's names, with the
    class token and final norm, and no relative position tables."""
    generator = torch.Generator().manual_seed(seed)
    state = {name: 0.02 * torch.randn(tensor.shape, generator=generator) for name, tensor in vit.state_dict().items()
             if ".rel_pos_" not in name}
    dim = vit.config.embed_dim
    extra = {"cls_token": torch.randn(1, 1, dim, generator=generator), "norm.weight": torch.ones(dim),
             "norm.bias": torch.zeros(dim)}
    torch.save({"model": {**state, **extra}}, path)
    return state


def test_mae_weights_initialise_the_vit(tmp_path):
    config = read_lazy_model(TINY)
    assert config.backbone.imagenet_url.endswith("/ImageNetPretrained/MAE/mae_pretrain_vit_base.pth")
    vit = config.backbone.build()
    state = mae_file(tmp_path / "mae.pth", vit)
    report = load_backbone_weights(vit, tmp_path / "mae.pth")
    assert set(report.dropped) == {"cls_token", "norm.weight", "norm.bias"}
    assert set(report.kept) == {f"blocks.{i}.attn.rel_pos_{a}" for i in range(4) for a in "hw"}
    own = vit.state_dict()
    assert all(torch.equal(own[name], tensor) for name, tensor in state.items())
    assert all(not own[name].any() for name in report.kept)  # zero, as Detectron2 leaves them
    wider = ViTConfig(embed_dim=32, depth=4, num_heads=2, img_size=256, window_blocks=(0, 2), square_pad=256).build()
    with pytest.raises(CheckpointError, match="mae.pth: .* other shapes"):
        load_backbone_weights(wider, tmp_path / "mae.pth")


def test_the_tiny_recipe_trains_through_the_cli(tmp_path, capsys):
    """The golden tiny ViTDet with LSJ at 256 and drop path 0.2, from a synthetic MAE file, for a
    few iterations of its recipe (AdamW, lr decay, exemptions) on shapes data."""
    text = TINY.read_text()
    for old, new in (("target_height: 1024, target_width: 1024", "target_height: 256, target_width: 256"),
                     ("crop_size: [1024, 1024]", "crop_size: [256, 256]"), ("drop_path_rate: 0.0", "drop_path_rate: 0.2")):
        assert old in text
        text = text.replace(old, new)
    (tmp_path / "run").mkdir()
    config = tmp_path / "run" / "config.yaml"
    config.write_text(text)
    model_config = read_lazy_model(config)
    assert model_config.train_lsj == 256 and model_config.backbone.drop_path_rate == 0.2
    state = mae_file(tmp_path / "mae.pth", model_config.backbone.build())
    generate_shapes(tmp_path / "data", num_images=4, size=160, seed=3)
    out = tmp_path / "out"
    assert main(["train", "--config", str(config), "--train-json", str(tmp_path / "data" / "annotations.json"),
                 "--train-images", str(tmp_path / "data" / "images"), "--backbone-weights", str(tmp_path / "mae.pth"),
                 "--epochs", "1", "--batch-size", "2", "--workers", "0", "--eval-every", "0", "--warmup-iters", "0",
                 "--precision", "fp32", "--set", "train_proposals=300", "--set", "rois_per_image=64",
                 "--out", str(out)]) == 0
    said = capsys.readouterr().out
    assert f"backbone initialised from {tmp_path / 'mae.pth'}: " in said and "cls_token" in said
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [row["loss"] for row in rows if "loss" in row]
    assert len(losses) >= 1 and all(np.isfinite(losses))
    # the recipe's lr: 2.5e-5 per 16 images x 2 images (its 250 warm-up iterations set aside by the command)
    first_lr = [row["lr"] for row in rows if "lr" in row][0]
    assert first_lr == pytest.approx(2.5e-5 * 2 / 16)
    trained = checkpoint.state_dict_of(checkpoint.read(out / "final.pth"))
    moved = [name for name, tensor in state.items() if not torch.equal(trained[f"backbone.{name}"], tensor)]
    assert "blocks.3.mlp.fc2.weight" in moved and len(moved) > len(state) // 2


def test_training_a_vitdet_zoo_row_follows_its_dumps_recipe(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr("cascade_rcnn.engine.train.train", lambda model, config: calls.append((model, config))
                        or Path("final.pth"))
    assert main(["train", "--model", "COCO/cascade_mask_rcnn_vitdet_l_100ep", "--train-json", str(tmp_path / "t.json"),
                 "--train-images", str(tmp_path), "--precision", "fp32", "--out", str(tmp_path / "run")]) == 0
    model, config = calls[0]
    assert (config.optimizer, config.lr_per_16, config.weight_decay, config.warmup_iters, config.schedule,
            config.precision, config.min_size) == ("adamw", pytest.approx(2.5e-5), 0.1, 250, "100ep", "fp32", 0)
    assert model.backbone.imagenet_url.endswith("/MAE/mae_pretrain_vit_large.pth") and config.backbone_weights is None
