"""Detectron2's yacs configs (a run's ``config.yaml``, or a hand-written file with ``_BASE_``
files) read as data (``yacs_file.py``) onto Detectron2's defaults (``defaults.py``), and the values
a reader of them does not support refused by key (``supported.py``)."""
from .defaults import DEFAULTS
from .resolved import Detectron2Config
from .supported import ANY, RUN_ONLY_KEYS, refuse_unsupported
from .yacs_file import read_yacs_config

__all__ = ["ANY", "DEFAULTS", "Detectron2Config", "RUN_ONLY_KEYS", "read_yacs_config", "refuse_unsupported"]
