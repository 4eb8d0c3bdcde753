"""ImageNet backbone initialisation: the three file layouts of the zoo load bit for bit, offline;
wrong files are refused by name (backbone_weights.py)."""
from __future__ import annotations

import hashlib

import pytest
import torch
import torchvision
from conftest import tiny_config
from torchvision.models.resnet import Bottleneck
from torchvision.models.resnet import ResNet as TorchvisionResNet

import cascade_rcnn
from cascade_rcnn.cli import main
from cascade_rcnn.data.shapes import generate_shapes
from cascade_rcnn.engine.train import TrainConfig, train
from cascade_rcnn.models.backbones.resnet import ResNet, ResNetConfig
from cascade_rcnn.weights import checkpoint
from cascade_rcnn.weights.backbone_weights import (
    backbone_weights_source,
    load_backbone_weights,
)
from cascade_rcnn.weights.checkpoint import CheckpointError

SMALL_R50 = ResNetConfig(depth=50, base_channels=8)
SMALL_R50_CAFFE = ResNetConfig(depth=50, base_channels=8, style="caffe", train_bn_affine=False)
SMALL_X50 = ResNetConfig(depth=50, base_channels=8, groups=2, width_per_group=8)  # ResNeXt, 2 groups


def seeded(state: dict[str, torch.Tensor], seed: int = 0) -> dict[str, torch.Tensor]:
    """Every tensor of ``state`` replaced by seeded random values of its shape and dtype
    (BatchNorm variances positive)."""
    generator = torch.Generator().manual_seed(seed)

    def values(key: str, like: torch.Tensor) -> torch.Tensor:
        if not like.is_floating_point():
            return torch.randint(0, 1000, like.shape, generator=generator)
        if key.endswith("running_var"):
            return torch.rand(like.shape, generator=generator) + 0.5
        return torch.randn(like.shape, generator=generator) * 0.1

    return {key: values(key, value).to(value.dtype) for key, value in state.items()}


def classifier(width: int, seed: int = 1) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {"fc.weight": torch.randn(1000, width, generator=generator), "fc.bias": torch.randn(1000, generator=generator)}


def torchvision_layout(config: ResNetConfig) -> dict:
    """A bare state dict with the classifier (download.pytorch.org/models/resnet*.pth)."""
    state = seeded(ResNet(config).state_dict())
    return {**state, **classifier(config.out_channels[-1])}


def caffe_msra_layout(config: ResNetConfig) -> dict:
    """detectron2pytorch.py's output: wrapped in state_dict, frozen-affine BatchNorms (running
    mean 0, var 1), no num_batches_tracked, MSRA's stem bias, no classifier."""
    state = {k: v for k, v in seeded(ResNet(config).state_dict()).items() if not k.endswith("num_batches_tracked")}
    for key in state:
        if key.endswith("running_mean"):
            state[key] = torch.zeros_like(state[key])
        elif key.endswith("running_var"):
            state[key] = torch.ones_like(state[key])
    state["conv1.bias"] = torch.randn(config.base_channels, generator=torch.Generator().manual_seed(2))
    return {"state_dict": state}


def openmmlab_resnext_layout(config: ResNetConfig) -> dict:
    """A data-parallel training checkpoint: state_dict, keys prefixed with module., classifier."""
    state = {**seeded(ResNet(config).state_dict()), **classifier(config.out_channels[-1])}
    return {"state_dict": {f"module.{k}": v for k, v in state.items()}, "meta": {"epoch": 100}}


def file_state(loaded: dict) -> dict[str, torch.Tensor]:
    state = loaded.get("state_dict", loaded)
    return {k.removeprefix("module."): v for k, v in state.items()}


