"""An MMDetection config (read as data: ``text.py``) -> our ``ModelConfig``, key by key.

Every key of the model, its ``train_cfg`` / ``test_cfg``, the data preprocessor and the test
resize either maps onto a field of ours or must hold the value our parts compute with; anything
else - another type (``SABLHead``), a ``dcn=`` in the backbone, a test resize over a range - is a
``ConfigError`` naming the key, before any weight is read. Never a silently different model.
Keys that only decide how weights are initialised (``init_cfg``, ``zero_init_residual``) or how
much memory training takes (``with_cp``) are read and not needed.
"""
from __future__ import annotations

import math
from typing import Any

from ..models.backbones.convnext import ARCHS as CONVNEXT_ARCHS
from ..models.backbones.convnext import ConvNeXtConfig
from ..models.backbones.resnet import ResNetConfig
from ..models.backbones.swin import SwinConfig
from ..models.coco_classes import COCO_CATEGORY_IDS, COCO_CLASSES
from ..models.config import ModelConfig
from ..models.heads.box_head import ConvFCBoxHeadConfig, SharedFCBoxHeadConfig
from ..models.heads.mask_head import FCNMaskHeadConfig
from ..models.input_norm import InputNorm
from ..models.necks.fpn import FPNConfig
from ..models.roi_heads.cascade import CascadeRoIHeadConfig
from ..models.rpn import RPNHeadConfig
from .text import ConfigError

_TORCHVISION = "https://download.pytorch.org/models"
_OPEN_MMLAB = "https://download.openmmlab.com/pretrain/third_party"
# The ImageNet files MMDetection's init_cfg names (mmengine's hub tables), as URLs; the zoo's too.
IMAGENET_FILES = {
    "torchvision://resnet50": f"{_TORCHVISION}/resnet50-0676ba61.pth",
    "torchvision://resnet101": f"{_TORCHVISION}/resnet101-63fe2227.pth",
    "open-mmlab://detectron2/resnet50_caffe": f"{_OPEN_MMLAB}/resnet50_msra-5891d200.pth",
    "open-mmlab://detectron2/resnet101_caffe": f"{_OPEN_MMLAB}/resnet101_msra-6cc46731.pth",
    "open-mmlab://resnext101_32x4d": f"{_OPEN_MMLAB}/resnext101_32x4d-a5af3160.pth",
    "open-mmlab://resnext101_64x4d": f"{_OPEN_MMLAB}/resnext101_64x4d-ee2c6f71.pth",
    "open-mmlab://detectron2/resnext101_32x8d": f"{_OPEN_MMLAB}/resnext101_32x8d-1516f1aa.pth",
}
SCHEDULE_NAMES = {12: "1x", 20: "20e", 36: "3x"}  # max_epochs -> our schedule (engine/schedule.py)
_MISSING = object()


class Part:
    """One dict of the config, read key by key: ``take`` marks a key read, ``need`` also says
    which value we compute with, ``done`` refuses the first key nobody read."""

    def __init__(self, value: Any, where: str, source: str):
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: {where} must be a dict, got {type(value).__name__}")
        self.value, self.where, self.source, self.read = value, where, source, set()

    def refuse(self, message: str) -> ConfigError:
        return ConfigError(f"{self.source}: {message}")

    def take(self, key: str, default: Any = _MISSING) -> Any:
        self.read.add(key)
        if key in self.value:
            return self.value[key]
        if default is _MISSING:
            raise self.refuse(f"{self.where}.{key} is missing")
        return default

    def part(self, key: str, default: Any = _MISSING) -> "Part":
        return Part(self.take(key, default), f"{self.where}.{key}", self.source)

    def need(self, key: str, supported: Any, default: Any = _MISSING) -> Any:
        """The value at ``key`` (or ``default``), refused unless it equals ``supported`` (a value, or
        a tuple of accepted values when ``supported`` is a set)."""
        value = self.take(key, default)
        accepted = supported if isinstance(supported, (set, frozenset)) else {_hashable(supported)}
        if _hashable(value) not in accepted and not any(_close(value, ok) for ok in accepted):
            shown = ", ".join(sorted(repr(ok) for ok in accepted))
            raise self.refuse(f"{self.where}.{key}={value!r} is not supported (supported: {shown})")
        return value

    def kind(self, supported: tuple[str, ...]) -> str:
        kind = self.take("type")
        if kind not in supported:
            raise self.refuse(f"{self.where}.type={kind!r} is not supported (supported: {', '.join(supported)})")
        return kind

    def done(self, ignored: tuple[str, ...] = ()) -> None:
        for key in self.value:
            if key not in self.read and key not in ignored:
                raise self.refuse(f"{self.where}.{key}={self.value[key]!r} is not supported (no such setting in "
                                  "this project's parts)")


def _hashable(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return tuple(_hashable(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, _hashable(v)) for k, v in value.items()))
    return value


