"""The model zoo: MMDetection's Cascade (Mask) R-CNN configs with published checkpoints (the 20 of the
v2 page, the 7 multi-scale 3x rows, 2 ConvNeXt rows), the official Swin repository's 3 Swin
Cascade Mask R-CNN rows, plus small project configs."""
from __future__ import annotations

from ..models.backbones.convnext import ConvNeXtConfig
from ..models.backbones.resnet import ResNetConfig
from ..models.backbones.swin import SwinConfig
from ..models.config import ModelConfig
from ..models.heads.box_head import ConvFCBoxHeadConfig
from ..models.input_norm import InputNorm

_BASE_URL = "https://download.openmmlab.com/mmdetection/v2.0/cascade_rcnn"

# ImageNet weights of MMDetection's init_cfg (mmengine's hub tables): torchvision://resnet50/101,
# open-mmlab://detectron2/resnet50_caffe / resnet101_caffe, open-mmlab://resnext101_32x4d / _64x4d,
# open-mmlab://detectron2/resnext101_32x8d.
_TORCHVISION = "https://download.pytorch.org/models"
_OPEN_MMLAB = "https://download.openmmlab.com/pretrain/third_party"

_BACKBONES = {
    "r50_caffe": ResNetConfig(depth=50, style="caffe", train_bn_affine=False,
                              imagenet_url=f"{_OPEN_MMLAB}/resnet50_msra-5891d200.pth"),
    "r50": ResNetConfig(depth=50, imagenet_url=f"{_TORCHVISION}/resnet50-0676ba61.pth"),
    "r101_caffe": ResNetConfig(depth=101, style="caffe", train_bn_affine=False,
                               imagenet_url=f"{_OPEN_MMLAB}/resnet101_msra-6cc46731.pth"),
    "r101": ResNetConfig(depth=101, imagenet_url=f"{_TORCHVISION}/resnet101-63fe2227.pth"),
    "x101_32x4d": ResNetConfig(depth=101, groups=32, width_per_group=4,
                               imagenet_url=f"{_OPEN_MMLAB}/resnext101_32x4d-a5af3160.pth"),
    "x101_64x4d": ResNetConfig(depth=101, groups=64, width_per_group=4,
                               imagenet_url=f"{_OPEN_MMLAB}/resnext101_64x4d-ee2c6f71.pth"),
    "x101_32x8d": ResNetConfig(depth=101, groups=32, width_per_group=8, train_bn_affine=False,
                               imagenet_url=f"{_OPEN_MMLAB}/resnext101_32x8d-1516f1aa.pth"),
}
# The ResNeXt-101 32x8d ImageNet weights are Detectron2's (converted from FAIR's Caffe2 X-101-32x8d),
# trained on BGR images normalised with a std as well: MMDetection's config for them sets BGR input
# with that mean and std, and keeps BatchNorm's scale and shift frozen, although the backbone is
# pytorch style (stride on the 3x3 conv).
_INPUT_NORMS = {"x101_32x8d": InputNorm((103.53, 116.28, 123.675), (57.375, 57.12, 58.395), bgr=True)}