@pytest.mark.parametrize("config, layout, dropped, kept_counters", [
    (SMALL_R50, torchvision_layout, ("fc.weight", "fc.bias"), False),
    (SMALL_R50_CAFFE, caffe_msra_layout, ("conv1.bias",), True),
    (SMALL_X50, openmmlab_resnext_layout, ("fc.weight", "fc.bias"), False),
], ids=["torchvision", "caffe_msra", "openmmlab_resnext"])
def test_each_layout_loads_every_tensor_bit_for_bit(tmp_path, config, layout, dropped, kept_counters):
    loaded = layout(config)
    path = tmp_path / "imagenet.pth"
    torch.save(loaded, path)
    torch.manual_seed(5)
    backbone = ResNet(config)
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    report = load_backbone_weights(backbone, path)
    expected = file_state(loaded)
    after = backbone.state_dict()
    for key, value in after.items():
        if key in expected:
            assert torch.equal(value, expected[key]), key
        else:  # only the BatchNorm counters the caffe files lack keep the model's values
            assert key.endswith("num_batches_tracked") and torch.equal(value, before[key]), key
    assert set(report.dropped) == set(dropped)
    assert bool(report.kept) == kept_counters
    assert report.loaded == len(after) - len(report.kept)
    assert str(path) in report.summary() and "fc" not in ", ".join(report.kept)


def test_torchvision_resnet50_state_dict_loads_into_the_r50_backbone(tmp_path):
    """torchvision's own ResNet-50 (the resnet50-0676ba61.pth layout), at full size."""
    torch.manual_seed(0)
    state = seeded(torchvision.models.resnet50(weights=None).state_dict(), seed=3)
    path = tmp_path / "resnet50.pth"
    torch.save(state, path)
    backbone = ResNet(cascade_rcnn.get_config("cascade_rcnn_r50_fpn_1x_coco").backbone)
    report = load_backbone_weights(backbone, path)
    assert report.dropped == ("fc.weight", "fc.bias") and report.kept == ()
    for key, value in backbone.state_dict().items():
        assert torch.equal(value, state[key]), key


ZOO_BACKBONES = {  # zoo backbone -> torchvision's constructor of the same network
    "cascade_rcnn_r50_fpn_1x_coco": lambda: torchvision.models.resnet50(),
    "cascade_rcnn_r50_caffe_fpn_1x_coco": lambda: torchvision.models.resnet50(),
    "cascade_rcnn_r101_fpn_1x_coco": lambda: torchvision.models.resnet101(),
    "cascade_rcnn_r101_caffe_fpn_1x_coco": lambda: torchvision.models.resnet101(),
    "cascade_rcnn_x101_32x4d_fpn_1x_coco": lambda: TorchvisionResNet(Bottleneck, [3, 4, 23, 3], groups=32,
                                                                      width_per_group=4),
    "cascade_rcnn_x101_64x4d_fpn_1x_coco": lambda: torchvision.models.resnext101_64x4d(),
}


@pytest.mark.parametrize("name", ZOO_BACKBONES)
def test_zoo_backbones_have_torchvisions_names_and_shapes(name):
    """Nothing to rename: every zoo backbone's keys and shapes are torchvision's minus fc.*
    (built on the meta device: no memory, no values)."""
    with torch.device("meta"):
        theirs = {k: v.shape for k, v in ZOO_BACKBONES[name]().state_dict().items() if not k.startswith("fc.")}
        ours = {k: v.shape for k, v in ResNet(cascade_rcnn.get_config(name).backbone).state_dict().items()}
    assert ours == theirs


def test_every_zoo_config_names_mmdetections_imagenet_file():
    files = {name: config.backbone.imagenet_url.rsplit("/", 1)[-1]
             for name, config in cascade_rcnn.MODEL_ZOO.items() if config.url}
    assert len(files) == 40
    expected = {"r50_caffe": "resnet50_msra-5891d200.pth", "r101_caffe": "resnet101_msra-6cc46731.pth",
                "r50": "resnet50-0676ba61.pth", "r101": "resnet101-63fe2227.pth",
                "x101_32x4d": "resnext101_32x4d-a5af3160.pth", "x101_64x4d": "resnext101_64x4d-ee2c6f71.pth",
                "x101_32x8d": "resnext101_32x8d-1516f1aa.pth",
                "convnext-t": "convnext-tiny_3rdparty_32xb128-noema_in1k_20220301-795e9634.pth",
                "convnext-s": "convnext-small_3rdparty_32xb128-noema_in1k_20220301-303e75e3.pth",
                **{f"swin_{arch}_patch4_window7": f"swin_{arch}_patch4_window7_224.pth"
                   for arch in ("tiny", "small", "base")},
                # Detectron2's rows: its MODEL.WEIGHTS (ImageNetPretrained/MSRA/R-50.pkl), MMDetection's conversion
                **{f"R_50_FPN_{schedule}": "resnet50_msra-5891d200.pth" for schedule in ("1x", "3x")},
                # ViTDet's rows: its train.init_checkpoint, MAE's pre-trained encoders
                **{f"vitdet_{size}_{schedule}": f"mae_pretrain_vit_{file}.pth"
                   for size, file in (("b", "base"), ("l", "large"), ("h", "huge_p14to16"))
                   for schedule in ("100ep", "75ep")}}
    for name, file in files.items():
        backbone = name.split("rcnn_", 1)[1].split("_fpn")[0].split("_p4")[0]
        assert file == expected[backbone], name
    assert all(c.backbone.imagenet_url is None for c in cascade_rcnn.MODEL_ZOO.values() if not c.url)


