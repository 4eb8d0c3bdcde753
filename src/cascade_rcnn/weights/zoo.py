"""The model zoo: MMDetection's Cascade (Mask) R-CNN configs with published checkpoints (the 20 of the
v2 page, the 7 multi-scale 3x rows, 2 ConvNeXt rows), the official Swin repository's 3 Swin
Cascade Mask R-CNN rows, plus small project configs."""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from ..detectron2_config.model import read_detectron2_model
from ..errors import did_you_mean
from ..mmdet_config import IMAGENET_FILES
from ..models.backbones.convnext import ConvNeXtConfig
from ..models.backbones.resnet import ResNetConfig
from ..models.backbones.swin import SwinConfig
from ..models.config import ModelConfig
from ..models.heads.box_head import ConvFCBoxHeadConfig
from ..models.input_norm import InputNorm

_BASE_URL = "https://download.openmmlab.com/mmdetection/v2.0/cascade_rcnn"

# ImageNet weights: the files MMDetection's init_cfg names (mmdet_config.IMAGENET_FILES).
_BACKBONES = {
    "r50_caffe": ResNetConfig(depth=50, style="caffe", train_bn_affine=False,
                              imagenet_url=IMAGENET_FILES["open-mmlab://detectron2/resnet50_caffe"]),
    "r50": ResNetConfig(depth=50, imagenet_url=IMAGENET_FILES["torchvision://resnet50"]),
    "r101_caffe": ResNetConfig(depth=101, style="caffe", train_bn_affine=False,
                               imagenet_url=IMAGENET_FILES["open-mmlab://detectron2/resnet101_caffe"]),
    "r101": ResNetConfig(depth=101, imagenet_url=IMAGENET_FILES["torchvision://resnet101"]),
    "x101_32x4d": ResNetConfig(depth=101, groups=32, width_per_group=4,
                               imagenet_url=IMAGENET_FILES["open-mmlab://resnext101_32x4d"]),
    "x101_64x4d": ResNetConfig(depth=101, groups=64, width_per_group=4,
                               imagenet_url=IMAGENET_FILES["open-mmlab://resnext101_64x4d"]),
    "x101_32x8d": ResNetConfig(depth=101, groups=32, width_per_group=8, train_bn_affine=False,
                               imagenet_url=IMAGENET_FILES["open-mmlab://detectron2/resnext101_32x8d"]),
}
# The ResNeXt-101 32x8d ImageNet weights are Detectron2's (converted from FAIR's Caffe2 X-101-32x8d),
# trained on BGR images normalised with a std as well: MMDetection's config for them sets BGR input
# with that mean and std, and keeps BatchNorm's scale and shift frozen, although the backbone is
# pytorch style (stride on the 3x3 conv).
_INPUT_NORMS = {"x101_32x8d": InputNorm((103.53, 116.28, 123.675), (57.375, 57.12, 58.395), bgr=True)}


@dataclass(frozen=True, kw_only=True)
class _Reported:
    """What a zoo table reports for one checkpoint; None where it reports nothing."""

    box_ap: float
    mask_ap: float | None = None
    mem_gb: float | None = None  # training memory, GB
    fps: float | None = None

    def figures(self) -> dict[str, float | None]:
        """The ``ModelConfig`` fields of these figures."""
        return dict(reported_box_ap=self.box_ap, reported_mask_ap=self.mask_ap, reported_mem_gb=self.mem_gb,
                    reported_fps=self.fps)


# The 3x rows' training resize: the short side drawn from 640..800 per image, the long side capped at 1333.
_MULTI_SCALE = ((1333, 640), (1333, 800))


@dataclass(frozen=True, kw_only=True)
class _ResNetRow(_Reported):
    """A ResNet / ResNeXt row of MMDetection's Cascade R-CNN page (MODEL_ZOO.md)."""

    kind: str  # "cascade_rcnn" or "cascade_mask_rcnn"
    backbone: str  # a key of _BACKBONES
    schedule: str  # "1x", "20e" or "3x"
    multi_scale: bool = False  # the 3x rows' training resize (_MULTI_SCALE)
    file: str  # the checkpoint's file name

    def config(self) -> ModelConfig:
        name = f"{self.kind}_{self.backbone}_fpn_{'mstrain_' if self.multi_scale else ''}{self.schedule}_coco"
        return ModelConfig(
            name=name, backbone=_BACKBONES[self.backbone], input_norm=_INPUT_NORMS.get(self.backbone),
            with_mask=self.kind == "cascade_mask_rcnn", schedule=self.schedule,
            train_scale_range=_MULTI_SCALE if self.multi_scale else None, url=f"{_BASE_URL}/{name}/{self.file}",
            **self.figures())