def _close(value: Any, expected: Any) -> bool:
    """Numbers equal to float precision (1.0 / 9.0 written as 0.111)."""
    if isinstance(value, (int, float)) and isinstance(expected, (int, float)) and not isinstance(value, bool):
        return math.isclose(value, expected, rel_tol=1e-6)
    return False


def _ints(value: Any, where: str, source: str) -> tuple[int, ...]:
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, int) for v in value):
        raise ConfigError(f"{source}: {where} must be a list of integers, got {value!r}")
    return tuple(value)


def model_config(config: dict[str, Any], name: str, source: str,
                 class_names: tuple[str, ...] | None = None) -> ModelConfig:
    """The ``ModelConfig`` of an MMDetection Cascade (Mask) R-CNN config (merged, as data).

    ``class_names`` (a checkpoint's metadata) win over the config's; without either, an 80-class
    model gets COCO's names and ids, any other ``class0, class1, ...``. A value of a type or form
    no MMDetection config holds is a ``ConfigError`` too, naming the file.
    """
    try:
        return _model_config(config, name, source, class_names)
    except ConfigError:
        raise
    except (TypeError, ValueError, AttributeError, KeyError, IndexError) as error:
        raise ConfigError(f"{source}: a value of an unexpected type or form ({error})") from error


def _model_config(config: dict[str, Any], name: str, source: str,
                  class_names: tuple[str, ...] | None) -> ModelConfig:
    model = Part(config.get("model"), "model", source)
    model.kind(("CascadeRCNN",))
    norm = _input_norm(config, model, source)
    backbone_part = model.part("backbone")
    backbone = BACKBONES[backbone_part.kind(tuple(BACKBONES))](backbone_part, config)
    model.take("pretrained", None)  # 2.x: the backbone's ImageNet file (read by _resnet)
    neck = model.part("neck")
    fpn_channels = _fpn(neck, backbone.out_channels)
    rpn_part, roi_part = model.part("rpn_head"), model.part("roi_head")
    train_cfg, test_cfg = model.part("train_cfg"), model.part("test_cfg")
    fields: dict[str, Any] = {"fpn_channels": fpn_channels}
    rpn = _rpn_head(rpn_part, fpn_channels, train_cfg, test_cfg, fields)
    roi_heads, num_classes = _roi_head(roi_part, fpn_channels, train_cfg, test_cfg, fields)
    model.done(ignored=("init_cfg",))
    if fields["with_mask"] and not dig(config, "model", "data_preprocessor", "pad_mask") \
            and "data_preprocessor" in config["model"]:
        raise ConfigError(f"{source}: model.data_preprocessor.pad_mask=False is not supported for mask models "
                          "(supported: True: mask targets are cut from masks padded to the batch)")
    names = tuple(class_names) if class_names else _class_names(config, num_classes, source)
    if len(names) != num_classes:
        raise ConfigError(f"{source}: {len(names)} class names for a model of {num_classes} classes")
    coco = names == COCO_CLASSES
    image_scale, train_scale_range = _resize(config, source)
    resize_crop = train_scale_range == RESIZE_CROP
    train_scale_range = None if resize_crop else train_scale_range
    try:
        return ModelConfig(
            name=name, backbone=backbone, input_norm=None if norm == backbone.input_norm else norm, neck=FPNConfig(),
            rpn_head=rpn, roi_heads=roi_heads, class_names=names, category_ids=COCO_CATEGORY_IDS if coco else None,
            image_scale=image_scale, train_scale_range=train_scale_range, train_resize_crop=resize_crop,
            schedule=_schedule(config), **fields)
    except ValueError as error:  # ModelConfig's own checks: values out of range
        raise ConfigError(f"{source}: {error}") from None


def _input_norm(config: dict[str, Any], model: Part, source: str) -> InputNorm:
    """MMDetection 3's ``model.data_preprocessor``, or 2's ``img_norm_cfg``."""
    if "data_preprocessor" in model.value:
        part = model.part("data_preprocessor")
        part.kind(("DetDataPreprocessor",))
        mean, std = part.take("mean"), part.take("std")
        bgr = not (part.take("bgr_to_rgb", False) or part.take("rgb_to_bgr", False))  # either swaps the channels
        part.need("pad_size_divisor", 32)
        part.need("pad_value", 0, 0)
        part.need("batch_augments", None, None)
        part.done(ignored=("pad_mask", "pad_seg", "seg_pad_value", "mask_pad_value", "boxtype2tensor",
                           "non_blocking"))
    elif "img_norm_cfg" in config:
        part = Part(config["img_norm_cfg"], "img_norm_cfg", source)
        mean, std, bgr = part.take("mean"), part.take("std"), not part.take("to_rgb", True)
        part.done()
    else:
        raise ConfigError(f"{source}: neither model.data_preprocessor nor img_norm_cfg says how images are normalised")
    if not all(isinstance(v, (list, tuple)) and len(v) == 3 for v in (mean, std)):
        raise ConfigError(f"{source}: the input mean and std need 3 values each, got {mean!r} and {std!r}")
    return InputNorm(tuple(float(v) for v in mean), tuple(float(v) for v in std), bgr=bgr)


