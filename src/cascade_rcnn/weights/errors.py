"""The one error type of the weights layer (checkpoints, downloads, the Hub)."""
from __future__ import annotations

from ..errors import CascadeRCNNError


class CheckpointError(CascadeRCNNError, ValueError):
    """A checkpoint that cannot be used or fetched; the message names the file (or URL) and the problem."""
