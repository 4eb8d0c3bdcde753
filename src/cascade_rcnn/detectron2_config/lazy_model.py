"""A Detectron2 LazyConfig dump (``lazy_file.py``) of ViTDet's Cascade Mask R-CNN mapped onto our
``ModelConfig``: each ``_target_`` must be the callable we build, each argument we follow is read
(Detectron2's class defaults where the dump leaves one out), and one whose value we cannot follow
is refused by its dotted key before any weight is read. The training parts our specs hold (the ViT's
optimizer rules and MAE initialisation, large-scale jitter) are ``lazy_training.py``'s. Detectron2's rules are the specs'
Detectron2 values (``DETECTRON2_RPN``, ``DETECTRON2_CASCADE``, ``DETECTRON2_RESIZE``); ViTDet's
parts are ``ViTConfig``, ``SimplePyramidConfig``, ``VITDET_BOX_HEAD``, ``VITDET_MASK_HEAD``.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..models.backbones.vit import LAYER_NORM_EPS, ViTConfig
from ..models.coco_classes import COCO_CATEGORY_IDS, COCO_CLASSES
from ..models.config import ModelConfig
from ..models.heads.box_head import VITDET_BOX_HEAD
from ..models.heads.mask_head import VITDET_MASK_HEAD
from ..models.input_norm import DETECTRON2_RESIZE, InputNorm
from ..models.lvis_classes import LVIS_CATEGORY_IDS, LVIS_CLASSES, LVIS_IMAGE_COUNTS
from ..models.necks.simple_pyramid import SimplePyramidConfig
from ..models.roi_heads.cascade import DETECTRON2_CASCADE
from ..models.rpn import DETECTRON2_RPN
from .lazy_file import read_lazy_dump
from .lazy_node import DumpNode
from .lazy_training import read_training_parts

_D2 = "detectron2.modeling."
LAYER_NORM = "torch.nn.modules.normalization.LayerNorm"
LEVELS = ["p2", "p3", "p4", "p5"]
# FastRCNNOutputLayers' arguments we follow (each stage's must equal stage 0's where it matters)
PREDICTOR_ARGUMENTS = ("input_shape", "box2box_transform", "num_classes", "test_score_thresh", "test_nms_thresh",
                       "test_topk_per_image", "cls_agnostic_bbox_reg", "smooth_l1_beta", "box_reg_loss_type",
                       "loss_weight", "use_sigmoid_ce", "use_fed_loss", "get_fed_loss_cls_weights",
                       "fed_loss_num_classes")


def read_lazy_model(path: str | Path, name: str | None = None) -> ModelConfig:
    """The ``ModelConfig`` of a LazyConfig dump of ViTDet's Cascade (Mask) R-CNN."""
    path = Path(path)
    tree = read_lazy_dump(path)
    model = DumpNode(tree.get("model"), "model", path, (_D2 + "GeneralizedRCNN",))
    pyramid = model.node("backbone", _D2 + "SimpleFeaturePyramid")
    rpn = model.node("proposal_generator", _D2 + "proposal_generator.RPN")
    heads = model.node("roi_heads", _D2 + "roi_heads.CascadeROIHeads")
    classes = _classes(tree, heads.get("num_classes"))
    stages = _stages(heads)
    short, longest = _test_resize(tree, path)
    fmt = model.get("input_format", "BGR")
    if fmt not in ("RGB", "BGR"):
        raise ConfigError(f"{path}: model.input_format = {fmt!r} is not supported (RGB or BGR)")
    mapper_format = tree["dataloader"]["test"]["mapper"].get("image_format", "BGR")
    if mapper_format != fmt:
        raise ConfigError(f"{path}: dataloader.test.mapper.image_format = {mapper_format!r} differs from "
                          f"model.input_format = {fmt!r}")
    box_head = _box_head(heads)
    mask_channels = _mask_head(heads)
    first = DumpNode(heads.get("box_predictors")[0], "model.roi_heads.box_predictors.0", path,
                  (_D2 + "FastRCNNOutputLayers",))
    pre_nms, post_nms = rpn.get("pre_nms_topk"), rpn.get("post_nms_topk")
    matcher = rpn.node("anchor_matcher", _D2 + "matcher.Matcher")
    matcher.need("labels", [0, -1, 1])
    matcher.need("allow_low_quality_matches", True)
    low, high = matcher.get("thresholds")
    training = read_training_parts(tree)  # what it does not follow keeps Detectron2's defaults here
    return ModelConfig(
        name=name or path.parent.name or path.stem, backbone=replace(_vit(pyramid), **training.vit),
        train_lsj=training.train_lsj, input_norm=InputNorm(
            tuple(model.get("pixel_mean")), tuple(model.get("pixel_std")), bgr=fmt == "BGR"),
        neck=_pyramid(pyramid),
        rpn_head=replace(DETECTRON2_RPN, num_convs=_rpn_convs(rpn), nms_iou=rpn.get("nms_thresh", 0.7),
                         ratios=_ratios(rpn), positive_fraction=rpn.get("positive_fraction", 0.5),
                         neg_iou=float(low), pos_iou=float(high), box_loss_beta=float(rpn.get("smooth_l1_beta", 0.0))),
        roi_heads=replace(DETECTRON2_CASCADE, stage_box_weights=tuple(weights for _, weights in stages),
                          positive_fraction=heads.get("positive_fraction", 0.25), **_class_scores(first, classes)),
        box_head=box_head, mask_head=VITDET_MASK_HEAD, with_mask="mask_head" in heads.tree,
        class_names=classes[0], category_ids=classes[1],
        fpn_channels=pyramid.get("out_channels"), fc_channels=_fc_dim(heads), mask_channels=mask_channels,
        image_scale=(longest, short), resize_rule=DETECTRON2_RESIZE, anchor_scale=_anchor_scale(rpn),
        stage_ious=tuple(iou for iou, _ in stages), stage_loss_weights=(1.0,) * len(stages),
        stage_stds=tuple(tuple(1.0 / w for w in weights) for _, weights in stages),
        train_proposals_pre_nms=pre_nms[0], train_proposals=post_nms[0],
        test_proposals_pre_nms=pre_nms[1], test_proposals=post_nms[1],
        rpn_samples_per_image=rpn.get("batch_size_per_image"), rois_per_image=heads.get("batch_size_per_image"),
        test_score_thr=float(first.get("test_score_thresh", 0.0)), test_nms_iou=float(first.get("test_nms_thresh", 0.5)),
        test_max_per_image=first.get("test_topk_per_image", 100))


