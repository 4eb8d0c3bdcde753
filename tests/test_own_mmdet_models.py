"""A checkpoint a user trained with MMDetection 3 (its own 5 classes, small backbone, test scale,
anchor ratios, proposal counts, test thresholds, mask threshold) runs here with no other
argument, exactly as in MMDetection: ``tests/data/mmdet_own_model`` (README there) holds
MMDetection's runner's checkpoint and dumped config and MMDetection's own detections."""
from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import cpu_vendor

import cascade_rcnn
from cascade_rcnn.benchmarking.agreement import agreement
from cascade_rcnn.cli import main
from cascade_rcnn.data.shapes import generate_shapes
from cascade_rcnn.mmdet_config import ConfigError, parse_config_text, read_config
from cascade_rcnn.mmdet_config.recipe import training_recipe
from cascade_rcnn.outputs.detections import Detections
from cascade_rcnn.weights import checkpoint

DATA = Path(__file__).parent / "data" / "mmdet_own_model"
CHECKPOINT, DUMPED, USER_CONFIG, IMAGE = (DATA / name for name in (
    "epoch_1.pth", "my_cascade_dumped.py", "my_cascade.py", "image.png"))
CLASSES = ("circle", "triangle", "rectangle", "star", "ring")
CAPABILITY = torch.backends.cpu.get_cpu_capability()
REFERENCE = DATA / f"detections.{CAPABILITY}.pt"


@pytest.fixture(scope="module")
def reference() -> dict:
    """MMDetection's detections on this CPU kind, or another kind's (module docstring)."""
    found = REFERENCE if REFERENCE.is_file() else next(DATA.glob("detections.*.pt"))
    return torch.load(found, weights_only=True)


@pytest.fixture(autouse=True)
def reference_threads(reference):
    """As many threads as MMDetection had: how a convolution is split changes its sums."""
    before = torch.get_num_threads()
    torch.set_num_threads(reference["meta"]["torch_num_threads"])
    yield
    torch.set_num_threads(before)


def same_cpu_kind(reference: dict) -> bool:
    meta = reference["meta"]
    return meta["cpu_capability"] == CAPABILITY and meta["cpu_vendor"] == cpu_vendor()


def as_detections(found: dict) -> Detections:
    shape = tuple(found["masks_shape"].tolist())
    bits = np.unpackbits(found["masks_packbits"].numpy(), count=int(np.prod(shape)))
    return Detections(found["boxes"], found["scores"], found["labels"], CLASSES, shape[1:],
                      torch.from_numpy(bits.reshape(shape).astype(bool)))


def assert_mmdetections(ours: Detections, expected: Detections, bit_for_bit: bool) -> None:
    """Bit for bit on the CPU kind the reference was made on; elsewhere within another vector
    unit's rounding (as tests/test_golden.py bounds it)."""
    assert len(ours) == len(expected) > 10
    if bit_for_bit:
        assert torch.equal(ours.labels, expected.labels) and torch.equal(ours.boxes, expected.boxes)
        assert torch.equal(ours.scores, expected.scores) and torch.equal(ours.masks, expected.masks)
        return
    match = agreement(expected, ours, min_iou=0.99)
    assert match.matched >= len(expected) - 2 and match.max_score_diff <= 1e-4


def predict_both(model: cascade_rcnn.CascadeRCNN) -> tuple[Detections, Detections]:
    """At the config's own test settings, and at score 0."""
    return model.predict(str(IMAGE))[0], model.predict(str(IMAGE), score_thr=0.0)[0]


def test_the_checkpoint_alone_gives_mmdetections_detections(reference):
    model = cascade_rcnn.build_model(weights=CHECKPOINT, exact=True)
    config = model.config
    assert model.class_names == CLASSES and config.category_ids is None
    assert config.image_scale == (320, 256) and config.anchor_scale == 4.0
    assert config.rpn_head.ratios == (0.5, 1.0, 2.0, 3.0)
    assert (config.test_proposals, config.test_proposals_pre_nms) == (200, 400)
    assert (config.train_proposals, config.train_proposals_pre_nms) == (300, 600)
    assert (config.test_score_thr, config.test_nms_iou, config.test_max_per_image) == (0.02, 0.6, 60)
    assert config.mask_threshold == 0.4
    own, zero = predict_both(model)
    bit_for_bit = same_cpu_kind(reference)
    assert_mmdetections(own, as_detections(reference["config_settings"]), bit_for_bit)
    assert_mmdetections(zero, as_detections(reference["score_0"]), bit_for_bit)


