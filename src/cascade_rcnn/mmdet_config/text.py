"""MMDetection config files read as data, never executed.

A config (a ``.py`` file, the merged dump of a work dir, or the text a checkpoint carries in
``meta["cfg"]`` / ``meta["config"]``) is untrusted input. Its text is parsed with ``ast`` and only
these forms are evaluated: literals (numbers, strings, True/False/None), lists, tuples, dicts,
``dict(key=value, ...)``, ``range(...)`` of integers (MMDetection 2's ``gpu_ids = range(0, 1)``),
names bound earlier in the file, unary minus/plus, ``+ - * / // % **`` on numbers (and ``+`` on
strings, lists and tuples), indexing a value with a literal, and ``{{_base_.a.b}}`` references to
a base file's values. Anything else - an import, another call, an attribute, a loop, a lambda - is
a ``ConfigError`` naming the file and line; except in the keys that say how a run was launched,
logged or checkpointed (``RUN_KEYS``): they describe no model, so one we cannot read is left out.

``_base_`` files (a path or a list of paths, relative to the config) are read first and merged
as mmengine merges them: a dict in the child updates the base's dict key by key, recursively,
unless it says ``_delete_=True``; any other value replaces the base's. ``_scope_`` (the registry
mmengine writes into the dicts of an ``mmdet::`` base) names where a ``type`` is found, not a
setting: it is folded into the type (``mmpretrain`` + ``ConvNeXt`` -> ``mmpretrain.ConvNeXt``;
``mmdet``, ours, adds nothing).
"""
from __future__ import annotations

import ast
import math
import operator
import re
import reprlib
from pathlib import Path
from typing import Any

from ..errors import ConfigError

MAX_TEXT = 2_000_000  # characters: a merged MMDetection config is ~20 kB
MAX_ITEMS = 200_000  # values a config may hold, counted with repeats (shared names count each time)
MAX_NUMBER = 2**64
MAX_BASE_DEPTH = 16
_BASE_REFERENCE = re.compile(r"\{\{\s*_base_\.([\w.]+)\s*\}\}")
_REFERENCE_NAME = "_base_reference_{}_"
# Top-level keys of how a run was launched, logged and checkpointed (MMDetection 2 and 3): no model
# or data set depends on them.
RUN_KEYS = frozenset({
    "gpu_ids", "gpus", "device", "launcher", "dist_params", "env_cfg", "work_dir", "seed", "deterministic",
    "randomness", "resume", "resume_from", "load_from", "auto_resume", "workflow", "log_config", "log_level",
    "log_processor", "checkpoint_config", "evaluation", "default_hooks", "custom_hooks", "visualizer",
    "vis_backends", "default_scope", "opencv_num_threads", "mp_start_method", "experiment_name"})
OWN_SCOPE = "mmdet"
_NUMBER_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
               ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow}


def read_config(path: str | Path) -> dict[str, Any]:
    """The merged config of the file at ``path``, its ``_base_`` files resolved relative to it."""
    return _scopes_in_types(_read(Path(path), depth=0))


def parse_config_text(text: str, source: str, base_dir: Path | None = None) -> dict[str, Any]:
    """The merged config of ``text`` (named ``source`` in errors); ``_base_`` paths are relative
    to ``base_dir`` (a checkpoint's embedded text has none: it is already merged)."""
    return _scopes_in_types(_merge_bases(_evaluate(text, source), source, base_dir, depth=0))


def _scopes_in_types(value: Any) -> Any:
    """``value`` without ``_scope_`` keys, each folded into its dict's ``type`` (module docstring)."""
    if isinstance(value, (list, tuple)):
        return type(value)(_scopes_in_types(item) for item in value)
    if not isinstance(value, dict):
        return value
    found = {key: _scopes_in_types(item) for key, item in value.items() if key != "_scope_"}
    scope, kind = value.get("_scope_", OWN_SCOPE), found.get("type")
    if scope != OWN_SCOPE and isinstance(kind, str) and "." not in kind:
        found["type"] = f"{scope}.{kind}"
    return found


def _read(path: Path, depth: int) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file")
    if path.stat().st_size > MAX_TEXT:
        raise ConfigError(f"{path}: {path.stat().st_size} bytes is too large for a config")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file (UTF-8)") from None
    return _merge_bases(_evaluate(text, str(path), _base_values(text, path, depth)), str(path), path.parent,
                        depth)


