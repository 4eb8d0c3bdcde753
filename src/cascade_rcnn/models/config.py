"""Everything that defines one model, as one plain dataclass: its parts (backbone, neck, RPN
head, RoI heads and their box / mask heads), each a spec with ``build()``, and its knobs."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from torch import nn

from .backbones.resnet import ResNetConfig
from .coco_classes import COCO_CATEGORY_IDS, COCO_CLASSES
from .heads.box_head import SharedFCBoxHeadConfig
from .heads.mask_head import FCNMaskHeadConfig
from .input_norm import MMDETECTION_RESIZE, InputNorm, ResizeRule
from .necks.fpn import FPNConfig
from .roi_heads.cascade import CascadeRoIHeadConfig
from .rpn import RPNHeadConfig


class BackboneSpec(Protocol):
    """What ``ModelConfig.backbone`` holds (the contract: ``models/backbones/__init__.py``)."""

    input_norm: InputNorm
    label: str

    def build(self) -> nn.Module: ...


class HeadSpec(Protocol):
    """What ``ModelConfig.box_head`` / ``mask_head`` hold (``models/heads/__init__.py``)."""

    def build(self, config: "ModelConfig") -> nn.Module: ...


class PartSpec(Protocol):
    """What ``ModelConfig.neck`` / ``rpn_head`` / ``roi_heads`` hold: built from the widths and
    strides of the part before (``models/necks/__init__.py``, ``models/roi_heads/__init__.py``)."""

    def build(self, config: "ModelConfig", in_channels, strides: tuple[int, ...]) -> nn.Module: ...


LSJ_SCALES = (0.1, 2.0)  # large-scale jitter's range of scales (ViTDet's ResizeScale min_scale, max_scale)


@dataclass(frozen=True)
class ModelConfig:
    """A Cascade (Mask) R-CNN: architecture, classes, input size, and what the zoo reports."""

    name: str
    backbone: BackboneSpec = field(default_factory=ResNetConfig)
    # None: what the backbone's pretrained weights expect (``backbone.input_norm``).
    input_norm: InputNorm | None = None
    neck: PartSpec = FPNConfig()
    rpn_head: PartSpec = RPNHeadConfig()
    roi_heads: PartSpec = CascadeRoIHeadConfig()
    box_head: HeadSpec = SharedFCBoxHeadConfig()
    mask_head: HeadSpec = FCNMaskHeadConfig()  # used when with_mask
    with_mask: bool = True
    class_names: tuple[str, ...] = COCO_CLASSES
    # COCO category id of each class, for COCO-format output; None means ids = index + 1.
    category_ids: tuple[int, ...] | None = COCO_CATEGORY_IDS
    fpn_channels: int = 256
    fc_channels: int = 1024
    mask_channels: int | None = None  # mask heads' conv width; None = fpn_channels (MMDetection)
    image_scale: tuple[int, int] = (1333, 800)  # resize to fit (long side, short side)
    resize_rule: ResizeRule = MMDETECTION_RESIZE  # how images are resized and boxes mapped back
    # Multi-scale training: each training image's (long, short) scale is drawn between these two,
    # each side uniformly (MMDetection's multi-scale "range" resize, e.g. short side 640..800 for
    # the 3x zoo rows); two equal scales train at that one; None trains at image_scale. Testing
    # always uses image_scale.
    train_scale_range: tuple[tuple[int, int], tuple[int, int]] | None = None
    # Or each training image's (long, short) scale drawn uniformly from these, one of the list
    # (Detectron2's ResizeShortestEdge with "choice" sampling: the 640..800 step-32 short sides of
    # its FPN configs, each with the long side capped at 1333; MMDetection's multiscale_mode="value").
    train_scale_choice: tuple[tuple[int, int], ...] | None = None
    # DETR's "ms-crop" training augmentation instead (data/resize_crop.py): the ConvNeXt rows'.
    train_resize_crop: bool = False
    # ViTDet's large-scale jitter instead (data/lsj.py): resized by LSJ_SCALES of this square side,
    # then cropped to it; 0: none.
    train_lsj: int = 0
    # RPN anchor side = stride x anchor_scale (8: 32 px on P2, COCO at 800 px); smaller images
    # with small objects want smaller anchors.
    anchor_scale: float = 8.0
    # Box (and mask) head stages: one entry per stage in each per-stage field (``num_stages`` is
    # their length): 3 is Cascade R-CNN; 1 is Faster / Mask R-CNN (IoU 0.5), for comparisons
    # (benchmarks/stages.py). Training IoU threshold of each stage (positives >= it, negatives below).
    stage_ious: tuple[float, ...] = (0.5, 0.6, 0.7)
    # Each stage's box-delta stds: tighter per stage, its input boxes are already better.
    stage_stds: tuple[tuple[float, ...], ...] = ((0.1, 0.1, 0.2, 0.2), (0.05, 0.05, 0.1, 0.1),
                                                 (0.033, 0.033, 0.067, 0.067))
    stage_loss_weights: tuple[float, ...] = (1.0, 0.5, 0.25)
    # Training: RPN proposals kept per image, anchors sampled per image for the RPN loss, and RoIs
    # sampled per image for each stage. Test: RPN proposals per image.
    train_proposals: int = 2000
    rpn_samples_per_image: int = 256
    rois_per_image: int = 512
    test_proposals: int = 1000
    # RPN boxes kept per level before its NMS (MMDetection's nms_pre); None = the proposal count.
    train_proposals_pre_nms: int | None = None
    test_proposals_pre_nms: int | None = None
    # Test settings (MMDetection's rcnn test_cfg): class score threshold, per-class NMS IoU,
    # detections kept per image; ``predict`` can override each per call.
    test_score_thr: float = 0.05
    test_nms_iou: float = 0.5
    test_max_per_image: int = 100
    mask_threshold: float = 0.5  # a pasted mask probability at or above it is the object (mask_thr_binary)
    schedule: str = "1x"  # 1x = 12 epochs (lr x0.1 at 8, 11); 20e = 20 epochs (16, 19)
    # Model-zoo facts (the zoo page of ``framework``): reported COCO val AP, memory, V100 fps, checkpoint.
    framework: str = "MMDetection"
    reported_box_ap: float | None = None
    reported_mask_ap: float | None = None
    reported_mem_gb: float | None = None
    reported_fps: float | None = None
    url: str | None = None
    # The merged MMDetection config this model was read from (``mmdet_config``), as text our
    # checkpoints carry so that the file alone rebuilds the model; None for the zoo's and yours.
    mmdet_config: str | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        check_settings(self)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def num_stages(self) -> int:
        return len(self.stage_ious)

    @property
    def normalization(self) -> InputNorm:
        """Channel order, mean and std of the network's input."""
        return self.input_norm or self.backbone.input_norm

    @property
    def bgr_input(self) -> bool:
        return self.normalization.bgr

    @property
    def pixel_mean(self) -> tuple[float, float, float]:
        return self.normalization.mean

    @property
    def pixel_std(self) -> tuple[float, float, float]:
        return self.normalization.std

    def category_id(self, label: int) -> int:
        """The data set's category id of a 0-based label."""
        return self.category_ids[label] if self.category_ids is not None else label + 1

    def with_classes(self, class_names: tuple[str, ...], category_ids: tuple[int, ...] | None = None
                     ) -> "ModelConfig":
        """The same architecture for another set of classes (for fine-tuning)."""
        return replace(self, class_names=tuple(class_names),
                       category_ids=tuple(category_ids) if category_ids is not None else None)

    def with_changes(self, **changes: Any) -> "ModelConfig":
        """A validated copy with ``changes``. ``num_stages=n`` keeps the first n entries of the
        per-stage fields not given (fewer stages); more stages need them all given."""
        if "num_stages" in changes:
            count = changes.pop("num_stages")
            if count < 1:
                raise ValueError(f"model {self.name}: num_stages must be at least 1, got {count}")
            for name in PER_STAGE_FIELDS:
                if name not in changes:
                    if count > len(getattr(self, name)):
                        raise ValueError(f"model {self.name}: {name} has {len(getattr(self, name))} entries but "
                                         f"num_stages is {count} (give {', '.join(PER_STAGE_FIELDS)} one entry "
                                         "per stage)")
                    changes[name] = getattr(self, name)[:count]
                elif len(changes[name]) != count:
                    raise ValueError(f"model {self.name}: {name} has {len(changes[name])} entries but num_stages "
                                     f"is {count} (give {', '.join(PER_STAGE_FIELDS)} one entry per stage)")
        return replace(self, **changes)