# --- which weights, and wrong files ----------------------------------------------------------------

def test_the_source_follows_the_config_and_the_choice():
    zoo = cascade_rcnn.get_config("cascade_mask_rcnn_r50_fpn_1x_coco")
    project = cascade_rcnn.get_config("cascade_mask_rcnn_r18w32_fpn_256")
    assert backbone_weights_source(zoo, None, None) == zoo.backbone.imagenet_url
    assert backbone_weights_source(zoo, None, "detector.pth") is None
    assert backbone_weights_source(project, None, None) is None
    assert backbone_weights_source(zoo, "imagenet", None) == zoo.backbone.imagenet_url
    assert backbone_weights_source(zoo, "none", None) is None
    assert backbone_weights_source(project, "mine.pth", None) == "mine.pth"
    with pytest.raises(ValueError, match="no published ImageNet backbone"):
        backbone_weights_source(project, "imagenet", None)
    with pytest.raises(ValueError, match="both given"):
        backbone_weights_source(zoo, "imagenet", "detector.pth")


def test_a_detector_checkpoint_is_refused_by_name(tmp_path):
    path = tmp_path / "detector.pth"
    checkpoint.save(path, cascade_rcnn.CascadeRCNN(tiny_config()))
    with pytest.raises(CheckpointError, match=rf"{path}: a detector checkpoint .*--weights"):
        load_backbone_weights(ResNet(tiny_config().backbone), path)


def test_r50_weights_for_an_r101_are_refused_by_name(tmp_path):
    path = tmp_path / "resnet50.pth"
    torch.save(torchvision_layout(SMALL_R50), path)
    with pytest.raises(CheckpointError, match=rf"{path}: not ImageNet weights of a R-101 .* missing \(e.g. layer3\.6\."):
        load_backbone_weights(ResNet(ResNetConfig(depth=101, base_channels=8)), path)


def test_another_resnext_width_is_a_shape_error(tmp_path):
    path = tmp_path / "x_2x8d.pth"
    torch.save(openmmlab_resnext_layout(SMALL_X50), path)
    other = ResNetConfig(depth=50, base_channels=8, groups=4, width_per_group=8)
    with pytest.raises(CheckpointError, match=rf"{path}: \d+ tensors have other shapes than a X-50-4x8d"):
        load_backbone_weights(ResNet(other), path)


def test_an_unknown_extra_key_is_an_error(tmp_path):
    path = tmp_path / "extra.pth"
    torch.save({**torchvision_layout(SMALL_R50), "layer1.0.conv2.bias": torch.zeros(8)}, path)
    with pytest.raises(CheckpointError, match=r"1 unexpected \(e.g. layer1\.0\.conv2\.bias\)"):
        load_backbone_weights(ResNet(SMALL_R50), path)


def test_a_truncated_file_is_named(tmp_path):
    whole = tmp_path / "whole.pth"
    torch.save(torchvision_layout(SMALL_R50), whole)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=rf"{truncated}: a truncated PyTorch checkpoint"):
        load_backbone_weights(ResNet(SMALL_R50), truncated)


@pytest.fixture
def fake_download(tmp_path, monkeypatch):
    """torch.hub's downloader replaced by one that serves ``served`` bytes and counts calls."""
    monkeypatch.setenv("CASCADE_RCNN_CACHE", str(tmp_path / "cache"))
    calls = []

    def download(url, destination, progress=True):
        calls.append(url)
        with open(destination, "wb") as file:
            file.write(download.served)

    monkeypatch.setattr(torch.hub, "download_url_to_file", download)
    download.calls = calls
    return download