# MMDetection's v2 page (the 20 rows of its MODEL_ZOO.md), then its multi-scale 3x rows (its v2.0
# files, listed on its 3.x page; MMDetection 3.3's keys in ../shared/spec/mmdet_keys_modern):
# Cascade Mask R-CNN only, no fps reported, memory as trained.
_RESNET_ROWS = [
    _ResNetRow(kind="cascade_rcnn", backbone="r50_caffe", schedule="1x",
               box_ap=40.4, mem_gb=4.2,
               file="cascade_rcnn_r50_caffe_fpn_1x_coco_bbox_mAP-0.404_20200504_174853-b857be87.pth"),
    _ResNetRow(kind="cascade_rcnn", backbone="r50", schedule="1x",
               box_ap=40.3, mem_gb=4.4, fps=16.1,
               file="cascade_rcnn_r50_fpn_1x_coco_20200316-3dc56deb.pth"),
    _ResNetRow(kind="cascade_rcnn", backbone="r50", schedule="20e",
               box_ap=41.0,
               file="cascade_rcnn_r50_fpn_20e_coco_bbox_mAP-0.41_20200504_175131-e9872a90.pth"),
    _ResNetRow(kind="cascade_rcnn", backbone="r101_caffe", schedule="1x",
               box_ap=42.3, mem_gb=6.2,
               file="cascade_rcnn_r101_caffe_fpn_1x_coco_bbox_mAP-0.423_20200504_175649-cab8dbd5.pth"),
    _ResNetRow(kind="cascade_rcnn", backbone="r101", schedule="1x",
               box_ap=42.0, mem_gb=6.4, fps=13.5,
               file="cascade_rcnn_r101_fpn_1x_coco_20200317-0b6a2fbf.pth"),
    _ResNetRow(kind="cascade_rcnn", backbone="r101", schedule="20e",
               box_ap=42.5,
               file="cascade_rcnn_r101_fpn_20e_coco_bbox_mAP-0.425_20200504_231812-5057dcc5.pth"),
    _ResNetRow(kind="cascade_rcnn", backbone="x101_32x4d", schedule="1x",
               box_ap=43.7, mem_gb=7.6, fps=10.9,
               file="cascade_rcnn_x101_32x4d_fpn_1x_coco_20200316-95c2deb6.pth"),
    _ResNetRow(kind="cascade_rcnn", backbone="x101_32x4d", schedule="20e",
               box_ap=43.7, mem_gb=7.6,
               file="cascade_rcnn_x101_32x4d_fpn_20e_coco_20200906_134608-9ae0a720.pth"),
    _ResNetRow(kind="cascade_rcnn", backbone="x101_64x4d", schedule="1x",
               box_ap=44.7, mem_gb=10.7,
               file="cascade_rcnn_x101_64x4d_fpn_1x_coco_20200515_075702-43ce6a30.pth"),
    _ResNetRow(kind="cascade_rcnn", backbone="x101_64x4d", schedule="20e",
               box_ap=44.5, mem_gb=10.7,
               file="cascade_rcnn_x101_64x4d_fpn_20e_coco_20200509_224357-051557b1.pth"),
    _ResNetRow(kind="cascade_mask_rcnn", backbone="r50_caffe", schedule="1x",
               box_ap=41.2, mask_ap=36.0, mem_gb=5.9,
               file="cascade_mask_rcnn_r50_caffe_fpn_1x_coco_bbox_mAP-0.412__segm_mAP-0.36_20200504_174659-5004b251.pth"),
    _ResNetRow(kind="cascade_mask_rcnn", backbone="r50", schedule="1x",
               box_ap=41.2, mask_ap=35.9, mem_gb=6.0, fps=11.2,
               file="cascade_mask_rcnn_r50_fpn_1x_coco_20200203-9d4dcb24.pth"),
    _ResNetRow(kind="cascade_mask_rcnn", backbone="r50", schedule="20e",
               box_ap=41.9, mask_ap=36.5,
               file="cascade_mask_rcnn_r50_fpn_20e_coco_bbox_mAP-0.419__segm_mAP-0.365_20200504_174711-4af8e66e.pth"),
    _ResNetRow(kind="cascade_mask_rcnn", backbone="r101_caffe", schedule="1x",
               box_ap=43.2, mask_ap=37.6, mem_gb=7.8,
               file="cascade_mask_rcnn_r101_caffe_fpn_1x_coco_bbox_mAP-0.432__segm_mAP-0.376_20200504_174813-5c1e9599.pth"),
    _ResNetRow(kind="cascade_mask_rcnn", backbone="r101", schedule="1x",
               box_ap=42.9, mask_ap=37.3, mem_gb=7.9, fps=9.8,
               file="cascade_mask_rcnn_r101_fpn_1x_coco_20200203-befdf6ee.pth"),
    _ResNetRow(kind="cascade_mask_rcnn", backbone="r101", schedule="20e",
               box_ap=43.4, mask_ap=37.8,
               file="cascade_mask_rcnn_r101_fpn_20e_coco_bbox_mAP-0.434__segm_mAP-0.378_20200504_174836-005947da.pth"),
    _ResNetRow(kind="cascade_mask_rcnn", backbone="x101_32x4d", schedule="1x",
               box_ap=44.3, mask_ap=38.3, mem_gb=9.2, fps=8.6,
               file="cascade_mask_rcnn_x101_32x4d_fpn_1x_coco_20200201-0f411b1f.pth"),
    _ResNetRow(kind="cascade_mask_rcnn", backbone="x101_32x4d", schedule="20e",
               box_ap=45.0, mask_ap=39.0, mem_gb=9.2,
               file="cascade_mask_rcnn_x101_32x4d_fpn_20e_coco_20200528_083917-ed1f4751.pth"),
    _ResNetRow(kind="cascade_mask_rcnn", backbone="x101_64x4d", schedule="1x",
               box_ap=45.3, mask_ap=39.2, mem_gb=12.2, fps=6.7,
               file="cascade_mask_rcnn_x101_64x4d_fpn_1x_coco_20200203-9a2db89d.pth"),
    _ResNetRow(kind="cascade_mask_rcnn", backbone="x101_64x4d", schedule="20e",
               box_ap=45.6, mask_ap=39.5, mem_gb=12.2,
               file="cascade_mask_rcnn_x101_64x4d_fpn_20e_coco_20200512_161033-bdb5126a.pth"),
    _ResNetRow(kind="cascade_mask_rcnn", backbone="r50_caffe", schedule="3x", multi_scale=True,
               box_ap=44.0, mask_ap=38.1, mem_gb=5.7,
               file="cascade_mask_rcnn_r50_caffe_fpn_mstrain_3x_coco_20210707_002651-6e29b3a6.pth"),
    _ResNetRow(kind="cascade_mask_rcnn", backbone="r50", schedule="3x", multi_scale=True,
               box_ap=44.3, mask_ap=38.5, mem_gb=5.9,
               file="cascade_mask_rcnn_r50_fpn_mstrain_3x_coco_20210628_164719-5bdc3824.pth"),
    _ResNetRow(kind="cascade_mask_rcnn", backbone="r101_caffe", schedule="3x", multi_scale=True,
               box_ap=45.4, mask_ap=39.5, mem_gb=7.7,
               file="cascade_mask_rcnn_r101_caffe_fpn_mstrain_3x_coco_20210707_002620-a5bd2389.pth"),
    _ResNetRow(kind="cascade_mask_rcnn", backbone="r101", schedule="3x", multi_scale=True,
               box_ap=45.5, mask_ap=39.6, mem_gb=7.8,
               file="cascade_mask_rcnn_r101_fpn_mstrain_3x_coco_20210628_165236-51a2d363.pth"),
    _ResNetRow(kind="cascade_mask_rcnn", backbone="x101_32x4d", schedule="3x", multi_scale=True,
               box_ap=46.3, mask_ap=40.1, mem_gb=9.0,
               file="cascade_mask_rcnn_x101_32x4d_fpn_mstrain_3x_coco_20210706_225234-40773067.pth"),
    _ResNetRow(kind="cascade_mask_rcnn", backbone="x101_32x8d", schedule="3x", multi_scale=True,
               box_ap=46.1, mask_ap=39.9, mem_gb=12.1,
               file="cascade_mask_rcnn_x101_32x8d_fpn_mstrain_3x_coco_20210719_180640-9ff7e76f.pth"),
    _ResNetRow(kind="cascade_mask_rcnn", backbone="x101_64x4d", schedule="3x", multi_scale=True,
               box_ap=46.6, mask_ap=40.3, mem_gb=12.0,
               file="cascade_mask_rcnn_x101_64x4d_fpn_mstrain_3x_coco_20210719_210311-d3e64ba0.pth"),
]

