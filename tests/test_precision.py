"""``precision`` (bf16 / fp16): the one switch, its refusals, and bf16 inference close to fp32's
with the float32 weights untouched. (Training at bf16: tests/test_train.py; CUDA: test_predict.py
and test_losses.py, skipped without a GPU.)"""
from __future__ import annotations

import dataclasses

import pytest
import torch
import torchvision
from conftest import backbone_passes, tiny_model

import cascade_rcnn
from cascade_rcnn.benchmarking.synthetic import drawn_scene, spread_random_weights
from cascade_rcnn.cli import main
from cascade_rcnn.ops.compute_path import EXACT, FAST, ComputePath


def at(model: cascade_rcnn.CascadeRCNN, precision: str) -> cascade_rcnn.CascadeRCNN:
    model.path = dataclasses.replace(model.path, precision=precision)
    return model


@pytest.fixture(scope="module")
def scene_and_model():
    scene = drawn_scene(128, 192, seed=3)
    return scene, spread_random_weights(tiny_model(True), scene)


def test_bf16_inference_is_close_to_float32_and_leaves_the_float32_weights_alone(scene_and_model,
                                                                                   pretend_cpu_has_bf16):
    scene, model = scene_and_model
    masters = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    full = at(model, "fp32").predict(scene)[0]
    half = at(model, "bf16").predict(scene)[0]
    assert half.boxes.dtype == half.scores.dtype == torch.float32 and half.masks.dtype == torch.bool
    # The best detections survive bf16: same class, nearly the same box; scores move by up to
    # ~0.1 on these random weights (calibrated to spread, so logits are large; BENCHMARKS.md
    # measures all detections of a trained model).
    assert len(full) >= 3 and len(half) >= 3
    overlap = torchvision.ops.box_iou(full.boxes[:3], half.boxes)
    overlap[full.labels[:3, None] != half.labels[None, :]] = 0
    best, match = overlap.max(dim=1)
    assert best.min() > 0.9 and (full.scores[:3] - half.scores[match]).abs().max() < 0.15
    assert all(torch.equal(tensor, masters[name]) for name, tensor in model.state_dict().items())
    assert {t.dtype for t in model.state_dict().values() if t.is_floating_point()} == {torch.float32}
    again = at(model, "fp32").predict(scene)[0]  # back to fp32: fp32's detections, bit for bit
    assert torch.equal(again.boxes, full.boxes) and torch.equal(again.scores, full.scores)


def outputs_of(model: cascade_rcnn.CascadeRCNN, scene, precision: str, autocast: bool = False) -> dict:
    """The first outputs of the backbone, the FPN and the first box head in one predict call."""
    seen = {}
    hooks = [module.register_forward_hook(lambda m, i, out, name=name: seen.setdefault(name, out))
             for name, module in (("backbone", model.backbone), ("fpn", model.neck),
                                  ("box_head", model.roi_head.bbox_head[0]))]
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            at(model, precision).predict(scene, score_thr=0.0)
    finally:
        for hook in hooks:
            hook.remove()
        at(model, "fp32")
    return seen


def test_bf16_activations_stay_bf16_and_channels_last_from_the_stem_to_the_heads(scene_and_model,
                                                                                  pretend_cpu_has_bf16):
    scene, model = scene_and_model
    half, full = outputs_of(model, scene, "bf16"), outputs_of(model, scene, "fp32")
    for level in half["backbone"] + half["fpn"]:
        assert level.dtype == torch.bfloat16 and level.is_contiguous(memory_format=torch.channels_last)
    assert all(t.dtype == torch.bfloat16 for t in half["box_head"])  # logits and deltas, before the fp32 softmax
    # bf16's rounding, no more: as close to fp32 as torch.autocast gets (which folds BatchNorm
    # from float32 weights and rounds once). Random weights amplify it with depth (C5: ~9 %).
    autocast = outputs_of(model, scene, "fp32", autocast=True)
    for name in ("backbone", "fpn"):
        for low, reference, high in zip(half[name], autocast[name], full[name]):
            error, reference_error = ((t.float() - high).norm() / high.norm() for t in (low, reference))
            assert error <= 1.05 * reference_error + 1e-3