def _base_values(text: str, path: Path, depth: int) -> dict[str, Any]:
    """The merged values of the ``_base_`` files ``text`` names, for its ``{{_base_.x}}`` references."""
    if not _BASE_REFERENCE.search(text):
        return {}
    bases = _evaluate(_BASE_REFERENCE.sub("None", text), str(path)).get("_base_")
    return _merge_bases({"_base_": bases}, str(path), path.parent, depth) if bases else {}


def _merge_bases(config: dict[str, Any], source: str, base_dir: Path | None, depth: int) -> dict[str, Any]:
    bases = config.pop("_base_", None)
    if bases is None:
        return config
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, (list, tuple)) or not all(isinstance(base, str) for base in bases):
        raise ConfigError(f"{source}: _base_ must be a path or a list of paths, got {bases!r}")
    if depth >= MAX_BASE_DEPTH:
        raise ConfigError(f"{source}: _base_ files nest deeper than {MAX_BASE_DEPTH} (a cycle?)")
    if base_dir is None:
        raise ConfigError(f"{source}: names _base_ files ({', '.join(bases)}) but has no folder to find them in; "
                          "give the merged config (a work dir's dump) instead")
    merged: dict[str, Any] = {}
    for base in bases:
        if Path(base).is_absolute():
            raise ConfigError(f"{source}: _base_ {base!r} is an absolute path; name it relative to the config")
        if "::" in base:
            raise ConfigError(f"{source}: _base_ {base!r} names a file inside an installed package; copy it "
                              "beside the config and name it by its path")
        values = _read(base_dir / base, depth + 1)
        for key in values.keys() & merged.keys():
            raise ConfigError(f"{source}: key {key!r} is defined in two _base_ files")
        merged.update(values)
    return merge(config, merged)


def merge(child: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
    """``child`` merged into a copy of ``base`` (mmengine's rule, module docstring)."""
    result = dict(base)
    for key, value in child.items():
        if isinstance(value, dict) and not value.get("_delete_", False) and isinstance(result.get(key), dict):
            result[key] = merge(value, result[key])
        elif isinstance(value, dict):
            result[key] = {k: v for k, v in value.items() if k != "_delete_"}
        else:
            result[key] = value
    return result


def _evaluate(text: str, source: str, base_values: dict[str, Any] | None = None) -> dict[str, Any]:
    """The top-level names of ``text`` bound to their values."""
    if len(text) > MAX_TEXT:
        raise ConfigError(f"{source}: {len(text)} characters is too large for a config")
    names: dict[str, Any] = {}
    references = []

    def reference(match: re.Match) -> str:
        references.append(match.group(1))
        return _REFERENCE_NAME.format(len(references) - 1)

    text = _BASE_REFERENCE.sub(reference, text)
    for index, dotted in enumerate(references):
        names[_REFERENCE_NAME.format(index)] = _lookup(base_values or {}, dotted, source)
    try:
        tree = ast.parse(text, filename=source)
    except SyntaxError as error:
        raise ConfigError(f"{source}:{error.lineno}: not valid Python ({error.msg})") from None
    except (RecursionError, MemoryError, ValueError):
        raise ConfigError(f"{source}: nested too deeply to read") from None
    config: dict[str, Any] = {}
    held = 0  # values bound so far, counted with repeats (bounds what config_text writes out)
    for statement in tree.body:
        if isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Constant):
            continue  # a docstring or a bare string
        if not (isinstance(statement, ast.Assign) and len(statement.targets) == 1
                and isinstance(statement.targets[0], ast.Name)):
            raise ConfigError(f"{source}:{statement.lineno}: only `name = value` statements are read in a config, "
                              f"not {type(statement).__name__.lower()}")
        name = statement.targets[0].id
        try:
            value = _statement_value(statement, names, source)
        except ConfigError:
            if name not in RUN_KEYS:
                raise
            config.pop(name, None)  # how a run was launched or logged: never decides whether a model loads
            names.pop(name, None)
            continue
        names[name] = config[name] = value
        held += _count(value, MAX_ITEMS - held)
        if held > MAX_ITEMS:
            raise ConfigError(f"{source}:{statement.lineno}: the config holds more than {MAX_ITEMS} values")
    return config


def _statement_value(statement: ast.Assign, names: dict[str, Any], source: str) -> Any:
    """The value a ``name = value`` statement binds, or a ConfigError naming its line."""
    try:
        return _value(statement.value, names, source)
    except RecursionError:
        raise ConfigError(f"{source}:{statement.lineno}: nested too deeply to read") from None


def _lookup(values: dict[str, Any], dotted: str, source: str) -> Any:
    found: Any = values
    for part in dotted.split("."):
        if not isinstance(found, dict) or part not in found:
            raise ConfigError(f"{source}: {{{{_base_.{dotted}}}}} names nothing in its _base_ files")
        found = found[part]
    return found


