"""``CascadeRCNN.predict``: original-image coordinates, batching, inputs of every kind, COCO output."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torchvision
from conftest import TINY_CLASSES, assert_detections_equal, make_confident, tiny_model
from PIL import Image
from pycocotools import mask as mask_utils

import cascade_rcnn
from cascade_rcnn.benchmarking.agreement import agreement
from cascade_rcnn.benchmarking.synthetic import drawn_scene, spread_random_weights
from cascade_rcnn.data.transforms import fit_size, resize
from cascade_rcnn.errors import UserInputError
from cascade_rcnn.models.heads.box_head import ConvFCBoxHeadConfig
from cascade_rcnn.models.coco_classes import COCO_CATEGORY_IDS, COCO_CLASSES
from cascade_rcnn.ops.compute_path import EXACT


@pytest.fixture
def photo(rng):
    return rng.integers(0, 256, (200, 300, 3), dtype=np.uint8)


# --- resizing ------------------------------------------------------------------------------------

def test_resize_follows_mmdetection_rounding():
    assert fit_size(480, 640, (1333, 800)) == (800, 1067)
    resized = resize(np.zeros((480, 640, 3), np.uint8), (1333, 800))
    assert resized.size == (800, 1067) and resized.original_size == (480, 640)
    assert resized.scale_factor == pytest.approx((1.6671875, 800 / 480))
    assert fit_size(200, 300, (96, 64)) == (64, 96)
    assert fit_size(10, 1000, (96, 64)) == (1, 96)


# --- coordinates ---------------------------------------------------------------------------------

def test_detections_are_in_original_image_pixels(with_mask, photo):
    model = tiny_model(with_mask)
    detections = model.predict(photo, score_thr=0.0)
    assert len(detections) == 1
    result = detections[0]
    assert result.image_size == (200, 300)
    assert 0 < len(result) <= 100
    boxes = result.boxes
    assert boxes.shape == (len(result), 4) and boxes.dtype == torch.float32
    assert boxes[:, 0::2].min() >= 0 and boxes[:, 0::2].max() <= 300 + 1e-3
    assert boxes[:, 1::2].min() >= 0 and boxes[:, 1::2].max() <= 200 + 1e-3
    assert (boxes[:, 2:] >= boxes[:, :2]).all()
    assert boxes[:, 2].max() > 96, "boxes look like resized-image (96x64) pixels"
    assert torch.all(result.scores[1:] <= result.scores[:-1])
    assert set(result.labels.tolist()) <= {0, 1, 2}
    if with_mask:
        assert result.masks.shape == (len(result), 200, 300) and result.masks.dtype == torch.bool
        # Each mask lies inside its box (+-1 px).
        for mask, (x0, y0, x1, y1) in zip(result.masks, boxes.tolist()):
            outside = mask.clone()
            outside[max(int(y0) - 1, 0):int(np.ceil(y1)) + 1, max(int(x0) - 1, 0):int(np.ceil(x1)) + 1] = False
            assert not outside.any()
    else:
        assert result.masks is None


def test_fixed_box_is_divided_by_the_scale_factor(with_mask, monkeypatch):
    """The cascade's output is replaced by one known box in resized pixels."""
    model = tiny_model(with_mask)
    make_confident(model, mask_logit=6.0)
    height, width = 150, 301  # -> 48 x 96: two different scale factors
    scale_x, scale_y = 96 / 301, 48 / 150
    resized_box = torch.tensor([[10.0, 5.0, 50.0, 40.0]])

    def fixed_boxes(features, proposals, image_sizes, path, stages):
        assert image_sizes.tolist() == [[48, 96]] and list(stages) == [None]
        probs = torch.tensor([[0.05, 0.9, 0.03, 0.02]])
        return [(resized_box.clone(), probs, torch.zeros(1, dtype=torch.long))]

    monkeypatch.setattr(model.roi_head, "stage_boxes", fixed_boxes)
    result = model.predict(np.zeros((height, width, 3), np.uint8))[0]
    expected = torch.tensor([[10 / scale_x, 5 / scale_y, 50 / scale_x, 40 / scale_y]])
    torch.testing.assert_close(result.boxes, expected, rtol=0, atol=1e-3)
    assert result.labels.tolist() == [1]
    assert result.scores.tolist() == pytest.approx([0.9])
    if with_mask:
        # Confident mask heads: the mask is the box, pasted at the original size.
        assert result.masks.shape == (1, height, width)
        ys, xs = torch.nonzero(result.masks[0], as_tuple=True)
        x0, y0, x1, y1 = expected[0].tolist()
        assert abs(xs.min().item() - x0) <= 1 and abs(xs.max().item() + 1 - x1) <= 1
        assert abs(ys.min().item() - y0) <= 1 and abs(ys.max().item() + 1 - y1) <= 1


