"""Any timm backbone under a cascade (``--set backbone=timm:NAME``): a tiny one trains a step,
predicts, survives a checkpoint round trip and exports to ONNX; a model at other strides is refused."""
from __future__ import annotations

import pytest
import torch
from conftest import tiny_config

import cascade_rcnn
from cascade_rcnn.benchmarking.agreement import agreement
from cascade_rcnn.benchmarking.synthetic import drawn_scene, spread_random_weights
from cascade_rcnn.models.settings import apply_settings, parse_settings, settings_text

pytest.importorskip("timm")
TINY = "mobilenetv3_small_050"  # 0.6 M parameters; features at strides 2..32, the last four used


def timm_model() -> cascade_rcnn.CascadeRCNN:
    torch.manual_seed(0)
    config = apply_settings(tiny_config(), parse_settings([f"backbone=timm:{TINY}"]))
    return cascade_rcnn.CascadeRCNN(config)


def test_a_timm_backbone_trains_a_step_and_keeps_timms_input_norm():
    model = timm_model().train()
    assert model.config.backbone.label == f"timm:{TINY}" and model.backbone.strides == (4, 8, 16, 32)
    assert model.config.pixel_mean == pytest.approx((123.675, 116.28, 103.53))
    images = torch.randn(2, 3, 64, 96, generator=torch.Generator().manual_seed(0))
    boxes = torch.tensor([[10.0, 8.0, 50.0, 40.0]])
    masks = torch.zeros(1, 64, 96, dtype=torch.uint8)
    masks[0, 8:40, 10:50] = 1
    targets = [{"boxes": boxes, "labels": torch.tensor([1]), "masks": masks}] * 2
    losses = model.loss(images, targets, torch.tensor([[64, 96], [64, 96]]))
    total = sum(value for name, value in losses.items() if not name.endswith("_acc"))
    total.backward()
    assert torch.isfinite(total)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.backbone.parameters())


def test_a_timm_backbone_predicts_reloads_and_exports(tmp_path):
    pytest.importorskip("onnxruntime")
    scene = drawn_scene(150, 200, seed=5)
    model = spread_random_weights(timm_model().eval(), scene)
    ours = model.predict(scene)[0]
    assert len(ours) > 0
    assert settings_text(model.config)["backbone"] == f"timm:{TINY}"
    cascade_rcnn.checkpoint.save(tmp_path / "timm.pth", model)
    reloaded = cascade_rcnn.build_model(tiny_config(), weights=tmp_path / "timm.pth")
    assert reloaded.config.backbone == model.config.backbone
    assert torch.equal(reloaded.predict(scene)[0].boxes, ours.boxes)
    runtime = cascade_rcnn.OnnxDetector(cascade_rcnn.export_onnx(model, tmp_path / "timm.onnx"))
    match = agreement(ours, runtime.predict(scene)[0], min_iou=0.99)
    assert match.matched == len(ours) and match.max_score_diff <= 1e-3


def test_bad_timm_backbones_are_one_line_errors():
    with pytest.raises(ValueError, match="expected timm:NAME"):
        parse_settings(["backbone=resnet50"])
    config = apply_settings(tiny_config(), parse_settings(["backbone=timm:vit_tiny_patch16_224"]))
    with pytest.raises(ValueError, match="strides"):
        cascade_rcnn.CascadeRCNN(config)
