"""A resolved Detectron2 config: every key of Detectron2's defaults with the value a file chain set."""
from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any


class Detectron2Config(Mapping[str, Any]):
    """Read-only nested mappings of Detectron2's config keys (``cfg["MODEL"]["ROI_HEADS"]["NAME"]``),
    every sequence a tuple. ``path`` is the file read; ``source(key)`` the file that set a key."""

    def __init__(self, tree: Mapping[str, Any], path: Path, sources: Mapping[str, Path]):
        self._tree = _read_only(tree)
        self._sources = dict(sources)
        self.path = path

    def __getitem__(self, key: str) -> Any:
        return self._tree[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._tree)

    def __len__(self) -> int:
        return len(self._tree)

    def __repr__(self) -> str:
        return f"Detectron2Config({str(self.path)!r})"

    def value(self, dotted: str) -> Any:
        """The value (or group of keys) at a dotted key, e.g. ``"MODEL.ROI_HEADS.NAME"``."""
        found: Any = self._tree
        for part in dotted.split("."):
            found = found[part]
        return found

    def source(self, dotted: str) -> Path:
        """The file whose value a dotted key holds: the config or one of its ``_BASE_`` files
        (``path`` for a key left at Detectron2's default)."""
        return self._sources.get(dotted, self.path)

    def leaves(self) -> Iterator[tuple[str, Any]]:
        """Every (dotted key, value) pair, in the order of Detectron2's defaults."""
        return dotted_leaves(self._tree)


def dotted_leaves(tree: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """The (dotted key, value) pairs of the values (not the groups) of a nested mapping."""
    for key, value in tree.items():
        if isinstance(value, Mapping):
            yield from dotted_leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def as_tuples(value: Any) -> Any:
    """``value`` with every list (at any depth) turned into a tuple."""
    if isinstance(value, (list, tuple)):
        return tuple(as_tuples(item) for item in value)
    return value


def short_repr(value: Any) -> str:
    """``repr(value)``, cut short for a one-line message."""
    return shortened(repr(value))


def shortened(text: str, limit: int = 80) -> str:
    """``text`` cut to ``limit`` characters for a one-line message."""
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _read_only(tree: Mapping[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType({key: _read_only(value) if isinstance(value, Mapping) else as_tuples(value)
                             for key, value in tree.items()})
