"""Swin-S: the Swin-T config (see there) with 18 blocks in the third stage."""
_base_ = "./cascade_mask_rcnn_swin_tiny_patch4_window7.py"
model = dict(backbone=dict(depths=[2, 2, 18, 2]))