CONVNEXT_TYPES = ("mmpretrain.ConvNeXt", "mmcls.ConvNeXt")


def _four_levels(part: Part) -> None:
    """The backbone gives all four stages' maps (the FPN reads C2..C5)."""
    if _ints(part.take("out_indices", (0, 1, 2, 3)), f"{part.where}.out_indices", part.source) != (0, 1, 2, 3):
        raise part.refuse(f"{part.where}.out_indices={part.value['out_indices']!r} is not supported (supported: "
                          "(0, 1, 2, 3): the FPN reads all four stages)")


def _imagenet_url(part: Part, fallback: str | None = None) -> str | None:
    """The ImageNet file the backbone's ``init_cfg`` names (or ``fallback``), as a URL where known."""
    checkpoint = dig(part.value, "init_cfg", "checkpoint") or fallback
    return IMAGENET_FILES.get(checkpoint, checkpoint)


def _convnext(part: Part, config: dict[str, Any]) -> ConvNeXtConfig:
    """mmpretrain's ConvNeXt, with the layer-wise lr decay of the config's optimizer."""
    arch = part.need("arch", set(CONVNEXT_ARCHS))
    _four_levels(part)
    part.need("gap_before_final_norm", False)
    for key, default in (("in_channels", 3), ("stem_patch_size", 4), ("frozen_stages", 0), ("use_grn", False),
                         ("linear_pw_conv", True), ("norm_cfg", {"type": "LN2d", "eps": 1e-6}),
                         ("act_cfg", {"type": "GELU"})):
        part.need(key, default, default)
    decay = Part(dig(config, "optim_wrapper", "paramwise_cfg") or {"decay_type": "layer_wise", "num_layers": 6,
                                                                   "decay_rate": 0.7},
                 "optim_wrapper.paramwise_cfg", part.source)
    decay.need("decay_type", "layer_wise", "layer_wise")
    spec = ConvNeXtConfig(arch, drop_path_rate=float(part.take("drop_path_rate", 0.0)),
                          layer_scale_init=float(part.take("layer_scale_init_value", 1e-6)),
                          imagenet_url=_imagenet_url(part),
                          lr_decay_layers=decay.take("num_layers"), lr_decay_rate=float(decay.take("decay_rate")))
    decay.done()
    part.done(ignored=("init_cfg", "with_cp"))
    return spec


def _swin(part: Part, config: dict[str, Any]) -> SwinConfig:
    """MMDetection's SwinTransformer (its checkpoints' key layout is converted on load: hooks.py)."""
    _four_levels(part)
    for key, default in (("pretrain_img_size", 224), ("in_channels", 3), ("patch_size", 4), ("qkv_bias", True),
                         ("qk_scale", None), ("drop_rate", 0.0), ("attn_drop_rate", 0.0), ("use_abs_pos_embed", False),
                         ("patch_norm", True), ("strides", (4, 2, 2, 2)), ("frozen_stages", -1),
                         ("act_cfg", {"type": "GELU"}), ("norm_cfg", {"type": "LN"})):
        part.need(key, default, default)
    try:
        spec = SwinConfig(embed_dim=part.take("embed_dims", 96), depths=tuple(part.take("depths", (2, 2, 6, 2))),
                          num_heads=tuple(part.take("num_heads", (3, 6, 12, 24))),
                          window_size=part.take("window_size", 7), mlp_ratio=part.take("mlp_ratio", 4),
                          drop_path_rate=float(part.take("drop_path_rate", 0.1)), imagenet_url=_imagenet_url(part))
    except ValueError as error:
        raise part.refuse(f"{part.where}: {error}") from None
    part.done(ignored=("init_cfg", "with_cp", "convert_weights"))
    return spec


