"""MMDetection configs read as data: never executed, merged with their ``_base_`` files as mmengine
does, mapped key by key onto our ModelConfig, and anything we do not build refused by name."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

import cascade_rcnn
from cascade_rcnn.mmdet_config import ConfigError, model_config, parse_config_text, read_config
from cascade_rcnn.mmdet_config.recipe import training_recipe
from cascade_rcnn.mmdet_config.text import config_text

CONFIGS = Path(__file__).parent / "data" / "mmdet_configs" / "configs"


def test_literals_dicts_earlier_names_and_arithmetic_are_read():
    text = ("# a comment\n'''a docstring'''\nlr = 0.02\nsteps = [8, 11]\n"
            "optim = dict(lr=lr / 8, momentum=0.9, steps=steps + [12], scale=(1333, 800), neg=-1, pow=2 ** 3)\n"
            "first = steps[0]\nname = 'a' + 'b'\nnothing = None\nflag = True\n")
    assert parse_config_text(text, "c.py") == {
        "lr": 0.02, "steps": [8, 11], "optim": {"lr": 0.0025, "momentum": 0.9, "steps": [8, 11, 12],
                                                 "scale": (1333, 800), "neg": -1, "pow": 8},
        "first": 8, "name": "ab", "nothing": None, "flag": True}


def test_ranges_registry_scopes_and_run_keys_are_read_as_mmengine_writes_them():
    text = ("gpu_ids = range(0, 1)\nsteps = range(8, 12, 3)\n"
            "model = dict(_scope_='mmdet', type='CascadeRCNN', backbone=dict(type='ResNet'))\n"
            "backbone = dict(_scope_='mmpretrain', type='ConvNeXt', norm_cfg=dict(type='LN2d'))\n"
            "work_dir = './work_dirs/x'\nwork_dir = osp.join('work_dirs', 'x')\n"
            "log_config = dict(hooks=[dict(type=TensorboardLoggerHook)])\n")
    assert parse_config_text(text, "c.py") == {
        "gpu_ids": range(0, 1), "steps": range(8, 12, 3),
        "model": {"type": "CascadeRCNN", "backbone": {"type": "ResNet"}},
        "backbone": {"type": "mmpretrain.ConvNeXt", "norm_cfg": {"type": "LN2d"}}}
    assert parse_config_text(config_text(parse_config_text(text, "c.py")), "dump.py")["gpu_ids"] == range(0, 1)
    for unreadable in ("model = osp.join('a')\n", "gpu_ids = range(0, 1)\nmodel = range(gpu_ids)\n",
                       "x = range(0, 1.5)\n", "x = range(0, 4, 0)\n", "x = range(stop=4)\n"):
        with pytest.raises(ConfigError, match="is not a value a config may hold"):
            parse_config_text(unreadable, "c.py")


@pytest.mark.parametrize("text, line, what", [
    ("import os\n", 1, "only `name = value` statements"),
    ("from os import system\n", 1, "only `name = value` statements"),
    ("x = 1\ny = __import__('os').system('touch /tmp/pwned')\n", 2, "is not a value a config may hold"),
    ("x = open('/etc/passwd').read()\n", 1, "is not a value a config may hold"),
    ("x = (1).__class__.__bases__\n", 1, "is not a value a config may hold"),
    ("x = [c for c in ().__class__.__base__.__subclasses__()]\n", 1, "is not a value a config may hold"),
    ("x = lambda: 0\n", 1, "is not a value a config may hold"),
    ("x = eval('1')\n", 1, "is not a value a config may hold"),
    ("x = dict(**{'a': 1})\n", 1, "is not a value a config may hold"),
    ("def f():\n    pass\n", 1, "only `name = value` statements"),
    ("for i in []:\n    pass\n", 1, "only `name = value` statements"),
    ("a = 1\na.b = 2\n", 2, "only `name = value` statements"),
    ("x = y\n", 1, "'y' is not a name bound earlier"),
    ("x = 10 ** 1000000\n", 1, "is not a value a config may hold"),
    ("x = 1 / 0\n", 1, "division by zero"),
    ("x = f'{1}'\n", 1, "is not a value a config may hold"),
    ("x = (\n", 1, "not valid Python"),
])
def test_anything_that_would_run_code_is_a_one_line_error_naming_the_line(text, line, what, tmp_path):
    marker = tmp_path / "pwned"
    with pytest.raises(ConfigError, match=rf"^evil.py:{line}: .*{what}") as error:
        parse_config_text(text.replace("/tmp/pwned", str(marker)), "evil.py")
    assert "\n" not in str(error.value)
    assert not marker.exists()


@pytest.mark.parametrize("text, what", [
    ("a0 = 'xxxxxxxx'\n" + "".join(f"a{i + 1} = a{i} + a{i}\n" for i in range(40)), "longer than a config"),
    ("a = 9 ** 64\n", "not a number a config may hold"),
    ("a = 2 ** 60\n" + "a = a * a\n" * 30, "not a number a config may hold"),
    ("a0 = [1]\n" + "".join(f"a{i + 1} = [a{i}, a{i}]\n" for i in range(60)), "holds more than"),
    ("a = (-8) ** 0.5\n", "not a number a config may hold"),
    ("a = {(1,): 2}\n", "a dict key must be a literal"),
])
def test_text_that_would_exhaust_memory_or_time_is_refused(text, what):
    with pytest.raises(ConfigError, match=what):
        parse_config_text(text, "evil.py")


def test_an_absolute_base_path_is_refused(tmp_path):
    (tmp_path / "mine.py").write_text("_base_ = '/etc/hosts'\n")
    with pytest.raises(ConfigError, match="is an absolute path"):
        read_config(tmp_path / "mine.py")


def test_deep_nesting_is_an_error_not_a_crash():
    with pytest.raises(ConfigError, match="evil.py"):
        parse_config_text("x = " + "[" * 10000 + "]" * 10000 + "\n", "evil.py")


def test_base_files_merge_as_mmengine_merges_them(tmp_path):
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "model.py").write_text(
        "model = dict(type='M', backbone=dict(depth=50, style='pytorch'), heads=[1, 2])\nthr = 0.5\n")
    (tmp_path / "base" / "data.py").write_text("data = dict(batch=2, root='/data')\n")
    (tmp_path / "mine.py").write_text(
        "_base_ = ['base/model.py', 'base/data.py']\n"
        "model = dict(backbone=dict(depth=18), heads=[3], neck=dict(c={{_base_.thr}}))\n"
        "data = dict(_delete_=True, root='/mine')\n")
    assert read_config(tmp_path / "mine.py") == {
        "model": {"type": "M", "backbone": {"depth": 18, "style": "pytorch"}, "heads": [3], "neck": {"c": 0.5}},
        "thr": 0.5, "data": {"root": "/mine"}}


def test_a_missing_base_file_is_named(tmp_path):
    (tmp_path / "mine.py").write_text("_base_ = '../configs/_base_/models/nowhere.py'\nx = 1\n")
    with pytest.raises(ConfigError, match=r"nowhere\.py: no such config file"):
        read_config(tmp_path / "mine.py")
    (tmp_path / "scoped.py").write_text("_base_ = 'mmdet::cascade_rcnn/x.py'\n")
    with pytest.raises(ConfigError, match="names a file inside an installed package"):
        read_config(tmp_path / "scoped.py")
    (tmp_path / "loop.py").write_text("_base_ = 'loop.py'\n")
    with pytest.raises(ConfigError, match="nest deeper"):
        read_config(tmp_path / "loop.py")


def test_a_merged_config_written_as_text_reads_back_the_same():
    merged = read_config(CONFIGS / "cascade_rcnn" / "cascade-mask-rcnn_r50_fpn_1x_coco.py")
    assert parse_config_text(config_text(merged), "dump.py") == merged


def with_zoo_facts(read: cascade_rcnn.ModelConfig, zoo: cascade_rcnn.ModelConfig) -> cascade_rcnn.ModelConfig:
    """``read`` with the zoo row's name and reported figures (what no config file holds)."""
    return replace(read, name=zoo.name, reported_box_ap=zoo.reported_box_ap, reported_mask_ap=zoo.reported_mask_ap,
                   reported_mem_gb=zoo.reported_mem_gb, reported_fps=zoo.reported_fps, url=zoo.url)


