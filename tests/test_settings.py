"""Model settings: --set parsing and validation, and their round trip through our checkpoints."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import assert_detections_equal, make_confident, tiny_config

import cascade_rcnn
from cascade_rcnn.cli import main
from cascade_rcnn.models.settings import (
    SETTABLE,
    apply_settings,
    parse_settings,
    settings_text,
)
from cascade_rcnn.weights import checkpoint
from cascade_rcnn.weights.checkpoint import CheckpointError

ZOO = "cascade_mask_rcnn_r50_fpn_1x_coco"
FOUR_STAGES = ["num_stages=4", "stage_ious=0.5,0.6,0.7,0.8", "stage_loss_weights=1,0.5,0.25,0.125",
               "stage_stds=0.1,0.1,0.2,0.2/0.05,0.05,0.1,0.1/0.033,0.033,0.067,0.067/0.02,0.02,0.04,0.04",
               "image_scale=1024,640"]


def test_the_issues_example_builds_a_four_stage_model():
    config = apply_settings(cascade_rcnn.get_config(ZOO), parse_settings(FOUR_STAGES))
    assert config.num_stages == 4 and config.stage_ious == (0.5, 0.6, 0.7, 0.8)
    assert config.stage_stds[3] == (0.02, 0.02, 0.04, 0.04) and config.image_scale == (1024, 640)
    with torch.device("meta"):
        model = cascade_rcnn.CascadeRCNN(config)
    assert len(model.roi_head.bbox_head) == len(model.roi_head.mask_head) == 4
    assert [a.pos_iou for a in model.roi_head.assigners] == [0.5, 0.6, 0.7, 0.8]
    assert [c.stds for c in model.roi_head.coders][1] == (0.05, 0.05, 0.1, 0.1)


def test_every_knob_reaches_the_model():
    settings = parse_settings(["rois_per_image=64", "rpn_samples_per_image=32", "train_proposals=300",
                               "test_proposals=50", "anchor_scale=2", "mask_channels=8"])
    model = cascade_rcnn.CascadeRCNN(apply_settings(tiny_config(), settings))
    assert model.roi_head.sampler.num == 64 and model.rpn_head.sampler.num == 32
    assert model.rpn_head.train_proposals.max_proposals == 300 and model.rpn_head.test_proposals.max_proposals == 50
    assert model.rpn_head.test_proposals.pre_nms_per_level == 50
    assert model.rpn_head.base_anchors[0, 1].tolist() == [-4.0, -4.0, 4.0, 4.0]  # stride 4 x scale 2, ratio 1
    assert model.roi_head.mask_head[0].conv_logits.weight.shape[1] == 8


def test_fewer_stages_keep_the_first_per_stage_values():
    config = apply_settings(cascade_rcnn.get_config(ZOO), parse_settings(["num_stages=2"]))
    assert config.stage_ious == (0.5, 0.6) and config.stage_loss_weights == (1.0, 0.5)
    assert len(config.stage_stds) == 2


@pytest.mark.parametrize("items, message", [
    (["stages=4"], "unknown setting 'stages'; settable: num_stages"),
    (["name=mine"], "unknown setting 'name'"),
    (["num_stages"], "expected NAME=VALUE"),
    (["num_stages=four"], "'four' is not an integer"),
    (["num_stages=2.5"], "'2.5' is not an integer"),
    (["anchor_scale=big"], "'big' is not a finite number"),
    (["anchor_scale=nan"], "'nan' is not a finite number"),
    (["image_scale=1024"], "expected 2 values separated by ','"),
    (["stage_ious=0.5,,0.7"], "empty entry"),
    (["stage_stds=0.1,0.1,0.2/0.05,0.05,0.1,0.1/0.033,0.033,0.067,0.067"], "4 positive values per stage"),
    (["num_stages=4"], "stage_ious has 3 entries but num_stages is 4"),
    (["num_stages=2", "stage_ious=0.5,0.6,0.7"], "stage_ious has 3 entries but num_stages is 2"),
    (["stage_loss_weights=1,0.5"], "stage_loss_weights has 2 entries but num_stages is 3"),
    (["stage_ious=0.5,0.6,1.7"], r"stage_ious must lie in \(0, 1\]"),
    (["rois_per_image=0"], "rois_per_image must be at least 1"),
    (["image_scale=1024,0"], "image_scale needs two positive sides"),
])
def test_bad_settings_are_one_clear_error(items, message):
    with pytest.raises(ValueError, match=message):
        apply_settings(cascade_rcnn.get_config(ZOO), parse_settings(items))


def test_the_text_form_round_trips():
    config = apply_settings(cascade_rcnn.get_config(ZOO), parse_settings(FOUR_STAGES + ["mask_channels=none"]))
    text = settings_text(config)
    assert set(text) == set(SETTABLE) - {"backbone"}  # a zoo backbone is fixed by the config's name
    again = apply_settings(cascade_rcnn.get_config(ZOO), parse_settings([f"{k}={v}" for k, v in text.items()]))
    assert again == config


def custom_tiny():
    return apply_settings(tiny_config(), parse_settings([
        "num_stages=2", "stage_ious=0.55,0.65", "image_scale=80,48", "test_proposals=60", "anchor_scale=3",
        "stage_stds=0.1,0.1,0.2,0.2/0.04,0.04,0.08,0.08"]))


def test_a_custom_model_predicts_with_the_settings_it_was_saved_with(tmp_path):
    torch.manual_seed(0)
    trained = cascade_rcnn.CascadeRCNN(custom_tiny()).eval()
    make_confident(trained)
    path = tmp_path / "custom.pth"
    checkpoint.save(path, trained)
    restored = cascade_rcnn.build_model(tiny_config(), weights=path)  # the default 3-stage config
    assert restored.config == trained.config
    image = (np.random.default_rng(0).random((50, 70, 3)) * 255).astype(np.uint8)
    assert_detections_equal(restored.predict(image, score_thr=0.0)[0], trained.predict(image, score_thr=0.0)[0])
    # Explicit settings override the stored ones.
    overridden = cascade_rcnn.build_model(tiny_config(), weights=path, settings={"test_proposals": 20})
    assert overridden.config.test_proposals == 20 and overridden.config.num_stages == 2


def test_checkpoints_without_settings_still_load(tmp_path):
    torch.manual_seed(0)
    model = cascade_rcnn.CascadeRCNN(tiny_config())
    path = tmp_path / "older.pth"
    checkpoint.save(path, model)
    loaded = torch.load(path, weights_only=True)
    del loaded["meta"]["model_settings"]
    torch.save(loaded, path)
    assert cascade_rcnn.build_model(tiny_config(), weights=path).config == model.config


def test_damaged_stored_settings_name_the_file(tmp_path):
    path = tmp_path / "damaged.pth"
    checkpoint.save(path, cascade_rcnn.CascadeRCNN(tiny_config()))
    loaded = torch.load(path, weights_only=True)
    loaded["meta"]["model_settings"]["num_stages"] = "5"
    torch.save(loaded, path)
    with pytest.raises(CheckpointError, match=rf"{path}: stored: .*num_stages is 5"):
        cascade_rcnn.build_model(tiny_config(), weights=path)
    loaded["meta"]["model_settings"] = ["num_stages=5"]
    torch.save(loaded, path)
    with pytest.raises(CheckpointError, match=rf"{path}: its model_settings are not a table"):
        cascade_rcnn.build_model(tiny_config(), weights=path)


def test_cli_set_is_one_line_on_error(tmp_path, capsys):
    assert main(["predict", str(tmp_path), "--model", "cascade_mask_rcnn_r18w32_fpn_256", "--weights", "none",
                 "--set", "num_stages=4"]) == 2
    err = capsys.readouterr().err
    assert "\nerror: --set: model cascade_mask_rcnn_r18w32_fpn_256: stage_ious has 3 entries" in err
    assert "Traceback" not in err
    assert main(["evaluate", "--gt-json", str(tmp_path / "gt.json"), "--model", "cascade_mask_rcnn_r18w32_fpn_256",
                 "--images", str(tmp_path), "--set", "stage_ious=x"]) == 2
    assert "error: --set 'stage_ious=x': 'x' is not a finite number" in capsys.readouterr().err
