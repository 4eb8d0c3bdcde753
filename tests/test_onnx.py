"""ONNX export: the graph traced from the PyTorch path, run by onnxruntime, gives the same
detections; bad files and options fail with one clear line."""
from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from conftest import TINY_CLASSES, tiny_model

import cascade_rcnn
from cascade_rcnn.benchmarking.agreement import agreement
from cascade_rcnn.benchmarking.synthetic import drawn_scene, spread_random_weights
from cascade_rcnn.cli import main

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module", params=[True, False], ids=["mask", "box"])
def exported(request, tmp_path_factory):
    """A tiny model with weights that spread like a trained model's, and its ONNX file."""
    scene = drawn_scene(150, 200, seed=2)
    model = spread_random_weights(tiny_model(request.param), scene)
    path = cascade_rcnn.export_onnx(model, tmp_path_factory.mktemp("onnx") / "tiny.onnx")
    return model, cascade_rcnn.OnnxDetector(path), path


def assert_same_detections(ours, theirs, min_mask_iou: float = 0.98) -> None:
    """Every detection scoring > 0.05 on either side is matched: same label, box IoU >= 0.99,
    |score difference| <= 1e-3, and for masks IoU >= min_mask_iou after pasting."""
    match = agreement(ours, theirs, min_iou=0.99)
    assert match.matched == len(ours) == len(theirs)
    if len(ours):
        assert match.max_score_diff <= 1e-3
        assert match.min_mask_iou is None or match.min_mask_iou >= min_mask_iou


@pytest.mark.parametrize("size", [(150, 200), (97, 301)])
def test_onnxruntime_gives_the_pytorch_detections(exported, size):
    model, runtime, _ = exported
    image = drawn_scene(*size, seed=size[1])
    ours, theirs = model.predict(image)[0], runtime.predict(image)[0]
    assert len(ours) > 5
    assert theirs.image_size == size and (theirs.masks is None) == (ours.masks is None)
    assert_same_detections(ours, theirs)
    above = runtime.predict(image, score_thr=0.3)[0]  # a higher threshold filters afterwards
    assert_same_detections(model.predict(image, score_thr=0.3)[0], above)


def test_images_larger_than_the_traced_example_keep_parity(tmp_path):
    """The trace runs on a 256x384 example; a 480-wide input checks that no size froze."""
    scene = drawn_scene(300, 450, seed=7)
    model = spread_random_weights(tiny_model(True, image_scale=(480, 320)), scene)
    runtime = cascade_rcnn.OnnxDetector(cascade_rcnn.export_onnx(model, tmp_path / "large.onnx"))
    ours, theirs = model.predict(scene)[0], runtime.predict(scene)[0]
    assert len(ours) > 5
    assert_same_detections(ours, theirs)


def test_an_image_without_detections_gives_empty_outputs(exported, tmp_path):
    model, _, _ = exported
    with torch.no_grad():
        for head in model.roi_head.bbox_head:  # background wins everywhere
            head.fc_cls.bias[-1] += 100.0
    try:
        path = cascade_rcnn.export_onnx(model, tmp_path / "empty.onnx")
        result = cascade_rcnn.OnnxDetector(path).predict(np.zeros((40, 60, 3), np.uint8))[0]
    finally:
        with torch.no_grad():
            for head in model.roi_head.bbox_head:
                head.fc_cls.bias[-1] -= 100.0
    assert len(result) == 0 and result.boxes.shape == (0, 4)
    assert result.masks is None or result.masks.shape == (0, 40, 60)


def test_metadata_tells_a_consumer_how_to_feed_the_graph(exported):
    model, runtime, _ = exported
    meta = runtime.metadata
    assert json.loads(meta["class_names"]) == list(TINY_CLASSES)
    assert json.loads(meta["category_ids"]) == [1, 2, 3]
    assert json.loads(meta["mean"]) == list(model.config.pixel_mean) and meta["channel_order"] == "RGB"
    assert json.loads(meta["image_scale"]) == [96, 64] and meta["size_divisor"] == "32"
    assert float(meta["score_thr"]) == 0.05 and meta["config_name"] == "tiny"
    inputs = [(i.name, i.shape) for i in runtime.session.get_inputs()]
    assert inputs[0][0] == "image" and inputs[0][1][:2] == [1, 3] and isinstance(inputs[0][1][2], str)
    assert inputs[1] == ("image_size", [2])
    outputs = [o.name for o in runtime.session.get_outputs()]
    assert outputs == ["boxes", "scores", "labels"] + (["mask_probs"] if model.config.with_mask else [])


