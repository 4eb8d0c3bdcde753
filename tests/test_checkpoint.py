"""Loading MMDetection-format and our own checkpoints, and the errors for files that don't fit."""
from __future__ import annotations

import dataclasses
import pickle
import zipfile

import cv2
import numpy as np
import pytest
import torch
from conftest import (
    assert_detections_equal,
    load_key_shapes,
    make_confident,
    tiny_config,
    tiny_model,
)

import cascade_rcnn
from cascade_rcnn.models.coco_classes import COCO_CLASSES
from cascade_rcnn.weights import checkpoint

MMDET_META = {"mmdet_version": "2.0.0", "CLASSES": ("a", "b", "c")}


def save_mmdet(path, state_dict, meta=MMDET_META):
    torch.save({"state_dict": state_dict, "meta": dict(meta)}, path)
    return path


def assert_same_detections(first, second):
    assert len(first) == len(second)
    for a, b in zip(first, second):
        assert_detections_equal(a, b)


def assert_state_equal(model, state_dict):
    own = model.state_dict()
    assert set(own) == set(state_dict)
    for key, value in state_dict.items():
        assert torch.equal(own[key], value), key


@pytest.fixture
def image(rng):
    return rng.integers(0, 256, (70, 90, 3), dtype=np.uint8)


# --- loading -------------------------------------------------------------------------------------

def test_mmdet_checkpoint_loads_and_predicts_like_its_source(tmp_path, with_mask, image):
    source = tiny_model(with_mask, seed=1)
    make_confident(source)
    path = save_mmdet(tmp_path / "mmdet.pth", source.state_dict())

    torch.manual_seed(99)  # the fresh model's own initialisation differs from the source's
    loaded = cascade_rcnn.build_model(tiny_config(with_mask), weights=path)
    assert not loaded.training
    assert_state_equal(loaded, source.state_dict())
    expected = source.predict([image, image[:40]], score_thr=0.0)
    assert len(expected[0]) > 0
    assert_same_detections(loaded.predict([image, image[:40]], score_thr=0.0), expected)


def test_bare_and_ddp_prefixed_state_dicts_load(tmp_path):
    source = tiny_model(seed=2)
    state = source.state_dict()
    torch.save(state, tmp_path / "bare.pth")
    save_mmdet(tmp_path / "ddp.pth", {f"module.{k}": v for k, v in state.items()})
    for name in ("bare.pth", "ddp.pth"):
        loaded = cascade_rcnn.build_model(tiny_config(), weights=tmp_path / name)
        assert_state_equal(loaded, state)


def test_full_size_mask_rcnn_r50_checkpoint_loads_strictly_and_predicts(tmp_path, shared_keys_dir):
    name = "cascade_mask_rcnn_r50_fpn_1x_coco"
    generator = torch.Generator().manual_seed(0)
    state = {}
    for key, shape in load_key_shapes(shared_keys_dir, name).items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(0)
        elif key.endswith("running_var"):
            state[key] = torch.rand(shape, generator=generator) + 0.5
        else:
            state[key] = torch.randn(shape, generator=generator) * 0.01
    path = save_mmdet(tmp_path / f"{name}.pth", state, {"mmdet_version": "2.0.0", "CLASSES": COCO_CLASSES})

    config = dataclasses.replace(cascade_rcnn.get_config(name), image_scale=(128, 96))
    model = cascade_rcnn.build_model(config, weights=path)
    own = model.state_dict()
    assert set(own) == set(state)
    for key in ("backbone.conv1.weight", "backbone.layer3.5.bn2.running_var",
                "roi_head.bbox_head.2.fc_cls.bias", "roi_head.mask_head.1.conv_logits.weight"):
        assert torch.equal(own[key], state[key])
    assert model.class_names == COCO_CLASSES
    del state

    detections = model.predict(np.full((60, 80, 3), 127, np.uint8), score_thr=0.0)[0]
    assert detections.image_size == (60, 80)
    assert len(detections) > 0
    assert detections.masks.shape == (len(detections), 60, 80)
    assert int(detections.labels.max()) < 80


# --- errors --------------------------------------------------------------------------------------

def expect_error(path, match=None, config=None, **kwargs) -> str:
    with pytest.raises(cascade_rcnn.CheckpointError) as info:
        cascade_rcnn.build_model(config or tiny_config(), weights=path, **kwargs)
    message = str(info.value)
    assert str(path) in message
    if match is not None:
        assert match in message
    return message


def test_missing_file(tmp_path):
    expect_error(tmp_path / "nowhere.pth", "no such")


