"""The modern rows' training recipes, end to end: docs/zoo.md's ``cascade-rcnn train`` command of a
ConvNeXt and a Swin row, run on the shapes data with the row's config shrunk (mmpretrain's atto
ConvNeXt / a 16-wide Swin, narrow FPN and heads, fewer RoIs) but its recipe intact: DETR's
resize-crop, AdamW with the row's parameter groups (ConvNeXt's layer-wise lr decay, Swin's
no-decay names), GIoU on class-specific boxes (the 3x schedule's epochs cut to 2)."""
from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

import cascade_rcnn
from cascade_rcnn.cli import main
from cascade_rcnn.data import loader
from cascade_rcnn.data.shapes import generate_shapes
from cascade_rcnn.models.backbones.convnext import LR_DECAY_RATE, ConvNeXtConfig
from cascade_rcnn.models.backbones.swin import SwinConfig
from cascade_rcnn.weights import checkpoint
from cascade_rcnn.weights.zoo import MODEL_ZOO

CONVNEXT_T = "cascade_mask_rcnn_convnext-t_p4_w7_fpn_giou_4conv1f_fp16_ms-crop_3x_coco"
SWIN_T = "cascade_mask_rcnn_swin_tiny_patch4_window7"
SMALL_BACKBONES = {CONVNEXT_T: ConvNeXtConfig("atto", drop_path_rate=0.1),
                   SWIN_T: SwinConfig(embed_dim=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4), drop_path_rate=0.1)}


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes")
    generate_shapes(root, num_images=4, size=128, seed=5)
    return root


@pytest.mark.parametrize("row", list(SMALL_BACKBONES), ids=["convnext", "swin"])
def test_a_rows_recipe_trains_end_to_end_from_the_command_line(row, shapes, tmp_path, monkeypatch):
    full = cascade_rcnn.get_config(row)
    assert full.train_resize_crop and full.schedule == "3x" and full.box_head.giou_loss_weight == 10.0
    small = full.with_changes(backbone=SMALL_BACKBONES[row], fpn_channels=16, fc_channels=32,
                              box_head=replace(full.box_head, conv_channels=8), train_proposals=300,
                              rois_per_image=64)
    monkeypatch.setitem(MODEL_ZOO, row, small)
    crops = []
    resize_crop = loader.resize_crop

    def counted_resize_crop(sample, generator):
        crops.append(sample["image"].shape)
        return resize_crop(sample, generator)

    monkeypatch.setattr(loader, "resize_crop", counted_resize_crop)
    out = tmp_path / "run"
    status = main(["train", "--model", row, "--train-json", str(shapes / "annotations.json"),
                   "--train-images", str(shapes / "images"), "--out", str(out), "--optimizer", "adamw",
                   "--backbone-weights", "none", "--epochs", "2", "--batch-size", "2", "--workers", "0",
                   "--warmup-iters", "2", "--eval-every", "0"])
    assert status == 0
    assert len(crops) == 8  # every image of both epochs went through DETR's resize-crop

    logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [entry for entry in logged if "loss" in entry]  # logged at the end of each epoch
    assert len(steps) == 2 and all(torch.isfinite(torch.tensor(entry["loss"])) for entry in steps)
    assert all(entry["s0_box"] > 0 for entry in steps)  # GIoU on the decoded boxes

    latest = checkpoint.read(out / "latest.pth")
    groups = latest["optimizer"]["param_groups"]
    if row == CONVNEXT_T:  # layer-wise decay: 0.7 ** (7 - layer id); atto's 6 blocks of its third
        # stage take ids 3 and 4 (3 + block // 3), so no parameter has id 5
        expected = {round(LR_DECAY_RATE ** (7 - layer), 6) for layer in (0, 1, 2, 3, 4, 6, 7)}
        assert {round(g["lr_scale"], 6) for g in groups} == expected
    else:  # Swin: one lr, no weight decay on norms and position-bias tables
        assert {g["lr_scale"] for g in groups} == {1.0} and sorted(g["weight_decay"] for g in groups)[0] == 0.0
    assert steps[-1]["lr"] == pytest.approx(2e-4 * 2 / 16)  # AdamW's lr for 16 images, scaled to 2, warmed up

    trained = cascade_rcnn.build_model(small, weights=out / "final.pth")  # loads strictly
    found = trained.predict(str(next((shapes / "images").iterdir())), score_thr=0.0)[0]
    assert found.masks is not None and len(found) > 0
