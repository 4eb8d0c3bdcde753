"""Training batches: grouped by orientation, every image once, as many batches as without grouping."""
from __future__ import annotations

import math
import random

import pytest

from cascade_rcnn.data.loader import (
    batches_per_epoch,
    epoch_order,
    group_by_orientation,
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
