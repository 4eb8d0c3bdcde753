"""Shared fixtures: tiny models that run a forward pass in milliseconds, and the spec folder."""
from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch

import cascade_rcnn

# MMDetection's state-dict key lists of the 20 published checkpoints (facts about those files,
# copied from the shared spec's mmdet_keys/ so the layout tests run on a fresh clone).
KEYS_DIR = Path(__file__).resolve().parent / "data" / "mmdet_keys"  # MMDetection v2's 20 rows
MODERN_KEYS_DIR = KEYS_DIR.with_name("mmdet_keys_modern")  # the rows MMDetection 3.3 + mmpretrain 1.2 build

TINY_CLASSES = ("a", "b", "c")

# MMDetection's loss names -> ours. Both weight a stage's loss terms by its stage loss weight
# (1, 0.5, 0.25) and leave its accuracy unweighted; MMDetection's accuracy is a percentage, ours
# a fraction. MMDetection's RPN terms are summed over the FPN levels.
MMDET_LOSS_NAMES = {"loss_rpn_cls": "rpn_cls", "loss_rpn_bbox": "rpn_box"}
for _stage in range(3):
    MMDET_LOSS_NAMES.update({f"s{_stage}.loss_cls": f"s{_stage}_cls", f"s{_stage}.acc": f"s{_stage}_acc",
                             f"s{_stage}.loss_bbox": f"s{_stage}_box", f"s{_stage}.loss_mask": f"s{_stage}_mask"})


def in_mmdet_units(losses: dict[str, torch.Tensor]) -> dict[str, float]:
    """Our loss dict under MMDetection's names and units (accuracy in percent)."""
    assert set(losses) == set(MMDET_LOSS_NAMES.values())
    return {name: losses[ours].item() * (100.0 if name.endswith(".acc") else 1.0)
            for name, ours in MMDET_LOSS_NAMES.items()}


def tiny_config(with_mask: bool = True, **changes) -> cascade_rcnn.ModelConfig:
    """A ResNet-18 (width 8) Cascade (Mask) R-CNN with 3 classes at 96x64 input."""
    options = dict(name="tiny", backbone=cascade_rcnn.ResNetConfig(depth=18, base_channels=8),
                   fpn_channels=16, fc_channels=32, image_scale=(96, 64), class_names=TINY_CLASSES,
                   category_ids=None, with_mask=with_mask)
    return cascade_rcnn.ModelConfig(**options).with_changes(**changes)


def tiny_model(with_mask: bool = True, seed: int = 0, **changes) -> cascade_rcnn.CascadeRCNN:
    """A randomly initialised tiny model in eval mode (deterministic for a given seed)."""
    torch.manual_seed(seed)
    return cascade_rcnn.CascadeRCNN(tiny_config(with_mask, **changes)).eval()


def make_confident(model: cascade_rcnn.CascadeRCNN, label: int = 1, mask_logit: float | None = None) -> None:
    """Bias every box head towards class ``label`` (scores well above 0.05); optionally bias the
    mask heads so every mask probability is sigmoid(~mask_logit)."""
    with torch.no_grad():
        for head in model.roi_head.bbox_head:
            head.fc_cls.bias.zero_()
            head.fc_cls.bias[label] = 4.0
        if mask_logit is not None and model.roi_head.mask_head is not None:
            for head in model.roi_head.mask_head:
                head.conv_logits.weight.zero_()
                head.conv_logits.bias.fill_(mask_logit)


def assert_detections_equal(first, second) -> None:
    """Two ``Detections`` are the same to the bit (boxes, scores, labels, masks, size)."""
    assert first.image_size == second.image_size
    assert torch.equal(first.boxes, second.boxes)
    assert torch.equal(first.scores, second.scores)
    assert torch.equal(first.labels, second.labels)
    assert (first.masks is None) == (second.masks is None)
    if first.masks is not None:
        assert torch.equal(first.masks, second.masks)


@pytest.fixture
def pretend_cpu_has_bf16(monkeypatch) -> None:
    """Let ``precision="bf16"`` run on this CPU although it may lack bfloat16 instructions (the
    library refuses it there as slow): oneDNN emulates bf16 correctly, slowly, which tiny models
    can afford."""
    monkeypatch.setattr("cascade_rcnn.ops.compute_path.cpu_has_bf16_instructions", lambda: True)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture(params=[True, False], ids=["mask", "box"])
