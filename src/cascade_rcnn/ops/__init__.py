"""Tensor operations the models are built from: box coding, target assignment and sampling,
RoIAlign (four kernels, chosen in ``roi_align.py``), NMS (chosen in ``nms.py``), mask pasting,
their export-only forms (``onnx_forms.py``), and the switchboard that decides which computation
runs (``compute_path.py``)."""
