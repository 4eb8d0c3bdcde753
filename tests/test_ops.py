"""Box coding, NMS, anchors, RoI level mapping, RoIAlign (and its kernel choice) and mask pasting."""
from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
import torchvision
from conftest import tiny_model

import cascade_rcnn
from cascade_rcnn.models.anchors import base_anchors, grid_anchors
from cascade_rcnn.models.conv_bn import conv_bn
from cascade_rcnn.models.heads.mask_head import MaskHead
from cascade_rcnn.ops.box_coder import MAX_LOG_RATIO, BoxCoder
from cascade_rcnn.ops.gathered_roi_align import gathered_multilevel_roi_align
from cascade_rcnn.ops.nms import SPLIT_THRESHOLD, batched_nms, best_batched_nms
from cascade_rcnn.ops.paste_masks import paste_masks
from cascade_rcnn.ops.compute_path import EXACT, FAST
from cascade_rcnn.ops.roi_align import Kernel, MultiLevelRoIAlign, roi_align_kernel, roi_levels
from cascade_rcnn.ops.separable_roi_align import separable_roi_align
from cascade_rcnn.ops.threaded_roi_align import threaded_roi_align

# MMDetection's per-stage stds, as the zoo configs hold them.
STAGE_STDS = cascade_rcnn.get_config("cascade_rcnn_r50_fpn_1x_coco").stage_stds


def random_boxes(count: int, generator: torch.Generator, size: float = 200.0, min_side: float = 2.0):
    xy = torch.rand(count, 2, generator=generator) * size
    wh = torch.rand(count, 2, generator=generator) * size / 2 + min_side
    return torch.cat([xy, xy + wh], dim=1)


# --- BoxCoder ------------------------------------------------------------------------------------

@pytest.mark.parametrize("stds", [(1.0, 1.0, 1.0, 1.0), *STAGE_STDS])
def test_encode_decode_round_trip(stds):
    generator = torch.Generator().manual_seed(0)
    boxes, targets = random_boxes(500, generator), random_boxes(500, generator)
    coder = BoxCoder(stds)
    deltas = coder.encode(boxes, targets)
    torch.testing.assert_close(coder.decode(boxes, deltas), targets, rtol=0, atol=1e-3)
    # The stds only rescale the deltas.
    torch.testing.assert_close(deltas * torch.tensor(stds), BoxCoder().encode(boxes, targets))


def test_encode_uses_widths_without_plus_one():
    deltas = BoxCoder().encode(torch.tensor([[0.0, 0.0, 10.0, 20.0]]), torch.tensor([[5.0, 0.0, 15.0, 40.0]]))
    torch.testing.assert_close(deltas, torch.tensor([[0.5, 0.5, 0.0, math.log(2.0)]]))


def test_decode_clamps_to_height_and_width():
    boxes = torch.tensor([[10.0, 10.0, 50.0, 30.0], [-20.0, -5.0, 200.0, 300.0], [5.0, 5.0, 6.0, 6.0]])
    deltas = torch.tensor([[3.0, 3.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0], [-9.0, -9.0, 0.0, 0.0]])
    height, width = 40, 100  # h != w catches a swapped clamp
    decoded = BoxCoder().decode(boxes, deltas, max_shape=torch.tensor([[height, width]]))
    assert decoded[:, 0::2].min() >= 0 and decoded[:, 0::2].max() <= width
    assert decoded[:, 1::2].min() >= 0 and decoded[:, 1::2].max() <= height
    torch.testing.assert_close(decoded[1], torch.tensor([0.0, 0.0, 100.0, 40.0]))
    torch.testing.assert_close(decoded[2], torch.tensor([0.0, 0.0, 0.0, 0.0]))
    unclipped = BoxCoder().decode(boxes, deltas)
    assert unclipped[0, 2] > width
    # Per-box (height, width) rows give the same as one shape for all.
    per_box = BoxCoder().decode(boxes, deltas, max_shape=torch.tensor([[height, width]] * 3))
    torch.testing.assert_close(per_box, decoded)
    mixed = BoxCoder().decode(boxes[1:2].repeat(2, 1), deltas[1:2].repeat(2, 1),
                              max_shape=torch.tensor([[40, 100], [300, 20]]))
    torch.testing.assert_close(mixed, torch.tensor([[0.0, 0.0, 100.0, 40.0], [0.0, 0.0, 20.0, 300.0]]))


