"""Detectron2's yacs configs (a run's ``config.yaml``, or a hand-written file with ``_BASE_``
files) read as data (``yacs_file.py``) onto Detectron2's defaults (``defaults.py``), and the values
a reader of them does not support refused by key (``supported.py``). ``ZOO_FILES``: Detectron2's own
config files of the zoo rows (its yacs files, and its resolution of the ViTDet LazyConfig files;
the folder's README says where each comes from)."""
from pathlib import Path

from .defaults import DEFAULTS
from .resolved import Detectron2Config
from .supported import ANY, RUN_ONLY_KEYS, refuse_unsupported
from .yacs_file import read_yacs_config

ZOO_FILES = Path(__file__).with_name("zoo_files")

__all__ = ["ANY", "DEFAULTS", "Detectron2Config", "RUN_ONLY_KEYS", "ZOO_FILES", "read_yacs_config", "refuse_unsupported"]
