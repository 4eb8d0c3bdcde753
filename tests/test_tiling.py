"""Sliced inference (``predict(tile=...)``): the tile grid, the merge across tile borders (with a
stand-in network that sees exactly the visible part of each object), equality with a plain call
where one tile covers the image, and bad input."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch
from conftest import assert_detections_equal, tiny_model

import cascade_rcnn
from cascade_rcnn.cli import main
from cascade_rcnn.inference import merging
from cascade_rcnn.inference.tiling import MAX_PASTED_MASK_BYTES, tile_grid
from cascade_rcnn.models.detections import ImageDetections
from cascade_rcnn.weights import checkpoint

# --- the grid ------------------------------------------------------------------------------------


def test_tiles_overlap_and_the_last_ones_end_at_the_image_edge():
    grid = tile_grid((300, 1000), 256, 0.2)  # 51 px shared: a step of 205
    assert grid.xs == (0, 205, 410, 615, 744) and grid.ys == (0, 44)
    assert (grid.width, grid.height) == (256, 256)
    rects = grid.rects()
    assert len(rects) == len(grid) == 10
    assert all(x1 - x0 == 256 and y1 - y0 == 256 for x0, y0, x1, y1 in rects)  # one size: one batch
    assert max(x1 for _, _, x1, _ in rects) == 1000 and max(y1 for _, _, _, y1 in rects) == 300


def test_each_tile_pairs_only_with_the_tiles_that_meet_it():
    """The merge rules compare a tile's detections with those of the tiles whose rectangles
    overlap or touch it (``TileGrid.meeting``), which keeps merging linear in the tiles."""
    grid = tile_grid((1200, 1200), 256, 0.2)  # starts 0, 205, 410, 615, 820, 944: 6 x 6 tiles
    assert grid.xs == (0, 205, 410, 615, 820, 944) and len(grid) == 36
    assert grid.meeting(0) == [0, 1, 6, 7]
    assert grid.meeting(14) == [7, 8, 9, 13, 14, 15, 19, 20, 21]  # row 2, column 2: its 8 neighbours
    assert grid.meeting(35) == [28, 29, 34, 35]  # the last tile (944..1200) meets 820..1076, not 615..871
    touching = tile_grid((512, 768), 256, 0.0)  # 2 x 3 tiles sharing edges only
    assert touching.meeting(0) == [0, 1, 3, 4] and touching.meeting(2) == [1, 2, 4, 5]
    assert all(tile in grid.meeting(tile) for tile in range(len(grid)))


def test_an_image_smaller_than_the_tile_is_one_tile_of_its_own_size():
    grid = tile_grid((100, 50), 256, 0.2)
    assert grid.rects() == [(0, 0, 50, 100)]
    assert tile_grid((40, 600), 64, 0.0).xs == tuple(range(0, 576, 64)) + (536,)


# --- one tile is a plain call --------------------------------------------------------------------

@pytest.mark.parametrize("full_image", [False, True])
def test_one_tile_over_the_whole_image_equals_a_plain_call(with_mask, rng, full_image):
    model = tiny_model(with_mask)
    image = rng.integers(0, 256, (60, 90, 3), dtype=np.uint8)
    plain = model.predict(image, score_thr=0.0)[0]
    tiled = model.predict(image, score_thr=0.0, tile=128, tile_full_image=full_image)[0]
    assert len(plain) > 10
    assert_detections_equal(plain, tiled)


# --- the merge, with a stand-in network ----------------------------------------------------------

def visible_objects(prepared, settings, stage=None, batch_size=1):
    """Stand-in for ``CascadeRCNN.detect_unpasted``: every white blob of each (resized) tile is
    detected with its exact box (original tile pixels) and its exact 28x28 mask, class 1."""
    results = []
    for record, _ in prepared:
        count, components = cv2.connectedComponents((record.image[..., 0] > 127).astype(np.uint8))
        boxes, masks = [], []
        for k in range(1, count):
            ys, xs = np.nonzero(components == k)
            x0, y0, x1, y1 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
            crop = (components[y0:y1, x0:x1] == k).astype(np.float32)
            masks.append(torch.from_numpy(cv2.resize(crop, (28, 28), interpolation=cv2.INTER_LINEAR)))
            sx, sy = record.scale_factor
            boxes.append([x0 / sx, y0 / sy, x1 / sx, y1 / sy])
        n = len(boxes)
        results.append(ImageDetections(torch.tensor(boxes, dtype=torch.float32).reshape(n, 4),
                                       torch.linspace(0.9, 0.8, n), torch.ones(n, dtype=torch.long),
                                       torch.stack(masks) if masks else torch.zeros((0, 28, 28)),
                                       boxes_in_original=True))
    return results


def scene(height: int, width: int, *rects: tuple[int, int, int, int]) -> np.ndarray:
    image = np.zeros((height, width, 3), np.uint8)
    for x0, y0, x1, y1 in rects:
        image[y0:y1, x0:x1] = 255
    return image


@pytest.fixture
def stand_in(monkeypatch):
    """The tiny model (its resize fits 64 px tiles at scale 1) with the stand-in network."""
    model = tiny_model(True)
    monkeypatch.setattr(model, "detect_unpasted", visible_objects)
    return model


def assert_found(result, *rects):
    assert sorted(result.boxes.round().int().tolist()) == sorted(list(r) for r in rects)
    for mask, (x0, y0, x1, y1) in zip(result.masks, result.boxes.round().int().tolist()):
        truth = torch.zeros_like(mask)
        truth[y0:y1, x0:x1] = True
        assert (mask & truth).sum() / (mask | truth).sum() > 0.9


def test_an_object_cut_by_a_tile_border_is_found_once_with_its_whole_box(stand_in):
    # Tiles [0, 64), [32, 96), [64, 128): the object straddles the first tile's border at 64,
    # lies whole in the middle tile, and the third tile sees its right part.
    image = scene(64, 128, (58, 20, 70, 32))
    tiles = [stand_in.preprocess(image[:, x:x + 64]) for x in (0, 32, 64)]
    seen = [len(found.scores) for found in visible_objects(tiles, None)]
    assert seen == [1, 1, 1]
    result = stand_in.predict(image, tile=64, tile_overlap=0.5)[0]
    assert_found(result, (58, 20, 70, 32))
    # Class-wise NMS alone would keep all three: each piece has IoU 0.5 with the whole box.
    pieces = ImageDetections(torch.tensor([[58.0, 20, 64, 32], [58, 20, 70, 32], [64, 20, 70, 32]]),
                             torch.tensor([0.9, 0.8, 0.7]), torch.ones(3, dtype=torch.long), None, True)
    assert len(merging.class_nms(pieces, 0.5, 100).scores) == 3


def test_a_piece_is_kept_when_the_tile_that_holds_the_object_misses_it(monkeypatch):
    model = tiny_model(True)
    calls = []

    def blind_middle_tile(prepared, settings, *args, **kwargs):
        calls.append(len(calls))
        found = visible_objects(prepared, settings)
        return [merging.select(f, torch.zeros(0, dtype=torch.long)) for f in found] if len(calls) == 2 else found

    monkeypatch.setattr(model, "detect_unpasted", blind_middle_tile)
    result = model.predict(scene(64, 128, (58, 20, 70, 32)), tile=64, tile_overlap=0.5)[0]
    assert len(calls) == 3
    assert sorted(result.boxes.round().int().tolist()) == [[58, 20, 64, 32], [64, 20, 70, 32]]


def test_an_object_larger_than_the_overlap_is_stitched_from_its_pieces(stand_in):
    # Tiles [0, 64) and [48, 112) share 16 px; the 60 px object is cut in both.
    result = stand_in.predict(scene(64, 112, (30, 10, 90, 50)), tile=64, tile_overlap=0.25)[0]
    assert_found(result, (30, 10, 90, 50))


def test_an_object_on_a_corner_of_four_tiles_is_one_detection(stand_in):
    result = stand_in.predict(scene(112, 112, (36, 40, 76, 70)), tile=64, tile_overlap=0.25)[0]
    assert_found(result, (36, 40, 76, 70))


def test_an_object_filling_the_overlap_exactly_is_kept_once(stand_in):
    # Both tiles see it whole, touching their inner border: neither may drop it for the other.
    result = stand_in.predict(scene(64, 128, (33, 8, 63, 40)), tile=64, tile_overlap=0.5)[0]
    assert_found(result, (33, 8, 63, 40))


def test_neighbouring_objects_and_objects_on_the_image_edge_stay_apart(stand_in):
    rects = [(0, 0, 20, 20), (40, 30, 62, 50), (66, 30, 90, 50), (100, 44, 112, 64)]
    result = stand_in.predict(scene(64, 112, *rects), tile=64, tile_overlap=0.25)[0]
    assert_found(result, *rects)


def test_masks_are_pasted_once_for_the_survivors_only(stand_in, monkeypatch):
    pasted = []
    real_paste = merging.paste_masks

    def paste(probs, boxes, size, threshold):
        pasted.append((tuple(probs.shape), size))
        return real_paste(probs, boxes, size, threshold)

    monkeypatch.setattr(merging, "paste_masks", paste)
    stand_in.predict(scene(112, 112, (36, 40, 76, 70), (2, 2, 12, 12)), tile=64, tile_overlap=0.25)
    assert pasted == [((2, 28, 28), (112, 112))]


# --- the real network ----------------------------------------------------------------------------

def test_tiled_detections_lie_in_the_image_and_batching_tiles_changes_nothing(with_mask, rng):
    model = tiny_model(with_mask)
    image = rng.integers(0, 256, (150, 250, 3), dtype=np.uint8)
    one = model.predict(image, score_thr=0.0, tile=96, max_per_image=60)[0]
    batched = model.predict(image, score_thr=0.0, tile=96, max_per_image=60, batch_size=4)[0]
    assert 0 < len(one) <= 60 and one.image_size == (150, 250)
    assert one.boxes[:, 0::2].min() >= 0 and one.boxes[:, 0::2].max() <= 250 + 1e-3
    assert one.boxes[:, 1::2].min() >= 0 and one.boxes[:, 1::2].max() <= 150 + 1e-3
    assert torch.all(one.scores[1:] <= one.scores[:-1])
    assert (one.masks is None) != with_mask and (not with_mask or one.masks.shape == (len(one), 150, 250))
    torch.testing.assert_close(batched.boxes, one.boxes, atol=1e-3, rtol=0)
    torch.testing.assert_close(batched.scores, one.scores, atol=1e-5, rtol=0)


def test_tiling_works_per_stage(rng):
    model = tiny_model(True)
    image = rng.integers(0, 256, (60, 90, 3), dtype=np.uint8)
    assert_detections_equal(model.predict(image, score_thr=0.0, stage=0)[0],
                            model.predict(image, score_thr=0.0, stage=0, tile=96)[0])


# --- bad input -----------------------------------------------------------------------------------

@pytest.mark.parametrize(("options", "message"), [
    ({"tile": 16}, "at least 32 px"),
    ({"tile": 31}, "at least 32 px"),
    ({"tile": 64.5}, "whole number"),
    ({"tile": 64, "tile_overlap": 1.0}, "[0, 1)"),
    ({"tile": 64, "tile_overlap": -0.1}, "[0, 1)"),
    ({"tile_full_image": True}, "needs tile"),
    ({"tile": 64, "tta": "flip"}, "cannot be combined"),
])
def test_bad_tiling_options_are_one_line_errors(options, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace(")", r"\)")) as error:
        tiny_model().predict(np.zeros((40, 40, 3), np.uint8), **options)
    assert "\n" not in str(error.value)


def test_masks_that_could_not_fit_in_memory_are_refused_before_any_work(monkeypatch):
    model = tiny_model(True)
    monkeypatch.setattr(model, "detect_unpasted", lambda *a, **k: pytest.fail("ran the network"))
    max_per_image = MAX_PASTED_MASK_BYTES // (2000 * 2000) + 1
    with pytest.raises(ValueError, match="GiB once pasted") as error:
        model.predict(np.zeros((2000, 2000, 3), np.uint8), tile=512, max_per_image=max_per_image)
    message = str(error.value)
    assert "\n" not in message and f"lower max_per_image (--max-per-image) to {max_per_image - 1}" in message


@pytest.mark.parametrize(("arguments", "message"), [
    (["--tile", "16"], "at least 32 px"),
    (["--tile", "64", "--tile-overlap", "1"], "[0, 1)"),
    (["--tile-overlap", "0.3"], "need --tile"),
    (["--tile-full-image"], "need --tile"),
    (["--tile", "64", "--tta", "flip"], "cannot be combined"),
    (["--max-per-image", "0"], "at least 1"),
])
def test_cli_refuses_bad_tiling_in_one_line_before_loading_a_model(tmp_path, capsys, arguments, message):
    image = tmp_path / "a.png"
    cv2.imwrite(str(image), np.zeros((40, 40, 3), np.uint8))
    status = main(["predict", str(image), "--model", "cascade_mask_rcnn_r18w32_fpn_256", "--weights",
                   str(tmp_path / "missing.pth"), "--out", str(tmp_path / "out"), *arguments])
    err = capsys.readouterr().err
    assert status == 2 and message in err and len(err.strip().splitlines()) == 1 and "missing.pth" not in err


def test_cli_tiles_with_a_mask_model_and_keeps_max_per_image(tmp_path):
    torch.manual_seed(0)
    weights = tmp_path / "small.pth"
    checkpoint.save(weights, cascade_rcnn.CascadeRCNN(cascade_rcnn.get_config("cascade_mask_rcnn_r18w32_fpn_256")))
    image = tmp_path / "wide.png"
    cv2.imwrite(str(image), np.random.default_rng(0).integers(0, 256, (200, 300, 3), dtype=np.uint8))
    out = tmp_path / "out"
    assert main(["predict", str(image), "--model", "cascade_mask_rcnn_r18w32_fpn_256", "--weights", str(weights),
                 "--out", str(out), "--score-thr", "0", "--tile", "200", "--tile-overlap", "0.25",
                 "--max-per-image", "7", "--batch-size", "2"]) == 0
    records = json.loads((out / "predictions.json").read_text())
    assert len(records) == 7 and all("segmentation" in r for r in records)
    assert all(0 <= r["bbox"][0] and r["bbox"][0] + r["bbox"][2] <= 300 + 1e-2 for r in records)
    assert (out / "wide.png").is_file()