def test_decode_clamps_log_size_ratio():
    assert MAX_LOG_RATIO == pytest.approx(math.log(1000 / 16))
    box = torch.tensor([[0.0, 0.0, 16.0, 8.0]] * 3)
    deltas = torch.tensor([[0.0, 0.0, 50.0, 50.0], [0.0, 0.0, -50.0, -50.0], [0.0, 0.0, 4.0, -4.0]])
    for stds in [(1.0, 1.0, 1.0, 1.0), STAGE_STDS[0]]:
        scaled = deltas / torch.tensor(stds)
        decoded = BoxCoder(stds).decode(box, scaled)
        widths, heights = decoded[:, 2] - decoded[:, 0], decoded[:, 3] - decoded[:, 1]
        torch.testing.assert_close(widths, torch.tensor([16 * 62.5, 16 / 62.5, 16 * math.exp(4.0)]))
        torch.testing.assert_close(heights, torch.tensor([8 * 62.5, 8 / 62.5, 8 * math.exp(-4.0)]))
        torch.testing.assert_close(decoded[:, :2] + decoded[:, 2:], torch.tensor([[16.0, 8.0]] * 3))


# --- NMS -----------------------------------------------------------------------------------------

def nms_case(count: int, num_groups: int, seed: int):
    """Integer coordinates (exact IoUs after the group offset) and distinct scores (no ties)."""
    generator = torch.Generator().manual_seed(seed)
    xy = torch.randint(0, 100, (count, 2), generator=generator)
    wh = torch.randint(1, 40, (count, 2), generator=generator)
    boxes = torch.cat([xy, xy + wh], dim=1).float()
    scores = torch.randperm(count, generator=generator).float() / count
    groups = torch.randint(0, num_groups, (count,), generator=generator)
    return boxes, scores, groups


@pytest.mark.parametrize("count, num_groups", [(600, 5), (SPLIT_THRESHOLD + 2000, 3)],
                         ids=["one-pass", "split-per-group"])
def test_batched_nms_equals_torchvision(count, num_groups):
    boxes, scores, groups = nms_case(count, num_groups, seed=count)
    keep = batched_nms(boxes, scores, groups, 0.5)
    expected = torchvision.ops.batched_nms(boxes, scores, groups, 0.5)
    assert set(keep.tolist()) == set(expected.tolist())
    assert len(keep) == len(set(keep.tolist()))
    assert torch.all(scores[keep][1:] <= scores[keep][:-1]), "not sorted by descending score"
    assert len(keep) < count  # something was suppressed


def test_batched_nms_never_suppresses_across_groups():
    box = torch.tensor([[10.0, 10.0, 50.0, 50.0]])
    boxes = torch.cat([box, box, box + 1, box])
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6])
    groups = torch.tensor([0, 1, 2, 2])
    assert batched_nms(boxes, scores, groups, 0.5).tolist() == [0, 1, 2]
    assert batched_nms(boxes, scores, torch.zeros(4, dtype=torch.long), 0.5).tolist() == [0]
    # IoU must be strictly above the threshold to suppress.
    half = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 5.0]])
    assert batched_nms(half, torch.tensor([0.9, 0.8]), torch.zeros(2, dtype=torch.long), 0.5).tolist() == [0, 1]
    empty = batched_nms(torch.zeros((0, 4)), torch.zeros(0), torch.zeros(0, dtype=torch.long), 0.5)
    assert empty.shape == (0,) and empty.dtype == torch.long


