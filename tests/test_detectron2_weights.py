"""Detectron2's checkpoints (model-zoo ``.pkl``, a run's ``model_final.pth``) read as state dicts in
our layout: every key of its ResNet-FPN cascades has one place in ours, with the same shape."""
from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_config

import cascade_rcnn
from cascade_rcnn.models.backbones.resnet import ResNetConfig
from cascade_rcnn.models.roi_heads.cascade import DETECTRON2_CASCADE
from cascade_rcnn.weights import checkpoint
from cascade_rcnn.weights.detectron2_layout import is_detectron2, our_name, to_our_layout
from cascade_rcnn.weights.errors import CheckpointError

KEYS_DIR = Path(__file__).resolve().parent / "data" / "detectron2_keys"
D2_GOLDEN = Path(__file__).resolve().parents[2] / "shared" / "golden" / "d2_cascade_mask_rcnn_R_18_FPN"
# Ours for the golden Detectron2 model (its README): ResNet-18 at full width, FPN 64, fcs 256, mask convs 32,
# with Detectron2's cascade rules (one mask head, on the final boxes).
R18_LIKE_GOLDEN = cascade_rcnn.ModelConfig(name="d2_r18_golden", backbone=cascade_rcnn.ResNetConfig(depth=18),
                                           fpn_channels=64, fc_channels=256, mask_channels=32,
                                           roi_heads=DETECTRON2_CASCADE)
R50_3X = cascade_rcnn.get_config("Misc/cascade_mask_rcnn_R_50_FPN_3x")


def detectron2_keys(file_name: str) -> dict[str, list[int]]:
    """A key list ``[name, shape, dtype]`` as {name: shape}."""
    rows = json.loads((KEYS_DIR / file_name).read_text())
    assert all(dtype == "float32" for _, _, dtype in rows)
    return {name: shape for name, shape, _ in rows}


def our_shapes(config: cascade_rcnn.ModelConfig) -> dict[str, list[int]]:
    """Our model's state-dict shapes."""
    with torch.device("meta"):
        model = cascade_rcnn.CascadeRCNN(config)
    return {key: list(tensor.shape) for key, tensor in model.state_dict().items()}


VITDET_ROWS = ("COCO/cascade_mask_rcnn_vitdet_b_100ep", "COCO/cascade_mask_rcnn_vitdet_l_100ep",
               "COCO/cascade_mask_rcnn_vitdet_h_75ep", "LVIS/cascade_mask_rcnn_vitdet_b_100ep",
               "LVIS/cascade_mask_rcnn_vitdet_l_100ep", "LVIS/cascade_mask_rcnn_vitdet_h_100ep")


@pytest.mark.parametrize("keys_file, config", [
    ("Misc-cascade_mask_rcnn_R_50_FPN_3x.json", R50_3X),
    ("d2_cascade_mask_rcnn_R_18_FPN.json", R18_LIKE_GOLDEN),
    *((f"ViTDet-{name.replace('/', '-')}.json", cascade_rcnn.get_config(name)) for name in VITDET_ROWS),
], ids=["R-50-zoo", "R-18-golden", *VITDET_ROWS])
def test_every_detectron2_key_has_one_place_in_our_layout_with_its_shape(keys_file, config):
    theirs = detectron2_keys(keys_file)
    assert is_detectron2(theirs)
    state = {name: torch.empty(shape, device="meta") for name, shape in theirs.items()}
    mapped, extras = to_our_layout(state, keys_file)
    ours = our_shapes(config)

    assert sorted(extras) == [f"roi_heads.box_predictor.{k}.fed_loss_cls_weights" for k in range(3)
                              if "LVIS" in keys_file]  # settings (the config's), not weights
    weights = [name for name in theirs if name not in extras]
    assert len({our_name(name) for name in weights}) == len(weights)  # one to one
    assert sorted(set(ours) - set(mapped)) == [], "ours, not filled"
    assert sorted(set(mapped) - set(ours)) == [], "mapped to no key of ours"
    assert {key: list(tensor.shape) for key, tensor in mapped.items()} == ours
    # Detectron2's FrozenBatchNorms have no counter: each of ours gets a 0 (ViTDet has no BatchNorm).
    counters = [key for key in mapped if key.endswith("num_batches_tracked")]
    assert not any(name.endswith("num_batches_tracked") for name in theirs)
    assert len(counters) == sum(name.endswith("running_mean") for name in theirs)
    assert (len(counters) > 0) == isinstance(config.backbone, ResNetConfig)
    assert all(mapped[key].dtype == torch.long and mapped[key].device.type == "cpu" and mapped[key] == 0
               for key in counters)


