"""Our checkpoints as .safetensors: written by suffix, read by content, metadata kept as strings,
and the same errors as .pth files for files that do not fit."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import assert_detections_equal, make_confident, tiny_config, tiny_model

import cascade_rcnn
from cascade_rcnn.cli import main
from cascade_rcnn.weights import checkpoint

safetensors_torch = pytest.importorskip("safetensors.torch")
from safetensors import safe_open


def assert_state_equal(model, state_dict):
    own = model.state_dict()
    assert set(own) == set(state_dict)
    for key, value in state_dict.items():
        assert torch.equal(own[key], value), key


def test_round_trip_keeps_weights_names_settings_and_detections(tmp_path, with_mask):
    source = tiny_model(with_mask, seed=1, class_names=("cat", "dog", "emu"), category_ids=(17, 18, 99),
                        num_stages=2, stage_ious=(0.5, 0.65), stage_stds=((0.1, 0.1, 0.2, 0.2),) * 2,
                        stage_loss_weights=(1.0, 0.5))
    make_confident(source)
    image = np.random.default_rng(0).integers(0, 256, (70, 90, 3), dtype=np.uint8)
    expected = source.predict([image], score_thr=0.0)  # after a fast-path run (channels-last convs)
    path = tmp_path / "model.safetensors"
    checkpoint.save(path, source)
    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]

    with safe_open(str(path), framework="pt") as file:
        metadata = file.metadata()
    assert all(isinstance(v, str) for v in metadata.values())
    assert metadata["format"] == "pt" and metadata["checkpoint_format"] == checkpoint.FORMAT
    assert json.loads(metadata["class_names"]) == ["cat", "dog", "emu"]
    assert json.loads(metadata["category_ids"]) == [17, 18, 99]
    assert json.loads(metadata["model_settings"])["num_stages"] == "2"

    model = cascade_rcnn.build_model(tiny_config(with_mask), weights=path)  # config: a, b, c; 3 stages
    assert model.class_names == ("cat", "dog", "emu") and model.config.category_ids == (17, 18, 99)
    assert model.config.num_stages == 2 and model.config.stage_ious == (0.5, 0.65)
    assert_state_equal(model, source.state_dict())
    assert len(expected[0]) > 0
    assert_detections_equal(model.predict([image], score_thr=0.0)[0], expected[0])


def test_same_tensors_as_the_pth_file(tmp_path):
    source = tiny_model(seed=2)
    checkpoint.save(tmp_path / "a.pth", source)
    checkpoint.save(tmp_path / "a.safetensors", source)
    pth, safe = checkpoint.read(tmp_path / "a.pth"), checkpoint.read(tmp_path / "a.safetensors")
    assert pth["meta"] == safe["meta"]
    assert set(pth["state_dict"]) == set(safe["state_dict"])
    for key, value in pth["state_dict"].items():
        assert value.dtype == safe["state_dict"][key].dtype and torch.equal(value, safe["state_dict"][key]), key


def test_a_foreign_bare_safetensors_loads_and_is_read_by_content_not_name(tmp_path):
    source = tiny_model(seed=3)
    path = tmp_path / "weights.bin"  # no metadata, and a name that says nothing
    safetensors_torch.save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    model = cascade_rcnn.build_model(tiny_config(), weights=path)
    assert_state_equal(model, source.state_dict())
    assert model.class_names == tiny_config().class_names


def test_training_state_is_refused_and_nothing_is_written(tmp_path):
    with pytest.raises(cascade_rcnn.CheckpointError, match=r"model.safetensors: .* not optimizer; save training "
                                                         r"state as \.pth"):
        checkpoint.save(tmp_path / "model.safetensors", tiny_model(), optimizer={})
    assert list(tmp_path.iterdir()) == []


def test_a_failed_save_leaves_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "model.safetensors"
    checkpoint.save(path, tiny_model(seed=4))
    before = path.read_bytes()

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(safetensors_torch, "save_file", broken)
    with pytest.raises(OSError, match="disk full"):
        checkpoint.save(path, tiny_model(seed=5))
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]


# --- the same errors as for .pth files -------------------------------------------------------------

def error_of(path, config) -> str:
    with pytest.raises(cascade_rcnn.CheckpointError) as info:
        cascade_rcnn.build_model(config, weights=path)
    message = str(info.value)
    assert message.startswith(f"{path}: ") and "\n" not in message
    return message


@pytest.mark.parametrize("source_mask, target_mask, word", [(False, True, "missing"), (True, False, "unexpected")])
def test_box_only_vs_mask(tmp_path, source_mask, target_mask, word):
    path = tmp_path / "other.safetensors"
    checkpoint.save(path, tiny_model(source_mask))
    message = error_of(path, tiny_config(target_mask))
    assert f"36 {word}" in message and "roi_head.mask_head.0." in message


def test_other_widths_and_class_counts(tmp_path):
    checkpoint.save(tmp_path / "wide.safetensors", tiny_model(fpn_channels=32))
    assert "other shapes" in error_of(tmp_path / "wide.safetensors", tiny_config())
    checkpoint.save(tmp_path / "five.safetensors", tiny_model(class_names=tuple("abcde")))
    # Our checkpoints restore their class names, so the class-count error needs other names given:
    with pytest.raises(cascade_rcnn.CheckpointError, match="5 classes, the model 3.*reinit_class_layers"):
        cascade_rcnn.build_model(tiny_config(), weights=tmp_path / "five.safetensors", class_names=["x", "y", "z"])


@pytest.mark.parametrize("damage", ["truncated", "not_json_metadata", "empty"])
def test_damaged_files_are_one_line(tmp_path, damage):
    path = tmp_path / "model.safetensors"
    if damage == "empty":
        safetensors_torch.save_file({}, str(path))
        assert "without tensors" in error_of(path, tiny_config())
        return
    checkpoint.save(path, tiny_model())
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[:-1000])
        assert "not a readable safetensors file" in error_of(path, tiny_config())
    else:
        state = checkpoint.read(path)["state_dict"]
        safetensors_torch.save_file(state, str(path), metadata={"checkpoint_format": checkpoint.FORMAT,
                                                                "class_names": "[oops"})
        assert "its metadata 'class_names' is not JSON" in error_of(path, tiny_config())


def test_a_pth_named_safetensors_is_named(tmp_path):
    path = tmp_path / "model.safetensors"
    torch.save(tiny_model().state_dict(), path)
    assert "not a readable safetensors file" in error_of(path, tiny_config())


def test_cli_predicts_with_safetensors_weights(tmp_path, capsys):
    import cv2

    small = "cascade_mask_rcnn_r18w32_fpn_256"
    torch.manual_seed(0)
    source = cascade_rcnn.CascadeRCNN(cascade_rcnn.get_config(small).with_classes(("ring", "star")))
    checkpoint.save(tmp_path / "small.safetensors", source)
    cv2.imwrite(str(tmp_path / "a.png"), np.full((64, 64, 3), 127, np.uint8))
    assert main(["predict", str(tmp_path / "a.png"), "--model", small, "--weights", str(tmp_path / "small.safetensors"),
                 "--out", str(tmp_path / "out"), "--no-draw", "--score-thr", "0"]) == 0
    assert "RANDOM" not in capsys.readouterr().err
