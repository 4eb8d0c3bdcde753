"""RoI heads: pyramid features + RPN proposals -> detections (inference) or losses (training).

The contract (``ModelConfig.roi_heads``) - no registry, any object will do:

- the spec: a frozen dataclass with ``build(config, in_channels, strides) -> nn.Module``, given
  the neck's width and level strides;
- the module (its attribute name ``roi_head`` is MMDetection's checkpoint prefix):
  ``predict(features, rois, image_sizes, settings, path, stage=None, box_scales=None)
  -> BatchDetections`` (``models/detections.py``: flat boxes, scores, labels, image index and
  (N, S, S) mask probabilities of the detected class, or None) and ``loss(features, rois,
  targets, image_sizes, padded_size, path) -> dict of losses``, where ``features`` are the
  neck's maps, ``rois`` the (R, 5) proposals (image index, box in resized-image pixels), and
  ``image_sizes`` the (B, 2) unpadded (h, w). ``predict`` runs inside ONNX tracing too: per-op
  choices read ``path.exporting`` (``select_detections`` does the final NMS either way).
  Optional: ``predict_stages(features, rois, image_sizes, settings, path, stages, box_scales=None)
  -> list[BatchDetections]``, ``predict`` for several stages from one run (the cascade's
  per-stage evaluation); without it ``predict`` runs once per stage.

``cascade.py`` is the cascade, MMDetection's semantics; ``tests/test_custom_parts.py`` defines a
single-stage RoI head in the test file.
"""
