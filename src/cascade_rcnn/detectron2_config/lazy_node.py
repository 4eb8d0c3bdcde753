"""One mapping of a LazyConfig dump (``lazy_file.py``) with its dotted key, and the refusals by that
key that its readers (``lazy_model.py``, ``lazy_recipe.py``) make, each in one line naming the file."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import ConfigError


class DumpNode:
    """A mapping of the dump at dotted ``key`` (``""``: the root); with ``targets``, its
    ``_target_`` must be one of them (ViTDet's Cascade (Mask) R-CNN's parts)."""

    def __init__(self, tree: Any, key: str, path: Path, targets: tuple[str, ...] | None = None):
        if targets is not None and (not isinstance(tree, dict) or tree.get("_target_") not in targets):
            found = tree.get("_target_") if isinstance(tree, dict) else tree
            raise ConfigError(f"{path}: {self.dotted(key, '_target_')} = {found!r} is not supported (only "
                              f"{' or '.join(targets)}: ViTDet's Cascade (Mask) R-CNN)")
        self.tree, self.key, self.path = tree, key, path

    @staticmethod
    def dotted(key: str, name: str) -> str:
        return f"{key}.{name}" if key else name

    def get(self, name: str, default: Any = None) -> Any:
        return self.tree.get(name, default)

    def node(self, name: str, *targets: str) -> "DumpNode":
        """The mapping at ``name``; with ``targets``, checked as the constructor does, else ``{}``
        where there is none."""
        found = self.tree.get(name)
        return DumpNode(found if targets or found else {}, self.dotted(self.key, name), self.path, targets or None)

    def only(self, *names: str) -> None:
        """Refuse any argument but ``names`` (and ``_target_``): one we do not follow, named."""
        for name in self.tree:
            if name != "_target_" and name not in names:
                raise ConfigError(f"{self.path}: {self.dotted(self.key, name)} is not supported (we follow "
                                  f"{', '.join(names)})")

    def need(self, name: str, wanted: Any, default: Any = None) -> Any:
        """Argument ``name`` (or its default), refused unless it equals ``wanted`` (a value, or a test)."""
        value = self.get(name, default)
        ok = wanted(value) if callable(wanted) else value == wanted
        if not ok:
            raise self.refuse(name, value, None if callable(wanted) else f"only {wanted!r}")
        return value

    def refuse(self, name: str, value: Any, supported: str | None) -> ConfigError:
        """The error for argument ``name`` = ``value``, saying what is ``supported``."""
        return ConfigError(f"{self.path}: {self.dotted(self.key, name)} = {value!r} is not supported"
                           + (f" ({supported})" if supported else ""))
