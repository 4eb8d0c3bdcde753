"""ONNX export: the graph traced from the PyTorch path, run by onnxruntime, gives the same
detections, one image at a time or in batches; bad files and options fail with one clear line."""
from __future__ import annotations

import json
import warnings
from dataclasses import replace

import numpy as np
import pytest
import torch
from conftest import TINY_CLASSES, tiny_config, tiny_model

import cascade_rcnn
from cascade_rcnn.benchmarking.agreement import agreement
from cascade_rcnn.benchmarking.synthetic import drawn_scene, spread_random_weights
from cascade_rcnn.cli import main
from cascade_rcnn.deploy.export import FORMAT

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


def test_a_box_only_graph_runs_its_nms_in_original_pixels_as_pytorch(tmp_path):
    """Box-only models map boxes to the original image before the NMS (MMDetection's order):
    the graph takes the images' box scales and does the same, so on an image resized by 0.32
    onnxruntime gives PyTorch's detections one for one, not only up to NMS decisions."""
    scene = drawn_scene(150, 200, seed=11)
    model = spread_random_weights(tiny_model(False), scene, seed=3)
    runtime = cascade_rcnn.OnnxDetector(cascade_rcnn.export_onnx(model, tmp_path / "box.onnx"))
    record, _ = model.preprocess(scene)
    assert record.scale_factor != (1.0, 1.0)
    for image in (scene, drawn_scene(97, 301, seed=4)):
        ours, theirs = model.predict(image)[0], runtime.predict(image)[0]
        assert len(ours) == len(theirs) > 5
        assert torch.equal(ours.labels, theirs.labels)
        torch.testing.assert_close(theirs.boxes, ours.boxes, atol=2e-3, rtol=0)
        torch.testing.assert_close(theirs.scores, ours.scores, atol=1e-5, rtol=0)


def test_images_larger_than_the_traced_example_keep_parity(tmp_path):
    """The trace runs on a 256x384 example; a 480-wide input checks that no size froze."""
    scene = drawn_scene(300, 450, seed=7)
    model = spread_random_weights(tiny_model(True, image_scale=(480, 320)), scene)
    runtime = cascade_rcnn.OnnxDetector(cascade_rcnn.export_onnx(model, tmp_path / "large.onnx"))
    ours, theirs = model.predict(scene)[0], runtime.predict(scene)[0]
    assert len(ours) > 5
    assert_same_detections(ours, theirs)


def batch_images() -> list[np.ndarray]:
    """Three scenes of one padded size (one batch) and one of another (a batch of its own)."""
    return [drawn_scene(150, 200, seed=11), drawn_scene(140, 190, seed=12), drawn_scene(150, 200, seed=13),
            drawn_scene(97, 301, seed=14)]


def assert_same_up_to_noise(first, second, box_tol: float = 1e-2, score_tol: float = 1e-5,
                            min_mask_iou: float = 0.98) -> None:
    """Each detection of ``first`` has its own in ``second`` (greedily, by score): same label,
    every box coordinate within ``box_tol`` pixels, score within ``score_tol``, pasted masks of
    IoU >= ``min_mask_iou``. Unlike a box-IoU match, this also pairs boxes of zero width or height
    (a clipped box can be one), whose IoU is undefined."""
    assert len(first) == len(second)
    if not len(first):
        return
    distance = (first.boxes[:, None, :] - second.boxes[None, :, :]).abs().amax(dim=2)
    distance[first.labels[:, None] != second.labels[None, :]] = float("inf")
    distance[(first.scores[:, None] - second.scores[None, :]).abs() > score_tol] = float("inf")
    for row in range(len(first)):
        column = int(distance[row].argmin())
        assert distance[row, column] <= box_tol, f"detection {row} has no partner"
        distance[:, column] = float("inf")
        if first.masks is not None:
            mine, theirs = first.masks[row], second.masks[column]
            union = int((mine | theirs).sum())
            assert union == 0 or int((mine & theirs).sum()) / union >= min_mask_iou