def test_the_dumped_config_and_the_users_config_give_the_same_model(reference):
    from_checkpoint = cascade_rcnn.build_model(weights=CHECKPOINT).config
    dumped = cascade_rcnn.build_model(DUMPED, weights=CHECKPOINT, exact=True)
    assert replace(dumped.config, name=from_checkpoint.name) == from_checkpoint
    own, _ = predict_both(dumped)
    assert_mmdetections(own, as_detections(reference["config_settings"]), same_cpu_kind(reference))
    # The user's own file: _base_ on MMDetection's config (stored in tests/data/mmdet_configs).
    users = cascade_rcnn.build_model(USER_CONFIG).config
    assert replace(users, name=from_checkpoint.name) == from_checkpoint


def test_the_same_weights_in_mmdetection_2s_container_give_the_same_detections(reference, tmp_path):
    """MMDetection 2.x checkpoints carry meta["config"] (2.x text: train_cfg inside the model,
    img_norm_cfg, MultiScaleFlipAug) and meta["CLASSES"]; config_v2.py is that text, by hand."""
    loaded = checkpoint.read(CHECKPOINT)
    v2 = tmp_path / "epoch_12.pth"
    torch.save({"state_dict": loaded["state_dict"], "meta": {
        "config": (DATA / "config_v2.py").read_text(), "CLASSES": CLASSES, "mmdet_version": "2.28.2"}}, v2)
    model = cascade_rcnn.build_model(weights=v2, exact=True)
    assert replace(model.config, name="epoch_1") == cascade_rcnn.build_model(weights=CHECKPOINT).config
    own, zero = predict_both(model)
    assert_mmdetections(own, as_detections(reference["config_settings"]), same_cpu_kind(reference))
    assert_mmdetections(zero, as_detections(reference["score_0"]), same_cpu_kind(reference))


def mmengine_dump(value) -> str:
    """A value as mmengine's ``Config.dump`` writes it: ``dict(key=value)``, keys sorted."""
    if isinstance(value, dict):
        return "dict(" + ", ".join(f"{key}={mmengine_dump(item)}" for key, item in sorted(value.items())) + ")"
    if isinstance(value, (list, tuple)):
        items = "".join(f"{mmengine_dump(item)}, " for item in value)
        return f"[{items}]" if isinstance(value, list) else f"({items})"
    return repr(value)


def with_registry_scope(value):
    """What mmengine merges from an ``mmdet::`` base: the outermost dicts with a ``type`` get ``_scope_``."""
    if isinstance(value, dict):
        return {"_scope_": "mmdet", **value} if "type" in value else {k: with_registry_scope(v) for k, v in
                                                                       value.items()}
    return type(value)(with_registry_scope(v) for v in value) if isinstance(value, (list, tuple)) else value


def test_checkpoints_exactly_as_the_runners_write_them_load_from_the_file_alone(tmp_path):
    """3.x with a mim-style config (``_base_ = 'mmdet::...'``): ``_scope_='mmdet'`` in the dumped
    dicts. 2.x before 2.25: ``gpu_ids = range(0, 1)``, and run keys no model depends on."""
    state = checkpoint.read(CHECKPOINT)["state_dict"]
    expected = cascade_rcnn.build_model(weights=CHECKPOINT).config
    scoped = "".join(f"{key} = {mmengine_dump(with_registry_scope(value))}\n"
                     for key, value in sorted(read_config(DUMPED).items()))
    assert "model = dict(_scope_='mmdet', backbone=dict(base_channels=8" in scoped
    v3 = tmp_path / "epoch_12.pth"
    torch.save({"state_dict": state, "meta": {"cfg": scoped, "dataset_meta": {"classes": CLASSES}}}, v3)
    assert replace(cascade_rcnn.build_model(weights=v3).config, name="epoch_1", mmdet_config=None) == replace(
        expected, mmdet_config=None)
    v2_text = (DATA / "config_v2.py").read_text().replace("gpu_ids = [0]", "gpu_ids = range(0, 1)")
    run_keys = ("seed = 0\ndevice = 'cuda'\nlauncher = 'pytorch'\n"
                "log_config = dict(interval=50, hooks=[dict(type=TensorboardLoggerHook)])\n"
                "env_cfg = dict(cudnn_benchmark=torch.backends.cudnn.benchmark)\n")
    v2 = tmp_path / "epoch_1.pth"
    torch.save({"state_dict": state, "meta": {"config": v2_text + run_keys, "CLASSES": CLASSES}}, v2)
    model = cascade_rcnn.build_model(weights=v2)
    assert replace(model.config, mmdet_config=None) == replace(expected, mmdet_config=None)
    kept = parse_config_text(model.config.mmdet_config, "kept")
    assert kept["gpu_ids"] == range(0, 1) and kept["seed"] == 0 and "log_config" not in kept


def test_the_fast_path_agrees_to_float_noise(reference):
    own = cascade_rcnn.build_model(weights=CHECKPOINT).predict(str(IMAGE))[0]
    match = agreement(as_detections(reference["config_settings"]), own, min_iou=0.99)
    assert match.matched >= len(own) - 2 and match.max_score_diff <= 1e-4