ZOO_FILES = {
    name: "configs/cascade_rcnn/" + name.replace("cascade_mask_rcnn", "cascade-mask-rcnn")
    .replace("cascade_rcnn", "cascade-rcnn").replace("_caffe", "-caffe").replace("x101_32x4d", "x101-32x4d")
    .replace("x101_64x4d", "x101-64x4d").replace("x101_32x8d", "x101-32x8d").replace("_mstrain_3x", "_ms-3x") + ".py"
    for name in cascade_rcnn.MODEL_ZOO if name.startswith("cascade") and "convnext" not in name
    and "swin" not in name and "r18w32" not in name}
ZOO_FILES.update({name: f"configs/convnext/cascade-mask-rcnn_convnext-{name.split('convnext-')[1][0]}-p4-w7_fpn_"
                  "4conv1fc-giou_amp-ms-crop-3x_coco.py" for name in cascade_rcnn.MODEL_ZOO if "convnext" in name})
ZOO_FILES["cascade_mask_rcnn_swin_tiny_patch4_window7"] = "ours/cascade_mask_rcnn_swin_tiny_patch4_window7.py"


def zoo_file(name: str) -> Path:
    found = CONFIGS.parent / ZOO_FILES[name]
    if not found.is_file() and "x101-64x4d_fpn_20e" in found.name:
        found = found.with_name(found.name.replace("x101-64x4d", "x101_64x4d"))
    return found


