"""The published configs build models whose state dicts are MMDetection's, key for key."""
from __future__ import annotations

import pytest
import torch
from conftest import load_key_shapes
from torch import nn

import cascade_rcnn

# MMDetection's published rows (the official Swin repository's rows: tests/test_swin.py; Detectron2's:
# tests/test_detectron2_weights.py)
PUBLISHED = sorted(name for name, config in cascade_rcnn.MODEL_ZOO.items()
                   if config.url and config.framework == "MMDetection"
                   and not config.url.startswith("https://github.com/SwinTransformer/"))


def build_on_meta(name: str) -> cascade_rcnn.CascadeRCNN:
    """The full-size model without allocating its weights."""
    with torch.device("meta"):
        return cascade_rcnn.CascadeRCNN(cascade_rcnn.get_config(name))


def test_zoo_lists_the_published_configs(zoo_index):
    assert len(PUBLISHED) == 29  # the v2 page's 20, the 7 multi-scale 3x rows, 2 ConvNeXt rows
    assert set(PUBLISHED) == set(zoo_index)
    for name in PUBLISHED:
        config = cascade_rcnn.get_config(name)
        assert config.url == zoo_index[name]["weights"]
        assert config.with_mask == name.startswith("cascade_mask_rcnn")
        assert config.num_classes == 80
        if config.reported_box_ap is not None and "box_ap" in zoo_index[name]:
            assert config.reported_box_ap == zoo_index[name]["box_ap"]


def test_the_3x_rows_train_multi_scale_for_36_epochs_and_the_32x8d_row_takes_bgr_with_std():
    config = cascade_rcnn.get_config("cascade_mask_rcnn_x101_32x8d_fpn_mstrain_3x_coco")
    assert config.schedule == "3x" and config.train_scale_range == ((1333, 640), (1333, 800))
    assert config.image_scale == (1333, 800)  # testing: one scale
    assert config.bgr_input and config.pixel_std == (57.375, 57.12, 58.395) and config.backbone.style == "pytorch"
    caffe = cascade_rcnn.get_config("cascade_mask_rcnn_r50_caffe_fpn_mstrain_3x_coco")
    assert caffe.bgr_input and caffe.pixel_std == (1.0, 1.0, 1.0)


@pytest.mark.parametrize("name", PUBLISHED)
def test_state_dict_and_parameter_counts_match_mmdetection(name, shared_keys_dir, zoo_index):
    model = build_on_meta(name)
    expected = load_key_shapes(zoo_index[name]["keys_dir"], name)
    ours = {key: list(tensor.shape) for key, tensor in model.state_dict().items()}
    assert sorted(set(expected) - set(ours)) == [], "keys missing from our model"
    assert sorted(set(ours) - set(expected)) == [], "keys MMDetection does not have"
    wrong = {k: (ours[k], expected[k]) for k in expected if ours[k] != expected[k]}
    assert wrong == {}, "shapes differ (ours, mmdet)"

    entry = zoo_index[name]
    assert len(ours) == entry["num_state_dict_entries"]
    assert sum(p.numel() for p in model.parameters()) == entry["num_parameters"]
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == entry["num_trainable_parameters"]


@pytest.mark.parametrize("name", ["cascade_rcnn_r50_fpn_1x_coco", "cascade_mask_rcnn_r50_caffe_fpn_1x_coco",
                                  "cascade_rcnn_x101_32x4d_fpn_1x_coco"])
def test_batchnorm_stays_in_eval_mode_and_stem_layer1_are_frozen(name):
    model = build_on_meta(name)
    model.train()
    assert model.training and model.roi_head.training and model.neck.training
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(norms) in (53, 104)
    assert not any(m.training for m in norms)

    backbone = model.backbone
    for module in (backbone.conv1, backbone.bn1, backbone.layer1):
        assert not any(p.requires_grad for p in module.parameters())
    # The rest of the backbone trains (its convs in every style).
    for layer in (backbone.layer2, backbone.layer3, backbone.layer4):
        assert all(m.weight.requires_grad for m in layer.modules() if isinstance(m, nn.Conv2d))
    # pytorch style trains the BN affine parameters of layers 2-4; caffe style does not.
    bn_trained = any(p.requires_grad for m in backbone.layer2.modules()
                     if isinstance(m, nn.BatchNorm2d) for p in m.parameters())
    assert bn_trained == ("caffe" not in name)

    model.eval()
    model.train(True)
    assert not any(m.training for m in norms)


def test_the_demo_project_config_has_narrow_mask_heads():
    """``mask_channels`` narrows only the mask heads' convs; their input stays the FPN width."""
    model = cascade_rcnn.CascadeRCNN(cascade_rcnn.get_config("cascade_mask_rcnn_r18w32_fpn_256"))
    for head in model.roi_head.mask_head:
        assert head.convs[0].conv.weight.shape == (32, 64, 3, 3)
        assert head.conv_logits.weight.shape == (80, 32, 1, 1)
