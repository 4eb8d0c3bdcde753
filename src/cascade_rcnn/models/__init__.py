"""The detector as a network composed of parts, each built from its spec in a ``ModelConfig``
(``config.py``; its text form for ``--set`` and checkpoints in ``settings.py``):
backbones/ -> necks/ (the FPN) -> rpn.py -> roi_heads/ (the cascade: roi_heads/cascade.py, running
the per-stage heads of heads/: box + mask), assembled in ``detector.py``; what inference returns
is ``detections.py``. No file or image I/O here."""