@pytest.mark.parametrize("box_head", [None, ConvFCBoxHeadConfig(conv_channels=8)], ids=["box_per_roi", "box_per_class"])
def test_one_run_for_every_stage_equals_a_predict_per_stage(with_mask, box_head):
    """``predict_stages`` (the per-stage evaluation's single pass) gives each stage's detections,
    and the cascade's, to the bit as ``predict(stage=k)`` does with a run of its own; stage 0
    alone is also what a one-stage model with the same weights detects."""
    scene = drawn_scene(128, 192, seed=3)
    changes = {} if box_head is None else {"box_head": box_head}
    model = spread_random_weights(tiny_model(with_mask, **changes), scene)
    stages = [0, 1, 2, None]
    together = model.predict_stages(scene, stages)
    for stage, detections in zip(stages, together):
        assert_detections_equal(detections, model.predict(scene, stage=stage)[0])
    assert len(together[-1]) > 0 and not torch.equal(together[0].scores, together[-1].scores)
    one_stage = cascade_rcnn.CascadeRCNN(model.config.with_changes(num_stages=1)).eval()
    own = one_stage.state_dict()
    one_stage.load_state_dict({key: value for key, value in model.state_dict().items() if key in own})
    assert_detections_equal(together[0], one_stage.predict(scene)[0])


def test_a_stage_the_model_does_not_have_is_refused():
    model = tiny_model(False)
    image = np.zeros((64, 96, 3), np.uint8)
    for stages in ([3], [-1], [0, 5], []):
        with pytest.raises(UserInputError, match="has 3 stages, 0 to 2"):
            model.predict_stages(image, stages)
    with pytest.raises(UserInputError, match="stages \\[3\\]"):
        model.predict(image, stage=3)


# --- batching and determinism --------------------------------------------------------------------

def test_batched_equals_one_at_a_time(with_mask, rng):
    model = tiny_model(with_mask)
    # (200, 300) and (190, 300) share a padded size (64 x 96) but not their resized size.
    images = [rng.integers(0, 256, shape, dtype=np.uint8)
              for shape in [(200, 300, 3), (120, 90, 3), (190, 300, 3), (120, 90, 3)]]
    batched = model.predict(images, score_thr=0.0, batch_size=4)
    single = [model.predict(image, score_thr=0.0)[0] for image in images]
    for together, alone in zip(batched, single):
        assert together.image_size == alone.image_size
        assert len(together) == len(alone) > 0
        torch.testing.assert_close(together.boxes, alone.boxes, rtol=0, atol=1e-4)
        torch.testing.assert_close(together.scores, alone.scores, rtol=0, atol=1e-4)
        assert torch.equal(together.labels, alone.labels)
        if with_mask:
            # Batched convolutions differ in the last float bits, which may flip a pixel whose
            # probability is within ~1e-6 of the 0.5 threshold: allow a handful in ~1e6.
            assert (together.masks != alone.masks).sum() <= 5


def test_batch_size_does_not_reorder_results(rng):
    model = tiny_model(False)
    assert model.predict([]) == []
    images = [rng.integers(0, 256, (64 + 40 * i, 96, 3), dtype=np.uint8) for i in range(3)]
    results = model.predict(images, score_thr=0.0, batch_size=2)
    assert [r.image_size for r in results] == [(64, 96), (104, 96), (144, 96)]