def test_a_batch_gives_each_image_its_batch_1_and_pytorch_detections(exported, monkeypatch):
    model, runtime, _ = exported
    images = batch_images()
    one_at_a_time = runtime.predict(images)
    batch_sizes = []
    run_batch = runtime.run_batch
    monkeypatch.setattr(runtime, "run_batch", lambda tensors, records: batch_sizes.append(len(tensors)) or
                        run_batch(tensors, records))
    for batch_size, expected in ((4, [3, 1]), (2, [2, 1, 1])):
        batch_sizes.clear()
        batched = runtime.predict(images, batch_size=batch_size)
        assert batch_sizes == expected  # the images of one padded size really ran together
        for single, together, pytorch in zip(one_at_a_time, batched, model.predict(images, batch_size=batch_size)):
            assert len(single) > 5 and together.image_size == single.image_size
            assert_same_up_to_noise(single, together)
            assert_same_up_to_noise(pytorch, together, box_tol=0.05, score_tol=1e-3)


def test_the_graph_keeps_each_images_detections_apart(exported):
    """The graph itself, fed by hand: an image's rows in a batch of three (itself, a blank image,
    another scene) are its rows alone, in the same order; batch_index names their image."""
    model, runtime, _ = exported
    records, tensors = zip(*(model.preprocess(image) for image in batch_images()[:3]))
    blank = torch.zeros_like(tensors[1])
    alone = runtime.run_batch([tensors[0]], [records[0]])[0]
    together = runtime.run_batch([tensors[0], blank, tensors[2]], list(records))
    assert len(alone.scores) > 5
    torch.testing.assert_close(together[0].boxes, alone.boxes, atol=1e-3, rtol=0)
    torch.testing.assert_close(together[0].scores, alone.scores, atol=1e-5, rtol=0)
    assert torch.equal(together[0].labels, alone.labels)
    assert bool((together[0].scores[:-1] >= together[0].scores[1:]).all())
    third = runtime.run_batch([tensors[2]], [records[2]])[0]
    torch.testing.assert_close(together[2].scores, third.scores, atol=1e-5, rtol=0)
    assert len(together[0].scores) <= model.test_detections.max_per_image


def test_class_specific_boxes_batch_and_keep_parity(tmp_path):
    """A head with one box per class (the ConvNeXt rows' head): its NMS batches (image, class)
    pairs (box-only: the mask step is the class-agnostic one's)."""
    from cascade_rcnn.models.heads.box_head import ConvFCBoxHeadConfig

    torch.manual_seed(0)
    model = cascade_rcnn.CascadeRCNN(tiny_config(False, box_head=ConvFCBoxHeadConfig(conv_channels=8))).eval()
    images = batch_images()[:3]  # one padded size: one batch
    spread_random_weights(model, images[0])
    runtime = cascade_rcnn.OnnxDetector(cascade_rcnn.export_onnx(model, tmp_path / "per_class.onnx"))
    one_at_a_time, batched = runtime.predict(images), runtime.predict(images, batch_size=3)
    for single, together, pytorch in zip(one_at_a_time, batched, model.predict(images)):
        assert len(single) > 5
        assert_same_up_to_noise(single, together)
        assert_same_up_to_noise(pytorch, together, box_tol=0.05, score_tol=1e-3)


def test_cli_predict_onnx_batch_size_writes_the_batch_1_files(exported, tmp_path):
    import cv2

    _, _, path = exported
    images = tmp_path / "images"
    images.mkdir()
    for index, image in enumerate(batch_images()):
        cv2.imwrite(str(images / f"{index}.png"), image[:, :, ::-1])
    for batch_size in (1, 3):
        assert main(["predict", str(images), "--onnx", str(path), "--batch-size", str(batch_size), "--score-thr",
                     "0.1", "--no-draw", "--out", str(tmp_path / f"b{batch_size}")]) == 0
    one, three = (json.loads((tmp_path / f"b{n}" / "predictions.json").read_text()) for n in (1, 3))
    assert len(one) == len(three) > 0
    for a, b in zip(one, three):
        assert (a["file_name"], a["category_id"]) == (b["file_name"], b["category_id"])
        assert a["score"] == pytest.approx(b["score"], abs=1e-5)
        assert a["bbox"] == pytest.approx(b["bbox"], abs=1e-2)


