"""Cascade R-CNN and Cascade Mask R-CNN (Cai & Vasconcelos), compatible with MMDetection v2 weights.

    import cascade_rcnn
    model = cascade_rcnn.build_model("cascade_mask_rcnn_r50_fpn_1x_coco", weights="zoo")
    detections = model.predict(["street.jpg"], score_thr=0.3)
"""
from .api import build_model
from .checkpoint import CheckpointError
from .config import ModelConfig
from .data.images import ImageError
from .deploy.export import export_onnx
from .deploy.onnx_runtime import OnnxDetector
from .models.backbone import BackboneConfig
from .models.detector import CascadeRCNN
from .results import Detections
from .zoo import MODEL_ZOO, get_config

__all__ = ["build_model", "BackboneConfig", "CascadeRCNN", "CheckpointError", "Detections",
           "ImageError", "MODEL_ZOO", "ModelConfig", "OnnxDetector", "export_onnx", "get_config"]
__version__ = "0.1.0"