def test_predict_is_deterministic_and_restores_training_mode(with_mask, photo):
    model = tiny_model(with_mask)
    make_confident(model)
    first = model.predict(photo)[0]
    assert len(first) > 0
    assert_detections_equal(first, model.predict(photo)[0])
    model.train()
    assert_detections_equal(first, model.predict(photo)[0])
    assert model.training
    # The same seed builds the same model.
    twin = tiny_model(with_mask)
    make_confident(twin)
    assert_detections_equal(first, twin.predict(photo)[0])


def test_overrides_apply_to_one_call(photo):
    model = tiny_model(False)
    make_confident(model)
    result = model.predict(photo)[0]
    default = len(result)
    assert 7 < default < 100
    assert len(model.predict(photo, max_per_image=7)[0]) == 7
    assert len(model.predict(photo, nms_iou=0.99)[0]) > default
    # A box is only ever suppressed by a higher-scoring one, so a higher threshold keeps exactly
    # the detections above it.
    threshold = float(result.scores.median())
    strict = model.predict(photo, score_thr=threshold)[0]
    assert 0 < len(strict) < default
    assert_detections_equal(strict, result.above(threshold))
    assert_detections_equal(model.predict(photo)[0], result)
    assert model.test_detections.score_thr == 0.05


# --- edge inputs ---------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(1, 1, 3), (10, 1000, 3), (1000, 10, 3), (64, 96, 3)])
def test_tiny_elongated_and_black_images(with_mask, shape):
    model = tiny_model(with_mask)
    result = model.predict(np.zeros(shape, np.uint8), score_thr=0.0)[0]
    height, width = shape[:2]
    assert result.image_size == (height, width)
    assert result.boxes.shape == (len(result), 4)
    assert result.boxes[:, 0::2].max() <= width + 1e-3 and result.boxes[:, 1::2].max() <= height + 1e-3
    if with_mask:
        assert result.masks.shape == (len(result), height, width)


def test_extremely_elongated_image():
    result = tiny_model(False).predict(np.zeros((1, 1000, 3), np.uint8), score_thr=0.0)[0]
    assert result.image_size == (1, 1000)
    assert (result.boxes[:, 1::2] <= 1 + 1e-3).all()


def test_batch_size_below_one_is_a_clear_error(photo):
    with pytest.raises(ValueError, match="batch_size must be at least 1"):
        tiny_model(False).predict(photo, batch_size=0)


@pytest.mark.parametrize("max_per_image", [0, -1])
def test_max_per_image_below_one_is_a_clear_error(photo, max_per_image):
    # Slicing the NMS output with it would keep all but one detection on the exact path (-1)
    # and none on the fast one.
    with pytest.raises(ValueError, match="max_per_image must be at least 1"):
        tiny_model(False).predict(photo, max_per_image=max_per_image)


def test_no_detections_gives_empty_tensors(with_mask, photo):
    result = tiny_model(with_mask).predict(photo, score_thr=1.0)[0]
    assert len(result) == 0
    assert result.boxes.shape == (0, 4) and result.scores.shape == (0,) and result.labels.shape == (0,)
    if with_mask:
        assert result.masks.shape == (0, 200, 300)
    assert result.to_coco({"image_id": 1}, [1, 2, 3]) == []


def test_every_input_type_gives_the_same_detections(tmp_path, photo):
    model = tiny_model(True)
    make_confident(model)
    path = tmp_path / "photo.png"
    Image.fromarray(photo).save(path)
    chw = torch.from_numpy(photo).permute(2, 0, 1).contiguous()
    inputs = [photo, str(path), path, Image.open(path), chw, chw.float() / 255]
    results = model.predict(inputs)
    assert len(results[0]) > 0
    for result in results[1:]:
        assert_detections_equal(result, results[0])
    # A single image of each kind is wrapped in a list.
    for single in (path, str(path), chw, photo, Image.fromarray(photo)):
        assert_detections_equal(model.predict(single)[0], results[0])


def test_bad_path_in_the_list_names_it(tmp_path, photo):
    missing = tmp_path / "missing.jpg"
    with pytest.raises(cascade_rcnn.ImageError, match="missing.jpg"):
        tiny_model(False).predict([photo, missing])
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG not really")
    with pytest.raises(cascade_rcnn.ImageError, match="broken.png"):
        tiny_model(False).predict([photo, str(broken)])


# --- COCO output ---------------------------------------------------------------------------------