def _resnet(part: Part, config: dict[str, Any]) -> ResNetConfig:
    """MMDetection's ResNet / ResNeXt (``model.pretrained``: 2.x's ImageNet file)."""
    kind = part.value["type"]
    depth = part.need("depth", {18, 34, 50, 101})
    part.need("num_stages", 4, 4)
    _four_levels(part)
    frozen = part.take("frozen_stages", -1)
    if not isinstance(frozen, int) or frozen == 0 or not -1 <= frozen <= 4:
        raise part.refuse(f"{part.where}.frozen_stages={frozen!r} is not supported (supported: -1, 1, 2, 3, 4)")
    norm = part.part("norm_cfg", {"type": "BN", "requires_grad": True})
    norm.need("type", {"BN", "SyncBN"})
    trains_affine = norm.take("requires_grad", True)
    norm.need("eps", 1e-5, 1e-5)
    norm.done(ignored=("momentum",))
    for key, default in (("dilations", (1, 1, 1, 1)), ("strides", (1, 2, 2, 2)), ("deep_stem", False),
                         ("avg_down", False), ("dcn", None), ("stage_with_dcn", (False, False, False, False)),
                         ("plugins", None), ("conv_cfg", None), ("in_channels", 3)):
        part.need(key, default, default)
    base = part.take("base_channels", 64)
    stem = part.take("stem_channels", None)  # None: as wide as base_channels (MMDetection's ResNet)
    if stem not in (base, None):
        raise part.refuse(f"{part.where}.stem_channels={stem!r} with base_channels={base!r} is not supported "
                          "(supported: the stem as wide as base_channels)")
    style = part.need("style", {"pytorch", "caffe"}, "pytorch")
    groups, width = (part.take("groups", 1), part.take("base_width", 4)) if kind == "ResNeXt" else (1, 64)
    norm_eval = part.take("norm_eval", True)
    part.done(ignored=("init_cfg", "with_cp", "zero_init_residual"))
    return ResNetConfig(depth=depth, style=style, groups=groups, width_per_group=width, base_channels=base,
                        train_bn_affine=trains_affine, frozen_stages=max(frozen, 0), norm_eval=norm_eval,
                        imagenet_url=_imagenet_url(part, dig(config, "model", "pretrained")))


# The backbone types the reader builds, each read by its function (the refusal lists them).
BACKBONES = {"ResNet": _resnet, "ResNeXt": _resnet, "SwinTransformer": _swin,
             **{kind: _convnext for kind in CONVNEXT_TYPES}}


def _fpn(part: Part, backbone_channels: list[int]) -> int:
    part.kind(("FPN",))
    if list(part.take("in_channels")) != list(backbone_channels):
        raise part.refuse(f"{part.where}.in_channels={part.value['in_channels']!r} does not match the backbone's "
                          f"{backbone_channels}")
    channels = part.take("out_channels")
    part.need("num_outs", 5)
    for key, default in (("start_level", 0), ("end_level", -1), ("add_extra_convs", False),
                         ("relu_before_extra_convs", False), ("no_norm_on_lateral", False), ("conv_cfg", None),
                         ("norm_cfg", None), ("act_cfg", None), ("upsample_cfg", {"mode": "nearest"})):
        part.need(key, default, default)
    part.done(ignored=("init_cfg",))
    return channels


# MMDetection's defaults of the losses' settings (what an absent key means).
LOSS_DEFAULTS = {"CrossEntropyLoss": {"use_sigmoid": False, "use_mask": False, "loss_weight": 1.0},
                 "SmoothL1Loss": {"beta": 1.0, "loss_weight": 1.0}}


def _loss(part: Part, kind: str, **settings: Any) -> None:
    """A loss of ``kind`` with exactly these ``settings`` (an absent key: MMDetection's default)."""
    part.kind((kind,))
    for key, value in settings.items():
        part.need(key, value, LOSS_DEFAULTS[kind][key])
    part.done()


def _rpn_head(part: Part, channels: int, train_cfg: Part, test_cfg: Part, fields: dict[str, Any]) -> RPNHeadConfig:
    part.kind(("RPNHead",))
    part.need("in_channels", channels)
    part.need("feat_channels", channels, channels)
    part.need("num_convs", 1, 1)
    anchors = part.part("anchor_generator")
    anchors.kind(("AnchorGenerator",))
    scales = anchors.take("scales")
    if not isinstance(scales, (list, tuple)) or len(scales) != 1:
        raise anchors.refuse(f"{anchors.where}.scales={scales!r} is not supported (supported: one scale)")
    fields["anchor_scale"] = float(scales[0])
    ratios = tuple(float(r) for r in anchors.take("ratios"))
    anchors.need("strides", [4, 8, 16, 32, 64])
    anchors.need("center_offset", 0.0, 0.0)
    anchors.done()
    coder = part.part("bbox_coder")
    coder.kind(("DeltaXYWHBBoxCoder",))
    coder.need("target_means", [0.0] * 4, [0.0] * 4)
    coder.need("target_stds", [1.0] * 4, [1.0] * 4)
    coder.need("clip_border", True, True)
    coder.done()
    _loss(part.part("loss_cls"), "CrossEntropyLoss", use_sigmoid=True, loss_weight=1.0)
    _loss(part.part("loss_bbox"), "SmoothL1Loss", beta=1.0 / 9.0, loss_weight=1.0)
    part.done(ignored=("init_cfg", "train_cfg", "test_cfg"))

    rpn_train = train_cfg.part("rpn")
    assigner = rpn_train.part("assigner")
    assigner.kind(("MaxIoUAssigner",))
    pos, neg = assigner.take("pos_iou_thr"), assigner.take("neg_iou_thr")
    min_pos = assigner.take("min_pos_iou", 0.0) if assigner.take("match_low_quality", True) else 0.0
    if assigner.value.get("match_low_quality", True) and min_pos <= 0:
        raise assigner.refuse(f"{assigner.where}.min_pos_iou={min_pos!r} with match_low_quality is not supported "
                              "(supported: above 0)")
    ignore = assigner.take("ignore_iof_thr", -1)
    assigner.need("gt_max_assign_all", True, True)
    _assigner_defaults(assigner)
    assigner.done()
    sampler = rpn_train.part("sampler")
    sampler.kind(("RandomSampler",))
    fields["rpn_samples_per_image"] = sampler.take("num")
    fraction = sampler.take("pos_fraction")
    sampler.need("neg_pos_ub", -1, -1)
    sampler.need("add_gt_as_proposals", False, False)
    sampler.done()
    rpn_train.need("allowed_border", 0, 0)
    rpn_train.need("pos_weight", -1, -1)
    rpn_train.done(ignored=("debug",))

    nms_iou = None
    for stage, prefix in ((train_cfg.part("rpn_proposal"), "train"), (test_cfg.part("rpn"), "test")):
        stage_nms = _nms(stage.part("nms"))
        if nms_iou is not None and stage_nms != nms_iou:
            raise stage.refuse(f"{stage.where}.nms.iou_threshold={stage_nms} differs from training's {nms_iou} "
                               "(supported: one RPN NMS IoU)")
        nms_iou = stage_nms
        keep = stage.take("max_per_img", stage.value.get("max_num"))
        pre = stage.take("nms_pre", keep)
        stage.take("max_num", None)
        stage.need("min_bbox_size", 0, 0)
        stage.done(ignored=("nms_across_levels", "nms_post"))
        fields[f"{prefix}_proposals"] = keep
        fields[f"{prefix}_proposals_pre_nms"] = None if pre == keep else pre
    return RPNHeadConfig(ratios=ratios, nms_iou=nms_iou, positive_fraction=fraction, pos_iou=pos, neg_iou=neg,
                         min_pos_iou=min_pos, ignore_iof_thr=ignore)