def test_a_download_is_hash_checked_once_and_cached(tmp_path, fake_download):
    torch.save(torchvision_layout(SMALL_R50), tmp_path / "good.pth")
    fake_download.served = (tmp_path / "good.pth").read_bytes()
    prefix = hashlib.sha256(fake_download.served).hexdigest()[:8]
    url = f"https://download.example.invalid/models/resnet50-{prefix}.pth"
    first = load_backbone_weights(ResNet(SMALL_R50), url)
    second = load_backbone_weights(ResNet(SMALL_R50), url)
    assert first.path == second.path == tmp_path / "cache" / f"resnet50-{prefix}.pth"
    assert fake_download.calls == [url]


@pytest.mark.parametrize("damage", ["truncated", "other_file"])
def test_a_download_with_the_wrong_hash_is_deleted_and_named(tmp_path, fake_download, damage):
    torch.save(torchvision_layout(SMALL_R50), tmp_path / "good.pth")
    good = (tmp_path / "good.pth").read_bytes()
    prefix = hashlib.sha256(good).hexdigest()[:8]
    fake_download.served = good[:1000] if damage == "truncated" else good + b"\0"
    url = f"https://download.example.invalid/models/resnet50-{prefix}.pth"
    with pytest.raises(CheckpointError, match=rf"{url}: the download fails its hash check .*says {prefix}"):
        load_backbone_weights(ResNet(SMALL_R50), url)
    assert list((tmp_path / "cache").iterdir()) == []


# --- in training ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_shapes(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes")
    generate_shapes(root, num_images=2, size=64, seed=1)
    return root


def imagenet_config(url: str | None) -> cascade_rcnn.ModelConfig:
    """A tiny box-only model whose backbone, like the zoo's, has ImageNet weights at ``url`` and
    freezes the stem and layer1 with fixed BatchNorm statistics."""
    return cascade_rcnn.ModelConfig(
        name="tiny_imagenet", with_mask=False, backbone=ResNetConfig(depth=18, base_channels=8, imagenet_url=url),
        fpn_channels=16, fc_channels=32, image_scale=(64, 64), anchor_scale=2.0, train_proposals=100,
        rois_per_image=32)


def run_once(shapes, out, **changes) -> TrainConfig:
    return TrainConfig(train_json=str(shapes / "annotations.json"), train_images=str(shapes / "images"),
                       out_dir=str(out), epochs=1, batch_size=2, workers=0, lr=0.01, warmup_iters=1,
                       eval_every=0, **changes)


def test_training_without_weights_starts_from_the_imagenet_backbone(tiny_shapes, tmp_path, capsys):
    file = tmp_path / "imagenet-00000000.pth"
    state = torchvision_layout(ResNetConfig(depth=18, base_channels=8))
    torch.save(state, file)
    train(imagenet_config(str(file)), run_once(tiny_shapes, tmp_path / "run"))
    assert f"backbone initialised from {file}: " in capsys.readouterr().out
    final = checkpoint.state_dict_of(checkpoint.read(tmp_path / "run" / "final.pth"))
    frozen = [k for k in state if k.startswith(("conv1.", "bn1.", "layer1.")) or "running_" in k]
    assert len(frozen) > 20
    for key in frozen:  # the frozen stem and layer1, and every BatchNorm statistic, are still the file's
        assert torch.equal(final[f"backbone.{key}"], state[key]), key


def test_no_backbone_weights_warns(tiny_shapes, tmp_path, capsys):
    train(imagenet_config("unused.pth"), run_once(tiny_shapes, tmp_path / "run", backbone_weights="none"))
    assert "but none were given: its backbone stays random" in capsys.readouterr().out


def test_cli_imagenet_for_a_project_model_is_one_line(tiny_shapes, tmp_path, capsys):
    status = main(["train", "--model", "cascade_rcnn_r18w32_fpn_256", "--train-json", str(tiny_shapes / "annotations.json"),
                   "--train-images", str(tiny_shapes / "images"), "--out", str(tmp_path / "run"),
                   "--backbone-weights", "imagenet"])
    assert status == 2
    assert "error: cascade_rcnn_r18w32_fpn_256 has no published ImageNet backbone" in capsys.readouterr().err