@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # pycocotools + numpy 2
def test_to_coco_records(with_mask, photo):
    model = tiny_model(with_mask)
    make_confident(model)
    result = model.predict(photo, max_per_image=5)[0]
    assert len(result) == 5
    records = result.to_coco({"image_id": 42}, [7, 11, 13])
    assert len(records) == 5
    for record, box, score, label in zip(records, result.boxes.tolist(), result.scores.tolist(),
                                         result.labels.tolist()):
        assert record["image_id"] == 42
        assert record["category_id"] == [7, 11, 13][label]
        x0, y0, x1, y1 = box
        assert record["bbox"] == pytest.approx([x0, y0, x1 - x0, y1 - y0], abs=1e-3)
        assert record["score"] == pytest.approx(score, abs=1e-5)
    if with_mask:
        for record, mask in zip(records, result.masks):
            rle = record["segmentation"]
            assert rle["size"] == [200, 300] and isinstance(rle["counts"], str)
            decoded = mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode()})
            assert np.array_equal(decoded.astype(bool), mask.numpy())
    else:
        assert all("segmentation" not in record for record in records)


def test_to_coco_with_coco_category_ids():
    detections = cascade_rcnn.Detections(
        boxes=torch.tensor([[1.0, 2.0, 11.0, 22.5], [0.0, 0.0, 5.0, 5.0]]), scores=torch.tensor([0.9, 0.3]),
        labels=torch.tensor([11, 79]), class_names=COCO_CLASSES, image_size=(30, 40))
    records = detections.to_coco({"image_id": 5, "file_name": "x.jpg"}, list(COCO_CATEGORY_IDS))
    assert [r["category_id"] for r in records] == [13, 90]
    assert records[0]["bbox"] == [1.0, 2.0, 10.0, 20.5]
    assert records[0]["file_name"] == "x.jpg"
    above = detections.above(0.5)
    assert len(above) == 1 and above.labels.tolist() == [11]