# (model, backbone, schedule): box AP, mask AP, memory GB, fps, checkpoint file (MODEL_ZOO.md).
_PUBLISHED = [
    ("cascade_rcnn", "r50_caffe", "1x", 40.4, None, 4.2, None,
     "cascade_rcnn_r50_caffe_fpn_1x_coco_bbox_mAP-0.404_20200504_174853-b857be87.pth"),
    ("cascade_rcnn", "r50", "1x", 40.3, None, 4.4, 16.1,
     "cascade_rcnn_r50_fpn_1x_coco_20200316-3dc56deb.pth"),
    ("cascade_rcnn", "r50", "20e", 41.0, None, None, None,
     "cascade_rcnn_r50_fpn_20e_coco_bbox_mAP-0.41_20200504_175131-e9872a90.pth"),
    ("cascade_rcnn", "r101_caffe", "1x", 42.3, None, 6.2, None,
     "cascade_rcnn_r101_caffe_fpn_1x_coco_bbox_mAP-0.423_20200504_175649-cab8dbd5.pth"),
    ("cascade_rcnn", "r101", "1x", 42.0, None, 6.4, 13.5,
     "cascade_rcnn_r101_fpn_1x_coco_20200317-0b6a2fbf.pth"),
    ("cascade_rcnn", "r101", "20e", 42.5, None, None, None,
     "cascade_rcnn_r101_fpn_20e_coco_bbox_mAP-0.425_20200504_231812-5057dcc5.pth"),
    ("cascade_rcnn", "x101_32x4d", "1x", 43.7, None, 7.6, 10.9,
     "cascade_rcnn_x101_32x4d_fpn_1x_coco_20200316-95c2deb6.pth"),
    ("cascade_rcnn", "x101_32x4d", "20e", 43.7, None, 7.6, None,
     "cascade_rcnn_x101_32x4d_fpn_20e_coco_20200906_134608-9ae0a720.pth"),
    ("cascade_rcnn", "x101_64x4d", "1x", 44.7, None, 10.7, None,
     "cascade_rcnn_x101_64x4d_fpn_1x_coco_20200515_075702-43ce6a30.pth"),
    ("cascade_rcnn", "x101_64x4d", "20e", 44.5, None, 10.7, None,
     "cascade_rcnn_x101_64x4d_fpn_20e_coco_20200509_224357-051557b1.pth"),
    ("cascade_mask_rcnn", "r50_caffe", "1x", 41.2, 36.0, 5.9, None,
     "cascade_mask_rcnn_r50_caffe_fpn_1x_coco_bbox_mAP-0.412__segm_mAP-0.36_20200504_174659-5004b251.pth"),
    ("cascade_mask_rcnn", "r50", "1x", 41.2, 35.9, 6.0, 11.2,
     "cascade_mask_rcnn_r50_fpn_1x_coco_20200203-9d4dcb24.pth"),
    ("cascade_mask_rcnn", "r50", "20e", 41.9, 36.5, None, None,
     "cascade_mask_rcnn_r50_fpn_20e_coco_bbox_mAP-0.419__segm_mAP-0.365_20200504_174711-4af8e66e.pth"),
    ("cascade_mask_rcnn", "r101_caffe", "1x", 43.2, 37.6, 7.8, None,
     "cascade_mask_rcnn_r101_caffe_fpn_1x_coco_bbox_mAP-0.432__segm_mAP-0.376_20200504_174813-5c1e9599.pth"),
    ("cascade_mask_rcnn", "r101", "1x", 42.9, 37.3, 7.9, 9.8,
     "cascade_mask_rcnn_r101_fpn_1x_coco_20200203-befdf6ee.pth"),
    ("cascade_mask_rcnn", "r101", "20e", 43.4, 37.8, None, None,
     "cascade_mask_rcnn_r101_fpn_20e_coco_bbox_mAP-0.434__segm_mAP-0.378_20200504_174836-005947da.pth"),
    ("cascade_mask_rcnn", "x101_32x4d", "1x", 44.3, 38.3, 9.2, 8.6,
     "cascade_mask_rcnn_x101_32x4d_fpn_1x_coco_20200201-0f411b1f.pth"),
    ("cascade_mask_rcnn", "x101_32x4d", "20e", 45.0, 39.0, 9.2, None,
     "cascade_mask_rcnn_x101_32x4d_fpn_20e_coco_20200528_083917-ed1f4751.pth"),
    ("cascade_mask_rcnn", "x101_64x4d", "1x", 45.3, 39.2, 12.2, 6.7,
     "cascade_mask_rcnn_x101_64x4d_fpn_1x_coco_20200203-9a2db89d.pth"),
    ("cascade_mask_rcnn", "x101_64x4d", "20e", 45.6, 39.5, 12.2, None,
     "cascade_mask_rcnn_x101_64x4d_fpn_20e_coco_20200512_161033-bdb5126a.pth"),
]


