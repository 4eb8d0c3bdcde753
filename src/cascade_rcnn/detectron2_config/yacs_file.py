"""Detectron2 yacs config files (``config.yaml`` of a run, or a hand-written one) read as data.

A config is untrusted input: its text is read with ``yaml.safe_load``'s loader (no tags that
build Python objects) and bounded in size, nesting and number of values (YAML aliases count each
time they are used). ``_BASE_`` (a path or a list of paths, relative to the file) names files read first; as
fvcore merges them, later bases override earlier ones and the file overrides its bases, key by
key. The merged values then replace Detectron2's defaults (``defaults.py``) by yacs's rules:

- a key that is not in the defaults is refused ("Non-existent config key"), naming the file;
- a string value is read as a Python literal when it is one (``"(640, 800)"`` is a tuple,
  ``"1e-3"`` a number; anything else stays a string);
- the value's type must be the default's, except that lists and tuples stand for each other and
  ``None`` may replace, or be replaced by, any value.

Only VERSION 2 configs (Detectron2's since its public release) are read: an older one is refused,
and a VERSION 1 key is refused naming its VERSION 2 name.
"""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError
from .defaults import DEFAULTS, RENAMED_KEYS, VERSION
from .resolved import Detectron2Config, short_repr, shortened

MAX_BYTES = 256 * 1024  # a full cfg.dump() is ~6 kB
MAX_DEPTH = 32  # nested mappings and sequences
MAX_VALUES = 100_000  # values in one file, counted each time a YAML alias repeats them
MAX_BASE_DEPTH = 16  # _BASE_ files of _BASE_ files
MAX_FILES = 64  # files one config may read, its _BASE_ files included
BASE_KEY = "_BASE_"
_PLAIN_TYPES = (str, int, float, bool, type(None))


def read_yacs_config(path: str | Path) -> Detectron2Config:
    """The config of the file at ``path``: Detectron2's defaults replaced by the values of the file
    and its ``_BASE_`` chain (module docstring), or a ``ConfigError`` naming the file and key."""
    path = Path(path)
    settings = _read_chain(path, chain=(), files_read=[])
    tree = _resolve(DEFAULTS, settings, prefix="")
    return Detectron2Config(tree, path, {key: source for key, (_, source) in settings.items()})


def _read_chain(path: Path, chain: tuple[Path, ...], files_read: list[Path]) -> dict[str, tuple[Any, Path]]:
    """Every value the file at ``path`` and its ``_BASE_`` files set: dotted key -> (value, file)."""
    files_read.append(path)
    if len(files_read) > MAX_FILES:
        raise ConfigError(f"{path}: the config and its _BASE_ files are more than {MAX_FILES} files")
    tree = _load_yaml(path)
    chain += (path.resolve(),)
    bases = _base_paths(tree.pop(BASE_KEY, None), path, chain)
    _check_version(tree, path)
    settings: dict[str, tuple[Any, Path]] = {}
    for base in bases:
        settings.update(_read_chain(base, chain, files_read))
    settings.update((key, (value, path)) for key, value in _flatten(tree, DEFAULTS, path, prefix="").items())
    return settings


def config_text(path: Path) -> str:
    """The text of a Detectron2 config file (yacs or LazyConfig dump): an existing file of at most
    ``MAX_BYTES``, in UTF-8; otherwise a ``ConfigError`` saying which."""
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file")
    size = path.stat().st_size
    if size > MAX_BYTES:
        raise ConfigError(f"{path}: {size} bytes is too large for a Detectron2 config (at most {MAX_BYTES})")
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file (UTF-8)") from None


def _load_yaml(path: Path) -> dict[str, Any]:
    """The mapping a YAML file holds, checked to be bounded plain data."""
    text = config_text(path)
    try:
        tree = yaml.load(text, Loader=_DepthBoundedSafeLoader)  # yaml.safe_load, nesting bounded
    except yaml.constructor.ConstructorError as error:
        raise ConfigError(f"{path}{_line(error)}: {_one_line(error.problem)}; a config is read as plain YAML "
                          "data (yaml.safe_load), nothing in it builds Python objects") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}{_line(error)}: cannot be read as YAML "
                          f"({_one_line(getattr(error, 'problem', None) or error)})") from None
    if not isinstance(tree, dict):
        found = "an empty file" if tree is None else f"a {type(tree).__name__}"
        raise ConfigError(f"{path}: a Detectron2 config is a YAML mapping of keys, not {found}")
    _check_plain(tree, path, where="", depth=0, counted=0, mapping=True)
    return tree


class _DepthBoundedSafeLoader(yaml.SafeLoader):
    """``yaml.safe_load``'s loader, refusing YAML nested deeper than ``MAX_DEPTH`` as it parses
    (before Python's recursion limit, which PyYAML's composer would reach slowly)."""

    depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise yaml.composer.ComposerError(None, None, f"nested deeper than {MAX_DEPTH} levels",
                                              self.peek_event().start_mark)
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