def test_weights_are_cast_once_and_again_only_after_they_change(scene_and_model, pretend_cpu_has_bf16):
    scene, model = scene_and_model
    at(model, "bf16")
    try:
        model.predict(scene)
        first = model.__dict__["_low_precision_cache"]
        model.predict(scene)
        assert model.__dict__["_low_precision_cache"] is first  # no recast between calls
        before = model.predict(scene)[0]
        with torch.no_grad():
            model.roi_head.bbox_head[2].fc_cls.bias[1:] -= 5.0  # an in-place change: version counter moves
        assert model.__dict__["_low_precision_cache"] is first
        after = model.predict(scene)[0]
        assert model.__dict__["_low_precision_cache"] is not first
        assert not torch.equal(before.scores, after.scores)
    finally:
        with torch.no_grad():
            model.roi_head.bbox_head[2].fc_cls.bias[1:] += 5.0
        at(model, "fp32")


def test_unsupported_precisions_are_one_line_errors(monkeypatch, capsys):
    monkeypatch.setattr("cascade_rcnn.ops.compute_path.cpu_has_bf16_instructions", lambda: False)
    with pytest.raises(ValueError, match="fp16 runs on CUDA only"):
        cascade_rcnn.build_model("cascade_rcnn_r18w32_fpn_256", precision="fp16")
    with pytest.raises(ValueError, match="needs a CPU with bfloat16 instructions"):
        cascade_rcnn.build_model("cascade_rcnn_r18w32_fpn_256", precision="bf16")
    with pytest.raises(ValueError, match="exact path runs in fp32 only"):
        dataclasses.replace(EXACT, precision="bf16")
    with pytest.raises(ValueError, match="precision must be one of fp32, bf16, fp16"):
        ComputePath(precision="fp8")
    model = at(tiny_model(False), "bf16")  # set directly, bypassing build_model: refused when it runs
    with pytest.raises(ValueError, match="bfloat16 instructions"):
        model.predict(torch.zeros(3, 32, 32))
    assert main(["predict", "x.jpg", "--model", "cascade_rcnn_r18w32_fpn_256", "--weights", "none",
                 "--precision", "bf16"]) != 0
    errors = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("note:")]
    assert len(errors) == 1 and errors[0].startswith("error: precision bf16 needs a CPU with bfloat16")


def test_the_exact_path_stays_float32_and_the_fast_path_takes_the_switch():
    assert EXACT.exact and EXACT.precision == "fp32" and not dataclasses.replace(FAST, precision="bf16").exact
    assert dataclasses.replace(FAST, precision="bf16").dtype == torch.bfloat16


def test_cli_predict_and_benchmark_at_bf16(tmp_path, pretend_cpu_has_bf16, capsys):
    image = tmp_path / "scene.png"
    from PIL import Image

    Image.fromarray(drawn_scene(64, 96, seed=1)).save(image)
    predict = ["predict", str(image), "--model", "cascade_mask_rcnn_r18w32_fpn_256", "--weights", "none",
               "--score-thr", "0"]
    with backbone_passes() as passes:
        assert main([*predict, "--out", str(tmp_path / "fp32")]) == 0
        assert main([*predict, "--precision", "bf16", "--out", str(tmp_path / "out")]) == 0
    assert passes == [(1, {torch.float32}), (1, {torch.bfloat16})]  # the option changed what ran
    assert (tmp_path / "out" / "predictions.json").is_file()
    with backbone_passes() as passes:
        assert main(["benchmark", "--model", "cascade_rcnn_r18w32_fpn_256", "--images", "1", "--size", "64x96",
                     "--json", "--precision", "bf16", "--train", "--iterations", "1", "--train-batch-size", "1"]) == 0
    # spread_random_weights' 4 calibration passes (float32 by design), then at bf16: 2 warm-up and
    # 1 timed inference call, 1 warm-up and 1 timed training step
    assert [dtypes for _, dtypes in passes] == [{torch.float32}] * 4 + [{torch.bfloat16}] * 5
    assert '"precision": "bf16"' in capsys.readouterr().out
