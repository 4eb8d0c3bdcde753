"""Equivalence with Detectron2's ViTDet: what Detectron2 computed for a tiny Cascade Mask R-CNN of
its ViTDet-B config (ViT embed 64, depth 4, 2 heads, windows in blocks 0 and 2, 256 px square
input; ../shared/golden/vitdet_cascade_mask_rcnn_tiny, its README says how), loaded from nothing
but its LazyConfig dump ``config.yaml`` (read as data) and its checkpoint.

The exact path must give Detectron2's detections bit for bit on the CPU kind the file was made
on: the shared file is an AVX2 AMD EPYC's (reproduced here under ``ATEN_CPU_CAPABILITY=avx2
ONEDNN_MAX_CPU_ISA=AVX2``), tests/data/golden_cpu_kinds an AVX-512 one's (native kernels): every
box, score, label and mask pixel, and every intermediate the shared file holds (the ViT's output,
P2..P6). Elsewhere, and on the fast path, the bounds of test_golden.py apply.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import cpu_vendor
from test_detectron2_golden import read_detections
from test_golden import FAST_BOX_PX, FAST_SCORE, KIND_BOX_PX, KIND_SCORE, assert_within

import cascade_rcnn
from cascade_rcnn.detectron2_config.lazy_file import read_lazy_dump
from cascade_rcnn.detectron2_config.model import read_detectron2_model
from cascade_rcnn.errors import ConfigError
from cascade_rcnn.models.backbones.vit import ViT
from cascade_rcnn.models.necks.simple_pyramid import SimpleFeaturePyramid
from cascade_rcnn.weights.detectron2_layout import to_our_layout

GOLDEN = Path(__file__).resolve().parents[2] / "shared" / "golden" / "vitdet_cascade_mask_rcnn_tiny"
CONFIG, CHECKPOINT, PICKLE, IMAGE = (GOLDEN / name for name in ("config.yaml", "checkpoint.pth", "checkpoint.pkl",
                                                                "image.png"))
needs_golden = pytest.mark.skipif(not all(p.is_file() for p in (CONFIG, CHECKPOINT, IMAGE, GOLDEN / "detections.pt")),
                                  reason=f"ViTDet golden data not found at {GOLDEN} (the shared/ folder beside the "
                                         "repository)")
KIND_FILES = {("AVX2", "AuthenticAMD"): GOLDEN / "detections.pt",
              ("AVX512", "AuthenticAMD"): Path(__file__).parent / "data" / "golden_cpu_kinds" / GOLDEN.name /
              "detections.AVX512.AuthenticAMD.pt"}
THIS_KIND = KIND_FILES.get((torch.backends.cpu.get_cpu_capability(), cpu_vendor()))
bit_for_bit = pytest.mark.skipif(
    THIS_KIND is None or not THIS_KIND.is_file(),
    reason=f"bit-for-bit equality with Detectron2 holds per CPU kind, and there are no Detectron2 detections made "
           f"on this one ({cpu_vendor() or 'unknown vendor'}, torch's {torch.backends.cpu.get_cpu_capability()} "
           "kernels)")


@pytest.fixture(autouse=True, scope="module")
def two_threads():
    """The golden data was computed with 2 threads; the split of a convolution can change its sums."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def golden_model(exact: bool, weights: Path = CHECKPOINT) -> cascade_rcnn.CascadeRCNN:
    return cascade_rcnn.build_model(str(CONFIG), weights=weights, exact=exact)


def predict(model: cascade_rcnn.CascadeRCNN):
    return model.predict(str(IMAGE), score_thr=0.0, nms_iou=0.5, max_per_image=100)[0]


def assert_same(ours, theirs: dict) -> None:
    assert len(ours) == 100
    assert torch.equal(ours.labels, theirs["labels"])
    assert torch.equal(ours.boxes, theirs["boxes"]), (ours.boxes - theirs["boxes"]).abs().max()
    assert torch.equal(ours.scores, theirs["scores"]), (ours.scores - theirs["scores"]).abs().max()
    assert torch.equal(ours.masks, theirs["masks"]), int((ours.masks != theirs["masks"]).sum())


@needs_golden
def test_the_lazy_config_dump_maps_onto_vitdets_parts_and_detectron2s_rules():
    config = read_detectron2_model(CONFIG)
    vit = config.backbone
    assert (vit.embed_dim, vit.depth, vit.num_heads, vit.img_size, vit.window_size) == (64, 4, 2, 256, 14)
    assert vit.window_blocks == (0, 2) and vit.square_pad == 256 and vit.pretrain_size == 224
    assert config.neck.scale_factors == (4.0, 2.0, 1.0, 0.5) and config.fpn_channels == 64
    assert config.rpn_head.num_convs == 2 and config.rpn_head.anchor_rule == "area_kept"
    assert config.box_head.conv_norm == "ln" and config.box_head.num_convs == 4 and config.box_head.conv_channels == 64
    assert config.mask_head.conv_norm == "ln" and config.mask_channels == 32 and config.fc_channels == 256
    assert config.roi_heads.stage_box_weights == ((10, 10, 5, 5), (20, 20, 10, 10), (30, 30, 15, 15))
    assert config.roi_heads.one_mask_head and config.roi_heads.mean_of_probabilities
    assert not config.bgr_input and config.pixel_mean == (123.675, 116.28, 103.53)
    assert config.image_scale == (256, 256) and config.resize_rule.shortest_edge
    assert (config.test_score_thr, config.test_nms_iou, config.test_max_per_image) == (0.0, 0.5, 100)
    assert (config.test_proposals_pre_nms, config.test_proposals, config.stage_ious) == (1000, 1000, (0.5, 0.6, 0.7))