def _classes(tree: dict, num_classes: int) -> tuple[tuple[str, ...], tuple[int, ...] | None]:
    """(class names, category ids): COCO's or LVIS v1's by the data set the config names and the
    class count; otherwise class_0, class_1, ... (``--class-names`` or the data set's names)."""
    names = {str(tree.get("dataloader", {}).get(split, {}).get("dataset", {}).get("names", ""))
             for split in ("train", "test")}
    if num_classes == len(LVIS_CLASSES) and any(name.startswith("lvis_v1") for name in names):
        return LVIS_CLASSES, LVIS_CATEGORY_IDS
    if num_classes == len(COCO_CLASSES):
        return COCO_CLASSES, COCO_CATEGORY_IDS
    return tuple(f"class_{i}" for i in range(num_classes)), None


def _class_scores(predictor: DumpNode, classes: tuple[tuple[str, ...], Any]) -> dict:
    """The cascade spec's scoring values: softmax, or use_sigmoid_ce's sigmoids and use_fed_loss's
    federated loss, whose class weights are LVIS v1's training image counts to the power 0.5
    (what the ViTDet LVIS configs' ``get_fed_loss_cls_weights`` lambda computes; a dump does not
    show the lambda, so only LVIS v1 is taken)."""
    sigmoid = bool(predictor.get("use_sigmoid_ce", False))
    if not predictor.get("use_fed_loss", False):
        return {"sigmoid_scores": sigmoid}
    if not sigmoid or classes[0] is not LVIS_CLASSES:
        raise ConfigError(f"{predictor.path}: {predictor.key}.use_fed_loss is supported with use_sigmoid_ce on LVIS v1 "
                          "only (its class image counts are the weights)")
    return {"sigmoid_scores": True, "fed_loss_classes": int(predictor.get("fed_loss_num_classes", 50)),
            "fed_loss_weights": tuple(count ** 0.5 for count in LVIS_IMAGE_COUNTS)}