@pytest.mark.parametrize("name", sorted(ZOO_FILES))
def test_every_zoo_row_is_what_the_reader_makes_of_mmdetections_own_config(name):
    """Our 27 ResNet rows (the 20 of the v2 page, the 7 multi-scale 3x) and 2 ConvNeXt rows against
    MMDetection 3.3's config files for them, stored as text in tests/data/mmdet_configs; the Swin-T
    row (the official Swin repository's config) as MMDetection 3.3 spells it (``ours/``)."""
    zoo = cascade_rcnn.get_config(name)
    read = with_zoo_facts(model_config(read_config(zoo_file(name)), name, zoo_file(name).name), zoo)
    assert read == zoo, {f: (getattr(read, f), getattr(zoo, f)) for f in zoo.__dataclass_fields__
                         if getattr(read, f) != getattr(zoo, f)}


@pytest.mark.parametrize("change, refusal", [
    (lambda m: m["roi_head"]["bbox_head"][1].update(type="SABLHead"),
     r"model\.roi_head\.bbox_head\[1\]\.type='SABLHead' is not supported \(supported: Shared2FCBBoxHead, "
     r"Shared4Conv1FCBBoxHead, ConvFCBBoxHead\)"),
    (lambda m: m["backbone"].update(dcn=dict(type="DCN", deform_groups=1)),
     r"model\.backbone\.dcn=.* is not supported"),
    (lambda m: m["backbone"].update(type="RegNet"), r"model\.backbone\.type='RegNet' is not supported"),
    (lambda m: m["neck"].update(add_extra_convs="on_input"), r"model\.neck\.add_extra_convs='on_input'"),
    (lambda m: m["rpn_head"]["loss_bbox"].update(type="L1Loss"), r"model\.rpn_head\.loss_bbox\.type='L1Loss'"),
    (lambda m: m["rpn_head"]["anchor_generator"].update(scales=[4, 8]), r"scales=\[4, 8\] is not supported"),
    (lambda m: m["roi_head"]["mask_head"].update(class_agnostic=True), r"mask_head\[0\]\.class_agnostic=True"),
    (lambda m: m["train_cfg"]["rcnn"][0]["sampler"].update(type="OHEMSampler"), r"rcnn\[0\]\.sampler\.type="),
    (lambda m: m["backbone"].update(frozen_stages=0), r"frozen_stages=0 is not supported"),
    (lambda m: m.update(some_new_key=1), r"model\.some_new_key=1 is not supported"),
    (lambda m: m["data_preprocessor"].update(pad_value=114), r"pad_value=114 is not supported"),
    (lambda m: m["backbone"]["norm_cfg"].update(eps=1e-3), r"norm_cfg\.eps=0\.001 is not supported"),
    (lambda m: m["roi_head"]["bbox_roi_extractor"]["roi_layer"].update(pool_mode="max"), r"pool_mode='max'"),
    (lambda m: m["rpn_head"]["bbox_coder"].update(clip_border=False), r"clip_border=False is not supported"),
    (lambda m: m["roi_head"]["bbox_head"][2].update(fc_out_channels=512), r"bbox_head\[2\] differs"),
    (lambda m: m["train_cfg"]["rpn"]["assigner"].update(min_pos_iou=0.0), r"min_pos_iou=0\.0 with match_low"),
    (lambda m: m["data_preprocessor"].update(pad_mask=False), r"pad_mask=False is not supported"),
    (lambda m: m["backbone"].update(frozen_stages="1"), r"frozen_stages='1' is not supported"),
    (lambda m: m["data_preprocessor"].update(mean=1.0), r"mean and std need 3 values"),
    (lambda m: m["test_cfg"]["rcnn"].update(mask_thr_binary=1.0), r"mask_threshold must be in \[0, 1\)"),
])
def test_what_we_do_not_build_is_refused_by_name(change, refusal):
    merged = read_config(CONFIGS / "cascade_rcnn" / "cascade-mask-rcnn_r50_fpn_1x_coco.py")
    change(merged["model"])
    with pytest.raises(ConfigError, match=refusal):
        model_config(merged, "mine", "mine.py")