def _assigner_defaults(assigner: Part) -> None:
    """MaxIoUAssigner settings we compute with only in their default form."""
    assigner.need("ignore_wrt_candidates", True, True)
    assigner.need("iou_calculator", {"type": "BboxOverlaps2D"}, {"type": "BboxOverlaps2D"})


def _nms(part: Part) -> float:
    part.need("type", {"nms"}, "nms")
    iou = part.take("iou_threshold")
    part.done(ignored=("split_thr",))
    return iou


def _per_stage(value: Any, count: int, where: str, source: str) -> list[Any]:
    """A cascade's per-stage setting: a list of ``count``, or one dict for every stage."""
    if isinstance(value, dict):
        return [value] * count
    if not isinstance(value, (list, tuple)) or len(value) != count:
        raise ConfigError(f"{source}: {where} needs one entry per stage ({count})")
    return list(value)


def _roi_head(part: Part, channels: int, train_cfg: Part, test_cfg: Part, fields: dict[str, Any]
              ) -> tuple[CascadeRoIHeadConfig, int]:
    part.kind(("CascadeRoIHead",))
    count = part.take("num_stages")
    weights = tuple(float(w) for w in part.take("stage_loss_weights"))
    if len(weights) != count:
        raise part.refuse(f"{part.where}.stage_loss_weights has {len(weights)} entries for {count} stages")
    box_size, strides = _extractor(part.part("bbox_roi_extractor"), channels)
    heads = [Part(head, f"{part.where}.bbox_head[{i}]", part.source)
             for i, head in enumerate(_per_stage(part.take("bbox_head"), count, f"{part.where}.bbox_head",
                                                 part.source))]
    specs, stds, num_classes = [], [], None
    for head in heads:
        spec, head_stds, head_classes, fc = _box_head(head, channels, box_size)
        if num_classes not in (None, head_classes) or (specs and (spec, fc) != (specs[0], fields["fc_channels"])):
            raise head.refuse(f"{head.where} differs from bbox_head[0] (supported: the same head in every stage)")
        specs.append(spec)
        stds.append(head_stds)
        num_classes = head_classes
        fields["fc_channels"] = fc
    fields.update(box_head=specs[0], stage_stds=tuple(stds), stage_loss_weights=weights)
    with_mask = "mask_head" in part.value
    mask_size = None
    if with_mask:
        mask_size, mask_strides = _extractor(part.part("mask_roi_extractor"), channels)
        if mask_strides != strides:
            raise part.refuse(f"{part.where}.mask_roi_extractor.featmap_strides differ from the box extractor's")
        masks = [Part(head, f"{part.where}.mask_head[{i}]", part.source)
                 for i, head in enumerate(_per_stage(part.take("mask_head"), count, f"{part.where}.mask_head",
                                                     part.source))]
        mask_specs = {_mask_head(head, channels, num_classes, mask_size) for head in masks}
        if len(mask_specs) != 1:
            raise part.refuse(f"{part.where}.mask_head differs between stages (supported: the same head in each)")
        fields["mask_head"], mask_channels = mask_specs.pop()
        fields["mask_channels"] = None if mask_channels == channels else mask_channels
    fields["with_mask"] = with_mask
    part.done(ignored=("init_cfg", "train_cfg", "test_cfg", "shared_head"))
    if part.value.get("shared_head") is not None:
        raise part.refuse(f"{part.where}.shared_head is not supported")

    stages = [Part(stage, f"model.train_cfg.rcnn[{i}]", part.source)
              for i, stage in enumerate(_per_stage(train_cfg.take("rcnn"), count, "model.train_cfg.rcnn",
                                                   part.source))]
    ious, rois, fraction, ignore = [], None, None, None
    for stage in stages:
        stage_iou, stage_rois, stage_fraction, stage_ignore = _rcnn_stage(stage, mask_size)
        if rois not in (None, stage_rois) or fraction not in (None, stage_fraction) or ignore not in (None,
                                                                                                     stage_ignore):
            raise stage.refuse(f"{stage.where}: sampler num / pos_fraction / ignore_iof_thr differ between stages "
                               "(supported: the same in every stage)")
        ious.append(stage_iou)
        rois, fraction, ignore = stage_rois, stage_fraction, stage_ignore
    train_cfg.done()
    fields.update(stage_ious=tuple(ious), rois_per_image=rois)
    rcnn = test_cfg.part("rcnn")
    fields["test_score_thr"] = rcnn.take("score_thr")
    fields["test_nms_iou"] = _nms(rcnn.part("nms"))
    fields["test_max_per_image"] = rcnn.take("max_per_img")
    fields["mask_threshold"] = rcnn.take("mask_thr_binary", 0.5)
    rcnn.done()
    test_cfg.done()
    return CascadeRoIHeadConfig(positive_fraction=fraction, box_roi_size=box_size,
                                mask_roi_size=mask_size or CascadeRoIHeadConfig.mask_roi_size,
                                featmap_strides=strides, ignore_iof_thr=ignore), num_classes