def test_split_and_one_pass_agree():
    boxes, scores, groups = nms_case(SPLIT_THRESHOLD + 500, 4, seed=3)
    keep = batched_nms(boxes, scores, groups, 0.6)
    # The same boxes, just below the threshold: drop 600 of the lowest-scoring ones.
    subset = scores.argsort(descending=True)[:SPLIT_THRESHOLD - 100]
    small = batched_nms(boxes[subset], scores[subset], groups[subset], 0.6)
    kept_in_subset = set(subset[small].tolist())
    assert kept_in_subset == set(keep.tolist()) & set(subset.tolist())


@pytest.mark.parametrize("count, num_groups, wanted, piled", [
    (600, 5, 100, 0), (SPLIT_THRESHOLD + 2000, 80, 100, 0), (3000, 4, 20, 500), (3000, 4, 20, 3000),
    (50, 3, 100, 0)], ids=["small", "80-classes", "k-grows", "k-grows-to-all", "fewer-than-wanted"])
def test_best_batched_nms_is_the_head_of_batched_nms(count, num_groups, wanted, piled):
    """The fast path's NMS from the best-scored boxes: the same first ``wanted`` detections, in
    the same order, whether the first pass suffices, k has to grow (the ``piled`` best-scored
    boxes overlap in one spot, so few of the best 10 x wanted survive), or fewer survive than wanted."""
    boxes, scores, groups = nms_case(count, num_groups, seed=count + num_groups)
    best = scores.argsort(descending=True)[:piled]
    jitter = torch.randint(0, 4, (piled, 1), generator=torch.Generator().manual_seed(0)).float()
    boxes[best] = torch.tensor([50.0, 50.0, 80.0, 80.0]) + jitter
    top = scores.argsort(descending=True)[:10 * wanted]
    if piled:
        assert len(batched_nms(boxes[top], scores[top], groups[top], 0.5)) < wanted  # the first pass is short
    expected = batched_nms(boxes, scores, groups, 0.5)[:wanted]
    assert torch.equal(best_batched_nms(boxes, scores, groups, 0.5, wanted), expected)
    empty = best_batched_nms(torch.zeros((0, 4)), torch.zeros(0), torch.zeros(0, dtype=torch.long), 0.5, wanted)
    assert empty.shape == (0,) and empty.dtype == torch.long


# --- anchors -------------------------------------------------------------------------------------

def test_base_anchors_formula():
    anchors = base_anchors(4, (8.0,), (0.5, 1.0, 2.0))
    assert anchors.shape == (3, 4) and anchors.dtype == torch.float32
    for row, ratio in zip(anchors, (0.5, 1.0, 2.0)):
        width, height = 4 * 8 / math.sqrt(ratio), 4 * 8 * math.sqrt(ratio)
        torch.testing.assert_close(row, torch.tensor([-width / 2, -height / 2, width / 2, height / 2]))
    torch.testing.assert_close(anchors[1], torch.tensor([-16.0, -16.0, 16.0, 16.0]), rtol=0, atol=0)
    assert base_anchors(16, (4.0, 8.0), (1.0,)).tolist() == [[-32, -32, 32, 32], [-64, -64, 64, 64]]


def test_grid_anchor_order_is_y_x_anchor():
    base = base_anchors(8, (8.0,), (0.5, 1.0, 2.0))
    height, width, stride = 2, 3, 8
    anchors = grid_anchors(base, (height, width), stride)
    assert anchors.shape == (height * width * 3, 4)
    for y in range(height):
        for x in range(width):
            for a in range(3):
                shift = torch.tensor([x * stride, y * stride, x * stride, y * stride], dtype=torch.float32)
                torch.testing.assert_close(anchors[(y * width + x) * 3 + a], base[a] + shift)


# --- RoI levels and RoIAlign ---------------------------------------------------------------------

@pytest.mark.parametrize("side, level", [(1, 0), (111, 0), (112, 1), (223, 1), (224, 2), (447, 2), (448, 3),
                                         (2000, 3)])