def test_a_test_resize_over_a_range_is_refused():
    merged = read_config(CONFIGS / "cascade_rcnn" / "cascade-mask-rcnn_r50_fpn_1x_coco.py")
    for step in merged["test_dataloader"]["dataset"]["pipeline"]:
        if step["type"] == "Resize":
            step["scale"] = [(1333, 640), (1333, 800)]
    merged["test_pipeline"] = merged["test_dataloader"]["dataset"]["pipeline"]
    with pytest.raises(ConfigError, match=r"test Resize scale=\[\(1333, 640\), \(1333, 800\)\] is not supported"):
        model_config(merged, "mine", "mine.py")


def test_user_changes_reach_the_model():
    merged = read_config(CONFIGS / "cascade_rcnn" / "cascade-mask-rcnn_r50_fpn_1x_coco.py")
    model = merged["model"]
    model["rpn_head"]["anchor_generator"].update(scales=[4], ratios=[0.5, 1.0, 2.0, 3.0])
    model["test_cfg"]["rpn"].update(nms_pre=400, max_per_img=200)
    model["test_cfg"]["rcnn"].update(score_thr=0.3, max_per_img=20, mask_thr_binary=0.4, nms=dict(
        type="nms", iou_threshold=0.6))
    model["train_cfg"]["rpn"]["assigner"]["ignore_iof_thr"] = 0.5
    for head in model["roi_head"]["bbox_head"]:
        head["num_classes"] = 3
    model["roi_head"]["mask_head"]["num_classes"] = 3
    merged["metainfo"] = dict(classes=("a", "b", "c"))
    config = model_config(merged, "mine", "mine.py")
    assert config.anchor_scale == 4.0 and config.rpn_head.ratios == (0.5, 1.0, 2.0, 3.0)
    assert (config.test_proposals, config.test_proposals_pre_nms) == (200, 400)
    assert (config.test_score_thr, config.test_nms_iou, config.test_max_per_image) == (0.3, 0.6, 20)
    assert config.mask_threshold == 0.4 and config.rpn_head.ignore_iof_thr == 0.5
    assert config.class_names == ("a", "b", "c") and config.category_ids is None
    model = cascade_rcnn.CascadeRCNN(config)
    assert model.rpn_head.rpn_cls.out_channels == 4 and model.rpn_head.test_proposals.pre_nms_per_level == 400
    assert model.test_detections == replace(model.test_detections, score_thr=0.3, nms_iou=0.6, max_per_image=20)


def test_the_backbone_rows_training_rules_come_from_the_config():
    """ConvNeXt's layer-wise lr decay (paramwise_cfg num_layers: 6 for T, 12 for S) lands in the
    backbone spec; Swin's no-decay keys are what its spec does: both recipes read as AdamW 3x."""
    convnext = "cascade-mask-rcnn_convnext-{}-p4-w7_fpn_4conv1fc-giou_amp-ms-crop-3x_coco.py"
    small = read_config(CONFIGS / "convnext" / convnext.format("s"))
    assert model_config(small, "s", "s.py").backbone.lr_decay_layers == 12
    for path in (CONFIGS / "convnext" / convnext.format("t"),
                 CONFIGS.parent / "ours" / "cascade_mask_rcnn_swin_tiny_patch4_window7.py"):
        recipe = training_recipe(read_config(path), path.name, "/data")
        assert {k: recipe[k] for k in ("optimizer", "lr", "weight_decay", "epochs", "lr_steps", "warmup_iters")} == {
            "optimizer": "adamw", "lr": 2e-4, "weight_decay": 0.05, "epochs": 36, "lr_steps": (27, 33),
            "warmup_iters": 1000}
    resnet = read_config(CONFIGS / "cascade_rcnn" / "cascade-mask-rcnn_r50_fpn_1x_coco.py")
    resnet["optim_wrapper"]["paramwise_cfg"] = {"decay_type": "layer_wise", "num_layers": 6, "decay_rate": 0.7}
    with pytest.raises(ConfigError, match="optimizer paramwise_cfg"):
        training_recipe(resnet, "r50.py")
