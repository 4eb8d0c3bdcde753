"""For the scripts that run inside MMDetection's own environment (mmdet_reference.py,
mmdet_reference_losses.py, benchmarks/mmdet_worker.py): this project never imports mmdet."""
from pathlib import Path

import mmdet
from mmengine.config import Config


def load_config(name: str) -> Config:
    """A config inside mmdet/.mim (``configs/cascade_rcnn/x.py``), or a config file of ours
    (``tools/mmdet_configs/*.py``, which build on MMDetection's own with ``_base_ = "mmdet::..."``)."""
    path = Path(name)
    if not path.is_file():
        path = Path(mmdet.__file__).parent / ".mim" / name
    return Config.fromfile(str(path))
