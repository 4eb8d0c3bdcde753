"""MMDetection's own configs as the description of a model: the config file of a work dir, or the
config text a checkpoint of MMDetection carries, read as data (``text.py``) and mapped key by key
onto our ``ModelConfig`` (``model.py``), anything we do not build refused by name."""
from .model import IMAGENET_FILES, model_config
from .text import ConfigError, parse_config_text, read_config

__all__ = ["ConfigError", "IMAGENET_FILES", "model_config", "parse_config_text", "read_config"]
