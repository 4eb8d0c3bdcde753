"""Detectron2's model-zoo ``.pkl`` files, read without running their code.

Such a file is a pickle of ``{"model": {name: numpy array}, "__author__": ...}`` (older ones also
hold ``matching_heuristics`` or ``pixel_mean`` / ``pixel_std``). A pickle can name any importable
function and call it, so the unpickler here resolves only the few names numpy's own pickles use
(numpy 1's ``numpy.core`` and numpy 2's ``numpy._core`` spellings) plus plain containers; any other
name is refused before anything is imported. Even those are narrowed to what numpy writes: the
array constructor only as ``_reconstruct(ndarray, (0,), ...)``, bytes only as latin-1 text.
"""
from __future__ import annotations

import collections
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import CheckpointError

# Larger than any published Detectron2 checkpoint (ViTDet-H: ~2.6 GB); a bigger .pkl is refused unread.
MAX_BYTES = 8 * 2**30
NUMERIC_KINDS = "biufc"  # bool, signed / unsigned int, float, complex: what becomes a tensor


# What the pickle's ``numpy.ndarray`` resolves to: a token only ``_reconstruct`` accepts, so the
# pickle can never call ``ndarray(shape)`` itself (an allocation of its choosing). A bare object: it
# has no attributes a pickle's BUILD could set.
_NDARRAY = object()


# The functions numpy's own pickles call, taken from its ``__reduce__``: the installed numpy's
# objects whichever module spelling the file used, without importing numpy 2's deprecated ``numpy.core``.
_RECONSTRUCT = np.empty(0).__reduce__()[0]
_SCALAR = np.float32(0).__reduce__()[0]
_FROMBUFFER = np.empty(0).__reduce_ex__(5)[0]  # protocol 5's form of an array


def _reconstruct(cls: Any, shape: Any, typecode: Any) -> np.ndarray:
    """numpy's empty-array step of unpickling an array (its data comes next, by ``__setstate__``)."""
    if cls is not _NDARRAY or shape != (0,):
        raise pickle.UnpicklingError("an array built otherwise than numpy pickles one")
    return _RECONSTRUCT(np.ndarray, shape, typecode)


def _latin1_bytes(text: Any, encoding: Any) -> bytes:
    """``_codecs.encode`` as protocol 2 uses it to store ``bytes``: latin-1 text, nothing else."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError("an encoding call other than latin-1 bytes")
    return text.encode("latin1")


_ALLOWED = {
    **{(module, "_reconstruct"): _reconstruct for module in ("numpy.core.multiarray", "numpy._core.multiarray")},
    **{(module, "scalar"): _SCALAR for module in ("numpy.core.multiarray", "numpy._core.multiarray")},
    **{(module, "_frombuffer"): _FROMBUFFER for module in ("numpy.core.numeric", "numpy._core.numeric")},
    ("numpy", "ndarray"): _NDARRAY,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _latin1_bytes,
    ("collections", "OrderedDict"): collections.OrderedDict,
}


class _NumpyOnlyUnpickler(pickle.Unpickler):
    def __init__(self, file, path: Path) -> None:
        super().__init__(file, encoding="latin1")  # Python 2 pickles' array data is str: latin-1 keeps its bytes
        self.path = path

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise CheckpointError(f"{self.path}: refuses to load '{module}.{name}' (a Detectron2 checkpoint "
                                  "holds only numpy arrays)") from None


def load_numpy_pickle(path: Path) -> Any:
    """The object pickled at ``path``, if it is made of numpy arrays, numpy scalars and plain
    containers only; ``CheckpointError`` (one line, naming the file) for anything else, for a
    damaged or empty file, and for one over ``MAX_BYTES``."""
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(f"{path}: an empty file, not a Detectron2 .pkl checkpoint")
    if size > MAX_BYTES:
        raise CheckpointError(f"{path}: {size / 2**30:.1f} GiB, larger than any Detectron2 checkpoint "
                              f"({MAX_BYTES // 2**30} GiB at most are read)")
    with open(path, "rb") as file:
        try:
            return _NumpyOnlyUnpickler(file, path).load()
        except CheckpointError:
            raise
        except Exception as error:  # damaged bytes raise many types (UnpicklingError, EOFError, MemoryError, ...)
            reason = " ".join(str(error).split()) or type(error).__name__
            raise CheckpointError(f"{path}: not a readable Detectron2 .pkl checkpoint ({reason})") from None


def read_pkl_checkpoint(path: Path) -> dict[str, Any]:
    """A Detectron2 ``.pkl`` checkpoint as a checkpoint dict: its top-level entries, with the
    numpy arrays (at the top level or in a table such as ``model``) turned into tensors."""
    loaded = load_numpy_pickle(path)
    if not isinstance(loaded, dict):
        raise CheckpointError(f"{path}: not a checkpoint (holds a {type(loaded).__name__}, not a dict)")
    return {key: _as_tensors(value, path, key) for key, value in loaded.items()}


def _as_tensors(value: Any, path: Path, name: str) -> Any:
    if isinstance(value, dict):
        return {key: _as_tensors(item, path, f"{name}.{key}") for key, item in value.items()}
    if not isinstance(value, np.ndarray):
        return value
    if value.dtype.kind not in NUMERIC_KINDS:
        raise CheckpointError(f"{path}: {name} is an array of {value.dtype}, not of numbers")
    # Native byte order, contiguous and writable (what torch shares memory with), copied only if not.
    return torch.from_numpy(np.require(value, value.dtype.newbyteorder("="), ("C", "W")))