PER_STAGE_FIELDS = ("stage_ious", "stage_stds", "stage_loss_weights")


def check_settings(config: ModelConfig) -> None:
    """Raise ValueError naming the first inconsistent or out-of-range knob of ``config``."""
    problems = []
    if config.num_stages < 1:
        problems.append("stage_ious needs at least one entry (one per stage)")
    for name in PER_STAGE_FIELDS[1:]:
        count = len(getattr(config, name))
        if count != config.num_stages:
            problems.append(f"{name} has {count} entries but num_stages is {config.num_stages} (the "
                            f"entries of stage_ious; give {', '.join(PER_STAGE_FIELDS)} one entry per stage)")
    if not all(0 < iou <= 1 for iou in config.stage_ious):
        problems.append(f"stage_ious must lie in (0, 1], got {config.stage_ious}")
    if not all(len(stds) == 4 and all(s > 0 for s in stds) for stds in config.stage_stds):
        problems.append(f"stage_stds needs 4 positive values per stage, got {config.stage_stds}")
    if not all(w >= 0 for w in config.stage_loss_weights):
        problems.append(f"stage_loss_weights must be >= 0, got {config.stage_loss_weights}")
    for name in ("train_proposals", "test_proposals", "rpn_samples_per_image", "rois_per_image",
                 "train_proposals_pre_nms", "test_proposals_pre_nms"):
        if getattr(config, name) is not None and getattr(config, name) < 1:
            problems.append(f"{name} must be at least 1, got {getattr(config, name)}")
    if not 0 <= config.test_score_thr < 1 or not 0 < config.test_nms_iou <= 1 or config.test_max_per_image < 1:
        problems.append(f"test settings need 0 <= test_score_thr < 1, 0 < test_nms_iou <= 1 and "
                        f"test_max_per_image >= 1, got {config.test_score_thr}, {config.test_nms_iou}, "
                        f"{config.test_max_per_image}")
    if not 0 <= config.mask_threshold < 1:
        problems.append(f"mask_threshold must be in [0, 1), got {config.mask_threshold}")
    if config.anchor_scale <= 0:
        problems.append(f"anchor_scale must be positive, got {config.anchor_scale}")
    if len(config.image_scale) != 2 or min(config.image_scale) < 1:
        problems.append(f"image_scale needs two positive sides (long, short), got {config.image_scale}")
    if config.train_scale_range is not None and not (
            len(config.train_scale_range) == 2
            and all(len(scale) == 2 and min(scale) >= 1 for scale in config.train_scale_range)):
        problems.append(f"train_scale_range needs two (long, short) scales of positive sides, "
                        f"got {config.train_scale_range}")
    if config.train_scale_choice is not None and not (
            config.train_scale_choice
            and all(len(scale) == 2 and min(scale) >= 1 for scale in config.train_scale_choice)):
        problems.append(f"train_scale_choice needs one or more (long, short) scales of positive sides, "
                        f"got {config.train_scale_choice}")
    resizes = [name for name, value in (("train_scale_range", config.train_scale_range is not None),
                                        ("train_scale_choice", config.train_scale_choice is not None),
                                        ("train_resize_crop", config.train_resize_crop),
                                        ("train_lsj", bool(config.train_lsj))) if value]
    if len(resizes) > 1:
        problems.append(f"{' and '.join(resizes)} are {('two', 'three', 'four')[len(resizes) - 2]} training resizes; "
                        "give one")
    if config.train_lsj < 0:
        problems.append(f"train_lsj must be a positive side (or 0: none), got {config.train_lsj}")
    if config.mask_channels is not None and config.mask_channels < 1:
        problems.append(f"mask_channels must be at least 1 (or none), got {config.mask_channels}")
    if problems:
        raise ValueError(f"model {config.name}: {problems[0]}")