def test_an_image_without_detections_gives_empty_outputs(exported, tmp_path):
    model, _, _ = exported
    with torch.no_grad():
        for head in model.roi_head.bbox_head:  # background wins everywhere
            head.fc_cls.bias[-1] += 100.0
    try:
        path = cascade_rcnn.export_onnx(model, tmp_path / "empty.onnx")
        result, *batch = cascade_rcnn.OnnxDetector(path).predict([np.zeros((40, 60, 3), np.uint8)] * 3, batch_size=2)
    finally:
        with torch.no_grad():
            for head in model.roi_head.bbox_head:
                head.fc_cls.bias[-1] -= 100.0
    assert len(result) == 0 and result.boxes.shape == (0, 4) and all(len(found) == 0 for found in batch)
    assert result.masks is None or result.masks.shape == (0, 40, 60)


def test_metadata_tells_a_consumer_how_to_feed_the_graph(exported):
    model, runtime, _ = exported
    meta = runtime.metadata
    assert json.loads(meta["class_names"]) == list(TINY_CLASSES)
    assert json.loads(meta["category_ids"]) == [1, 2, 3]
    assert json.loads(meta["mean"]) == list(model.config.pixel_mean) and meta["channel_order"] == "RGB"
    assert json.loads(meta["image_scale"]) == [96, 64] and meta["size_divisor"] == "32"
    assert float(meta["score_thr"]) == 0.05 and meta["config_name"] == "tiny"
    assert meta["format"] == FORMAT == "cascade_rcnn-onnx-3"
    inputs = {i.name: (i.shape, i.type) for i in runtime.session.get_inputs()}
    box_only = {} if model.config.with_mask else {"box_scales": (["batch", 4], "tensor(float)")}
    assert inputs == {"image": (["batch", 3, "height", "width"], "tensor(float)"),
                      "image_sizes": (["batch", 2], "tensor(int64)"), **box_only}
    outputs = [(o.name, o.shape) for o in runtime.session.get_outputs()]
    assert outputs == [("boxes", ["detections", 4]), ("scores", ["detections"]), ("labels", ["detections"]),
                       ("batch_index", ["detections"])] + (
        [("mask_probs", ["detections", 28, 28])] if model.config.with_mask else [])


def test_the_exported_file_has_the_permissions_of_any_new_file(exported, tmp_path):
    plain = tmp_path / "plain.txt"
    plain.write_text("")
    assert exported[2].stat().st_mode & 0o777 == plain.stat().st_mode & 0o777  # 0644 under a 0022 umask


def test_bad_files_and_options_are_one_line_errors(exported, tmp_path):
    model, runtime, _ = exported
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
    with pytest.raises(ValueError, match="batch_size must be at least 1"):
        runtime.predict(np.zeros((40, 60, 3), np.uint8), batch_size=0)
    low = tiny_model(False)
    low.path = replace(low.path, precision="bf16")
    with pytest.raises(ValueError, match="ONNX export runs at fp32"):
        cascade_rcnn.export_onnx(low, tmp_path / "bf16.onnx")


def test_a_file_of_the_batch_1_format_is_refused_with_what_to_do(exported, tmp_path):
    import onnx

    _, _, path = exported
    graph = onnx.load(path)
    for prop in graph.metadata_props:
        if prop.key == "format":
            prop.value = "cascade_rcnn-onnx-1"
    old = tmp_path / "old_format.onnx"
    onnx.save(graph, old)
    with pytest.raises(ValueError, match=r"old_format.onnx: .*format cascade_rcnn-onnx-1.* export it again") as error:
        cascade_rcnn.OnnxDetector(old)
    assert "\n" not in str(error.value)


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