@pytest.mark.parametrize("content", [
    b"<!DOCTYPE html><html><body>404 Not Found</body></html>\n",
    b"not a checkpoint\n",
    b"_base_ = './cascade_mask_rcnn_r50_fpn_1x_coco.py'\n",
    b"hello world\n",
    b"train:\n  lr: 0.02\n",
    b"",
], ids=["html", "text", "python", "hello", "yaml", "empty"])
def test_a_file_that_is_not_a_checkpoint(tmp_path, content):
    path = tmp_path / "weights.pth"
    path.write_bytes(content)
    expect_error(path, "not a PyTorch checkpoint")


def test_a_file_that_does_not_load_is_named_by_what_it_is(tmp_path):
    """One line saying what the file is, never torch.load's internals (miniz, "pop from empty list")."""
    whole = tmp_path / "whole.pth"
    torch.save({"state_dict": {"w": torch.zeros(64)}}, whole)
    png = cv2.imencode(".png", np.zeros((4, 4, 3), np.uint8))[1].tobytes()
    jpeg = cv2.imencode(".jpg", np.zeros((4, 4, 3), np.uint8))[1].tobytes()
    other_zip = tmp_path / "other.zip"
    with zipfile.ZipFile(other_zip, "w") as archive:
        archive.writestr("notes.txt", "hello")
    cases = {b"": "an empty file (0 bytes), not a PyTorch checkpoint",
             whole.read_bytes()[:300]: "a truncated PyTorch checkpoint (300 bytes; an interrupted download or copy?)",
             other_zip.read_bytes(): "a zip archive of other files than torch.save writes, not a PyTorch checkpoint",
             png: "a PNG image, not a PyTorch checkpoint", jpeg: "a JPEG image, not a PyTorch checkpoint",
             b"lr = 0.02\n": "a text file (starting 'lr = 0.02'), not a PyTorch checkpoint",
             pickle.dumps({"weights": [1, 2]}): "a Python pickle that torch.save did not write, not a PyTorch "
                                                "checkpoint"}
    for content, kind in cases.items():
        path = tmp_path / "fake.pth"
        path.write_bytes(content)
        with pytest.raises(cascade_rcnn.CheckpointError) as info:
            checkpoint.read(path)
        assert str(info.value) == f"{path}: {kind}"


def test_random_bytes(tmp_path):
    path = tmp_path / "noise.pth"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    expect_error(path)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_pickles_that_hold_no_checkpoint_dict(tmp_path):
    torch.save([1, 2, 3], tmp_path / "list.pth")
    expect_error(tmp_path / "list.pth", "list")
    with open(tmp_path / "plain.pkl", "wb") as file:
        pickle.dump({"state_dict": [1, 2]}, file)
    expect_error(tmp_path / "plain.pkl")
    torch.save({"state_dict": {"x": 1}}, tmp_path / "no_tensors.pth")
    expect_error(tmp_path / "no_tensors.pth", "no state dict")


@pytest.mark.parametrize("source_mask, target_mask, word", [(False, True, "missing"), (True, False, "unexpected")])
def test_box_only_vs_mask_checkpoint(tmp_path, source_mask, target_mask, word):
    path = save_mmdet(tmp_path / "other.pth", tiny_model(source_mask).state_dict())
    message = expect_error(path, "roi_head.mask_head.0.", config=tiny_config(target_mask))
    assert f"36 {word}" in message  # 3 mask heads x (4 convs + upsample + logits) x (weight, bias)


def test_deeper_backbone_checkpoint_gives_unexpected_keys(tmp_path):
    deeper = tiny_model(backbone=cascade_rcnn.ResNetConfig(depth=34, base_channels=8))
    path = save_mmdet(tmp_path / "r34.pth", deeper.state_dict())
    message = expect_error(path, "unexpected", config=tiny_config())
    assert "0 missing" in message
    assert "backbone.layer1.2." in message


def test_other_widths_give_a_shape_error(tmp_path):
    wider = tiny_model(fpn_channels=32)
    path = save_mmdet(tmp_path / "wide.pth", wider.state_dict())
    expect_error(path, "other shapes")


