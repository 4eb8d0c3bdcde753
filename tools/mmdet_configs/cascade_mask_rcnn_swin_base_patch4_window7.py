"""Swin-B: the Swin-T config (see there) 128 wide, 18 blocks in the third stage, more heads,
stochastic depth 0.3."""
_base_ = "./cascade_mask_rcnn_swin_tiny_patch4_window7.py"
model = dict(backbone=dict(embed_dims=128, depths=[2, 2, 18, 2], num_heads=[4, 8, 16, 32], drop_path_rate=0.3),
             neck=dict(in_channels=[128, 256, 512, 1024]))