def _extractor(part: Part, channels: int) -> tuple[int, tuple[int, ...]]:
    part.kind(("SingleRoIExtractor",))
    layer = part.part("roi_layer")
    layer.kind(("RoIAlign",))
    size = layer.take("output_size")
    layer.need("sampling_ratio", 0, 0)
    layer.need("aligned", True, True)
    layer.need("pool_mode", "avg", "avg")
    layer.done(ignored=("use_torchvision",))
    part.need("out_channels", channels)
    strides = _ints(part.take("featmap_strides"), f"{part.where}.featmap_strides", part.source)
    part.need("finest_scale", 56, 56)
    part.done(ignored=("init_cfg", "gc_context"))
    return size, strides


def _box_head(part: Part, channels: int, roi_size: int) -> tuple[Any, tuple[float, ...], int, int]:
    kind = part.kind(("Shared2FCBBoxHead", "Shared4Conv1FCBBoxHead", "ConvFCBBoxHead"))
    convs = part.take("num_shared_convs", {"Shared2FCBBoxHead": 0, "Shared4Conv1FCBBoxHead": 4}.get(kind, 0))
    fcs = part.take("num_shared_fcs", {"Shared2FCBBoxHead": 2, "Shared4Conv1FCBBoxHead": 1}.get(kind, 0))
    for key in ("num_cls_convs", "num_cls_fcs", "num_reg_convs", "num_reg_fcs"):
        part.need(key, 0, 0)
    if (convs, fcs) not in ((0, 2), (4, 1)):
        raise part.refuse(f"{part.where}: {convs} shared convs and {fcs} shared fcs are not supported (supported: "
                          "0 and 2 (Shared2FCBBoxHead), 4 and 1 (Shared4Conv1FCBBoxHead))")
    part.need("in_channels", channels)
    part.need("roi_feat_size", roi_size, 7)
    num_classes = part.take("num_classes")
    fc = part.take("fc_out_channels", 1024)
    coder = part.part("bbox_coder")
    coder.kind(("DeltaXYWHBBoxCoder",))
    coder.need("target_means", [0.0] * 4, [0.0] * 4)
    stds = tuple(float(s) for s in coder.take("target_stds"))
    coder.need("clip_border", True, True)
    coder.done()
    _loss(part.part("loss_cls"), "CrossEntropyLoss", use_sigmoid=False, loss_weight=1.0)
    agnostic = part.take("reg_class_agnostic", False)
    decoded = part.take("reg_decoded_bbox", False)
    loss_box = part.part("loss_bbox")
    if convs == 0:
        part.need("reg_class_agnostic", True, False)
        if decoded:
            raise part.refuse(f"{part.where}.reg_decoded_bbox=True is not supported with two shared fcs")
        _loss(loss_box, "SmoothL1Loss", beta=1.0, loss_weight=1.0)
        spec = SharedFCBoxHeadConfig()
    else:
        if not decoded:
            raise part.refuse(f"{part.where}.reg_decoded_bbox=False is not supported with 4 shared convs "
                              "(supported: True, with GIoULoss)")
        loss_box.kind(("GIoULoss",))
        weight = loss_box.take("loss_weight", 1.0)
        loss_box.done()
        norm = part.part("norm_cfg")
        norm.need("type", {"BN", "SyncBN"})
        norm.need("eps", 1e-5, 1e-5)
        norm.done(ignored=("requires_grad", "momentum"))
        spec = ConvFCBoxHeadConfig(conv_channels=part.take("conv_out_channels", 256), class_agnostic=agnostic,
                                   giou_loss_weight=float(weight))
    for key, default in (("with_avg_pool", False), ("with_cls", True), ("with_reg", True),
                         ("predict_box_type", "hbox"), ("reg_predictor_cfg", {"type": "Linear"}),
                         ("cls_predictor_cfg", {"type": "Linear"})):
        part.need(key, default, default)
    part.done(ignored=("init_cfg", "conv_cfg", "act_cfg"))
    return spec, stds, num_classes, fc