# MMDetection's multi-scale 3x rows (its v2.0 files, listed on its 3.x page; MMDetection 3.3's
# keys in ../shared/spec/mmdet_keys_modern): Cascade Mask R-CNN only, no fps reported, memory
# as trained. (backbone, box AP, mask AP, memory GB, checkpoint file)
_PUBLISHED_3X = [
    ("r50_caffe", 44.0, 38.1, 5.7, "cascade_mask_rcnn_r50_caffe_fpn_mstrain_3x_coco_20210707_002651-6e29b3a6.pth"),
    ("r50", 44.3, 38.5, 5.9, "cascade_mask_rcnn_r50_fpn_mstrain_3x_coco_20210628_164719-5bdc3824.pth"),
    ("r101_caffe", 45.4, 39.5, 7.7, "cascade_mask_rcnn_r101_caffe_fpn_mstrain_3x_coco_20210707_002620-a5bd2389.pth"),
    ("r101", 45.5, 39.6, 7.8, "cascade_mask_rcnn_r101_fpn_mstrain_3x_coco_20210628_165236-51a2d363.pth"),
    ("x101_32x4d", 46.3, 40.1, 9.0, "cascade_mask_rcnn_x101_32x4d_fpn_mstrain_3x_coco_20210706_225234-40773067.pth"),
    ("x101_32x8d", 46.1, 39.9, 12.1, "cascade_mask_rcnn_x101_32x8d_fpn_mstrain_3x_coco_20210719_180640-9ff7e76f.pth"),
    ("x101_64x4d", 46.6, 40.3, 12.0, "cascade_mask_rcnn_x101_64x4d_fpn_mstrain_3x_coco_20210719_210311-d3e64ba0.pth"),
]
# Their training resize: the short side drawn from 640..800 per image, the long side capped at 1333.
_MULTI_SCALE = ((1333, 640), (1333, 800))

# MMDetection's ConvNeXt Cascade Mask R-CNN rows (v2.0/convnext): mmpretrain's ConvNeXt with its
# downstream ImageNet weights, box heads of 4 shared convs with BatchNorm + 1 FC and one box per
# class. (arch, stochastic depth, box AP, mask AP, training memory GB, ImageNet file, checkpoint file)
_MMCLS = "https://download.openmmlab.com/mmclassification/v0/convnext/downstream"
_PUBLISHED_CONVNEXT = [
    ("tiny", 0.4, 50.3, 43.6, 9.0, "convnext-tiny_3rdparty_32xb128-noema_in1k_20220301-795e9634.pth",
     "cascade_mask_rcnn_convnext-t_p4_w7_fpn_giou_4conv1f_fp16_ms-crop_3x_coco_20220509_204200-8f07c40b.pth"),
    ("small", 0.6, 51.8, 44.8, 12.3, "convnext-small_3rdparty_32xb128-noema_in1k_20220301-303e75e3.pth",
     "cascade_mask_rcnn_convnext-s_p4_w7_fpn_giou_4conv1f_fp16_ms-crop_3x_coco_20220510_201004-3d24f5a4.pth"),
]
_CONVNEXT_URL = "https://download.openmmlab.com/mmdetection/v2.0/convnext"

# The Swin Cascade Mask R-CNN 3x rows of the official Swin detection repository
# (SwinTransformer/Swin-Transformer-Object-Detection README; configs
# cascade_mask_rcnn_swin_{tiny,small,base}_patch4_window7_mstrain_480-800_giou_4conv1f_adamw_3x_coco.py):
# the official Swin key layout, the same 4-conv box heads and ms-crop training as the ConvNeXt
# rows, AdamW (lr 1e-4, weight decay 0.05, none on norms and position-bias tables), ImageNet-1K
# initialisation from the official classification files. No memory or fps reported; the GitHub
# release files carry no hash in their names. (arch, stochastic depth, box AP, mask AP, file stem)
_SWIN_URL = "https://github.com/SwinTransformer/storage/releases/download"
_PUBLISHED_SWIN = [
    ("tiny", 0.2, 50.4, 43.7, "cascade_mask_rcnn_swin_tiny_patch4_window7"),
    ("small", 0.2, 51.9, 45.0, "cascade_mask_rcnn_swin_small_patch4_window7"),
    ("base", 0.3, 51.9, 45.0, "cascade_mask_rcnn_swin_base_patch4_window7"),
]


