"""The one error type of the weights layer (checkpoints, downloads, the Hub)."""
from __future__ import annotations


class CheckpointError(ValueError):
    """A checkpoint that cannot be used or fetched; the message names the file (or URL) and the problem."""