def randomize_batchnorm(model: cascade_rcnn.CascadeRCNN, seed: int = 0) -> None:
    """Give every BatchNorm non-trivial statistics and affine terms, as trained weights have."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                size = module.num_features
                module.running_mean.copy_(torch.randn(size, generator=generator) * 0.1)
                module.running_var.copy_(torch.rand(size, generator=generator) * 1.5 + 0.5)
                module.weight.copy_(torch.rand(size, generator=generator) + 0.5)
                module.bias.copy_(torch.randn(size, generator=generator) * 0.1)


def test_fast_path_equals_the_exact_path_up_to_float_noise(photo):
    model = tiny_model(True)
    randomize_batchnorm(model)
    make_confident(model)
    fast = model.predict(photo, score_thr=0.0)[0]
    model.exact = True
    assert model.memory_format == torch.contiguous_format and model.path == EXACT
    exact = model.predict(photo, score_thr=0.0)[0]
    assert len(fast) == len(exact) > 10
    assert torch.allclose(fast.boxes, exact.boxes, atol=1e-2)
    assert torch.allclose(fast.scores, exact.scores, atol=1e-4)
    assert torch.equal(fast.labels, exact.labels)
    intersection = (fast.masks & exact.masks).flatten(1).sum(1)
    union = (fast.masks | exact.masks).flatten(1).sum(1).clamp(min=1)
    assert (intersection / union).min() >= 0.99


def test_exact_path_is_what_build_model_exact_gives(tmp_path):
    model = tiny_model(False)
    assert not model.exact and model.memory_format == torch.channels_last
    path = tmp_path / "tiny.pth"
    cascade_rcnn.checkpoint.save(path, model)
    assert cascade_rcnn.build_model(model.config, weights=path, exact=True).exact
    assert not cascade_rcnn.build_model(model.config, weights=path).exact


def test_a_single_stage_model_is_a_mask_rcnn():
    model = tiny_model(True, num_stages=1)
    assert len(model.roi_head.bbox_head) == 1 and len(model.roi_head.mask_head) == 1
    assert not any(key.startswith("roi_head.bbox_head.1") for key in model.state_dict())
    make_confident(model)
    result = model.predict(np.zeros((40, 60, 3), np.uint8), score_thr=0.0, stage=0)[0]
    assert result.masks.shape[1:] == (40, 60)


def test_agreement_matches_by_label_and_overlap():
    from cascade_rcnn.benchmarking.agreement import agreement
    from cascade_rcnn.outputs.detections import Detections

    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 40.0, 40.0], [0.0, 0.0, 10.0, 10.0]])
    reference = Detections(boxes, torch.tensor([0.9, 0.8, 0.7]), torch.tensor([0, 1, 2]), ("a", "b", "c"), (50, 50))
    moved = boxes.clone()
    moved[1] += 0.5
    other = Detections(moved[[1, 0]], torch.tensor([0.79, 0.9]), torch.tensor([1, 0]), ("a", "b", "c"), (50, 50))
    result = agreement(reference, other)
    assert (result.reference, result.other, result.matched) == (3, 2, 2)  # class c has no partner
    assert result.max_box_diff == pytest.approx(0.5) and result.max_score_diff == pytest.approx(0.01)
    assert result.min_box_iou == pytest.approx(19.5 ** 2 / (2 * 400 - 19.5 ** 2)) and result.min_mask_iou is None
    assert agreement(reference, Detections(boxes[:0], boxes[:0, 0], boxes[:0, 0].long(), (), (50, 50))).matched == 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_inference_equals_cpu_up_to_float_noise_and_runs_under_fp16():
    scene = drawn_scene(128, 192, seed=3)
    model = spread_random_weights(tiny_model(True), scene)
    cpu = model.predict(scene)[0]
    model.to("cuda")
    # Every detection, on either side, is matched (same label, box IoU >= min_iou, score within
    # score_diff) - except one whose score lies within score_diff of the cut (score_thr, or the
    # 100th score when the cap is full), which the other side's noise may leave out. The bounds
    # are those of the earlier top-5 check, not yet measured over all detections (no GPU where
    # this was written): widen them only with a measurement written here.
    cut = model.config.test_score_thr
    if len(cpu) == model.config.test_max_per_image:
        cut = max(cut, float(cpu.scores.min()))
    for precision, min_iou, score_diff in (("fp32", 0.99, 1e-3), ("fp16", 0.9, 0.05), ("bf16", 0.9, 0.05)):
        model.path = dataclasses.replace(model.path, precision=precision)
        gpu = model.predict(scene)[0]
        assert gpu.boxes.device.type == "cpu" and gpu.masks.shape == cpu.masks.shape
        assert len(cpu) > 5
        for reference, other in ((cpu, gpu), (gpu, cpu)):
            clear = reference.above(cut + score_diff)
            match = agreement(clear, other, min_iou=min_iou)
            assert match.matched == len(clear), (precision, match)
            assert match.max_score_diff <= score_diff, (precision, match)


def test_classes_keeps_only_those_classes_chosen_before_the_per_image_cut(photo):
    model = tiny_model(True)
    everything = model.predict(photo, score_thr=0.0, max_per_image=1000)[0]
    wanted = [label for label in (0, 2) if (everything.labels == label).any()]
    assert len(wanted) == 2 and (everything.labels == 1).any()
    only = model.predict(photo, score_thr=0.0, max_per_image=1000, classes=[TINY_CLASSES[label] for label in wanted])[0]
    kept = torch.isin(everything.labels, torch.tensor(wanted))
    # The same detections as the unfiltered call's of those classes (NMS runs per class).
    assert torch.equal(only.labels, everything.labels[kept]) and torch.equal(only.scores, everything.scores[kept])
    assert torch.equal(only.boxes, everything.boxes[kept]) and torch.equal(only.masks, everything.masks[kept])
    # Chosen before max_per_image: the 3 best of class "a", not class "a" among the 3 best of all.
    top = model.predict(photo, score_thr=0.0, max_per_image=3, classes=["a"])[0]
    assert len(top) == 3 and torch.equal(top.scores, everything.scores[everything.labels == 0][:3])


def test_an_unknown_class_is_one_line_with_the_closest_names(photo):
    with pytest.raises(UserInputError, match=r"unknown class 'bb' \(did you mean b\?\); tiny detects 3 classes"):
        tiny_model(False).predict(photo, classes=["bb"])