@needs_golden
def test_the_dump_is_read_as_data_its_interpolations_resolved():
    tree = read_lazy_dump(CONFIG)
    predictor = tree["model"]["roi_heads"]["box_predictors"][2]
    assert predictor["num_classes"] == 80  # ${...num_classes}
    assert predictor["input_shape"]["_object_"] == "detectron2.layers.shape_spec.ShapeSpec"
    norm = tree["model"]["backbone"]["net"]["norm_layer"]
    assert norm["_apply_"] == "functools.partial" and norm["state"][2] == {"eps": 1e-6}
    assert tree["dataloader"]["test"]["mapper"]["image_format"] == "RGB"  # ${...train.mapper.image_format}


@needs_golden
def test_a_dump_with_a_value_we_cannot_follow_is_refused_by_key(tmp_path):
    text = CONFIG.read_text()
    for old, new, key in (("use_rel_pos: true", "use_rel_pos: false", "model.backbone.net.use_rel_pos"),
                          ("conv_norm: LN\n      input_shape: !!python/object:detectron2.layers.shape_spec.ShapeSpec "
                           "{channels: 64, height: 14",
                           "conv_norm: ''\n      input_shape: !!python/object:detectron2.layers.shape_spec.ShapeSpec "
                           "{channels: 64, height: 14", "model.roi_heads.mask_head.conv_norm"),
                          ("_target_: detectron2.modeling.ViT", "_target_: detectron2.modeling.MViT",
                           "model.backbone.net._target_")):
        assert old in text
        (tmp_path / "config.yaml").write_text(text.replace(old, new))
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            read_detectron2_model(tmp_path / "config.yaml")
    (tmp_path / "config.yaml").write_text("model:\n  _target_: detectron2.modeling.GeneralizedRCNN\n"
                                          "  backbone: !!python/object/apply:os.system ['echo never']\n")
    with pytest.raises(ConfigError, match=r"model\.backbone\._target_"):  # data naming os.system, never run
        read_detectron2_model(tmp_path / "config.yaml")


@needs_golden
def test_detectron2s_names_map_one_to_one_onto_ours_and_the_pickle_holds_the_same():
    model = golden_model(True)
    assert isinstance(model.backbone, ViT) and isinstance(model.neck, SimpleFeaturePyramid)
    state = torch.load(CHECKPOINT, weights_only=True)["model"]
    ours, _ = to_our_layout(state)
    assert len(ours) == len(state) == 169 and set(ours) == set(model.state_dict())
    assert "backbone.blocks.3.attn.rel_pos_h" in ours and "neck.simfp_2.4.norm.weight" in ours
    with open(PICKLE, "rb") as file:  # a plain dict of numpy arrays (the zoo's form)
        zoo = pickle.load(file)["model"]
    from_pickle = golden_model(True, PICKLE).state_dict()
    assert all(torch.equal(from_pickle[name], model.state_dict()[name]) for name in ours)
    assert all(np.array_equal(zoo[key], state[key].numpy()) for key in state)


@needs_golden
@bit_for_bit
def test_exact_path_gives_detectron2s_features_and_detections_bit_for_bit():
    model = golden_model(True)
    ours = predict(model)
    assert_same(ours, read_detections(THIS_KIND))
    if THIS_KIND == GOLDEN / "detections.pt":  # the shared file also holds the intermediates
        reference = torch.load(THIS_KIND, weights_only=True)
        record, tensor = model.preprocess(str(IMAGE))
        assert torch.equal(torch.from_numpy(record.image).permute(2, 0, 1), reference["input"]["image"])
        with torch.no_grad():
            last = model.backbone(tensor[None], model.path)
            assert torch.equal(last[0][0], reference["features"]["net.last_feat"])
            for level, feature in enumerate(model.neck(last)):
                assert torch.equal(feature[0], reference["features"][f"p{level + 2}"]), level


@needs_golden
@bit_for_bit
def test_the_zoo_pickle_gives_the_same_detections():
    assert_same(predict(golden_model(True, PICKLE)), read_detections(THIS_KIND))


@needs_golden
def test_exact_path_agrees_with_detectron2_on_any_cpu():
    assert_within(golden_model(True), IMAGE, read_detections(THIS_KIND or GOLDEN / "detections.pt"),
                  KIND_BOX_PX, KIND_SCORE)


@needs_golden
def test_fast_path_agrees_with_detectron2_to_float_noise():
    assert_within(golden_model(False), IMAGE, read_detections(THIS_KIND or GOLDEN / "detections.pt"),
                  FAST_BOX_PX, FAST_SCORE)
