"""The detector as a network, one module per part: backbones/ -> fpn -> rpn -> cascade (the
stages of heads/: box + mask), assembled in ``detector.py`` from a ``ModelConfig`` (``config.py``;
its text form for ``--set`` and checkpoints in ``settings.py``). No file or image I/O here."""
