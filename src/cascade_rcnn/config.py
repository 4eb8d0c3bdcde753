"""Everything that defines one model, as one plain dataclass."""
from __future__ import annotations

from dataclasses import dataclass, field, replace

from .coco_classes import COCO_CATEGORY_IDS, COCO_CLASSES
from .models.backbone import BackboneConfig

# Input normalisation of the two backbone styles (spec §2.1): what the ImageNet weights expect.
PYTORCH_MEAN, PYTORCH_STD = (123.675, 116.28, 103.53), (58.395, 57.12, 57.375)  # RGB
CAFFE_MEAN, CAFFE_STD = (103.53, 116.28, 123.675), (1.0, 1.0, 1.0)  # BGR


@dataclass(frozen=True)
class ModelConfig:
    """A Cascade (Mask) R-CNN: architecture, classes, input size, and what the zoo reports."""

    name: str
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    with_mask: bool = True
    class_names: tuple[str, ...] = COCO_CLASSES
    # COCO category id of each class, for COCO-format output; None means ids = index + 1.
    category_ids: tuple[int, ...] | None = COCO_CATEGORY_IDS
    fpn_channels: int = 256
    fc_channels: int = 1024
    mask_channels: int | None = None  # mask heads' conv width; None = fpn_channels (MMDetection)
    image_scale: tuple[int, int] = (1333, 800)  # resize to fit (long side, short side)
    # RPN anchor side = stride x anchor_scale (8: 32 px on P2, COCO at 800 px); smaller images
    # with small objects want smaller anchors.
    anchor_scale: float = 8.0
    # Box (and mask) head stages: 3 is Cascade R-CNN; 1 is Faster / Mask R-CNN (IoU 0.5), for
    # comparisons (benchmarks/stages.py).
    num_stages: int = 3
    # Training: RPN proposals kept per image, and RoIs sampled per image for each stage.
    train_proposals: int = 2000
    rois_per_image: int = 512
    schedule: str = "1x"  # 1x = 12 epochs (lr x0.1 at 8, 11); 20e = 20 epochs (16, 19)
    # Model-zoo facts (MMDetection's page): reported COCO val AP, memory, V100 fps, checkpoint.
    reported_box_ap: float | None = None
    reported_mask_ap: float | None = None
    reported_mem_gb: float | None = None
    reported_fps: float | None = None
    url: str | None = None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def bgr_input(self) -> bool:
        """Caffe-style backbones were trained on BGR images."""
        return self.backbone.style == "caffe"

    @property
    def pixel_mean(self) -> tuple[float, float, float]:
        return CAFFE_MEAN if self.bgr_input else PYTORCH_MEAN

    @property
    def pixel_std(self) -> tuple[float, float, float]:
        return CAFFE_STD if self.bgr_input else PYTORCH_STD

    def category_id(self, label: int) -> int:
        """The data set's category id of a 0-based label."""
        return self.category_ids[label] if self.category_ids is not None else label + 1

    def with_classes(self, class_names: tuple[str, ...], category_ids: tuple[int, ...] | None = None
                     ) -> "ModelConfig":
        """The same architecture for another set of classes (for fine-tuning)."""
        return replace(self, class_names=tuple(class_names),
                       category_ids=tuple(category_ids) if category_ids is not None else None)
