"""Detectron2 LazyConfig dumps (the ``config.yaml`` that ``LazyConfig.save`` writes for a run of a
``.py`` config, ViTDet's) read as data.

Such a file is a tree of ``_target_`` mappings (a callable's dotted name and its arguments) with
OmegaConf interpolations (``${..num_classes}``) and a few Python tags that PyYAML writes for values
that are not plain data (``!!python/name:`` a class, ``!!python/tuple``,
``!!python/object/apply:functools.partial``, ``!!python/object:...ShapeSpec``). It is untrusted
input: it is read with ``yaml.safe_load``'s loader (size and nesting bounded as ``yacs_file.py``),
where each Python tag becomes DATA that names it - a class or function as ``{"_name_": dotted}``,
a tuple as a list, an object as ``{"_object_": dotted, **its fields}``, an applied call as
``{"_apply_": dotted, "args": [...], "state": [...]}`` - never an object built or a name imported.
Interpolations are then replaced by the values they point to (OmegaConf's rules: ``${a.b}`` from
the top, ``${.x}`` a sibling, each further dot one level up).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError
from .yacs_file import _DepthBoundedSafeLoader, _line, _one_line, config_text

PYTHON_TAG = "tag:yaml.org,2002:python/"
_INTERPOLATION = re.compile(r"\$\{([^${}]*)\}")
MAX_HOPS = 32  # interpolations that point to interpolations


class _LazyDumpLoader(_DepthBoundedSafeLoader):
    """The safe loader, with PyYAML's Python tags read as data naming what they stand for."""


def _python_tag(loader: _LazyDumpLoader, suffix: str, node: yaml.Node) -> Any:
    kind, _, dotted = suffix.partition(":")
    if kind == "name":
        return {"_name_": dotted}
    if kind == "tuple":
        return loader.construct_sequence(node, deep=True)
    if kind in ("object", "object/new", "object/apply"):
        key = "_object_" if kind == "object" else "_apply_"
        if isinstance(node, yaml.MappingNode):
            return {key: dotted, **loader.construct_mapping(node, deep=True)}
        if isinstance(node, yaml.SequenceNode):
            return {key: dotted, "args": loader.construct_sequence(node, deep=True)}
        return {key: dotted, "args": [loader.construct_scalar(node)]}
    raise yaml.constructor.ConstructorError(None, None, f"unknown Python tag !!python/{suffix}", node.start_mark)


_LazyDumpLoader.add_multi_constructor(PYTHON_TAG, _python_tag)


def is_lazy_dump(path: str | Path) -> bool:
    """Whether the YAML file at ``path`` is a LazyConfig dump (a ``model`` with a ``_target_``)."""
    try:
        tree = read_lazy_dump(path)
    except ConfigError:
        return False
    return isinstance(tree.get("model"), dict) and "_target_" in tree["model"]


def read_lazy_dump(path: str | Path) -> dict[str, Any]:
    """The dump's tree, Python tags as data and interpolations resolved (module docstring)."""
    path = Path(path)
    text = config_text(path)
    try:
        tree = yaml.load(text, Loader=_LazyDumpLoader)
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}{_line(error)}: cannot be read as a LazyConfig dump "
                          f"({_one_line(getattr(error, 'problem', None) or error)})") from None
    if not isinstance(tree, dict):
        raise ConfigError(f"{path}: a LazyConfig dump is a YAML mapping")
    return _resolve(tree, tree, (), path)


def _resolve(value: Any, root: dict, where: tuple, path: Path) -> Any:
    """``value`` (found at key path ``where``) with every interpolation replaced."""
    if isinstance(value, dict):
        return {key: _resolve(item, root, where + (key,), path) for key, item in value.items()}
    if isinstance(value, list):
        return [_resolve(item, root, where + (index,), path) for index, item in enumerate(value)]
    if isinstance(value, str) and _INTERPOLATION.search(value):
        return _interpolated(value, root, where, path, hops=0)
    return value


def _interpolated(text: str, root: dict, where: tuple, path: Path, hops: int) -> Any:
    if hops > MAX_HOPS:
        raise ConfigError(f"{path}: {_dotted(where)}: interpolations nested more than {MAX_HOPS} deep")
    whole = _INTERPOLATION.fullmatch(text)
    if whole is None:  # inside a longer string: each one as text
        return _INTERPOLATION.sub(lambda m: str(_interpolated(m.group(0), root, where, path, hops + 1)), text)
    reference = whole.group(1).strip()
    dots = len(reference) - len(reference.lstrip("."))
    keys = [k for k in reference[dots:].split(".") if k]
    target_path = tuple(where[:-1])[:len(where) - dots] if dots else ()
    if dots > len(where):
        raise ConfigError(f"{path}: {_dotted(where)} = {text}: points above the top of the config")
    node: Any = root
    for key in target_path + tuple(keys):
        node = _child(node, key)
        if node is _MISSING:
            raise ConfigError(f"{path}: {_dotted(where)} = {text}: no such key in the config")
    target = target_path + tuple(keys)
    if isinstance(node, str) and _INTERPOLATION.search(node):
        return _interpolated(node, root, target, path, hops + 1)
    return _resolve(node, root, target, path)


_MISSING = object()


def _child(node: Any, key: Any) -> Any:
    if isinstance(node, dict):
        return node.get(key, _MISSING)
    if isinstance(node, list):
        try:
            return node[int(key)]
        except (ValueError, IndexError):
            return _MISSING
    return _MISSING


def _dotted(where: tuple) -> str:
    return ".".join(str(key) for key in where)