def _vit(pyramid: DumpNode) -> ViTConfig:
    net = pyramid.node("net", _D2 + "ViT")
    net.need("use_rel_pos", True, False)
    net.need("use_abs_pos", True, True)
    net.need("residual_block_indexes", lambda v: not v, ())
    net.need("in_chans", 3, 3)
    net.need("norm_layer", lambda v: _layer_norm_eps(v) == LAYER_NORM_EPS)
    net.need("act_layer", lambda v: v is None or v == {"_name_": "torch.nn.modules.activation.GELU"})
    return ViTConfig(embed_dim=net.get("embed_dim", 768), depth=net.get("depth", 12),
                     num_heads=net.get("num_heads", 12), mlp_ratio=float(net.get("mlp_ratio", 4.0)),
                     patch_size=net.get("patch_size", 16), img_size=net.get("img_size", 1024),
                     window_size=net.get("window_size", 0),
                     window_blocks=tuple(net.get("window_block_indexes", ())),
                     pretrain_size=net.get("pretrain_img_size", 224),
                     pretrain_cls_token=net.get("pretrain_use_cls_token", True), qkv_bias=net.get("qkv_bias", True),
                     square_pad=pyramid.get("square_pad", 0), drop_path_rate=float(net.get("drop_path_rate", 0.0)))


def _layer_norm_eps(value: Any) -> float | None:
    """The eps of ``functools.partial(LayerNorm, eps=...)`` as the dump holds it (or nn.LayerNorm's 1e-5)."""
    if value is None or value == {"_name_": LAYER_NORM}:
        return 1e-5
    if isinstance(value, dict) and value.get("_apply_") == "functools.partial":
        state = value.get("state") or []
        if state and state[0] == {"_name_": LAYER_NORM} and len(state) > 2 and isinstance(state[2], dict):
            return state[2].get("eps", 1e-5)
    return None


def _pyramid(pyramid: DumpNode) -> SimplePyramidConfig:
    pyramid.need("norm", "LN", "LN")
    pyramid.need("in_feature", lambda v: v == pyramid.get("net", {}).get("out_feature", "last_feat"))
    pyramid.node("top_block", _D2 + "backbone.fpn.LastLevelMaxPool")
    pyramid.need("scale_factors", lambda v: list(v) == [4.0, 2.0, 1.0, 0.5])
    return SimplePyramidConfig(scale_factors=tuple(float(s) for s in pyramid.get("scale_factors")))


def _rpn_convs(rpn: DumpNode) -> int:
    head = rpn.node("head", _D2 + "proposal_generator.StandardRPNHead")
    head.need("conv_dims", lambda v: v and all(d == -1 for d in v), [-1])
    rpn.need("in_features", ["p2", "p3", "p4", "p5", "p6"])
    rpn.need("anchor_boundary_thresh", -1, -1)
    rpn.node("box2box_transform", _D2 + "box_regression.Box2BoxTransform").need("weights", [1.0, 1.0, 1.0, 1.0])
    return len(head.get("conv_dims", [-1]))


def _ratios(rpn: DumpNode) -> tuple[float, ...]:
    anchors = rpn.node("anchor_generator", _D2 + "anchor_generator.DefaultAnchorGenerator")
    anchors.need("offset", 0.0, 0.0)
    ratios = anchors.get("aspect_ratios")
    ratios = ratios[0] if ratios and isinstance(ratios[0], list) and len(ratios) == 1 else ratios
    if not all(isinstance(r, (int, float)) for r in ratios):
        raise ConfigError(f"{rpn.path}: {anchors.key}.aspect_ratios: per-level aspect ratios are not supported")
    return tuple(float(r) for r in ratios)


def _anchor_scale(rpn: DumpNode) -> float:
    anchors = rpn.node("anchor_generator", _D2 + "anchor_generator.DefaultAnchorGenerator")
    sizes, strides = anchors.get("sizes"), anchors.get("strides")
    scales = {size[0] / stride for size, stride in zip(sizes, strides) if len(size) == 1}
    if list(strides) != [4, 8, 16, 32, 64] or len(sizes) != 5 or len(scales) != 1:
        raise ConfigError(f"{rpn.path}: {anchors.key}.sizes = {sizes} is not supported (one size per level, the same "
                          "multiple of each level's stride 4..64)")
    return scales.pop()