def test_class_count_mismatch_and_reinit_class_layers(tmp_path, with_mask):
    source = tiny_model(with_mask, seed=3)
    path = save_mmdet(tmp_path / "three.pth", source.state_dict())
    five = tiny_config(with_mask, class_names=("a", "b", "c", "d", "e"))
    message = expect_error(path, "reinit_class_layers=True", config=five)
    assert "the checkpoint has 3 classes, the model 5" in message
    assert "class_names=[...]" in message and "--class-names" in message and "cascade-rcnn train" in message
    assert "--reinit-class-layers" not in message  # no command has that option

    model = cascade_rcnn.build_model(five, weights=path, reinit_class_layers=True)
    own, saved = model.state_dict(), source.state_dict()
    assert model.class_names == five.class_names
    for stage in range(3):
        assert own[f"roi_head.bbox_head.{stage}.fc_cls.weight"].shape == (6, 32)
        if with_mask:
            assert own[f"roi_head.mask_head.{stage}.conv_logits.weight"].shape == (5, 16, 1, 1)
    class_layers = [k for k in own if k.endswith(checkpoint.CLASS_LAYER_SUFFIXES)]
    assert len(class_layers) == (12 if with_mask else 6)
    for key in own:
        if key not in class_layers:
            assert torch.equal(own[key], saved[key]), key
    assert len(model.predict(np.zeros((40, 50, 3), np.uint8), score_thr=0.0)) == 1


# --- untrusted content ---------------------------------------------------------------------------

CALLS: list = []


def record_call(*args):
    CALLS.append(args)
    return "called"


class Reducer:
    """Unpickling this calls ``record_call``: a stand-in for code a checkpoint could run."""

    def __reduce__(self):
        return record_call, ("reduce",)


class Stateful:
    def __init__(self):
        self.payload = 1

    def __setstate__(self, state):
        CALLS.append(("setstate", state))
        self.__dict__.update(state)


def test_non_allowlisted_objects_in_meta_are_never_run(tmp_path):
    source = tiny_model(seed=4)
    meta = {"mmdet_version": "2.0.0", "CLASSES": ("a", "b", "c"), "hook": Reducer(), "obj": Stateful(),
            "torch": torch.torch_version.TorchVersion("2.0")}
    path = save_mmdet(tmp_path / "meta.pth", source.state_dict(), meta)
    CALLS.clear()
    loaded = checkpoint.read(path)
    assert CALLS == []
    assert not isinstance(loaded["meta"]["hook"], str)
    assert not isinstance(loaded["meta"]["obj"], Stateful)
    model = cascade_rcnn.build_model(tiny_config(), weights=path)
    assert CALLS == []
    assert_state_equal(model, source.state_dict())
    # Control: an unrestricted unpickler does run them.
    torch.load(path, weights_only=False)
    assert ("reduce",) in CALLS and any(call[0] == "setstate" for call in CALLS)


# --- our own checkpoints -------------------------------------------------------------------------

def test_save_is_atomic_and_restores_class_names(tmp_path):
    source = tiny_model(seed=5, class_names=("cat", "dog", "emu"), category_ids=(17, 18, 99))
    path = tmp_path / "runs" / "model.pth"
    checkpoint.save(path, source, epoch=3)
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.pth"]

    saved = checkpoint.read(path)
    assert saved["epoch"] == 3
    assert saved["meta"]["class_names"] == ["cat", "dog", "emu"]
    assert saved["meta"]["category_ids"] == [17, 18, 99]

    model = cascade_rcnn.build_model(tiny_config(), weights=path)  # config says a, b, c
    assert model.class_names == ("cat", "dog", "emu")
    assert model.config.category_ids == (17, 18, 99)
    assert_state_equal(model, source.state_dict())
    renamed = cascade_rcnn.build_model(tiny_config(), weights=path, class_names=["x", "y", "z"])
    assert renamed.class_names == ("x", "y", "z")


def test_failed_save_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "model.pth"
    checkpoint.save(path, tiny_model(seed=6))
    before = path.read_bytes()
    with pytest.raises(Exception):
        checkpoint.save(path, tiny_model(seed=7), unpicklable=lambda: None)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["model.pth"]


def test_saved_file_has_the_usual_permissions(tmp_path):
    checkpoint.save(tmp_path / "ours.pth", tiny_model(seed=9))
    torch.save({}, tmp_path / "plain.pth")
    mode = lambda name: (tmp_path / name).stat().st_mode & 0o777  # noqa: E731
    assert mode("ours.pth") == mode("plain.pth")


def test_url_weights_come_from_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CASCADE_RCNN_CACHE", str(tmp_path))
    source = tiny_model(seed=8)
    save_mmdet(tmp_path / "tiny_20200101-abcdef12.pth", source.state_dict())
    url = "https://download.example.invalid/models/tiny/tiny_20200101-abcdef12.pth"
    assert checkpoint.resolve(url) == tmp_path / "tiny_20200101-abcdef12.pth"
    assert_state_equal(cascade_rcnn.build_model(tiny_config(), weights=url), source.state_dict())


def test_zoo_weights_need_a_url():
    with pytest.raises(ValueError, match="no published weights"):
        cascade_rcnn.build_model(tiny_config(), weights="zoo")