def _line(error: yaml.YAMLError) -> str:
    mark = getattr(error, "problem_mark", None)
    return f":{mark.line + 1}" if mark is not None else ""


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def _check_plain(value: Any, path: Path, where: str, depth: int, counted: int, mapping: bool) -> int:
    """``counted`` plus the values in ``value``; refuses deep nesting, too many values, and anything
    but lists (of lists) of strings, numbers, booleans and null, in mappings of names where
    ``mapping`` allows them (not inside lists)."""
    counted += 1
    if counted > MAX_VALUES:
        raise ConfigError(f"{path}: holds more than {MAX_VALUES} values (YAML aliases count each time)")
    if depth > MAX_DEPTH:
        raise ConfigError(f"{path}: {shortened(where)} is nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, dict) and mapping:
        for key, item in value.items():
            if not isinstance(key, str):
                raise ConfigError(f"{path}: key {short_repr(key)} under {shortened(where) or 'the top level'} "
                                  "is not a config key (a name)")
            counted = _check_plain(item, path, f"{where}.{key}" if where else key, depth + 1, counted, mapping)
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            counted = _check_plain(item, path, f"{where}[{index}]", depth + 1, counted, mapping=False)
    elif not isinstance(value, _PLAIN_TYPES):
        raise ConfigError(f"{path}: {shortened(where)} = {short_repr(value)} is a {type(value).__name__}; "
                          "a config value is a string, number, boolean, null or a list of them")
    return counted


def _base_paths(bases: Any, path: Path, chain: tuple[Path, ...]) -> list[Path]:
    """The files ``_BASE_`` names, relative to ``path``'s folder; refuses absolute paths, URLs,
    missing files, cycles and chains deeper than ``MAX_BASE_DEPTH``."""
    if bases is None:
        return []
    names = [bases] if isinstance(bases, str) else bases
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        raise ConfigError(f"{path}: {BASE_KEY} must be a path or a list of paths, got {short_repr(bases)}")
    if names and len(chain) >= MAX_BASE_DEPTH:
        raise ConfigError(f"{path}: {BASE_KEY} files nest deeper than {MAX_BASE_DEPTH}")
    found = []
    for name in names:
        if "://" in name:
            raise ConfigError(f"{path}: {BASE_KEY} {name!r} is a URL; copy the file beside the config "
                              "and name it by its relative path")
        if name.startswith(("/", "\\", "~")) or Path(name).is_absolute():
            raise ConfigError(f"{path}: {BASE_KEY} {name!r} is not a relative path; name the file by its path "
                              "relative to this one")
        base = path.parent / name
        if not base.is_file():
            raise ConfigError(f"{path}: {BASE_KEY} {name!r}: no such file {base}")
        if base.resolve() in chain:
            cycle = " -> ".join(str(file) for file in chain[chain.index(base.resolve()):] + (base.resolve(),))
            raise ConfigError(f"{path}: {BASE_KEY} {name!r} is a cycle ({cycle})")
        found.append(base)
    return found


def _check_version(tree: dict[str, Any], path: Path) -> None:
    if "VERSION" not in tree:
        return
    version = tree["VERSION"]
    if type(version) is not int:
        raise ConfigError(f"{path}: VERSION must be a whole number ({VERSION}), got {short_repr(version)}")
    if version < VERSION:
        raise ConfigError(f"{path}: a VERSION {version} config; only VERSION {VERSION} configs are read (Detectron2 "
                          f"renames old keys when it loads one): rename them (e.g. MODEL.WEIGHT -> MODEL.WEIGHTS) "
                          f"and set VERSION: {VERSION}")
    if version > VERSION:
        raise ConfigError(f"{path}: VERSION {version} is newer than the Detectron2 config VERSION {VERSION} "
                          "this reader knows")


def _flatten(tree: dict[str, Any], defaults: dict[str, Any], path: Path, prefix: str) -> dict[str, Any]:
    """The values of one file by dotted key, each key checked to be one of Detectron2's, and a
    group of keys where Detectron2 has a group."""
    values = {}
    for key, value in tree.items():
        dotted = prefix + key
        if key not in defaults:
            renamed = RENAMED_KEYS.get(dotted)
            hint = f" (VERSION {VERSION} calls it {renamed})" if renamed else ""
            raise ConfigError(f"{path}: Non-existent config key: {dotted}{hint}")
        if isinstance(defaults[key], dict):
            if not isinstance(value, dict):
                raise ConfigError(f"{path}: {dotted} is a group of keys in Detectron2's config, "
                                  f"not a value ({short_repr(value)})")
            values.update(_flatten(value, defaults[key], path, dotted + "."))
        elif isinstance(value, dict):
            raise ConfigError(f"{path}: {dotted} is a value in Detectron2's config, not a group of keys")
        else:
            values[dotted] = value
    return values


def _resolve(defaults: dict[str, Any], settings: dict[str, tuple[Any, Path]], prefix: str) -> dict[str, Any]:
    """Detectron2's defaults with the values ``settings`` holds, decoded and type-checked."""
    tree = {}
    for key, default in defaults.items():
        dotted = prefix + key
        if isinstance(default, dict):
            tree[key] = _resolve(default, settings, dotted + ".")
        elif dotted in settings:
            value, path = settings[dotted]
            tree[key] = _checked_type(_decoded(value, dotted, path), default, dotted, path)
        else:
            tree[key] = default
    return tree


def _decoded(value: Any, dotted: str, path: Path) -> Any:
    """A string read as a Python literal where it is one (yacs's rule), else ``value`` as it is."""
    if not isinstance(value, str):
        return value
    try:
        decoded = ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return value
    except (TypeError, MemoryError, RecursionError):
        raise ConfigError(f"{path}: {dotted} = {short_repr(value)} cannot be read as a value") from None
    _check_plain(decoded, path, dotted, depth=dotted.count("."), counted=0, mapping=False)
    return decoded


def _checked_type(value: Any, default: Any, dotted: str, path: Path) -> Any:
    """``value`` if yacs lets it replace ``default``: the same type, a list for a tuple (or the
    reverse), or ``None`` on either side."""
    sequences = (list, tuple)
    if (type(value) is type(default) or value is None or default is None
            or (isinstance(value, sequences) and isinstance(default, sequences))):
        return value
    raise ConfigError(f"{path}: {dotted} = {short_repr(value)} is a {type(value).__name__}; Detectron2's "
                      f"{dotted} is a {type(default).__name__} (default {short_repr(default)})")
