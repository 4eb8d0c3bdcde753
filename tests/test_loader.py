"""Training batches: grouped by orientation, every image once, as many batches as without grouping."""
from __future__ import annotations

import math
import random

import pytest
import torch

import cascade_rcnn
from cascade_rcnn.data.loader import (
    batches_per_epoch,
    epoch_order,
    group_by_orientation,
    training_scale,
)


@pytest.mark.parametrize("num_items, batch_size", [(1, 2), (10, 2), (37, 4), (64, 8)])
def test_batches_are_one_orientation_except_the_leftovers(num_items, batch_size):
    rng = random.Random(num_items)
    landscape = [rng.random() < 0.7 for _ in range(num_items)]
    order = epoch_order(num_items, seed=3, epoch=1)
    batches = group_by_orientation(order, landscape, batch_size)
    assert sorted(i for batch in batches for i in batch) == sorted(order)
    assert len(batches) == math.ceil(num_items / batch_size) == batches_per_epoch(num_items, batch_size)
    full = [b for b in batches if len({landscape[i] for i in b}) == 1 and len(b) == batch_size]
    kinds = [sum(landscape), num_items - sum(landscape)]
    assert len(full) >= sum(k // batch_size for k in kinds)  # only the remainders can mix
    for kind in (True, False):  # each kind keeps the epoch's shuffled order
        assert [i for b in batches for i in b if landscape[i] == kind] == [i for i in order if landscape[i] == kind]


def test_all_one_orientation_keeps_the_plain_order():
    order = epoch_order(10, seed=0, epoch=0)
    assert group_by_orientation(order, [True] * 10, 4) == [order[0:4], order[4:8], order[8:10]]


def test_multi_scale_training_draws_each_side_within_the_range_and_is_seeded():
    config = cascade_rcnn.get_config("cascade_mask_rcnn_r50_fpn_mstrain_3x_coco")
    scales = [training_scale(config, torch.Generator().manual_seed(seed)) for seed in range(200)]
    assert all(long == 1333 and 640 <= short <= 800 for long, short in scales)
    shorts = [short for _, short in scales]
    assert min(shorts) <= 660 and max(shorts) >= 780  # spread over the range, not one scale
    assert scales == [training_scale(config, torch.Generator().manual_seed(seed)) for seed in range(200)]
    single = cascade_rcnn.get_config("cascade_mask_rcnn_r50_fpn_1x_coco")
    assert training_scale(single, torch.Generator().manual_seed(0)) == (1333, 800)


def test_resize_crop_keeps_boxes_inside_the_window_and_drops_cut_off_ones():
    import numpy as np

    from cascade_rcnn.data.resize_crop import CROP_SIDES, random_crop, resize_crop
    image = np.zeros((700, 900, 3), dtype=np.uint8)
    masks = np.zeros((3, 700, 900), dtype=np.uint8)
    masks[0, 10:60, 10:60] = masks[1, 300:400, 400:500] = masks[2, 650:690, 850:890] = 1
    sample = {"image": image, "boxes": torch.tensor([[10.0, 10, 60, 60], [400, 300, 500, 400], [850, 650, 890, 690]]),
              "labels": torch.tensor([0, 1, 2]), "masks": masks, "crowd_boxes": torch.zeros(0, 4)}
    seen_counts = set()
    for seed in range(30):
        out = random_crop(sample, torch.Generator().manual_seed(seed))
        height, width = out["image"].shape[:2]
        assert CROP_SIDES[0] <= height <= CROP_SIDES[1] and CROP_SIDES[0] <= width <= CROP_SIDES[1]
        boxes = out["boxes"]
        assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
        assert (boxes >= 0).all() and (boxes[:, 2] <= width).all() and (boxes[:, 3] <= height).all()
        assert len(out["labels"]) == len(boxes) == out["masks"].shape[0]
        assert out["masks"].shape[1:] == (height, width)
        seen_counts.add(len(boxes))
    assert len(seen_counts) > 1  # some crops cut objects away, some keep them
    first = resize_crop(sample, torch.Generator().manual_seed(3))
    again = resize_crop(sample, torch.Generator().manual_seed(3))
    assert first[1] == again[1] and torch.equal(first[0]["boxes"], again[0]["boxes"])
    assert first[1][0] == 1333 and 480 <= first[1][1] <= 800


def test_both_training_resizes_at_once_are_refused():
    config = cascade_rcnn.get_config("cascade_mask_rcnn_convnext-t_p4_w7_fpn_giou_4conv1f_fp16_ms-crop_3x_coco")
    assert config.train_resize_crop
    with pytest.raises(ValueError, match="two training resizes"):
        config.with_changes(train_scale_range=((1333, 640), (1333, 800)))


def test_a_scale_choice_draws_each_listed_scale_and_nothing_else():
    """Detectron2's "choice" sampling: one of the listed short sides per image, each as likely."""
    choice = tuple((1333, side) for side in range(640, 801, 32))
    config = cascade_rcnn.get_config("cascade_rcnn_r50_fpn_1x_coco").with_changes(train_scale_choice=choice)
    generator = torch.Generator().manual_seed(0)
    drawn = [training_scale(config, generator) for _ in range(1200)]
    counts = {scale: drawn.count(scale) for scale in set(drawn)}
    assert set(counts) == set(choice) and all(150 <= count <= 250 for count in counts.values())
    with pytest.raises(ValueError, match="two training resizes"):
        config.with_changes(train_scale_range=((1333, 640), (1333, 800)))
    with pytest.raises(ValueError, match="train_scale_choice needs"):
        config.with_changes(train_scale_choice=())