_MMCLS = "https://download.openmmlab.com/mmclassification/v0/convnext/downstream"
_CONVNEXT_URL = "https://download.openmmlab.com/mmdetection/v2.0/convnext"


@dataclass(frozen=True, kw_only=True)
class _ConvNeXtRow(_Reported):
    """MMDetection's ConvNeXt Cascade Mask R-CNN rows (v2.0/convnext): mmpretrain's ConvNeXt with its
    downstream ImageNet weights, box heads of 4 shared convs with BatchNorm + 1 FC and one box per
    class, ms-crop 3x training."""

    arch: str  # a key of convnext.ARCHS
    drop_path_rate: float
    lr_decay_layers: int  # the layer-wise lr decay's num_layers (paramwise_cfg)
    imagenet_file: str  # mmpretrain's file under _MMCLS
    file: str  # the checkpoint's file name

    def config(self) -> ModelConfig:
        name = f"cascade_mask_rcnn_convnext-{self.arch[0]}_p4_w7_fpn_giou_4conv1f_fp16_ms-crop_3x_coco"
        backbone = ConvNeXtConfig(self.arch, drop_path_rate=self.drop_path_rate, layer_scale_init=1.0,
                                  imagenet_url=f"{_MMCLS}/{self.imagenet_file}", lr_decay_layers=self.lr_decay_layers)
        return ModelConfig(name=name, backbone=backbone, box_head=ConvFCBoxHeadConfig(), schedule="3x",
                           train_resize_crop=True, url=f"{_CONVNEXT_URL}/{name}/{self.file}", **self.figures())