def test_the_rows_give_the_names_the_layouts_document():
    expected = {
        "backbone.bottom_up.stem.conv1.weight": "backbone.conv1.weight",
        "backbone.bottom_up.stem.conv1.norm.running_var": "backbone.bn1.running_var",
        "backbone.bottom_up.res2.0.conv3.weight": "backbone.layer1.0.conv3.weight",
        "backbone.bottom_up.res4.22.conv2.norm.bias": "backbone.layer3.22.bn2.bias",
        "backbone.bottom_up.res5.0.shortcut.weight": "backbone.layer4.0.downsample.0.weight",
        "backbone.bottom_up.res3.0.shortcut.norm.running_mean": "backbone.layer2.0.downsample.1.running_mean",
        "backbone.bottom_up.res3.1.conv1.norm.num_batches_tracked": "backbone.layer2.1.bn1.num_batches_tracked",
        "backbone.fpn_lateral2.weight": "neck.lateral_convs.0.conv.weight",
        "backbone.fpn_output5.bias": "neck.fpn_convs.3.conv.bias",
        "proposal_generator.rpn_head.conv.weight": "rpn_head.rpn_conv.weight",
        "proposal_generator.rpn_head.objectness_logits.bias": "rpn_head.rpn_cls.bias",
        "proposal_generator.rpn_head.anchor_deltas.weight": "rpn_head.rpn_reg.weight",
        "roi_heads.box_head.2.fc1.weight": "roi_head.bbox_head.2.shared_fcs.0.weight",
        "roi_heads.box_head.0.fc2.bias": "roi_head.bbox_head.0.shared_fcs.1.bias",
        "roi_heads.box_predictor.1.cls_score.weight": "roi_head.bbox_head.1.fc_cls.weight",
        "roi_heads.box_predictor.2.bbox_pred.bias": "roi_head.bbox_head.2.fc_reg.bias",
        "roi_heads.mask_head.mask_fcn1.weight": "roi_head.mask_head.0.convs.0.conv.weight",
        "roi_heads.mask_head.mask_fcn4.bias": "roi_head.mask_head.0.convs.3.conv.bias",
        "roi_heads.mask_head.deconv.weight": "roi_head.mask_head.0.upsample.weight",
        "roi_heads.mask_head.predictor.bias": "roi_head.mask_head.0.conv_logits.bias",
        # ViTDet's: its ViT and simple pyramid under our backbone. / neck., LayerNorm conv heads
        "backbone.net.blocks.11.attn.rel_pos_h": "backbone.blocks.11.attn.rel_pos_h",
        "backbone.simfp_2.4.norm.weight": "neck.simfp_2.4.norm.weight",
        "proposal_generator.rpn_head.conv.conv1.weight": "rpn_head.rpn_conv.1.weight",
        "roi_heads.box_head.1.conv4.weight": "roi_head.bbox_head.1.shared_convs.3.conv.weight",
        "roi_heads.box_head.1.conv4.norm.bias": "roi_head.bbox_head.1.shared_convs.3.norm.bias",
        "roi_heads.mask_head.mask_fcn2.norm.weight": "roi_head.mask_head.0.convs.1.norm.weight",
    }
    assert {key: our_name(key) for key in expected} == expected
    for unknown in ("backbone.bottom_up.res6.0.conv1.weight", "backbone.fpn_lateral6.weight",
                    "roi_heads.box_head.0.conv5.weight", "roi_heads.box_head.0.conv1.bias",
                    "backbone.bottom_up.stem.conv1.weight.extra"):
        assert our_name(unknown) is None, unknown


def test_our_own_and_mmdetections_keys_are_not_taken_for_detectron2s():
    assert not is_detectron2(our_shapes(tiny_config()))


def test_unmapped_keys_are_named_in_one_line_and_the_input_entries_come_back_apart():
    state = {"backbone.bottom_up.stem.conv1.weight": torch.zeros(1), "pixel_mean": torch.ones(3, 1, 1),
             "pixel_std": torch.ones(3, 1, 1), "roi_heads.box_head.0.conv5.weight": torch.zeros(1)}
    with pytest.raises(CheckpointError) as caught:
        to_our_layout(state, "model_final.pth")
    assert str(caught.value) == ("model_final.pth: 1 Detectron2 keys have no counterpart in our Cascade (Mask) "
                                 "R-CNN (ResNet-FPN or ViTDet): roi_heads.box_head.0.conv5.weight")

    del state["roi_heads.box_head.0.conv5.weight"]
    mapped, extras = to_our_layout(state, "model_final.pth")
    assert list(mapped) == ["backbone.conv1.weight"] and set(extras) == {"pixel_mean", "pixel_std"}
    assert extras["pixel_mean"] is state["pixel_mean"]


