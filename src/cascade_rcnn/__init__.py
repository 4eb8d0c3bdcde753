"""Cascade R-CNN and Cascade Mask R-CNN (Cai & Vasconcelos), compatible with MMDetection v2 weights.

    import cascade_rcnn
    model = cascade_rcnn.build_model("cascade_mask_rcnn_r50_fpn_1x_coco", weights="zoo")
    detections = model.predict(["street.jpg"], score_thr=0.3)
"""
from .api import build_model
from .data.images import ImageError
from .deploy.export import export_onnx
from .deploy.onnx_runtime import OnnxDetector
from .inference.predictor import CascadeRCNN
from .models.backbones.resnet import ResNetConfig
from .models.config import ModelConfig
from .ops.compute_path import EXACT, FAST, ComputePath
from .outputs.detections import Detections
from .outputs.fiftyone_adapter import fiftyone_model, to_fiftyone
from .outputs.supervision_adapter import from_supervision, to_supervision
from .weights import checkpoint
from .weights.checkpoint import CheckpointError, read_detectron2_state_dict
from .weights.zoo import MODEL_ZOO, get_config

__all__ = ["build_model", "CascadeRCNN", "CheckpointError", "ComputePath", "Detections", "EXACT", "FAST",
           "ImageError", "MODEL_ZOO", "ModelConfig", "OnnxDetector", "ResNetConfig", "checkpoint", "export_onnx",
           "fiftyone_model", "from_supervision", "get_config", "read_detectron2_state_dict", "to_fiftyone",
           "to_supervision"]
__version__ = "0.1.0"