_CONVNEXT_ROWS = [
    _ConvNeXtRow(arch="tiny", drop_path_rate=0.4, lr_decay_layers=6, box_ap=50.3, mask_ap=43.6, mem_gb=9.0,
                 imagenet_file="convnext-tiny_3rdparty_32xb128-noema_in1k_20220301-795e9634.pth",
                 file="cascade_mask_rcnn_convnext-t_p4_w7_fpn_giou_4conv1f_fp16_ms-crop_3x_coco_20220509_204200-8f07c40b.pth"),
    _ConvNeXtRow(arch="small", drop_path_rate=0.6, lr_decay_layers=12, box_ap=51.8, mask_ap=44.8, mem_gb=12.3,
                 imagenet_file="convnext-small_3rdparty_32xb128-noema_in1k_20220301-303e75e3.pth",
                 file="cascade_mask_rcnn_convnext-s_p4_w7_fpn_giou_4conv1f_fp16_ms-crop_3x_coco_20220510_201004-3d24f5a4.pth"),
]

_SWIN_URL = "https://github.com/SwinTransformer/storage/releases/download"


@dataclass(frozen=True, kw_only=True)
class _SwinRow(_Reported):
    """The Swin Cascade Mask R-CNN 3x rows of the official Swin detection repository
    (SwinTransformer/Swin-Transformer-Object-Detection README; configs
    cascade_mask_rcnn_swin_{tiny,small,base}_patch4_window7_mstrain_480-800_giou_4conv1f_adamw_3x_coco.py):
    the official Swin key layout, the same 4-conv box heads and ms-crop training as the ConvNeXt
    rows, AdamW (lr 1e-4, weight decay 0.05, none on norms and position-bias tables), ImageNet-1K
    initialisation from the official classification files. No memory or fps reported; the GitHub
    release files carry no hash in their names."""

    arch: str  # a key of swin.ARCHS
    drop_path_rate: float

    def config(self) -> ModelConfig:
        name = f"cascade_mask_rcnn_swin_{self.arch}_patch4_window7"
        backbone = SwinConfig.arch(self.arch, drop_path_rate=self.drop_path_rate,
                                   imagenet_url=f"{_SWIN_URL}/v1.0.0/swin_{self.arch}_patch4_window7_224.pth")
        return ModelConfig(name=name, backbone=backbone, box_head=ConvFCBoxHeadConfig(), schedule="3x",
                           train_resize_crop=True, url=f"{_SWIN_URL}/v1.0.2/{name}.pth", **self.figures())