def _stages(heads: DumpNode) -> list[tuple[float, tuple[float, ...]]]:
    """(IoU threshold, box weights) of each cascade stage."""
    matchers, predictors = heads.get("proposal_matchers"), heads.get("box_predictors")
    if not matchers or len(matchers) != len(predictors) or len(predictors) != len(heads.get("box_heads") or []):
        raise ConfigError(f"{heads.path}: {heads.key}: proposal_matchers, box_heads and box_predictors need one "
                          "entry per stage")
    stages = []
    for index, (matcher, predictor) in enumerate(zip(matchers, predictors)):
        matcher = DumpNode(matcher, f"{heads.key}.proposal_matchers.{index}", heads.path, (_D2 + "matcher.Matcher",))
        matcher.need("labels", [0, 1])
        matcher.need("allow_low_quality_matches", False)
        matcher.need("thresholds", lambda v: len(v) == 1)
        predictor = DumpNode(predictor, f"{heads.key}.box_predictors.{index}", heads.path, (_D2 + "FastRCNNOutputLayers",))
        predictor.only(*PREDICTOR_ARGUMENTS)
        predictor.need("cls_agnostic_bbox_reg", True)
        predictor.need("num_classes", heads.get("num_classes"))
        predictor.need("smooth_l1_beta", 0.0, 0.0)
        predictor.need("box_reg_loss_type", "smooth_l1", "smooth_l1")
        predictor.need("loss_weight", 1.0, 1.0)
        for name, default in (("test_score_thresh", 0.0), ("test_nms_thresh", 0.5), ("test_topk_per_image", 100),
                              ("use_sigmoid_ce", False), ("use_fed_loss", False), ("fed_loss_num_classes", 50)):
            predictor.need(name, predictors[0].get(name, default), default)
        transform = predictor.node("box2box_transform", _D2 + "box_regression.Box2BoxTransform")
        stages.append((float(matcher.get("thresholds")[0]), tuple(float(w) for w in transform.get("weights"))))
    for name, value in (("box_in_features", LEVELS), ("mask_in_features", LEVELS)):
        heads.need(name, value)
    for pooler, size in (("box_pooler", 7), ("mask_pooler", 14)):
        node = heads.node(pooler, _D2 + "poolers.ROIPooler")
        node.need("output_size", size)
        node.need("pooler_type", "ROIAlignV2")
        node.need("sampling_ratio", 0)
        node.need("scales", [0.25, 0.125, 0.0625, 0.03125])
    return stages


def _box_head(heads: DumpNode):
    dims = set()
    for index, head in enumerate(heads.get("box_heads")):
        head = DumpNode(head, f"{heads.key}.box_heads.{index}", heads.path, (_D2 + "roi_heads.FastRCNNConvFCHead",))
        head.need("conv_norm", "LN")
        head.need("conv_dims", lambda v: len(v) >= 1 and len(set(v)) == 1)
        head.need("fc_dims", lambda v: len(v) == 1)
        dims.add((tuple(head.get("conv_dims")), tuple(head.get("fc_dims"))))
    if len(dims) != 1:
        raise ConfigError(f"{heads.path}: {heads.key}.box_heads differ between stages (one head shape for all)")
    convs, _ = dims.pop()
    return replace(VITDET_BOX_HEAD, num_convs=len(convs), conv_channels=convs[0])


def _fc_dim(heads: DumpNode) -> int:
    return heads.get("box_heads")[0]["fc_dims"][0]


def _mask_head(heads: DumpNode) -> int | None:
    if "mask_head" not in heads.tree:
        return None
    head = heads.node("mask_head", _D2 + "roi_heads.MaskRCNNConvUpsampleHead")
    head.need("conv_norm", "LN")
    head.need("conv_dims", lambda v: len(v) == VITDET_MASK_HEAD.num_convs + 1 and len(set(v)) == 1)
    return head.get("conv_dims")[0]


def _test_resize(tree: dict, path: Path) -> tuple[int, int]:
    """(short, long) of the test loader's one ``ResizeShortestEdge``."""
    try:
        augmentations = tree["dataloader"]["test"]["mapper"]["augmentations"]
    except (KeyError, TypeError):
        raise ConfigError(f"{path}: dataloader.test.mapper.augmentations is missing (the test resize)") from None
    if len(augmentations) != 1:
        raise ConfigError(f"{path}: dataloader.test.mapper.augmentations: only one ResizeShortestEdge is supported")
    resize = DumpNode(augmentations[0], "dataloader.test.mapper.augmentations.0", path,
                   ("detectron2.data.transforms.ResizeShortestEdge",))
    resize.need("sample_style", "choice", "range" if isinstance(resize.get("short_edge_length"), list) else "choice")
    short = resize.get("short_edge_length")
    short = short[0] if isinstance(short, list) and len(short) == 1 else short
    if not isinstance(short, int) or short <= 0:
        raise ConfigError(f"{path}: {resize.key}.short_edge_length = {short!r} is not supported (one positive size)")
    return short, resize.get("max_size", 1333)