# --- files -----------------------------------------------------------------------------------------

def detectron2_box_state(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Random weights under Detectron2's names for the tiny box-only model of ours: the golden R-18's
    names (its res2 has no shortcut, like ours) without the mask head, in our shapes."""
    shapes = our_shapes(tiny_config(with_mask=False))
    names = [name for name in detectron2_keys("d2_cascade_mask_rcnn_R_18_FPN.json") if ".mask_head." not in name]
    return {name: rng.standard_normal(shapes[our_name(name)]).astype(np.float32) for name in names}


def assert_loaded(model: cascade_rcnn.CascadeRCNN, state: dict[str, np.ndarray]) -> None:
    own = model.state_dict()
    for name, array in state.items():
        assert np.array_equal(own[our_name(name)].numpy(), array), name
    counters = [key for key in own if key.endswith("num_batches_tracked")]
    assert counters and all(own[key] == 0 for key in counters)
    assert len(own) == len(state) + len(counters)


@pytest.mark.parametrize("protocol", [2, 4])
def test_a_zoo_pkl_builds_our_model_with_its_values(tmp_path, rng, protocol):
    state = detectron2_box_state(rng)
    pixel = {"pixel_mean": np.array([103.53, 116.28, 123.675], np.float32).reshape(3, 1, 1),
             "pixel_std": np.ones((3, 1, 1), np.float32)}
    path = tmp_path / "model_final_f10217.pkl"
    path.write_bytes(pickle.dumps({"model": {**state, **pixel}, "__author__": "Detectron2 Model Zoo"}, protocol))

    torch.manual_seed(5)
    model = cascade_rcnn.build_model(tiny_config(with_mask=False), weights=path)
    assert_loaded(model, state)

    mapped, extras = cascade_rcnn.read_detectron2_state_dict(path)
    assert {name: tensor.tolist() for name, tensor in extras.items()} == {k: v.tolist() for k, v in pixel.items()}
    assert all(np.array_equal(mapped[our_name(name)].numpy(), array) for name, array in state.items())


def test_a_runs_model_final_pth_builds_our_model_with_its_values(tmp_path, rng):
    state = detectron2_box_state(rng)
    tensors = {name: torch.from_numpy(array) for name, array in state.items()}
    optimizer = {"state": {0: {"momentum_buffer": torch.zeros(2)}}, "param_groups": [{"lr": 0.02, "params": [0]}]}
    path = tmp_path / "model_final.pth"
    torch.save({"model": tensors, "optimizer": optimizer, "scheduler": {"base_lrs": [0.02], "last_epoch": 9},
                "iteration": 9}, path)

    model = cascade_rcnn.build_model(tiny_config(with_mask=False), weights=path)
    assert_loaded(model, state)
    assert checkpoint.read_detectron2_state_dict(path)[1] == {}


def test_a_file_of_ours_is_not_a_detectron2_checkpoint(tmp_path):
    path = tmp_path / "ours.pth"
    checkpoint.save(path, cascade_rcnn.CascadeRCNN(tiny_config(with_mask=False)))
    with pytest.raises(CheckpointError, match=r"ours\.pth: not a Detectron2 checkpoint \(no keys under"):
        checkpoint.read_detectron2_state_dict(path)


@pytest.mark.skipif(not (D2_GOLDEN / "checkpoint.pth").is_file(),
                    reason=f"Detectron2 golden data not found at {D2_GOLDEN}")
def test_the_detectron2_golden_checkpoint_reads_as_our_r18_with_its_values():
    mapped, extras = checkpoint.read_detectron2_state_dict(D2_GOLDEN / "checkpoint.pth")
    theirs = torch.load(D2_GOLDEN / "checkpoint.pth", map_location="cpu", weights_only=True)["model"]

    assert extras == {}
    assert {key: list(tensor.shape) for key, tensor in mapped.items()} == our_shapes(R18_LIKE_GOLDEN)
    for name, tensor in theirs.items():
        assert torch.equal(mapped[our_name(name)], tensor), name