def test_roi_levels(side, level):
    rois = torch.tensor([[0.0, 10.0, 20.0, 10.0 + side, 20.0 + side]])
    assert roi_levels(rois, 4).tolist() == [level]


def test_roi_level_uses_the_area():
    rois = torch.tensor([[0.0, 0.0, 0.0, 448.0, 112.0], [0.0, 0.0, 0.0, 50.0, 1000.0]])  # sqrt: 224, 223.6
    assert roi_levels(rois, 4).tolist() == [2, 1]


def test_multilevel_roi_align_equals_torchvision_on_the_chosen_level():
    generator = torch.Generator().manual_seed(0)
    strides = (4, 8, 16, 32)
    features = [torch.randn(2, 3, 512 // s, 640 // s, generator=generator) for s in strides]
    features.append(torch.randn(2, 3, 8, 10, generator=generator))  # P6, never used
    sides = torch.tensor([20.0, 100.0, 150.0, 300.0, 500.0, 60.0])
    xy = torch.tensor([[5.0, 7.0], [30.0, 2.5], [100.0, 50.0], [0.0, 0.0], [10.0, 5.0], [400.0, 300.0]])
    rois = torch.cat([torch.tensor([[0.0], [1.0], [0.0], [1.0], [0.0], [1.0]]), xy, xy + sides[:, None]], dim=1)
    levels = roi_levels(rois, 4)
    assert set(levels.tolist()) == {0, 1, 2, 3}

    out = MultiLevelRoIAlign(7)(features, rois, EXACT)
    assert out.shape == (6, 3, 7, 7)
    for i, level in enumerate(levels.tolist()):
        expected = torchvision.ops.roi_align(features[level], rois[i:i + 1], 7, 1 / strides[level],
                                             sampling_ratio=0, aligned=True)
        torch.testing.assert_close(out[i:i + 1], expected, rtol=0, atol=0)
    assert MultiLevelRoIAlign(14)(features, rois[:0], EXACT).shape == (0, 3, 14, 14)


def edge_case_rois(generator: torch.Generator, count: int, image_size: float) -> torch.Tensor:
    """Random RoIs on 3 images (none on image 2) plus: zero size, inverted, entirely outside,
    partly outside, a sub-pixel one, and one covering the whole image and more (large grids)."""
    xy = torch.rand(count, 2, generator=generator) * (image_size + 40) - 20
    wh = torch.rand(count, 2, generator=generator) * image_size / 2
    images = torch.randint(0, 2, (count, 1), generator=generator).float() * 3  # images 0 and 3
    special = torch.tensor([[0, 10.0, 10.0, 10.0, 10.0], [3, 50.0, 40.0, 30.0, 20.0],
                            [0, -60.0, -60.0, -20.0, -30.0], [3, image_size - 5, 5.0, image_size + 30, 40.0],
                            [0, 7.3, 9.1, 7.6, 9.5], [3, -10.0, -10.0, image_size + 10, image_size + 10]])
    return torch.cat([torch.cat([images, xy, xy + wh], dim=1), special])


@pytest.mark.parametrize("output_size, image_size, stride", [(7, 256, 4), (14, 256, 4), (7, 200, 16)])
def test_separable_roi_align_equals_torchvision_values_and_gradients(output_size, image_size, stride):
    generator = torch.Generator().manual_seed(output_size + stride)
    side = image_size // stride
    features = torch.randn(4, 5, side, side + 3, generator=generator, dtype=torch.float64, requires_grad=True)
    rois = edge_case_rois(generator, 60, image_size).double()
    expected = torchvision.ops.roi_align(features, rois, output_size, 1 / stride, sampling_ratio=0, aligned=True)
    actual = separable_roi_align(features, rois, output_size, 1 / stride)
    torch.testing.assert_close(actual, expected, rtol=1e-10, atol=1e-10)
    upstream = torch.randn(expected.shape, generator=generator, dtype=torch.float64)
    expected_grad, = torch.autograd.grad(expected, features, upstream)
    actual_grad, = torch.autograd.grad(actual, features, upstream)
    torch.testing.assert_close(actual_grad, expected_grad, rtol=1e-10, atol=1e-10)


def test_separable_roi_align_computes_in_float32_under_bf16_autocast():
    generator = torch.Generator().manual_seed(5)
    features = torch.randn(2, 8, 20, 24, generator=generator).bfloat16().requires_grad_()
    rois = edge_case_rois(generator, 20, 80)
    rois[:, 0] = rois[:, 0].clamp(max=1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        actual = separable_roi_align(features, rois, 7, 1 / 4)
    assert actual.dtype == torch.bfloat16
    exact = torchvision.ops.roi_align(features.detach().float(), rois, 7, 1 / 4, sampling_ratio=0, aligned=True)
    torch.testing.assert_close(actual.float(), exact.bfloat16().float(), rtol=0.01, atol=1e-6)  # one bf16 step


def pyramid_case(seed: int) -> tuple[list[torch.Tensor], torch.Tensor]:
    """P2..P5 of two 64x64 images (requiring gradients) and edge-case RoIs on both images."""
    generator = torch.Generator().manual_seed(seed)
    features = [torch.randn(2, 4, 64 // s, 64 // s, generator=generator, requires_grad=True) for s in (1, 2, 4, 8)]
    rois = edge_case_rois(generator, 30, 256)
    rois[:, 0] = rois[:, 0].clamp(max=1)
    return features, rois


def test_multilevel_roi_align_is_torchvision_at_inference_and_separable_in_training():
    features, rois = pyramid_case(1)
    align = MultiLevelRoIAlign(7)
    with torch.no_grad():
        inference = align(features, rois, EXACT)
    levels = roi_levels(rois, 4)
    exact = torch.cat([torchvision.ops.roi_align(features[level].detach(), rois[i:i + 1], 7, 1 / align.strides[level],
                                                 sampling_ratio=0, aligned=True)
                       for i, level in enumerate(levels.tolist())])
    assert len(set(levels.tolist())) > 1
    torch.testing.assert_close(inference, exact, rtol=0, atol=0)  # bit for bit: mmcv's numbers
    training = align(features, rois, FAST)
    assert training.grad_fn is not None
    torch.testing.assert_close(training, exact, rtol=1e-5, atol=1e-5)
    rois[0, 1] = float("nan")  # a diverged run's RoI: no crash, the other RoIs unaffected
    with_nan = align(features, rois, FAST)
    torch.testing.assert_close(with_nan[1:], training[1:], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("output_size, image_size, channels_last", [(7, 256, True), (14, 256, False), (7, 96, True)])
def test_gathered_roi_align_equals_torchvision(output_size, image_size, channels_last):
    """The fast path's CPU RoIAlign (weighted gathers): torchvision's values up to float rounding
    on every level, with empty, inverted, outside and huge RoIs (the huge one takes torchvision's
    kernel), an image without RoIs, and a non-finite RoI (zeros, the others unaffected)."""
    generator = torch.Generator().manual_seed(output_size + image_size)
    strides = (4, 8, 16, 32)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    features = [torch.randn(4, 5, image_size // s, image_size // s + 2, generator=generator, dtype=torch.float64)
                .contiguous(memory_format=layout) for s in strides]
    rois = edge_case_rois(generator, 80, image_size).double()
    # 9 x 9 samples per bin on P5, more than MAX_SAMPLES_PER_BIN: torchvision's kernel
    huge = torch.tensor([[3.0, -1000.0, -1000.0, 1000.0, 1000.0]], dtype=torch.float64)
    rois = torch.cat([rois, huge, torch.tensor([[0.0, float("nan"), 1.0, 5.0, 5.0]], dtype=torch.float64)])
    levels = roi_levels(rois, 4)
    actual = gathered_multilevel_roi_align(features, rois, levels, output_size, strides)
    assert actual.shape == (rois.shape[0], 5, output_size, output_size)
    assert actual.is_contiguous(memory_format=torch.channels_last)
    assert len(set(levels[:-1].tolist())) > 1
    for i, level in enumerate(levels[:-1].tolist()):
        expected = torchvision.ops.roi_align(features[level], rois[i:i + 1], output_size, 1 / strides[level],
                                             sampling_ratio=0, aligned=True)
        torch.testing.assert_close(actual[i:i + 1], expected, rtol=1e-10, atol=1e-10)
    assert torch.equal(actual[-1], torch.zeros_like(actual[-1]))


def test_fast_path_roi_align_gathers_at_inference_only():
    features, rois = pyramid_case(2)
    align = MultiLevelRoIAlign(7)
    with torch.no_grad():
        exact = align(features, rois, EXACT)
        gathered = align(features, rois, FAST)
    assert gathered.is_contiguous(memory_format=torch.channels_last) and not exact.is_contiguous(
        memory_format=torch.channels_last)
    torch.testing.assert_close(gathered, exact, rtol=1e-5, atol=1e-5)
    assert not torch.equal(gathered, exact)  # another summation order: it really took the other path
    training = align(features, rois, FAST)  # with gradients: never the gathers
    assert training.grad_fn is not None
    torch.testing.assert_close(training, exact, rtol=1e-5, atol=1e-5)


def test_roi_align_kernel_choice_follows_its_table():
    small = torch.zeros(1, 2, 100, 100)
    large = torch.zeros(1, 2, 101, 100)
    rois = torch.tensor([[0.0, 1.0, 1.0, 20.0, 20.0]])
    nan_rois = torch.tensor([[0.0, float("nan"), 1.0, 20.0, 20.0]])
    with torch.no_grad():
        assert roi_align_kernel(FAST, small, rois) is Kernel.GATHERED
        assert roi_align_kernel(EXACT, small, rois) is Kernel.THREADED
        assert roi_align_kernel(replace(EXACT, gathered_roi_align=True), small, rois) is Kernel.GATHERED
        assert roi_align_kernel(replace(FAST, exporting=True), small, rois) is Kernel.EXPORTED
        if torch.cuda.is_available():
            assert roi_align_kernel(FAST, small.cuda(), rois.cuda()) is Kernel.TORCHVISION
    # training: the fast path's matrix products where the map is small, torchvision's kernel elsewhere
    assert roi_align_kernel(FAST, small.requires_grad_(), rois) is Kernel.SEPARABLE
    assert roi_align_kernel(FAST, large.requires_grad_(), rois) is Kernel.THREADED
    assert roi_align_kernel(FAST, small, nan_rois) is Kernel.THREADED
    assert roi_align_kernel(EXACT, small, rois) is Kernel.THREADED  # bit for bit, the frameworks' losses
    assert roi_align_kernel(FAST, small.detach(), rois) is Kernel.THREADED  # gradients on, map without


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_threaded_roi_align_is_torchvision_bit_for_bit(threads):
    generator = torch.Generator().manual_seed(threads)
    features = torch.randn(2, 6, 40, 52, generator=generator)
    rois = edge_case_rois(generator, 50, 160)
    rois[:, 0] = rois[:, 0].clamp(max=1)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        actual = threaded_roi_align(features, rois, 7, 1 / 4)
    finally:
        torch.set_num_threads(previous)
    expected = torchvision.ops.roi_align(features, rois, 7, 1 / 4, sampling_ratio=0, aligned=True)
    torch.testing.assert_close(actual, expected, rtol=0, atol=0)


# --- inference shortcuts -------------------------------------------------------------------------

def test_folded_batchnorm_equals_conv_then_batchnorm_and_follows_weight_changes():
    generator = torch.Generator().manual_seed(0)
    conv, bn = torch.nn.Conv2d(4, 6, 3, stride=2, padding=1, bias=False), torch.nn.BatchNorm2d(6).eval()
    with torch.no_grad():
        bn.running_mean.copy_(torch.randn(6, generator=generator))
        bn.running_var.copy_(torch.rand(6, generator=generator) + 0.2)
        bn.weight.copy_(torch.randn(6, generator=generator))
        x = torch.randn(2, 4, 9, 11, generator=generator)
        torch.testing.assert_close(conv_bn(x, conv, bn, FAST), bn(conv(x)), rtol=1e-5, atol=1e-5)
        bn.running_var.mul_(4)  # an in-place change (load_state_dict, optimizer step) refreshes the fold
        conv.weight.add_(1)
        torch.testing.assert_close(conv_bn(x, conv, bn, FAST), bn(conv(x)), rtol=1e-5, atol=1e-5)
        assert torch.equal(conv_bn(x, conv, bn, EXACT), bn(conv(x)))


def test_folded_batchnorm_trains_like_the_unfolded_pair():
    """Training with frozen statistics folds too: the conv weight and BatchNorm's affine
    parameters get the unfolded pair's gradients (never through the inference cache)."""
    generator = torch.Generator().manual_seed(0)
    conv, bn = torch.nn.Conv2d(4, 6, 3, padding=1, bias=False), torch.nn.BatchNorm2d(6).eval()
    with torch.no_grad():
        bn.running_mean.copy_(torch.randn(6, generator=generator))
        bn.running_var.copy_(torch.rand(6, generator=generator) + 0.2)
        bn.weight.copy_(torch.randn(6, generator=generator))
    x = torch.randn(2, 4, 9, 11, generator=generator, requires_grad=True)
    residual = torch.randn(2, 6, 9, 11, generator=generator, requires_grad=True)
    grads = []
    for path in (EXACT, FAST):
        out = conv_bn(x, conv, bn, path, residual=residual, relu=True)
        assert out.grad_fn is not None
        grads.append(torch.autograd.grad((out * out).sum(), [x, residual, conv.weight, bn.weight, bn.bias]))
    for unfolded, folded in zip(*grads):
        torch.testing.assert_close(folded, unfolded, rtol=1e-4, atol=1e-5)
    assert getattr(bn, "_folded_cache", None) is None


def test_class_logits_are_the_detected_class_channel_of_the_full_logits():
    torch.manual_seed(0)
    head = MaskHead(num_classes=5, in_channels=8, channels=8)
    features, labels = torch.randn(6, 8, 14, 14), torch.tensor([0, 4, 2, 2, 1, 3])
    with torch.no_grad():
        full = head(features)[torch.arange(6), labels]
        torch.testing.assert_close(head.class_logits(features, labels), full, rtol=1e-5, atol=1e-5)
        assert head.class_logits(features[:0], labels[:0]).shape == (0, 28, 28)


# --- mask pasting --------------------------------------------------------------------------------

def test_paste_all_ones_fills_exactly_the_box():
    probs = torch.ones(2, 28, 28)
    boxes = torch.tensor([[10.0, 20.0, 30.0, 50.0], [0.0, 0.0, 64.0, 48.0]])
    masks = paste_masks(probs, boxes, (48, 64))
    assert masks.shape == (2, 48, 64) and masks.dtype == torch.bool
    expected = torch.zeros(48, 64, dtype=torch.bool)
    expected[20:50, 10:30] = True
    assert torch.equal(masks[0], expected)
    assert masks[0, 20, 10] and masks[0, 47, 29]  # just inside
    assert not masks[0, 19, 10] and not masks[0, 20, 9] and not masks[0, 20, 30]  # just outside
    assert masks[1].all()


def test_paste_follows_the_probabilities_and_threshold():
    probs = torch.zeros(1, 28, 28)
    probs[0, :, 14:] = 1.0  # right half of the box
    masks = paste_masks(probs, torch.tensor([[0.0, 0.0, 28.0, 28.0]]), (28, 40))
    assert masks[0, :, 15:28].all() and not masks[0, :, :13].any() and not masks[0, :, 28:].any()
    assert paste_masks(torch.full((1, 28, 28), 0.501), torch.tensor([[0.0, 0.0, 5.0, 5.0]]), (5, 5)).all()
    assert not paste_masks(torch.full((1, 28, 28), 0.499), torch.tensor([[0.0, 0.0, 5.0, 5.0]]), (5, 5)).any()


def test_paste_empty_and_degenerate():
    assert paste_masks(torch.zeros(0, 28, 28), torch.zeros(0, 4), (7, 9)).shape == (0, 7, 9)
    outside = paste_masks(torch.ones(1, 28, 28), torch.tensor([[100.0, 100.0, 120.0, 120.0]]), (7, 9))
    assert outside.shape == (1, 7, 9) and not outside.any()


def test_class_logits_of_shared_rois_pick_each_detections_class():
    torch.manual_seed(1)
    head = MaskHead(num_classes=4, in_channels=8, channels=8)
    features, labels = torch.randn(3, 8, 14, 14), torch.tensor([0, 3, 3, 1])
    rows = torch.tensor([0, 0, 2, 1])  # two detections share RoI 0
    with torch.no_grad():
        expected = head(features)[rows, labels]
        torch.testing.assert_close(head.class_logits(features, labels, rows), expected, rtol=1e-5, atol=1e-5)


def test_whole_image_paste_equals_the_box_region_paste_bit_for_bit():
    from cascade_rcnn.ops.paste_masks import paste_masks_whole_image

    generator = torch.Generator().manual_seed(3)
    probs = torch.rand(7, 28, 28, generator=generator)
    boxes = torch.tensor([[3.2, 4.7, 40.1, 30.0], [0.0, 0.0, 64.0, 48.0], [10.5, 10.5, 10.5, 20.0],
                          [50.0, 2.0, 63.9, 47.9], [-5.0, -3.0, 20.0, 15.0], [30.0, 20.0, 31.0, 21.0],
                          [5.0, 5.0, 60.0, 9.0]])
    region = paste_masks(probs, boxes, (48, 64))
    assert region.any()
    assert torch.equal(paste_masks_whole_image(probs, boxes, (48, 64)), region)
    assert paste_masks_whole_image(probs[:0], boxes[:0], (48, 64)).shape == (0, 48, 64)


def test_folded_weights_follow_data_edits_and_inference_mode():
    model = tiny_model(False)
    image = torch.rand(3, 64, 96)
    first = model.predict(image, score_thr=0.0)[0]
    with torch.no_grad():
        for parameter in model.backbone.parameters():
            parameter.data.mul_(0.5)  # no version bump: only the cache drop in eval() catches it
    folded = model.predict(image, score_thr=0.0)[0]
    model.exact = True
    unfolded = model.predict(image, score_thr=0.0)[0]
    assert not torch.equal(folded.scores, first.scores)
    torch.testing.assert_close(folded.scores, unfolded.scores, rtol=1e-4, atol=1e-4)
    with torch.inference_mode():  # tensors without version counters
        fresh = tiny_model(False)
        assert len(fresh.predict(image, score_thr=0.0)[0]) > 0


@pytest.mark.parametrize("threads", [2, 3])
def test_threaded_roi_align_gradients_equal_torchvision(threads):
    generator = torch.Generator().manual_seed(10 + threads)
    features = torch.randn(2, 5, 30, 41, generator=generator, dtype=torch.float64, requires_grad=True)
    rois = edge_case_rois(generator, 40, 120).double()
    rois[:, 0] = rois[:, 0].clamp(max=1)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        actual = threaded_roi_align(features, rois, 7, 1 / 4)
        upstream = torch.randn(actual.shape, generator=generator, dtype=torch.float64)
        actual_grad, = torch.autograd.grad(actual, features, upstream)
    finally:
        torch.set_num_threads(previous)
    expected = torchvision.ops.roi_align(features, rois, 7, 1 / 4, sampling_ratio=0, aligned=True)
    expected_grad, = torch.autograd.grad(expected, features, upstream)
    torch.testing.assert_close(actual, expected, rtol=0, atol=0)
    torch.testing.assert_close(actual_grad, expected_grad, rtol=1e-12, atol=1e-12)
