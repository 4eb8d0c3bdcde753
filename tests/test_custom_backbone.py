"""A backbone of one's own, defined here and nowhere in the library: the cascade builds on it
by contract (``models/backbones/__init__.py``), trains a step, predicts and exports to ONNX."""
from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from conftest import TINY_CLASSES
from torch import nn

import cascade_rcnn
from cascade_rcnn.benchmarking.agreement import agreement
from cascade_rcnn.benchmarking.synthetic import drawn_scene, spread_random_weights
from cascade_rcnn.models.input_norm import InputNorm


class StridedConvNet(nn.Module):
    """A 3x3 conv at stride 4, then one stride-2 conv per level: maps at strides 4, 8, 16, 32."""

    strides = (4, 8, 16, 32)

    def __init__(self, width: int):
        super().__init__()
        self.out_channels = [width, 2 * width, 4 * width, 8 * width]
        self.stem = nn.Conv2d(3, width, 3, stride=4, padding=1)
        self.levels = nn.ModuleList(nn.Conv2d(c, 2 * c, 3, stride=2, padding=1) for c in self.out_channels[:-1])

    def forward(self, images: torch.Tensor, path: cascade_rcnn.ComputePath) -> list[torch.Tensor]:
        maps = [self.stem(images).relu()]
        for level in self.levels:
            maps.append(level(maps[-1]).relu())
        return maps


@dataclass(frozen=True)
class StridedConvNetConfig:
    width: int = 8
    input_norm: InputNorm = InputNorm((127.5, 127.5, 127.5), (64.0, 64.0, 64.0))
    label: str = "strided-convnet"

    def build(self) -> StridedConvNet:
        return StridedConvNet(self.width)


def custom_config(**changes) -> cascade_rcnn.ModelConfig:
    return cascade_rcnn.ModelConfig(name="strided_convnet", backbone=StridedConvNetConfig(), fpn_channels=16,
                                    fc_channels=32, image_scale=(96, 64), class_names=TINY_CLASSES,
                                    category_ids=None, **changes)


def test_a_cascade_on_a_backbone_defined_in_the_test_trains_one_step():
    torch.manual_seed(0)
    model = cascade_rcnn.CascadeRCNN(custom_config()).train()
    assert model.config.pixel_mean == (127.5, 127.5, 127.5)  # the backbone's own input norm
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(2, 3, 64, 96, generator=generator)
    boxes = torch.tensor([[10.0, 8.0, 50.0, 40.0], [40.0, 20.0, 90.0, 60.0]])
    masks = torch.zeros(2, 64, 96, dtype=torch.uint8)
    masks[0, 8:40, 10:50] = masks[1, 20:60, 40:90] = 1
    targets = [{"boxes": boxes, "labels": torch.tensor([0, 2]), "masks": masks},
               {"boxes": boxes[:1], "labels": torch.tensor([1]), "masks": masks[:1]}]
    losses = model.loss(images, targets, torch.tensor([[64, 96], [64, 96]]))
    assert {"rpn_cls", "s0_cls", "s2_box", "s2_mask"} <= set(losses)
    total = sum(value for name, value in losses.items() if not name.endswith("_acc"))
    assert torch.isfinite(total)
    before = model.backbone.stem.weight.detach().clone()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    optimizer.zero_grad()
    total.backward()
    assert model.backbone.stem.weight.grad.abs().sum() > 0
    optimizer.step()
    assert not torch.equal(model.backbone.stem.weight, before)


@pytest.mark.parametrize("with_mask", [True, False], ids=["mask", "box"])
def test_a_cascade_on_a_backbone_defined_in_the_test_predicts_and_exports(with_mask, tmp_path):
    pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    scene = drawn_scene(150, 200, seed=3)
    model = spread_random_weights(cascade_rcnn.CascadeRCNN(custom_config(with_mask=with_mask)).eval(), scene)
    ours = model.predict(scene)[0]
    assert len(ours) > 0 and ours.image_size == (150, 200)
    assert (ours.masks is not None) == with_mask
    runtime = cascade_rcnn.OnnxDetector(cascade_rcnn.export_onnx(model, tmp_path / "custom.onnx"))
    theirs = runtime.predict(scene)[0]
    match = agreement(ours, theirs, min_iou=0.99)
    assert match.matched == len(ours) == len(theirs)
    assert match.max_score_diff <= 1e-3


def test_a_backbone_at_other_strides_is_refused_by_name():
    class Coarse(StridedConvNet):
        strides = (8, 16, 32, 64)

    @dataclass(frozen=True)
    class CoarseConfig(StridedConvNetConfig):
        def build(self) -> StridedConvNet:
            return Coarse(self.width)

    with pytest.raises(ValueError, match="strided_convnet: the neck's levels have strides"):
        cascade_rcnn.CascadeRCNN(cascade_rcnn.ModelConfig(name="strided_convnet", backbone=CoarseConfig()))


def test_a_spec_without_the_optional_hooks_gets_the_defaults(tmp_path):
    """No ``lr_scale`` / ``weight_decays`` / ``to_own_layout`` / ``imagenet_keys`` on the spec
    (``models/backbones/hooks.py``): one parameter group, checkpoints load as they are written,
    and an ImageNet file may leave over only a classifier's ``head.*``."""
    from cascade_rcnn.engine.param_groups import parameter_groups
    from cascade_rcnn.models.backbones import hooks
    from cascade_rcnn.weights import checkpoint
    from cascade_rcnn.weights.backbone_weights import load_backbone_weights

    torch.manual_seed(0)
    model = cascade_rcnn.CascadeRCNN(custom_config())
    groups = parameter_groups(model, weight_decay=1e-4)
    assert [(g["lr_scale"], g["weight_decay"]) for g in groups] == [(1.0, 1e-4)]
    assert len(groups[0]["params"]) == len([p for p in model.parameters() if p.requires_grad])
    marked = {"backbone.stages.0.blocks.0.attn.w_msa.qkv.weight": torch.zeros(1)}  # MMDetection's Swin layout
    assert hooks.to_own_layout(StridedConvNetConfig(), marked) is marked
    assert hooks.imagenet_keys(StridedConvNetConfig()) == hooks.ImageNetKeys()

    path = tmp_path / "custom.pth"
    checkpoint.save(path, model)
    other = cascade_rcnn.CascadeRCNN(custom_config())
    assert checkpoint.load_into(other, checkpoint.read(path), path) == []
    assert all(torch.equal(other.state_dict()[k], v) for k, v in model.state_dict().items())

    backbone = model.backbone.state_dict()
    torch.save({**backbone, "head.weight": torch.zeros(10, 64)}, tmp_path / "imagenet.pth")
    report = load_backbone_weights(StridedConvNet(8), tmp_path / "imagenet.pth")
    assert report.dropped == ("head.weight",) and report.kept == () and report.loaded == len(backbone)
    torch.save({**backbone, "fc.weight": torch.zeros(10, 64)}, tmp_path / "imagenet.pth")
    with pytest.raises(cascade_rcnn.CheckpointError, match=r"backbone of this kind: 0 keys missing .*fc\.weight"):
        load_backbone_weights(StridedConvNet(8), tmp_path / "imagenet.pth")