def _published_configs() -> dict[str, ModelConfig]:
    configs = {}
    for kind, backbone, schedule, box_ap, mask_ap, mem, fps, filename in _PUBLISHED:
        name = f"{kind}_{backbone}_fpn_{schedule}_coco"
        configs[name] = ModelConfig(
            name=name, backbone=_BACKBONES[backbone], with_mask=kind == "cascade_mask_rcnn",
            schedule=schedule, reported_box_ap=box_ap, reported_mask_ap=mask_ap,
            reported_mem_gb=mem, reported_fps=fps, url=f"{_BASE_URL}/{name}/{filename}")
    for backbone, box_ap, mask_ap, mem, filename in _PUBLISHED_3X:
        name = f"cascade_mask_rcnn_{backbone}_fpn_mstrain_3x_coco"
        configs[name] = ModelConfig(
            name=name, backbone=_BACKBONES[backbone], input_norm=_INPUT_NORMS.get(backbone), schedule="3x",
            train_scale_range=_MULTI_SCALE, reported_box_ap=box_ap, reported_mask_ap=mask_ap,
            reported_mem_gb=mem, url=f"{_BASE_URL}/{name}/{filename}")
    for arch, drop_path, box_ap, mask_ap, mem, imagenet, filename in _PUBLISHED_CONVNEXT:
        name = f"cascade_mask_rcnn_convnext-{arch[0]}_p4_w7_fpn_giou_4conv1f_fp16_ms-crop_3x_coco"
        configs[name] = ModelConfig(
            name=name, backbone=ConvNeXtConfig(arch, drop_path_rate=drop_path, imagenet_url=f"{_MMCLS}/{imagenet}"),
            box_head=ConvFCBoxHeadConfig(), schedule="3x", train_resize_crop=True,
            reported_box_ap=box_ap, reported_mask_ap=mask_ap,
            reported_mem_gb=mem, url=f"{_CONVNEXT_URL}/{name}/{filename}")
    for arch, drop_path, box_ap, mask_ap, name in _PUBLISHED_SWIN:
        backbone = SwinConfig.arch(arch, drop_path_rate=drop_path,
                                   imagenet_url=f"{_SWIN_URL}/v1.0.0/swin_{arch}_patch4_window7_224.pth")
        configs[name] = ModelConfig(
            name=name, backbone=backbone, box_head=ConvFCBoxHeadConfig(), schedule="3x", train_resize_crop=True,
            reported_box_ap=box_ap, reported_mask_ap=mask_ap, url=f"{_SWIN_URL}/v1.0.2/{name}.pth")
    return configs


# Project configs: a narrow ResNet-18 (base width 32) with a light FPN that trains
# from scratch on a CPU in minutes at 256 px (all layers trained, BatchNorm in training mode, fewer
# proposals and RoIs per image than COCO's 2000 / 512, anchors from 16 px). No published weights.
_PROJECT = {
    "cascade_mask_rcnn_r18w32_fpn_256": ModelConfig(
        name="cascade_mask_rcnn_r18w32_fpn_256",
        backbone=ResNetConfig(depth=18, base_channels=32, frozen_stages=0, norm_eval=False),
        fpn_channels=64, fc_channels=256, mask_channels=32, image_scale=(256, 256), anchor_scale=4.0,
        train_proposals=500, rois_per_image=64),
    "cascade_rcnn_r18w32_fpn_256": ModelConfig(
        name="cascade_rcnn_r18w32_fpn_256", with_mask=False,
        backbone=ResNetConfig(depth=18, base_channels=32, frozen_stages=0, norm_eval=False),
        fpn_channels=64, fc_channels=256, image_scale=(256, 256), anchor_scale=4.0,
        train_proposals=500, rois_per_image=64),
}

MODEL_ZOO: dict[str, ModelConfig] = {**_published_configs(), **_PROJECT}


def is_published(url: str) -> bool:
    """Whether ``url`` is one of the zoo's files (a detector or an ImageNet backbone): their names
    end in the first hex digits of their SHA-256, which every download of them is checked against
    (except the Swin rows' GitHub release files, whose names carry no hash)."""
    return any(url in (config.url, imagenet_url(config)) for config in MODEL_ZOO.values())


def imagenet_url(config: ModelConfig) -> str | None:
    """The ImageNet file ``config``'s backbone starts training from, if it names one (a backbone of
    your own need not: the contract is ``build()`` and ``input_norm``)."""
    return getattr(config.backbone, "imagenet_url", None)


def get_config(name: str) -> ModelConfig:
    """The zoo config called ``name``; a clear error listing the names otherwise."""
    try:
        return MODEL_ZOO[name]
    except KeyError:
        raise KeyError(f"unknown model {name!r}; known models: {', '.join(MODEL_ZOO)}") from None


def published_url(config: ModelConfig) -> str:
    """The URL of ``config``'s published checkpoint (MMDetection's zoo); a ValueError for the
    project configs and custom configs, which have none."""
    if config.url is None:
        raise ValueError(f"{config.name} has no published weights")
    return config.url


def reported_figure(value: float | None) -> str:
    """A figure of MMDetection's zoo tables as we print it: ``-`` where it reports none."""
    return "-" if value is None else f"{value:g}"