def _mask_head(part: Part, channels: int, num_classes: int, roi_size: int) -> tuple[FCNMaskHeadConfig, int]:
    part.kind(("FCNMaskHead",))
    part.need("in_channels", channels)
    part.need("num_classes", num_classes)
    part.need("roi_feat_size", roi_size, 14)
    part.need("conv_kernel_size", 3, 3)
    part.need("class_agnostic", False, False)
    part.need("upsample_cfg", {"type": "deconv", "scale_factor": 2}, {"type": "deconv", "scale_factor": 2})
    part.need("predictor_cfg", {"type": "Conv"}, {"type": "Conv"})
    for key in ("conv_cfg", "norm_cfg"):
        part.need(key, None, None)
    mask_channels = part.take("conv_out_channels", 256)
    _loss(part.part("loss_mask"), "CrossEntropyLoss", use_mask=True, loss_weight=1.0)
    spec = FCNMaskHeadConfig(num_convs=part.take("num_convs", 4))
    part.done(ignored=("init_cfg",))
    return spec, mask_channels


def _rcnn_stage(part: Part, mask_size: int | None) -> tuple[float, int, float, float]:
    assigner = part.part("assigner")
    assigner.kind(("MaxIoUAssigner",))
    pos = assigner.take("pos_iou_thr")
    assigner.need("neg_iou_thr", pos)
    assigner.need("min_pos_iou", pos, pos)
    assigner.need("match_low_quality", False, True)
    ignore = assigner.take("ignore_iof_thr", -1)
    _assigner_defaults(assigner)
    assigner.done(ignored=("gt_max_assign_all",))
    sampler = part.part("sampler")
    sampler.kind(("RandomSampler",))
    num, fraction = sampler.take("num"), sampler.take("pos_fraction")
    sampler.need("neg_pos_ub", -1, -1)
    sampler.need("add_gt_as_proposals", True, True)
    sampler.done()
    if mask_size is not None:
        part.need("mask_size", 2 * mask_size)
    else:
        part.take("mask_size", None)
    part.need("pos_weight", -1, -1)
    part.done(ignored=("debug",))
    return float(pos), num, float(fraction), float(ignore)


def _class_names(config: dict[str, Any], num_classes: int, source: str) -> tuple[str, ...]:
    """The data set's class names the config states (3.x ``metainfo``, 2.x ``classes``)."""
    for found in (dig(config, "metainfo", "classes"), dig(config, "train_dataloader", "dataset", "metainfo",
                                                           "classes"),
                  config.get("classes"), dig(config, "data", "train", "classes")):
        if found:
            return tuple(str(name) for name in ([found] if isinstance(found, str) else found))
    return COCO_CLASSES if num_classes == len(COCO_CLASSES) else tuple(f"class{i}" for i in range(num_classes))