_SWIN_ROWS = [
    _SwinRow(arch="tiny", drop_path_rate=0.2, box_ap=50.4, mask_ap=43.7),
    _SwinRow(arch="small", drop_path_rate=0.2, box_ap=51.9, mask_ap=45.0),
    _SwinRow(arch="base", drop_path_rate=0.3, box_ap=51.9, mask_ap=45.0),
]


_DETECTRON2_URL = "https://dl.fbaipublicfiles.com/detectron2"
# Detectron2's own config files (its configs/ tree, unmodified): the Detectron2 rows are read from them.
DETECTRON2_CONFIGS = Path(__file__).with_name("detectron2_configs")


@dataclass(frozen=True, kw_only=True)
class _Detectron2Row(_Reported):
    """A Cascade Mask R-CNN of Detectron2's model zoo (its MODEL_ZOO.md, "Cascade R-CNN" rows):
    named by its config path, built from Detectron2's own config file with Detectron2's rules
    (``detectron2_config``); the file is a pickle of numpy arrays in Detectron2's key layout,
    whose name carries the first 6 hex digits of its MD5."""

    config_path: str  # Detectron2's, under configs/, without .yaml
    file: str  # <model id>/model_final_<md5>.pkl
    schedule: str
    # Its MODEL.WEIGHTS, Detectron2's ImageNetPretrained/MSRA/R-50.pkl, as MMDetection converted it
    imagenet: str = "open-mmlab://detectron2/resnet50_caffe"

    def config(self) -> ModelConfig:
        read = read_detectron2_model(DETECTRON2_CONFIGS / f"{self.config_path}.yaml", self.config_path)
        return replace(read, schedule=self.schedule, framework="Detectron2",
                       backbone=replace(read.backbone, imagenet_url=IMAGENET_FILES[self.imagenet]),
                       url=f"{_DETECTRON2_URL}/{self.config_path}/{self.file}", **self.figures())


_DETECTRON2_ROWS = [
    _Detectron2Row(config_path="Misc/cascade_mask_rcnn_R_50_FPN_1x", schedule="1x", box_ap=42.1, mask_ap=36.4,
                   mem_gb=4.0, file="138602847/model_final_e9d89b.pkl"),
    _Detectron2Row(config_path="Misc/cascade_mask_rcnn_R_50_FPN_3x", schedule="3x", box_ap=44.3, mask_ap=38.5,
                   mem_gb=4.0, file="144998488/model_final_480dd8.pkl"),
]



@dataclass(frozen=True, kw_only=True)
class _ViTDetRow(_Reported):
    """A ViTDet Cascade Mask R-CNN of Detectron2's projects/ViTDet README (COCO and LVIS v1 tables):
    named by its config path under projects/ViTDet/configs, built from Detectron2's own resolution
    of that LazyConfig file (``detectron2_configs/ViTDet``); the file, as the other Detectron2 rows',
    a pickle of numpy arrays whose name carries the first 6 hex digits of its MD5. ``mem_gb`` is
    the README's training memory per GPU."""

    config_path: str  # e.g. "COCO/cascade_mask_rcnn_vitdet_b_100ep"
    file: str  # <folder>/<model id>/model_final_<md5>.pkl, under ViTDet/<COCO or LVIS>/

    def config(self) -> ModelConfig:
        read = read_detectron2_model(DETECTRON2_CONFIGS / "ViTDet" / f"{self.config_path}.yaml", self.config_path)
        dataset = self.config_path.split("/")[0]
        return replace(read, schedule=self.config_path.rsplit("_", 1)[1], framework="Detectron2",
                       url=f"{_DETECTRON2_URL}/ViTDet/{dataset}/{self.file}", **self.figures())


