# Not an MMDetection file: the official Swin-T Cascade Mask R-CNN row spelled with MMDetection 3.3's
# own SwinTransformer on its ConvNeXt cascade config (as tools/mmdet_configs/ does for the
# comparison with MMDetection, there with an mmdet:: base), for the config reader's test.
_base_ = '../configs/convnext/cascade-mask-rcnn_convnext-t-p4-w7_fpn_4conv1fc-giou_amp-ms-crop-3x_coco.py'
model = dict(
    backbone=dict(
        _delete_=True, type='SwinTransformer', embed_dims=96, depths=[2, 2, 6, 2], num_heads=[3, 6, 12, 24],
        window_size=7, mlp_ratio=4, qkv_bias=True, qk_scale=None, drop_rate=0.0, attn_drop_rate=0.0,
        drop_path_rate=0.2, patch_norm=True, out_indices=(0, 1, 2, 3), with_cp=False,
        convert_weights=False,
        init_cfg=dict(type='Pretrained', checkpoint='https://github.com/SwinTransformer/storage/releases/download/v1.0.0/swin_tiny_patch4_window7_224.pth')),
    neck=dict(in_channels=[96, 192, 384, 768]))
optim_wrapper = dict(paramwise_cfg=dict(_delete_=True, custom_keys=dict(
    norm=dict(decay_mult=0.0), relative_position_bias_table=dict(decay_mult=0.0),
    absolute_pos_embed=dict(decay_mult=0.0))))