def _value(node: ast.AST, names: dict[str, Any], source: str) -> Any:
    """The value of one expression node, or a ConfigError naming its line."""
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float, str, bool, type(None))):
        return node.value
    if isinstance(node, ast.List):
        return [_value(item, names, source) for item in node.elts]
    if isinstance(node, ast.Tuple):
        return tuple(_value(item, names, source) for item in node.elts)
    if isinstance(node, ast.Dict) and None not in node.keys:
        return {_key(key, names, source): _value(value, names, source) for key, value in zip(node.keys, node.values)}
    if isinstance(node, ast.Constant) and isinstance(node.value, complex):
        raise ConfigError(f"{source}:{node.lineno}: `{_snippet(node)}` is not a number a config may hold")
    if isinstance(node, ast.Name):
        if node.id not in names:
            raise ConfigError(f"{source}:{node.lineno}: {node.id!r} is not a name bound earlier in the config")
        return names[node.id]
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "dict" and not node.args \
            and all(keyword.arg is not None for keyword in node.keywords):
        return {keyword.arg: _value(keyword.value, names, source) for keyword in node.keywords}
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "range" \
            and 1 <= len(node.args) <= 3 and not node.keywords:
        bounds = [_value(arg, names, source) for arg in node.args]
        if all(isinstance(b, int) and not isinstance(b, bool) for b in bounds) and bounds[2:] != [0]:
            return range(*bounds)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        operand = _value(node.operand, names, source)
        if _is_number(operand):
            return -operand if isinstance(node.op, ast.USub) else +operand
    if isinstance(node, ast.BinOp) and type(node.op) in _NUMBER_OPS:
        left, right = _value(node.left, names, source), _value(node.right, names, source)
        if _is_number(left) and _is_number(right) and not (isinstance(node.op, ast.Pow) and abs(right) > 64):
            try:
                result = _NUMBER_OPS[type(node.op)](left, right)
            except (ZeroDivisionError, OverflowError) as error:
                raise ConfigError(f"{source}:{node.lineno}: {error}") from None
            if not _is_number(result) or abs(result) > MAX_NUMBER:
                raise ConfigError(f"{source}:{node.lineno}: `{_snippet(node)}` is not a number a config may hold "
                                  f"(real, at most 2**64 in size)")
            return result
        if isinstance(node.op, ast.Add) and type(left) is type(right) and isinstance(left, (str, list, tuple)):
            if len(left) + len(right) > MAX_TEXT:
                raise ConfigError(f"{source}:{node.lineno}: `{_snippet(node)}` is longer than a config may hold")
            return left + right
    if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant):
        container, index = _value(node.value, names, source), node.slice.value
        try:
            return container[index]
        except (KeyError, IndexError, TypeError):
            raise ConfigError(f"{source}:{node.lineno}: cannot index {type(container).__name__} with "
                              f"{reprlib.repr(index)}") from None
    raise ConfigError(f"{source}:{getattr(node, 'lineno', '?')}: `{_snippet(node)}` is not a value a config may hold "
                      "(literals, dict(...), range(...), lists, tuples, earlier names and arithmetic are read; "
                      "nothing is run)")


def _key(node: ast.AST | None, names: dict[str, Any], source: str) -> Any:
    key = _value(node, names, source)
    if not isinstance(key, (str, int, float, bool, type(None))):
        raise ConfigError(f"{source}:{node.lineno}: a dict key must be a literal, got {type(key).__name__}")
    return key


def _count(value: Any, limit: int) -> int:
    """How many values ``value`` holds, counting shared ones each time; stops past ``limit``."""
    if not isinstance(value, (dict, list, tuple)):
        return 1
    total = 1
    for item in (value.values() if isinstance(value, dict) else value):
        total += _count(item, limit - total)
        if total > limit:
            break
    return total


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _snippet(node: ast.AST) -> str:
    text = ast.unparse(node)
    return text if len(text) <= 60 else text[:57] + "..."


def config_text(config: dict[str, Any]) -> str:
    """A merged config as text this module reads back to the same values (``name = literal`` lines)."""
    lines = []
    for key, value in config.items():
        text = repr(value)
        if "inf" in text or "nan" in text:
            _check_finite(value, key)
        lines.append(f"{key} = {text}")
    return "\n".join(lines) + "\n"


def _check_finite(value: Any, where: str) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"config value {where} = {value} cannot be written as a literal")
    if isinstance(value, dict):
        for key, item in value.items():
            _check_finite(item, f"{where}.{key}")
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            _check_finite(item, f"{where}[{index}]")