_VITDET_ROWS = [
    _ViTDetRow(config_path="COCO/cascade_mask_rcnn_vitdet_b_100ep", box_ap=54.0, mask_ap=46.7, mem_gb=12.3,
               file="cascade_mask_rcnn_vitdet_b/f325358525/model_final_435fa9.pkl"),
    _ViTDetRow(config_path="COCO/cascade_mask_rcnn_vitdet_l_100ep", box_ap=57.6, mask_ap=50.0, mem_gb=22.3,
               file="cascade_mask_rcnn_vitdet_l/f328021305/model_final_1a9f28.pkl"),
    _ViTDetRow(config_path="COCO/cascade_mask_rcnn_vitdet_h_75ep", box_ap=58.7, mask_ap=51.0, mem_gb=32.9,
               file="cascade_mask_rcnn_vitdet_h/f328730692/model_final_f05665.pkl"),
    _ViTDetRow(config_path="LVIS/cascade_mask_rcnn_vitdet_b_100ep", box_ap=43.0, mask_ap=38.9, mem_gb=15.2,
               file="cascade_mask_rcnn_vitdet_b/329226874/model_final_df306f.pkl"),
    _ViTDetRow(config_path="LVIS/cascade_mask_rcnn_vitdet_l_100ep", box_ap=49.2, mask_ap=44.5, mem_gb=24.9,
               file="cascade_mask_rcnn_vitdet_l/329042206/model_final_3e81c2.pkl"),
    _ViTDetRow(config_path="LVIS/cascade_mask_rcnn_vitdet_h_100ep", box_ap=51.5, mask_ap=46.6, mem_gb=35.5,
               file="cascade_mask_rcnn_vitdet_h/332552778/model_final_11bbb7.pkl"),
]


# Project configs: a narrow ResNet-18 (base width 32) with a light FPN that trains
# from scratch on a CPU in minutes at 256 px (all layers trained, BatchNorm in training mode, fewer
# proposals and RoIs per image than COCO's 2000 / 512, anchors from 16 px). No published weights.
_PROJECT = {
    "cascade_mask_rcnn_r18w32_fpn_256": ModelConfig(
        name="cascade_mask_rcnn_r18w32_fpn_256", framework="project",
        backbone=ResNetConfig(depth=18, base_channels=32, frozen_stages=0, norm_eval=False),
        fpn_channels=64, fc_channels=256, mask_channels=32, image_scale=(256, 256), anchor_scale=4.0,
        train_proposals=500, rois_per_image=64),
    "cascade_rcnn_r18w32_fpn_256": ModelConfig(
        name="cascade_rcnn_r18w32_fpn_256", framework="project", with_mask=False,
        backbone=ResNetConfig(depth=18, base_channels=32, frozen_stages=0, norm_eval=False),
        fpn_channels=64, fc_channels=256, image_scale=(256, 256), anchor_scale=4.0,
        train_proposals=500, rois_per_image=64),
}

_PUBLISHED = [row.config() for row in (*_RESNET_ROWS, *_CONVNEXT_ROWS, *_SWIN_ROWS, *_DETECTRON2_ROWS, *_VITDET_ROWS)]
MODEL_ZOO: dict[str, ModelConfig] = {config.name: config for config in _PUBLISHED} | _PROJECT


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
    """The zoo config called ``name``; otherwise an error naming the closest names."""
    try:
        return MODEL_ZOO[name]
    except KeyError:
        raise KeyError(f"unknown model {name!r}{did_you_mean(name, MODEL_ZOO)}; `cascade-rcnn models` lists all "
                       f"{len(MODEL_ZOO)}") from None


def published_url(config: ModelConfig) -> str:
    """The URL of ``config``'s published checkpoint (MMDetection's zoo); a ValueError for the
    project configs and custom configs, which have none."""
    if config.url is None:
        raise ValueError(f"{config.name} has no published weights")
    return config.url


def reported_figure(value: float | None) -> str:
    """A figure of MMDetection's zoo tables as we print it: ``-`` where it reports none."""
    return "-" if value is None else f"{value:g}"
