"""A Detectron2 yacs config (``read_yacs_config``) mapped key by key onto our ``ModelConfig``:
Detectron2's rules are the specs' Detectron2 values (``DETECTRON2_RPN``, ``DETECTRON2_CASCADE``,
``DETECTRON2_RESIZE``); a key whose value we cannot follow is refused by name before any weight
is read, and so is an architecture other than the ResNet-FPN Cascade (Mask) R-CNN."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from ..errors import ConfigError
from ..models.backbones.resnet import ResNetConfig
from ..models.coco_classes import COCO_CATEGORY_IDS, COCO_CLASSES
from ..models.config import ModelConfig
from ..models.input_norm import DETECTRON2_RESIZE, InputNorm
from ..models.roi_heads.cascade import DETECTRON2_CASCADE
from ..models.rpn import DETECTRON2_RPN
from .lazy_file import is_lazy_dump
from .lazy_model import read_lazy_model
from .resolved import Detectron2Config
from .supported import ANY, refuse_unsupported
from .yacs_file import read_yacs_config

# The architecture we build: these keys must hold these values (defaults included).
REQUIRED = {
    "MODEL.META_ARCHITECTURE": "GeneralizedRCNN", "MODEL.BACKBONE.NAME": "build_resnet_fpn_backbone",
    "MODEL.PROPOSAL_GENERATOR.NAME": "RPN", "MODEL.RPN.HEAD_NAME": "StandardRPNHead",
    "MODEL.ROI_HEADS.NAME": "CascadeROIHeads", "MODEL.ROI_BOX_HEAD.NAME": "FastRCNNConvFCHead",
    "MODEL.ROI_BOX_HEAD.NUM_FC": 2, "MODEL.ROI_BOX_HEAD.NUM_CONV": 0, "MODEL.ROI_BOX_HEAD.NORM": "",
    "MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG": True, "MODEL.ROI_BOX_HEAD.POOLER_TYPE": "ROIAlignV2",
    "MODEL.ROI_BOX_HEAD.POOLER_SAMPLING_RATIO": 0, "MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION": 7,
    "MODEL.ROI_MASK_HEAD.NAME": "MaskRCNNConvUpsampleHead", "MODEL.ROI_MASK_HEAD.NUM_CONV": 4,
    "MODEL.ROI_MASK_HEAD.POOLER_TYPE": "ROIAlignV2", "MODEL.ROI_MASK_HEAD.POOLER_SAMPLING_RATIO": 0,
    "MODEL.ROI_MASK_HEAD.POOLER_RESOLUTION": 14, "MODEL.ROI_MASK_HEAD.CLS_AGNOSTIC_MASK": False,
    "MODEL.ROI_MASK_HEAD.NORM": "", "MODEL.RESNETS.NORM": "FrozenBN", "MODEL.FPN.NORM": "",
    "MODEL.FPN.FUSE_TYPE": "sum", "MODEL.RESNETS.OUT_FEATURES": ("res2", "res3", "res4", "res5"),
    "MODEL.FPN.IN_FEATURES": ("res2", "res3", "res4", "res5"), "MODEL.ANCHOR_GENERATOR.OFFSET": 0.0,
    "MODEL.ANCHOR_GENERATOR.NAME": "DefaultAnchorGenerator", "MODEL.RPN.IN_FEATURES": ("p2", "p3", "p4", "p5", "p6"),
    "MODEL.ROI_HEADS.IN_FEATURES": ("p2", "p3", "p4", "p5"), "MODEL.RESNETS.STEM_OUT_CHANNELS": 64,
    "MODEL.RESNETS.RES5_DILATION": 1, "MODEL.RESNETS.DEFORM_ON_PER_STAGE": (False, False, False, False),
    "MODEL.RPN.BBOX_REG_WEIGHTS": (1.0, 1.0, 1.0, 1.0), "MODEL.KEYPOINT_ON": False, "MODEL.LOAD_PROPOSALS": False,
    "INPUT.MIN_SIZE_TEST": (lambda size: size > 0), "TEST.AUG.ENABLED": False,
}
# Keys read below (any value the mapping checks itself; the model's training rule included: its
# losses follow Detectron2's, ``DETECTRON2_RPN`` / ``DETECTRON2_CASCADE``, and its training resize),
# and the rest of the training recipe, which decides nothing about the model: ``yacs_recipe.py``
# reads it for ``train``.
MAPPED = {key: ANY for key in (
    "MODEL.MASK_ON", "MODEL.PIXEL_MEAN", "MODEL.PIXEL_STD", "INPUT.FORMAT", "INPUT.MIN_SIZE_TEST",
    "INPUT.MAX_SIZE_TEST", "MODEL.RESNETS.DEPTH", "MODEL.RESNETS.NUM_GROUPS", "MODEL.RESNETS.WIDTH_PER_GROUP",
    "MODEL.RESNETS.STRIDE_IN_1X1", "MODEL.RESNETS.RES2_OUT_CHANNELS", "MODEL.BACKBONE.FREEZE_AT",
    "MODEL.FPN.OUT_CHANNELS", "MODEL.ANCHOR_GENERATOR.SIZES", "MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS",
    "MODEL.RPN.PRE_NMS_TOPK_TEST", "MODEL.RPN.POST_NMS_TOPK_TEST", "MODEL.RPN.PRE_NMS_TOPK_TRAIN",
    "MODEL.RPN.POST_NMS_TOPK_TRAIN", "MODEL.RPN.NMS_THRESH", "MODEL.RPN.BATCH_SIZE_PER_IMAGE",
    "MODEL.RPN.POSITIVE_FRACTION", "MODEL.ROI_HEADS.NUM_CLASSES", "MODEL.ROI_HEADS.SCORE_THRESH_TEST",
    "MODEL.ROI_HEADS.NMS_THRESH_TEST", "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "MODEL.ROI_HEADS.POSITIVE_FRACTION",
    "MODEL.ROI_HEADS.IOU_THRESHOLDS", "MODEL.ROI_HEADS.IOU_LABELS", "TEST.DETECTIONS_PER_IMAGE",
    "MODEL.ROI_BOX_CASCADE_HEAD.IOUS", "MODEL.ROI_BOX_CASCADE_HEAD.BBOX_REG_WEIGHTS", "MODEL.ROI_BOX_HEAD.FC_DIM",
    "MODEL.ROI_MASK_HEAD.CONV_DIM", "MODEL.ROI_BOX_HEAD.BBOX_REG_WEIGHTS", "MODEL.RPN.IOU_THRESHOLDS",
    "MODEL.RPN.SMOOTH_L1_BETA", "MODEL.ROI_BOX_HEAD.SMOOTH_L1_BETA", "SOLVER", "DATASETS", "DATALOADER",
    "INPUT.MIN_SIZE_TRAIN", "INPUT.MAX_SIZE_TRAIN", "INPUT.MIN_SIZE_TRAIN_SAMPLING", "INPUT.RANDOM_FLIP",
    "INPUT.MASK_FORMAT", "TEST.EVAL_PERIOD", *REQUIRED)}


def read_detectron2_model(path: str | Path, name: str | None = None) -> ModelConfig:
    """The ``ModelConfig`` of a Detectron2 ``config.yaml``: a yacs config (a run's dump or a
    ``_BASE_`` chain), or a LazyConfig dump (ViTDet's, ``lazy_model.py``)."""
    if is_lazy_dump(path):
        return read_lazy_model(path, name or Path(path).stem)
    return model_config(read_yacs_config(path), name or Path(path).stem)


def model_config(config: Detectron2Config, name: str) -> ModelConfig:
    """Map a resolved Detectron2 config onto ``ModelConfig``; ``ConfigError`` names any key refused."""
    for key, wanted in REQUIRED.items():
        value = config.value(key)
        if not (wanted(value) if callable(wanted) else value == wanted):
            raise ConfigError(f"{config.source(key)}: {key} = {value!r} is not supported (only "
                              f"{'a positive size' if callable(wanted) else repr(wanted)}: the ResNet-FPN Cascade "
                              "(Mask) R-CNN)")
    refuse_unsupported(config, MAPPED)
    value = config.value
    num_classes = value("MODEL.ROI_HEADS.NUM_CLASSES")
    coco = num_classes == len(COCO_CLASSES)
    return ModelConfig(
        name=name, backbone=_backbone(config), input_norm=_input_norm(config),
        rpn_head=replace(DETECTRON2_RPN, nms_iou=value("MODEL.RPN.NMS_THRESH"), ratios=_ratios(config),
                         positive_fraction=value("MODEL.RPN.POSITIVE_FRACTION"), **_rpn_ious(config),
                         box_loss_beta=float(value("MODEL.RPN.SMOOTH_L1_BETA"))),
        roi_heads=replace(DETECTRON2_CASCADE, stage_box_weights=_per_stage(config, "BBOX_REG_WEIGHTS"),
                          positive_fraction=value("MODEL.ROI_HEADS.POSITIVE_FRACTION"),
                          box_loss_beta=float(value("MODEL.ROI_BOX_HEAD.SMOOTH_L1_BETA"))),
        with_mask=value("MODEL.MASK_ON"),
        class_names=COCO_CLASSES if coco else tuple(f"class_{i}" for i in range(num_classes)),
        category_ids=COCO_CATEGORY_IDS if coco else None,
        fpn_channels=value("MODEL.FPN.OUT_CHANNELS"), fc_channels=value("MODEL.ROI_BOX_HEAD.FC_DIM"),
        mask_channels=value("MODEL.ROI_MASK_HEAD.CONV_DIM"),
        image_scale=(value("INPUT.MAX_SIZE_TEST"), value("INPUT.MIN_SIZE_TEST")), resize_rule=DETECTRON2_RESIZE,
        **_training_resize(config),
        anchor_scale=_anchor_scale(config),
        stage_ious=_per_stage(config, "IOUS"),
        stage_loss_weights=(1.0,) * len(_per_stage(config, "IOUS")),  # Detectron2 weights no stage
        # Detectron2's BBOX_REG_WEIGHTS are the reciprocals of MMDetection's stds (the coder uses the weights).
        stage_stds=tuple(tuple(1.0 / w for w in weights) for weights in _per_stage(config, "BBOX_REG_WEIGHTS")),
        train_proposals=value("MODEL.RPN.POST_NMS_TOPK_TRAIN"),
        train_proposals_pre_nms=value("MODEL.RPN.PRE_NMS_TOPK_TRAIN"),
        test_proposals=value("MODEL.RPN.POST_NMS_TOPK_TEST"),
        test_proposals_pre_nms=value("MODEL.RPN.PRE_NMS_TOPK_TEST"),
        rpn_samples_per_image=value("MODEL.RPN.BATCH_SIZE_PER_IMAGE"),
        rois_per_image=value("MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE"),
        test_score_thr=value("MODEL.ROI_HEADS.SCORE_THRESH_TEST"), test_nms_iou=value("MODEL.ROI_HEADS.NMS_THRESH_TEST"),
        test_max_per_image=value("TEST.DETECTIONS_PER_IMAGE"))


def _backbone(config: Detectron2Config) -> ResNetConfig:
    value = config.value
    depth = value("MODEL.RESNETS.DEPTH")
    if depth not in (18, 34, 50, 101):
        raise ConfigError(f"{config.source('MODEL.RESNETS.DEPTH')}: MODEL.RESNETS.DEPTH = {depth} is not supported "
                          "(18, 34, 50 or 101)")
    expansion = 1 if depth < 50 else 4
    freeze_at = value("MODEL.BACKBONE.FREEZE_AT")
    if freeze_at == 1:  # the stem alone: our ResNet freezes the stem together with layer1
        raise ConfigError(f"{config.source('MODEL.BACKBONE.FREEZE_AT')}: MODEL.BACKBONE.FREEZE_AT = 1 is not "
                          "supported (0, or 2 and more)")
    groups, width = value("MODEL.RESNETS.NUM_GROUPS"), value("MODEL.RESNETS.WIDTH_PER_GROUP")
    return ResNetConfig(depth=depth, style="caffe" if value("MODEL.RESNETS.STRIDE_IN_1X1") else "pytorch",
                        groups=groups, width_per_group=width if groups > 1 else 64,
                        base_channels=value("MODEL.RESNETS.RES2_OUT_CHANNELS") // expansion,
                        train_bn_affine=False, frozen_stages=max(freeze_at - 1, 0), norm_eval=True,
                        frozen_bn_affine_with_grad=True)


def _training_resize(config: Detectron2Config) -> dict[str, tuple]:
    """Detectron2's ``ResizeShortestEdge`` for training: with "choice" sampling one short side of
    ``INPUT.MIN_SIZE_TRAIN`` per image, each as likely (``train_scale_choice``); with "range" a
    short side drawn uniformly between its two sides, inclusive (``train_scale_range``: the long
    side, ``INPUT.MAX_SIZE_TRAIN``, is the same at both ends, so it stays fixed)."""
    sizes, longest = config.value("INPUT.MIN_SIZE_TRAIN"), config.value("INPUT.MAX_SIZE_TRAIN")
    sampling = config.value("INPUT.MIN_SIZE_TRAIN_SAMPLING")
    if not (sizes and all(type(size) is int and size > 0 for size in sizes)) or type(longest) is not int or longest < 1:
        raise ConfigError(f"{config.source('INPUT.MIN_SIZE_TRAIN')}: INPUT.MIN_SIZE_TRAIN = {sizes!r} with "
                          f"INPUT.MAX_SIZE_TRAIN = {longest!r} is not supported (positive whole sides)")
    if sampling == "choice":
        return {"train_scale_choice": tuple((longest, size) for size in sizes)}
    if sampling == "range" and len(sizes) == 2:
        return {"train_scale_range": ((longest, sizes[0]), (longest, sizes[1]))}
    raise ConfigError(f"{config.source('INPUT.MIN_SIZE_TRAIN_SAMPLING')}: INPUT.MIN_SIZE_TRAIN_SAMPLING = "
                      f"{sampling!r} with INPUT.MIN_SIZE_TRAIN = {sizes!r} is not supported (\"choice\" from the "
                      "list, or \"range\" between two sides)")


def _input_norm(config: Detectron2Config) -> InputNorm:
    fmt = config.value("INPUT.FORMAT")
    if fmt not in ("BGR", "RGB"):
        raise ConfigError(f"{config.source('INPUT.FORMAT')}: INPUT.FORMAT = {fmt!r} is not supported (BGR or RGB)")
    return InputNorm(tuple(config.value("MODEL.PIXEL_MEAN")), tuple(config.value("MODEL.PIXEL_STD")), bgr=fmt == "BGR")


def _ratios(config: Detectron2Config) -> tuple[float, ...]:
    ratios = config.value("MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS")
    if len(ratios) != 1:
        raise ConfigError(f"{config.source('MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS')}: per-level aspect ratios are not "
                          "supported (one list for all levels)")
    return tuple(float(r) for r in ratios[0])


def _rpn_ious(config: Detectron2Config) -> dict[str, float]:
    """The anchor matcher's two thresholds (labels 0, -1, 1: negative below the first, positive
    from the second)."""
    thresholds = config.value("MODEL.RPN.IOU_THRESHOLDS")
    if len(thresholds) != 2 or not 0 < thresholds[0] <= thresholds[1]:
        raise ConfigError(f"{config.source('MODEL.RPN.IOU_THRESHOLDS')}: MODEL.RPN.IOU_THRESHOLDS = {thresholds} is "
                          "not supported (two thresholds, negative below the first, positive from the second)")
    return {"neg_iou": float(thresholds[0]), "pos_iou": float(thresholds[1])}


def _anchor_scale(config: Detectron2Config) -> float:
    """One anchor size per level, ``stride * scale`` on strides 4..64 (32..512 px: scale 8)."""
    sizes = config.value("MODEL.ANCHOR_GENERATOR.SIZES")
    scales = {size[0] / stride for size, stride in zip(sizes, (4, 8, 16, 32, 64)) if len(size) == 1}
    if len(sizes) != 5 or len(scales) != 1:
        raise ConfigError(f"{config.source('MODEL.ANCHOR_GENERATOR.SIZES')}: MODEL.ANCHOR_GENERATOR.SIZES = {sizes} "
                          "is not supported (one size per level, the same multiple of each level's stride)")
    return scales.pop()


def _per_stage(config: Detectron2Config, field: str) -> tuple:
    values = config.value(f"MODEL.ROI_BOX_CASCADE_HEAD.{field}")
    ious = config.value("MODEL.ROI_BOX_CASCADE_HEAD.IOUS")
    if len(values) != len(ious):
        raise ConfigError(f"{config.source(f'MODEL.ROI_BOX_CASCADE_HEAD.{field}')}: "
                          f"MODEL.ROI_BOX_CASCADE_HEAD.{field} has {len(values)} entries for {len(ious)} stages")
    return tuple(tuple(float(v) for v in entry) if isinstance(entry, tuple) else float(entry) for entry in values)
