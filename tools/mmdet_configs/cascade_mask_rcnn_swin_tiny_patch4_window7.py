"""MMDetection 3.3's spelling of the official Swin-T Cascade Mask R-CNN
(SwinTransformer/Swin-Transformer-Object-Detection,
cascade_mask_rcnn_swin_tiny_patch4_window7_mstrain_480-800_giou_4conv1f_adamw_3x_coco.py): MMDetection's
ConvNeXt cascade config (the same 4-conv + 1-fc class-specific GIoU box heads, mask heads and test
settings) with MMDetection's own SwinTransformer as the backbone. Used by tools/mmdet_reference.py;
the checkpoint must be in MMDetection's Swin layout (models/backbones/swin_layout.official_to_mmdet).
"""
_base_ = "mmdet::convnext/cascade-mask-rcnn_convnext-t-p4-w7_fpn_4conv1fc-giou_amp-ms-crop-3x_coco.py"
model = dict(
    backbone=dict(
        _delete_=True, type="SwinTransformer", embed_dims=96, depths=[2, 2, 6, 2], num_heads=[3, 6, 12, 24],
        window_size=7, mlp_ratio=4, qkv_bias=True, qk_scale=None, drop_rate=0.0, attn_drop_rate=0.0,
        drop_path_rate=0.2, patch_norm=True, out_indices=(0, 1, 2, 3), with_cp=False,
        convert_weights=False),
    neck=dict(in_channels=[96, 192, 384, 768]))
