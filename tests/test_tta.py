"""Test-time augmentation (``predict(tta=...)``): the text form, MMDetection 3's merge (views mapped
back, class-wise NMS, scores as their view gave them), flip equivariance, stages, masks, bad input."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch
from conftest import assert_detections_equal, backbone_passes, tiny_model

import cascade_rcnn
from cascade_rcnn.cli import main
from cascade_rcnn.inference.tta import TestTimeAugmentation, flip_back
from cascade_rcnn.models.detections import ImageDetections
from cascade_rcnn.weights import checkpoint

# --- the text form -------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "flip", "scales"), [
    ("flip", True, (1.0,)),
    ("scales=0.75:1:1.25", False, (0.75, 1.0, 1.25)),
    ("flip,scales=1:1.5", True, (1.0, 1.5)),
    (" scales=2 , flip ", True, (2.0,)),
])
def test_tta_text_form(text, flip, scales):
    tta = TestTimeAugmentation.parse(text)
    assert (tta.flip, tta.scales) == (flip, scales)
    assert TestTimeAugmentation.parse(str(tta)) == tta


def test_views_are_scales_times_flips_in_mmdetections_order():
    assert TestTimeAugmentation.parse("flip,scales=1:1.5").views == [(1.0, False), (1.0, True), (1.5, False),
                                                                     (1.5, True)]


@pytest.mark.parametrize("text", ["", "flop", "flip,flip", "scales=", "scales=a:b", "scales=0:1", "scales=1:1",
                                  "scales=-1", "scales=1,scales=2", "scales=inf"])
def test_bad_tta_text_is_a_one_line_error(text):
    with pytest.raises(ValueError) as error:
        TestTimeAugmentation.parse(text)
    assert "\n" not in str(error.value)


# --- the merge -----------------------------------------------------------------------------------

def test_flip_back_mirrors_boxes_in_the_original_width_and_masks_in_their_box():
    probs = torch.arange(28 * 28, dtype=torch.float32).reshape(1, 28, 28)
    found = ImageDetections(torch.tensor([[10.0, 5.0, 30.0, 20.0]]), torch.tensor([0.9]), torch.tensor([2]), probs,
                            True)
    back = flip_back(found, 100)
    assert back.boxes.tolist() == [[70.0, 5.0, 90.0, 20.0]]
    assert torch.equal(back.mask_probs[0], probs[0].flip(-1))
    assert torch.equal(flip_back(back, 100).boxes, found.boxes)


def test_one_view_at_scale_one_equals_a_plain_call(with_mask, rng):
    model = tiny_model(with_mask)
    image = rng.integers(0, 256, (60, 90, 3), dtype=np.uint8)
    plain = model.predict(image, score_thr=0.0)[0]
    assert len(plain) > 10
    assert_detections_equal(plain, model.predict(image, score_thr=0.0, tta="scales=1")[0])
    assert_detections_equal(model.predict(image, score_thr=0.0, stage=1)[0],
                            model.predict(image, score_thr=0.0, stage=1, tta="scales=1")[0])


def test_views_are_merged_by_class_nms_with_the_scores_their_view_gave(monkeypatch):
    """As DetTTAModel: all views mapped back to the original image, then NMS per class; a box
    keeps its own score (no averaging), the best max_per_image survive, by descending score."""
    model = tiny_model(True)
    probs = torch.rand(3, 28, 28)

    def two_views(prepared, settings, stage=None, batch_size=1):
        assert [p[0].size for p in prepared] == [(64, 96), (64, 96)]
        plain = ImageDetections(torch.tensor([[10.0, 10, 40, 40], [50, 10, 60, 20]]), torch.tensor([0.9, 0.3]),
                                torch.tensor([0, 1]), probs[:2], True)
        # The flipped view: the first box again (mirrored, score 0.8), once more as another class.
        flipped = ImageDetections(torch.tensor([[56.0, 11, 86, 41], [56, 11, 86, 41]]), torch.tensor([0.8, 0.7]),
                                  torch.tensor([0, 2]), probs[[2, 2]], True)
        return [plain, flipped]

    monkeypatch.setattr(model, "detect_unpasted", two_views)
    result = model.predict(np.zeros((64, 96, 3), np.uint8), tta="flip")[0]
    assert result.scores.tolist() == pytest.approx([0.9, 0.7, 0.3])
    assert result.labels.tolist() == [0, 2, 1]
    assert result.boxes.tolist() == [[10, 10, 40, 40], [10, 11, 40, 41], [50, 10, 60, 20]]
    assert result.masks.shape == (3, 64, 96)
    capped = model.predict(np.zeros((64, 96, 3), np.uint8), tta="flip", max_per_image=2)[0]
    assert capped.scores.tolist() == pytest.approx([0.9, 0.7])


def test_flip_tta_is_mirror_symmetric(with_mask, rng):
    """At scale 1 (no resize), the views of an image and of its mirror are the same two pictures,
    so their merged detections are mirror images of each other."""
    model = tiny_model(with_mask)
    image = rng.integers(0, 256, (64, 96, 3), dtype=np.uint8)  # exactly the tiny config's scale
    found = model.predict(image, score_thr=0.2, tta="flip")[0]
    mirrored = model.predict(np.ascontiguousarray(image[:, ::-1]), score_thr=0.2, tta="flip")[0]
    assert len(found) == len(mirrored) > 3

    def rows(result, mirror):
        boxes = result.boxes.clone()
        if mirror:
            boxes = torch.stack([96 - boxes[:, 2], boxes[:, 1], 96 - boxes[:, 0], boxes[:, 3]], 1)
        return sorted(zip(result.scores.tolist(), result.labels.tolist(), boxes.tolist()))

    for (score, label, box), (score_m, label_m, box_m) in zip(rows(found, False), rows(mirrored, True)):
        assert score == pytest.approx(score_m, abs=1e-5) and label == label_m
        assert box == pytest.approx(box_m, abs=1e-3)
    if with_mask:  # the union of the masks, mirrored (a pixel on a 0.5 edge may round either way)
        covered, covered_mirrored = found.masks.any(0), mirrored.masks.any(0).flip(-1)
        assert covered.any() and (covered != covered_mirrored).float().mean() < 0.01


def test_multi_scale_tta_with_masks_and_stages(rng):
    model = tiny_model(True)
    image = rng.integers(0, 256, (50, 80, 3), dtype=np.uint8)
    for stage in (None, 2):
        result = model.predict(image, score_thr=0.0, tta="flip,scales=0.5:1:1.5", stage=stage, batch_size=2)[0]
        assert 0 < len(result) <= 100 and result.masks.shape == (len(result), 50, 80)
        assert result.boxes[:, 0::2].max() <= 80 + 1e-3 and result.boxes[:, 1::2].max() <= 50 + 1e-3
        assert torch.all(result.scores[1:] <= result.scores[:-1])


def test_a_tta_object_works_as_well_as_its_text():
    model = tiny_model(False)
    image = np.full((40, 60, 3), 90, np.uint8)
    assert_detections_equal(model.predict(image, tta="flip")[0],
                            model.predict(image, tta=TestTimeAugmentation(flip=True))[0])


@pytest.mark.parametrize(("tta", "message"), [(3, "tta must be"), ("flop", "cannot read"),
                                              ("scales=0", "positive")])
def test_bad_tta_in_predict_is_a_one_line_error(tta, message):
    with pytest.raises(ValueError, match=message) as error:
        tiny_model().predict(np.zeros((40, 40, 3), np.uint8), tta=tta)
    assert "\n" not in str(error.value)


# --- the command line ----------------------------------------------------------------------------

def test_cli_tta_writes_predictions_and_refuses_bad_text(tmp_path, capsys):
    torch.manual_seed(0)
    weights = tmp_path / "tiny.pth"
    model = cascade_rcnn.CascadeRCNN(cascade_rcnn.get_config("cascade_rcnn_r18w32_fpn_256"))
    checkpoint.save(weights, model)
    image = tmp_path / "a.png"
    cv2.imwrite(str(image), np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8))
    base = ["predict", str(image), "--model", "cascade_rcnn_r18w32_fpn_256", "--weights", str(weights),
            "--score-thr", "0", "--no-draw"]
    with backbone_passes() as passes:
        assert main([*base, "--out", str(tmp_path / "plain")]) == 0
        plain_passes = len(passes)
        assert main([*base, "--out", str(tmp_path / "tta"), "--tta", "flip"]) == 0
    # two views, the image and its mirror, went through the network (in one batch or two)
    assert sum(images for images, _ in passes[:plain_passes]) == 1
    assert sum(images for images, _ in passes[plain_passes:]) == 2

    def rows(records: list[dict]) -> list[tuple]:
        return sorted((r["score"], r["category_id"], r["bbox"]) for r in records)

    records = json.loads((tmp_path / "tta" / "predictions.json").read_text())
    plain = json.loads((tmp_path / "plain" / "predictions.json").read_text())
    assert records and {"bbox", "score", "category_id"} <= set(records[0])
    # what the Python API's flip TTA (its merge: test_views_are_merged_..., test_flip_tta_is_mirror_
    # symmetric) gives on this image, written as COCO records - not the plain run's detections
    merged = model.predict(str(image), score_thr=0.0, tta="flip")[0]
    expected = merged.to_coco({}, list(range(1, 91)))
    assert [(score, box) for score, _, box in rows(records)] == [(score, box) for score, _, box in rows(expected)]
    assert rows(records) != rows(plain)
    capsys.readouterr()
    assert main([*base, "--out", str(tmp_path / "bad"), "--tta", "flip,scales=1:x"]) == 2
    err = capsys.readouterr().err
    assert "scales" in err and len(err.strip().splitlines()) == 1