def test_a_user_config_whose_base_files_are_missing_names_them(tmp_path):
    shutil.copy(USER_CONFIG, tmp_path / "my_cascade.py")
    with pytest.raises(ConfigError, match=r"cascade-mask-rcnn_r50_fpn_1x_coco\.py: no such config file"):
        cascade_rcnn.build_model(tmp_path / "my_cascade.py")


def test_a_checkpoint_without_a_config_or_classes_asks_for_them(tmp_path):
    bare = tmp_path / "bare.pth"
    torch.save({"state_dict": checkpoint.read(CHECKPOINT)["state_dict"]}, bare)
    with pytest.raises(checkpoint.CheckpointError, match="carries no config: give the model"):
        cascade_rcnn.build_model(weights=bare)
    three = cascade_rcnn.build_model(DUMPED).config.with_classes(("a", "b", "c"))
    with pytest.raises(checkpoint.CheckpointError, match=r"the checkpoint has 5 classes, the model 3.*class_names="):
        cascade_rcnn.build_model(three, weights=bare)
    named = cascade_rcnn.build_model(DUMPED, weights=bare, class_names=list("abcde"))
    assert named.class_names == tuple("abcde")


def test_convert_writes_our_checkpoint_with_config_and_classes_inside(reference, tmp_path):
    for suffix in (".safetensors", ".pth"):
        out = tmp_path / f"model{suffix}"
        assert main(["convert", str(CHECKPOINT), str(out)]) == 0
        model = cascade_rcnn.build_model(weights=out, exact=True)
        assert model.class_names == CLASSES and model.config.mask_threshold == 0.4
        own, _ = predict_both(model)
        assert_mmdetections(own, as_detections(reference["config_settings"]), same_cpu_kind(reference))


def test_cli_predict_with_only_the_checkpoint(tmp_path):
    assert main(["predict", str(IMAGE), "--weights", str(CHECKPOINT), "--out", str(tmp_path / "out"),
                 "--no-draw", "--score-thr", "0.02"]) == 0
    records = json.loads((tmp_path / "out" / "predictions.json").read_text())
    assert len(records) == 60 and {r["category_id"] for r in records} <= {1, 2, 3, 4, 5}


def test_the_configs_training_recipe_and_data_sets(tmp_path):
    recipe = training_recipe(read_config(DUMPED), "my_cascade_dumped.py", str(tmp_path))
    assert recipe == {"train_json": str(tmp_path / "annotations.json"), "train_images": str(tmp_path / "images"),
                      "val_json": str(tmp_path / "annotations.json"), "val_images": str(tmp_path / "images"),
                      "optimizer": "sgd", "lr": 0.02, "momentum": 0.9, "weight_decay": 0.0001, "epochs": 1,
                      "lr_steps": (8, 11), "warmup_iters": 500, "batch_size": 2, "filter_empty_gt": True,
                      "min_size": 32}
    v2 = training_recipe(read_config(DATA / "config_v2.py"), "config_v2.py", str(tmp_path))
    assert {k: v2[k] for k in ("train_json", "optimizer", "lr", "epochs", "lr_steps", "warmup_iters",
                               "batch_size")} == {
        "train_json": str(tmp_path / "annotations.json"), "optimizer": "sgd", "lr": 0.02, "epochs": 1,
        "lr_steps": (8, 11), "warmup_iters": 500, "batch_size": 2}


def test_cli_train_and_evaluate_continue_the_users_recipe(tmp_path):
    shapes = tmp_path / "shapes"
    generate_shapes(shapes, num_images=4, size=160, seed=3)
    out = tmp_path / "run"
    # At the config's own 320 x 256: this narrow (8-channel) ResNet's first downsample conv is one
    # whose channels-last weight gradient crashes torch 2.14.1 on AVX-512 CPUs (a double free;
    # tools/channels_last_conv_crash.py), so the trainer must pick the contiguous layout for it.
    assert main(["train", "--config", str(DUMPED), "--data-root", str(shapes), "--weights", str(CHECKPOINT),
                 "--out", str(out), "--eval-every", "0", "--workers", "0", "--lr", "0.001"]) == 0
    tuned = cascade_rcnn.build_model(weights=out / "final.pth")
    assert tuned.class_names == CLASSES and tuned.config.image_scale == (320, 256)
    assert tuned.config.test_proposals_pre_nms == 400 and tuned.config.mask_threshold == 0.4
    assert main(["evaluate", "--config", str(DUMPED), "--data-root", str(shapes), "--weights",
                 str(out / "final.pth"), "--out", str(tmp_path / "metrics.json")]) == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics and all(isinstance(value, (int, float, dict, list)) for value in metrics.values())