def with_mask(request) -> bool:
    return request.param


@pytest.fixture(scope="session")
def shared_keys_dir() -> Path:
    """The key lists, part of the repository: their absence is an error, not a skip."""
    assert (KEYS_DIR / "index.json").is_file(), f"key lists missing from the repository: {KEYS_DIR}"
    return KEYS_DIR


@pytest.fixture(scope="session")
def zoo_index(shared_keys_dir) -> dict[str, dict]:
    """Every published row's facts (URL, parameter counts, ...), with ``keys_dir``: where its key list is."""
    entries = {}
    for keys_dir in (shared_keys_dir, MODERN_KEYS_DIR):
        for entry in json.loads((keys_dir / "index.json").read_text())["models"]:
            entries[entry["name"]] = {**entry, "keys_dir": keys_dir}
    return entries


def load_key_shapes(keys_dir: Path, name: str) -> dict[str, list[int]]:
    """``mmdet_keys/<name>.json`` as {key: shape}; the file must not list a key twice."""
    pairs = json.loads((keys_dir / f"{name}.json").read_text())
    shapes = {key: list(shape) for key, shape in pairs}
    assert len(shapes) == len(pairs), f"{name}.json lists a key twice"
    return shapes


def assert_paths_agree_and_export(model: cascade_rcnn.CascadeRCNN, scene: np.ndarray, onnx_path: Path):
    """The fast path equals the exact one up to float noise on ``scene``, and the model exports to
    ``onnx_path`` with onnxruntime's detections equal to PyTorch's. Returns the OnnxDetector."""
    from cascade_rcnn.benchmarking.agreement import agreement

    fast = model.predict(scene)[0]
    model.exact = True
    exact = model.predict(scene)[0]
    model.exact = False
    assert len(exact) > 5
    same = agreement(exact, fast, min_iou=0.99)
    assert same.matched == len(exact) == len(fast) and same.max_score_diff <= 1e-4
    runtime = cascade_rcnn.OnnxDetector(cascade_rcnn.export_onnx(model, onnx_path))
    theirs = runtime.predict(scene)[0]
    exported = agreement(fast, theirs, min_iou=0.99)
    assert exported.matched == len(fast) == len(theirs) and exported.max_score_diff <= 1e-3
    return runtime


def two_image_training_batch() -> tuple[torch.Tensor, list[dict], torch.Tensor]:
    """Two 64x96 images with 2 and 1 objects (boxes, labels, masks): (images, targets, sizes)."""
    images = torch.randn(2, 3, 64, 96, generator=torch.Generator().manual_seed(1))
    masks = torch.zeros(2, 64, 96, dtype=torch.uint8)
    masks[0, 8:40, 10:50] = masks[1, 20:60, 40:90] = 1
    boxes = torch.tensor([[10.0, 8.0, 50.0, 40.0], [40.0, 20.0, 90.0, 60.0]])
    targets = [{"boxes": boxes, "labels": torch.tensor([0, 2]), "masks": masks},
               {"boxes": boxes[1:], "labels": torch.tensor([1]), "masks": masks[1:]}]
    return images, targets, torch.tensor([[64, 96], [64, 96]])


def cpu_vendor() -> str:
    """The CPU's vendor id from /proc/cpuinfo ("AuthenticAMD", "GenuineIntel"), "" where unknown:
    with torch's CPU capability, the kind of CPU that MMDetection reference data is bit-exact on."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return ""
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("vendor_id")), "")


@pytest.fixture(scope="module")
def two_threads():
    """2 torch threads for a module: the golden data (MMDetection's, Detectron2's) was computed with 2,
    and the split of a convolution can change its sums."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


@contextmanager
def backbone_passes() -> Iterator[list[tuple[int, set[torch.dtype]]]]:
    """Every forward pass of a ResNet backbone (any model, also one a command builds) while inside:
    (images in the batch, dtypes of its output feature maps), in order."""
    from cascade_rcnn.models.backbones.resnet import ResNet

    passes = []

    def record(module, args, output):
        if isinstance(module, ResNet):
            passes.append((args[0].shape[0], {level.dtype for level in output}))

    hook = torch.nn.modules.module.register_module_forward_hook(record)
    try:
        yield passes
    finally:
        hook.remove()