def test_bad_files_and_options_are_one_line_errors(exported, tmp_path):
    model, runtime, path = exported
    with pytest.raises(ValueError, match="exported with score_thr=0.05"):
        runtime.predict(np.zeros((40, 60, 3), np.uint8), score_thr=0.01)
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not a model")
    with pytest.raises(ValueError, match="garbage.onnx: not a readable ONNX model"):
        cascade_rcnn.OnnxDetector(garbage)
    with pytest.raises(FileNotFoundError, match="missing.onnx"):
        cascade_rcnn.OnnxDetector(tmp_path / "missing.onnx")
    foreign = tmp_path / "foreign.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the legacy exporter, on purpose
        torch.onnx.export(torch.nn.Linear(2, 2), (torch.zeros(1, 2),), str(foreign), dynamo=False)
    with pytest.raises(ValueError, match="not exported by cascade_rcnn"):
        cascade_rcnn.OnnxDetector(foreign)
    with pytest.raises(ValueError, match="opset 15"):
        cascade_rcnn.export_onnx(model, tmp_path / "old.onnx", opset=15)


def test_a_missing_onnx_package_is_named(monkeypatch, tmp_path):
    import builtins

    real_import = builtins.__import__

    def no_onnx(name, *args, **kwargs):
        if name == "onnx":
            raise ImportError("No module named 'onnx'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_onnx)
    with pytest.raises(ImportError, match=r'pip install "cascade_rcnn\[onnx\]"'):
        cascade_rcnn.export_onnx(tiny_model(False), tmp_path / "x.onnx")


def test_cli_export_then_predict_onnx_writes_the_pytorch_files(tmp_path, capsys):
    import cv2

    model = cascade_rcnn.build_model("cascade_mask_rcnn_r18w32_fpn_256")
    scene = drawn_scene(120, 160, seed=4)
    spread_random_weights(model, scene)
    weights = tmp_path / "w.pth"
    cascade_rcnn.checkpoint.save(weights, model)
    images = tmp_path / "images"
    images.mkdir()
    cv2.imwrite(str(images / "scene.png"), scene[:, :, ::-1])
    onnx_path = tmp_path / "model.onnx"
    assert main(["export", "--model", "cascade_mask_rcnn_r18w32_fpn_256", "--weights", str(weights),
                 "--out", str(onnx_path)]) == 0
    assert onnx_path.is_file() and "exported" in capsys.readouterr().out
    common = [str(images), "--score-thr", "0.1", "--no-draw"]
    assert main(["predict", *common, "--model", "cascade_mask_rcnn_r18w32_fpn_256", "--weights", str(weights),
                 "--out", str(tmp_path / "torch")]) == 0
    assert main(["predict", *common, "--onnx", str(onnx_path), "--out", str(tmp_path / "onnx")]) == 0
    torch_records = json.loads((tmp_path / "torch" / "predictions.json").read_text())
    onnx_records = json.loads((tmp_path / "onnx" / "predictions.json").read_text())
    assert len(onnx_records) == len(torch_records) > 0
    for a, b in zip(torch_records, onnx_records):
        assert a["category_id"] == b["category_id"] and a["file_name"] == b["file_name"]
        assert a["score"] == pytest.approx(b["score"], abs=1e-3)
        assert a["bbox"] == pytest.approx(b["bbox"], abs=0.05)
    assert main(["predict", str(images), "--onnx", str(onnx_path), "--model", "cascade_rcnn_r18w32_fpn_256"]) == 2
    assert "--onnx takes the model" in capsys.readouterr().err
