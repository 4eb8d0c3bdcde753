"""Refusing, key by key, the Detectron2 config values that a reader of the config does not support.

A reader of a resolved config (the mapping onto a model) gives a table of what it supports:
``{dotted key: allowed}``, where ``allowed`` is ``ANY``, a collection of allowed values, or a
predicate on the value. A key of the table may also be a group of keys (``"SOLVER"``), covering
every key under it. A value equal to Detectron2's default is always accepted, and so is any value
of ``RUN_ONLY_KEYS``: they say how a run goes, not what the model or its data are.
"""
from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from typing import Any, Union

from ..errors import ConfigError
from .defaults import DEFAULTS
from .resolved import Detectron2Config, as_tuples, dotted_leaves, short_repr, shortened

ANY = "any"
Allowed = Union[str, Collection[Any], Callable[[Any], bool]]

RUN_ONLY_KEYS = frozenset({
    "VERSION", "OUTPUT_DIR", "SEED", "CUDNN_BENCHMARK", "FLOAT32_PRECISION", "VIS_PERIOD", "GLOBAL",
    "MODEL.DEVICE", "MODEL.WEIGHTS", "SOLVER.CHECKPOINT_PERIOD", "TEST.EVAL_PERIOD", "TEST.EXPECTED_RESULTS",
    "DATALOADER.NUM_WORKERS",
})


def refuse_unsupported(config: Detectron2Config, supported: Mapping[str, Allowed]) -> None:
    """Raise a ``ConfigError`` for the first key (in Detectron2's order) whose value is neither
    Detectron2's default nor allowed by ``supported`` (module docstring), naming the key and the
    file that set it."""
    _check_table(supported)
    for key, default in dotted_leaves(DEFAULTS):
        value = config.value(key)
        if value == default or _entry(key, RUN_ONLY_KEYS) is not None:
            continue
        entry = _entry(key, supported)
        if entry is None:
            raise ConfigError(f"{config.source(key)}: {key} = {short_repr(value)} is not supported; only "
                              f"Detectron2's default, {short_repr(default)}, is")
        allowed = supported[entry]
        if not _allows(allowed, value):
            listed = "" if callable(allowed) else f" (supported: {_listing(allowed)})"
            raise ConfigError(f"{config.source(key)}: {key} = {short_repr(value)} is not supported{listed}")


def _entry(key: str, table: Collection[str]) -> str | None:
    """The key of ``table`` that covers ``key``: itself or the nearest group above it."""
    while key not in table:
        if "." not in key:
            return None
        key = key.rsplit(".", 1)[0]
    return key


def _allows(allowed: Allowed, value: Any) -> bool:
    if isinstance(allowed, str):  # ANY, as _check_table made sure
        return True
    if callable(allowed):
        return bool(allowed(value))
    return any(value == as_tuples(item) for item in allowed)


def _listing(allowed: Collection[Any]) -> str:
    return shortened(", ".join(sorted(repr(as_tuples(item)) for item in allowed)), limit=120)


def _check_table(supported: Mapping[str, Allowed]) -> None:
    """A table naming a key Detectron2 does not have, or an entry that is none of the three kinds,
    is a bug of its reader: a ``ValueError``."""
    for key, allowed in supported.items():
        node: Any = DEFAULTS
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                raise ValueError(f"supported-values table: {key!r} is not a key of Detectron2's config")
            node = node[part]
        if isinstance(allowed, str) and allowed != ANY or not (callable(allowed) or isinstance(allowed, Collection)):
            raise ValueError(f"supported-values table: {key!r} -> {allowed!r} is not ANY, a collection of values "
                             "or a predicate")