def dig(value: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def dataset(config: dict[str, Any], split: str) -> dict[str, Any]:
    """The ``split`` ("train", "val", "test") data set's settings (3.x dataloader's, 2.x ``data``'s),
    inside any wrapper (``RepeatDataset``); {} if the config has none."""
    found = dig(config, f"{split}_dataloader", "dataset") or dig(config, "data", split)
    while isinstance(found, dict) and isinstance(found.get("dataset"), dict):
        found = found["dataset"]
    return found if isinstance(found, dict) else {}


def pipeline(config: dict[str, Any], split: str) -> list[Any]:
    """The steps MMDetection runs on ``split``'s images: its data set's pipeline (mmengine copies
    the top-level ``*_pipeline`` variable there when the file is read), else that variable."""
    return dataset(config, split).get("pipeline") or config.get(f"{split}_pipeline") or []


def _test_resize(config: dict[str, Any]) -> dict[str, Any] | None:
    """The ``Resize`` step of the test pipeline (2.x: ``MultiScaleFlipAug``'s ``img_scale``)."""
    for step in pipeline(config, "test"):
        if isinstance(step, dict) and step.get("type") == "Resize":
            return step
        if isinstance(step, dict) and step.get("type") == "MultiScaleFlipAug":
            inner = [s for s in step.get("transforms", []) if isinstance(s, dict) and s.get("type") == "Resize"]
            return {"type": "Resize", "scale": step.get("img_scale"),
                    "keep_ratio": inner[0].get("keep_ratio") if inner else None, "flip": step.get("flip", False)}
    return None


def _resize(config: dict[str, Any], source: str) -> tuple[tuple[int, int], Any]:
    """(test scale, training scale range or None)."""
    step = _test_resize(config)
    if step is None:
        raise ConfigError(f"{source}: the test pipeline has no Resize step (supported: Resize with keep_ratio=True)")
    scale = step.get("scale", step.get("img_scale"))
    if isinstance(scale, list) and len(scale) == 1:
        scale = scale[0]
    if not (isinstance(scale, (list, tuple)) and len(scale) == 2 and all(isinstance(s, int) for s in scale)):
        raise ConfigError(f"{source}: test Resize scale={scale!r} is not supported (supported: one (long, short) "
                          "scale: a test resize over a range or several scales is test-time augmentation)")
    if step.get("keep_ratio") is not True:
        raise ConfigError(f"{source}: test Resize keep_ratio={step.get('keep_ratio')!r} is not supported "
                          "(supported: True)")
    if step.get("flip"):
        raise ConfigError(f"{source}: a flipped test pipeline is test-time augmentation: run predict(tta='flip')")
    image_scale = (max(scale), min(scale))
    return image_scale, _train_scale_range(config, image_scale, source)


# DETR's multi-scale crop augmentation as MMDetection's ConvNeXt configs spell it (data/resize_crop.py).
_SHORT_SIDES = [(side, 1333) for side in range(480, 801, 32)]
MS_CROP = {"type": "RandomChoice", "transforms": [
    [{"type": "RandomChoiceResize", "scales": _SHORT_SIDES, "keep_ratio": True}],
    [{"type": "RandomChoiceResize", "scales": [(400, 1333), (500, 1333), (600, 1333)], "keep_ratio": True},
     {"type": "RandomCrop", "crop_type": "absolute_range", "crop_size": (384, 600), "allow_negative_crop": True},
     {"type": "RandomChoiceResize", "scales": _SHORT_SIDES, "keep_ratio": True}]]}
RESIZE_CROP = "ms-crop"  # what _train_scale_range returns for it


def _train_scale_range(config: dict[str, Any], image_scale: tuple[int, int], source: str) -> Any:
    for step in pipeline(config, "train"):
        if isinstance(step, dict) and step.get("type") == "RandomChoice":
            if _hashable(step) != _hashable(MS_CROP):
                raise ConfigError(f"{source}: training RandomChoice {step!r} is not supported (supported: DETR's "
                                  "multi-scale crop, as MMDetection's ConvNeXt configs)")
            return RESIZE_CROP
        if not isinstance(step, dict) or step.get("type") not in ("Resize", "RandomResize"):
            continue
        scale = step.get("scale", step.get("img_scale"))
        ranged = step.get("type") == "RandomResize" or step.get("multiscale_mode") == "range"
        if ranged and isinstance(scale, (list, tuple)) and len(scale) == 2 \
                and all(isinstance(s, (list, tuple)) for s in scale):
            return tuple((max(s), min(s)) for s in scale)
        if isinstance(scale, (list, tuple)) and len(scale) == 1:
            scale = scale[0]
        if isinstance(scale, (list, tuple)) and len(scale) == 2 and all(isinstance(s, int) for s in scale):
            fixed = (max(scale), min(scale))
            return None if fixed == image_scale else (fixed, fixed)  # another fixed scale: a range of one
        raise ConfigError(f"{source}: training {step.get('type')} scale={scale!r} is not supported (supported: "
                          "one (long, short) scale, or RandomResize over two scales)")
    return None


def _schedule(config: dict[str, Any]) -> str:
    """Our schedule name of the config's epochs (times a ``RepeatDataset``'s repeats: the 3x rows)."""
    return SCHEDULE_NAMES.get(training_epochs(config), "1x")


def training_epochs(config: dict[str, Any]) -> int | None:
    """The config's training epochs, times a ``RepeatDataset``'s repeats (the 3x rows: 12 x 3)."""
    epochs = dig(config, "train_cfg", "max_epochs") or dig(config, "runner", "max_epochs") or \
        config.get("total_epochs")
    return epochs * dataset_repeats(config) if isinstance(epochs, int) else None


def dataset_repeats(config: dict[str, Any]) -> int:
    wrapper = dig(config, "train_dataloader", "dataset") or dig(config, "data", "train") or {}
    return wrapper.get("times", 1) if isinstance(wrapper, dict) and wrapper.get("type") == "RepeatDataset" else 1
