"""The ConvNeXt rows' parts: ConvNeXt backbone, box heads of 4 convs + BatchNorm + 1 FC with one box
per class; a small model of them trains a step, predicts (fast = exact up to float noise) and
exports to ONNX (per-class boxes in the graph's NMS)."""
from __future__ import annotations

import pytest
import torch
from conftest import assert_paths_agree_and_export, tiny_config, two_image_training_batch

import cascade_rcnn
from cascade_rcnn.benchmarking.synthetic import drawn_scene, spread_random_weights
from cascade_rcnn.models.backbones.convnext import ConvNeXtConfig
from cascade_rcnn.models.heads.box_head import ConvFCBoxHeadConfig


def convnext_model(with_mask: bool = True) -> cascade_rcnn.CascadeRCNN:
    torch.manual_seed(0)
    config = tiny_config(with_mask, backbone=ConvNeXtConfig("tiny", drop_path_rate=0.1),
                         box_head=ConvFCBoxHeadConfig(conv_channels=8))
    return cascade_rcnn.CascadeRCNN(config).eval()


def test_class_specific_box_heads_regress_one_box_per_class():
    model = convnext_model()
    head = model.roi_head.bbox_head[0]
    assert head.fc_reg.out_features == 4 * 3 and len(head.shared_convs) == 4
    logits, deltas = head(torch.randn(5, 16, 7, 7), model.path)
    assert logits.shape == (5, 4) and deltas.shape == (5, 12)


def test_a_convnext_cascade_trains_a_step_with_class_specific_boxes():
    model = convnext_model().train()
    losses = model.loss(*two_image_training_batch())
    total = sum(value for name, value in losses.items() if not name.endswith("_acc"))
    assert torch.isfinite(total) and losses["s0_box"] > 0
    total.backward()
    assert model.backbone.stages[0][0].gamma.grad is not None
    assert model.roi_head.bbox_head[2].shared_convs[0].conv.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("with_mask", [True, False], ids=["mask", "box"])
def test_a_convnext_cascade_predicts_the_same_on_both_paths_and_exports(with_mask, tmp_path):
    pytest.importorskip("onnxruntime")
    scene = drawn_scene(150, 200, seed=4)
    assert_paths_agree_and_export(spread_random_weights(convnext_model(with_mask), scene), scene,
                                  tmp_path / "convnext.onnx")


def test_giou_loss_is_one_minus_generalized_iou():
    from cascade_rcnn.ops.giou import giou_loss
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 10.0]])
    targets = torch.tensor([[0.0, 0.0, 10.0, 10.0], [5.0, 0.0, 15.0, 10.0], [20.0, 0.0, 30.0, 10.0]])
    # identical: 0; half overlap: IoU 1/3, enclosure = union: 2/3; disjoint: IoU 0, enclosure 300 vs union 200
    torch.testing.assert_close(giou_loss(boxes, targets), torch.tensor([0.0, 2 / 3, 1 + 100 / 300]))


def test_convnext_layer_wise_lr_decay_follows_mmdetection():
    from cascade_rcnn.engine.param_groups import parameter_groups
    from cascade_rcnn.models.backbones.convnext import layer_id
    assert layer_id("backbone.downsample_layers.0.0.weight", 6) == 0
    assert layer_id("backbone.stages.0.2.gamma", 6) == 1
    assert layer_id("backbone.downsample_layers.1.1.weight", 6) == 2
    assert layer_id("backbone.stages.2.7.pointwise_conv1.weight", 6) == 3 + 7 // 3
    assert layer_id("backbone.stages.3.0.norm.weight", 6) == 6
    assert layer_id("backbone.norm3.weight", 6) == 7 and layer_id("neck.fpn_convs.0.conv.weight", 6) == 7
    groups = parameter_groups(convnext_model(), weight_decay=0.05)
    scales = {round(g["lr_scale"], 6) for g in groups}
    assert scales == {round(0.7 ** k, 6) for k in range(8)}
    assert all(g["weight_decay"] == 0.0 for g in groups if all(p.dim() == 1 for p in g["params"]))
    model = convnext_model()
    assert sum(len(g["params"]) for g in groups) == len([p for p in model.parameters() if p.requires_grad])
    # ConvNeXt-S: 27 blocks in the third stage, MMDetection's num_layers 12: ids up to 3 + 26 // 3 = 11,
    # the last stage 12, the rest 13; every scale 0.7 ** (13 - id) <= 1.
    assert layer_id("backbone.stages.2.26.pointwise_conv1.weight", 12) == 11
    small = cascade_rcnn.get_config("cascade_mask_rcnn_convnext-s_p4_w7_fpn_giou_4conv1f_fp16_ms-crop_3x_coco")
    with torch.device("meta"):
        groups = parameter_groups(cascade_rcnn.CascadeRCNN(small), weight_decay=0.05)
    assert {round(g["lr_scale"], 6) for g in groups} == {round(0.7 ** k, 6) for k in range(14)}


def test_imagenet_weights_of_an_mmpretrain_classifier_load_into_the_convnext(tmp_path):
    from cascade_rcnn.weights.backbone_weights import load_backbone_weights
    source = ConvNeXtConfig("tiny").build()
    # What mmpretrain's classifier file holds: backbone.* (here without norm0..2) and head.fc.*.
    state = {f"backbone.{k}": v for k, v in source.state_dict().items() if not k.startswith(("norm0", "norm1", "norm2"))}
    state.update({"head.fc.weight": torch.zeros(1000, 768), "head.fc.bias": torch.zeros(1000)})
    path = tmp_path / "convnext-tiny_in1k.pth"
    torch.save({"state_dict": state}, path)
    target = ConvNeXtConfig("tiny").build()
    report = load_backbone_weights(target, path)
    assert torch.equal(target.stages[2][5].pointwise_conv1.weight, source.stages[2][5].pointwise_conv1.weight)
    assert set(report.dropped) == {"head.fc.weight", "head.fc.bias"}
    assert {k.split(".")[0] for k in report.kept} == {"norm0", "norm1", "norm2"}
    assert torch.equal(target.norm0.weight, torch.ones(96))  # kept as initialised, as MMDetection
    del state["backbone.stages.1.0.gamma"]
    torch.save(state, path)
    with pytest.raises(cascade_rcnn.CheckpointError, match="not ImageNet weights of a ConvNeXt-T"):
        load_backbone_weights(ConvNeXtConfig("tiny").build(), path)
