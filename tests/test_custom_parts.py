"""A neck and a RoI head of one's own, defined here and nowhere in the library: the detector is
composed from their specs (``models/necks/__init__.py``, ``models/roi_heads/__init__.py``), trains a
step, predicts and exports to ONNX through the same one inference function as the cascade."""
from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_config
from torch import nn

import cascade_rcnn
from cascade_rcnn.benchmarking.agreement import agreement
from cascade_rcnn.benchmarking.synthetic import drawn_scene
from cascade_rcnn.models.detections import BatchDetections, DetectionSettings, select_detections
from cascade_rcnn.models.heads.box_head import BoxHead
from cascade_rcnn.ops.assign_sample import AssignerSettings, SamplerSettings, assign, sample
from cascade_rcnn.ops.box_coder import BoxCoder
from cascade_rcnn.ops.roi_align import MultiLevelRoIAlign
from cascade_rcnn.ops.rois import boxes_per_image


class SimplePyramid(nn.Module):
    """ViTDet's simple feature pyramid on any backbone: every level from the LAST map alone, brought
    to the level's stride (4 .. 64) by a transposed conv (finer levels) or a strided 1x1 conv."""

    strides = (4, 8, 16, 32, 64)

    def __init__(self, in_channels: int, in_stride: int, channels: int):
        super().__init__()
        self.out_channels = channels
        self.levels = nn.ModuleList(
            nn.ConvTranspose2d(in_channels, channels, in_stride // stride, stride=in_stride // stride)
            if stride < in_stride else nn.Conv2d(in_channels, channels, 1, stride=stride // in_stride)
            for stride in self.strides)

    def forward(self, maps: list[torch.Tensor]) -> list[torch.Tensor]:
        return [level(maps[-1]) for level in self.levels]


@dataclass(frozen=True)
class SimplePyramidConfig:
    def build(self, config, in_channels: list[int], in_strides: tuple[int, ...]) -> SimplePyramid:
        return SimplePyramid(in_channels[-1], in_strides[-1], config.fpn_channels)


class OneStageRoIHead(nn.Module):
    """Faster R-CNN's RoI head: one box head at IoU 0.5, class-agnostic boxes, no masks."""

    def __init__(self, config, strides: tuple[int, ...]):
        super().__init__()
        self.num_classes = config.num_classes
        self.roi_align = MultiLevelRoIAlign(7, tuple(strides[:4]))
        self.box_head = BoxHead(config.num_classes, config.fpn_channels, hidden=config.fc_channels)
        self.coder = BoxCoder((0.1, 0.1, 0.2, 0.2))
        self.assigner = AssignerSettings(pos_iou=0.5, neg_iou=0.5)
        self.sampler = SamplerSettings(num=32, positive_fraction=0.25)

    def predict(self, features, rois, image_sizes, settings: DetectionSettings, path, stage=None,
                box_scales=None) -> BatchDetections:
        logits, deltas = self.box_head(self.roi_align(features, rois, path), path)
        image_index = rois[:, 0].long()
        boxes = self.coder.decode(rois[:, 1:], deltas, image_sizes.to(rois.dtype)[image_index])
        return select_detections(boxes, logits.softmax(dim=-1), image_index, image_sizes, settings, path, box_scales)

    def loss(self, features, rois, targets, image_sizes, padded_size, path) -> dict[str, torch.Tensor]:
        sampled, labels, box_targets = [], [], []
        for image, (proposals, target) in enumerate(zip(boxes_per_image(rois, len(targets)), targets)):
            candidates = torch.cat([target["boxes"], proposals])
            assigned = assign(candidates, target["boxes"], self.assigner)
            positives, negatives = sample(assigned, self.sampler)
            chosen = torch.cat([positives, negatives])
            sampled.append(torch.cat([candidates.new_full((chosen.numel(), 1), image), candidates[chosen]], dim=1))
            labels.append(torch.cat([target["labels"][assigned[positives]],
                                     target["labels"].new_full((negatives.numel(),), self.num_classes)]))
            box_targets.append(self.coder.encode(candidates[positives], target["boxes"][assigned[positives]]))
        sampled, labels = torch.cat(sampled), torch.cat(labels)
        logits, deltas = self.box_head(self.roi_align(features, sampled, path), path)
        positive = labels < self.num_classes
        box_loss = F.smooth_l1_loss(deltas[positive], torch.cat(box_targets), reduction="sum") / len(labels)
        return {"roi_cls": F.cross_entropy(logits, labels), "roi_box": box_loss}


@dataclass(frozen=True)
class OneStageRoIHeadConfig:
    def build(self, config, in_channels: int, strides: tuple[int, ...]) -> OneStageRoIHead:
        return OneStageRoIHead(config, strides)


def custom_config(**changes) -> cascade_rcnn.ModelConfig:
    return tiny_config(False, **{"neck": SimplePyramidConfig(), "roi_heads": OneStageRoIHeadConfig(), **changes})


def confident(model: cascade_rcnn.CascadeRCNN) -> cascade_rcnn.CascadeRCNN:
    """Objectness and class 1 biased up, so that random weights give detections to compare."""
    with torch.no_grad():
        model.rpn_head.rpn_cls.bias += 2.0
        model.roi_head.box_head.fc_cls.bias[1] += 4.0
    return model


def test_the_parts_are_the_specs_parts():
    torch.manual_seed(0)
    model = cascade_rcnn.CascadeRCNN(custom_config())
    assert isinstance(model.neck, SimplePyramid) and isinstance(model.roi_head, OneStageRoIHead)
    assert model.rpn_head.strides == SimplePyramid.strides

    @dataclass(frozen=True)
    class NarrowPyramidConfig:
        def build(self, config, in_channels: list[int], in_strides: tuple[int, ...]) -> SimplePyramid:
            return SimplePyramid(in_channels[-1], in_strides[-1], 8)

    with pytest.raises(ValueError, match="tiny: the neck gives 8 channels; the heads are built for fpn_channels=16"):
        cascade_rcnn.CascadeRCNN(custom_config(neck=NarrowPyramidConfig()))


def test_a_custom_neck_and_roi_head_train_one_step():
    torch.manual_seed(0)
    model = cascade_rcnn.CascadeRCNN(custom_config()).train()
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(2, 3, 64, 96, generator=generator)
    boxes = torch.tensor([[10.0, 8.0, 50.0, 40.0], [40.0, 20.0, 90.0, 60.0]])
    targets = [{"boxes": boxes, "labels": torch.tensor([0, 2])}, {"boxes": boxes[:1], "labels": torch.tensor([1])}]
    losses = model.loss(images, targets, torch.tensor([[64, 96], [64, 96]]))
    assert set(losses) == {"rpn_cls", "rpn_box", "roi_cls", "roi_box"}
    total = sum(losses.values())
    assert torch.isfinite(total)
    before = model.neck.levels[0].weight.detach().clone()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    optimizer.zero_grad()
    total.backward()
    assert model.neck.levels[0].weight.grad.abs().sum() > 0
    assert model.roi_head.box_head.fc_cls.weight.grad.abs().sum() > 0
    optimizer.step()
    assert not torch.equal(model.neck.levels[0].weight, before)


def test_a_custom_neck_and_roi_head_predict_batch_and_export(tmp_path):
    pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    model = confident(cascade_rcnn.CascadeRCNN(custom_config()).eval())
    scene, other = drawn_scene(150, 200, seed=3), drawn_scene(150, 200, seed=4)
    ours = model.predict([scene, other])
    assert len(ours[0]) > 5 and ours[0].image_size == (150, 200) and ours[0].masks is None
    batched = model.predict([scene, other], batch_size=2)
    for alone, together in zip(ours, batched):
        assert agreement(alone, together, min_iou=0.999).matched == len(alone) == len(together)
    runtime = cascade_rcnn.OnnxDetector(cascade_rcnn.export_onnx(model, tmp_path / "custom_parts.onnx"))
    for mine, theirs in zip(ours, runtime.predict([scene, other], batch_size=2)):
        match = agreement(mine, theirs, min_iou=0.99)
        assert match.matched == len(mine) == len(theirs)
        assert match.max_score_diff <= 1e-4
