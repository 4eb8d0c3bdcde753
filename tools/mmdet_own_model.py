"""Make the "your own MMDetection model" test data with MMDetection 3.x itself (run in a Python
environment that has mmdet/mmcv installed; this project never imports mmdet):

    python tools/mmdet_own_model.py SHAPES_DIR tests/data/mmdet_own_model

SHAPES_DIR is a generated shapes data set (``cascade-rcnn shapes SHAPES_DIR``: 5 classes). The
user-style config ``OUT/my_cascade.py`` (written beside the test data, ``_base_`` on MMDetection's
own ``cascade-mask-rcnn_r50_fpn_1x_coco.py`` as stored in ``tests/data/mmdet_configs``) changes
what a user changes: its 5 classes, a small ResNet-18 so the files stay small, the test scale,
the anchor ratios and scale, the proposal counts, the test thresholds and ``mask_thr_binary``.
MMDetection's own runner trains it one short epoch (8 iterations) and writes its checkpoint
(meta with the merged config and the class names, optimizer, message hub) and the merged config
into its work dir; both are kept as written. Then MMDetection's ``init_detector`` +
``inference_detector`` run on ``OUT/image.png`` with the config's test settings and again at
score 0, saved as ``OUT/detections.<CPU capability>.pt`` (``torch.load(weights_only=True)``).
"""
import argparse
import json
import os
import platform
import shutil
from pathlib import Path

import cv2
import numpy as np
import torch
from mmdet.apis import inference_detector, init_detector
from mmengine.config import Config
from mmengine.runner import Runner

BASE = "../mmdet_configs/configs/cascade_rcnn/cascade-mask-rcnn_r50_fpn_1x_coco.py"
CLASSES = ("circle", "triangle", "rectangle", "star", "ring")
# mmengine 0.10 loads checkpoints with torch.load's default, weights-only since torch 2.6, which
# refuses the message hub's HistoryBuffer: here, in MMDetection's environment, on the file its own
# runner just wrote, the full unpickler is allowed (this project's loader never does this).
os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
STAGE_STDS = ([0.1, 0.1, 0.2, 0.2], [0.05, 0.05, 0.1, 0.1], [0.033, 0.033, 0.067, 0.067])


def box_head(stds: list[float]) -> str:
    return (f"dict(type='Shared2FCBBoxHead', in_channels=16, fc_out_channels=32, roi_feat_size=7, num_classes=5, "
            f"bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[0.0, 0.0, 0.0, 0.0], target_stds={stds}), "
            "reg_class_agnostic=True, loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0), "
            "loss_bbox=dict(type='SmoothL1Loss', beta=1.0, loss_weight=1.0))")


def user_config(shapes: Path) -> str:
    """The config a user would write on top of MMDetection's (text, as they would keep it)."""
    heads = ",\n            ".join(box_head(stds) for stds in STAGE_STDS)
    return f'''_base_ = '{BASE}'

# Our own data set: 5 classes of generated shapes.
classes = {CLASSES!r}
metainfo = dict(classes=classes)
data_root = '{shapes}/'
model = dict(
    backbone=dict(depth=18, stem_channels=8, base_channels=8, frozen_stages=-1, norm_eval=False, init_cfg=None),
    neck=dict(in_channels=[8, 16, 32, 64], out_channels=16),
    rpn_head=dict(
        in_channels=16, feat_channels=16,
        anchor_generator=dict(type='AnchorGenerator', scales=[4], ratios=[0.5, 1.0, 2.0, 3.0],
                              strides=[4, 8, 16, 32, 64])),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=16),
        bbox_head=[
            {heads}],
        mask_roi_extractor=dict(out_channels=16),
        mask_head=dict(in_channels=16, conv_out_channels=8, num_classes=5)),
    train_cfg=dict(rpn_proposal=dict(nms_pre=600, max_per_img=300)),
    test_cfg=dict(
        rpn=dict(nms_pre=400, max_per_img=200),
        rcnn=dict(score_thr=0.02, nms=dict(type='nms', iou_threshold=0.6), max_per_img=60, mask_thr_binary=0.4)))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='Resize', scale=(320, 256), keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(320, 256), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
train_dataloader = dict(
    batch_size=2, num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, metainfo=metainfo, ann_file='annotations.json',
                 data_prefix=dict(img='images/'), pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1, num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, metainfo=metainfo, ann_file='annotations.json',
                 data_prefix=dict(img='images/'), pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations.json')
test_evaluator = val_evaluator
train_cfg = dict(max_epochs=1, val_interval=2)
randomness = dict(seed=0)
'''


def detections(model, image: Path, score_thr: float | None) -> dict:
    if score_thr is not None:
        model.cfg.model.test_cfg.rcnn.score_thr = score_thr
        model.roi_head.test_cfg.score_thr = score_thr
    with torch.no_grad():
        found = inference_detector(model, str(image)).pred_instances
    masks = found.masks.cpu().numpy().astype(bool)
    return {"boxes": found.bboxes.cpu(), "scores": found.scores.cpu(), "labels": found.labels.cpu(),
            "masks_packbits": torch.from_numpy(np.packbits(masks)), "masks_shape": torch.tensor(masks.shape)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("shapes", type=Path)
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(2)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    config_path = out / "my_cascade.py"
    config_path.write_text(user_config(args.shapes.resolve()))
    work = out / "work"
    config = Config.fromfile(str(config_path))
    config.work_dir = str(work)
    Runner.from_cfg(config).train()
    shutil.copy(work / "epoch_1.pth", out / "epoch_1.pth")
    shutil.copy(work / "my_cascade.py", out / "my_cascade_dumped.py")
    image = out / "image.png"
    first = sorted((args.shapes / "images").iterdir())[-1]  # a held-out-like image: the last one
    picture = cv2.imread(str(first))
    cv2.imwrite(str(image), np.ascontiguousarray(picture[20:300, :]))  # 280x320: not square
    model = init_detector(str(work / "my_cascade.py"), str(work / "epoch_1.pth"), device="cpu")
    capability = torch.backends.cpu.get_cpu_capability()
    vendor = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("vendor_id")), "")
    result = {"meta": {"cpu_capability": capability, "cpu_vendor": vendor, "cpu": platform.processor(),
                       "torch_num_threads": torch.get_num_threads(), "torch": str(torch.__version__)},
              "config_settings": detections(model, image, None), "score_0": detections(model, image, 0.0)}
    torch.save(result, out / f"detections.{capability}.pt")
    shutil.rmtree(work)
    print(json.dumps({"config_settings": len(result["config_settings"]["scores"]),
                      "score_0": len(result["score_0"]["scores"]), "capability": capability, "vendor": vendor}))


if __name__ == "__main__":
    main()
