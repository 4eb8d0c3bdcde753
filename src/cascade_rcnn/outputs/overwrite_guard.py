"""Refusals that keep a command from writing over its inputs or over a previous run's results.

Each check runs before anything is written and raises ``WouldOverwrite``: one line that names
what would have been lost and how to go on. Paths are compared after ``Path.resolve()``, so a
relative path, a ``..`` or a symbolic link does not slip past.
"""
from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from ..errors import UserInputError


class WouldOverwrite(UserInputError):
    """Writing where asked would replace an input or a previous run's results; nothing was written."""


def refuse_inputs_in(out: str | Path, inputs: Iterable[tuple[str, str | Path | None]], option: str) -> None:
    """Refuse an output path (file or folder) that is an input or holds one. ``inputs``: (what
    the input is, e.g. "--weights" or "" for a plain input; its path, or None). Inputs that are
    not on disk (None, URLs, "zoo") have nothing to lose and are passed over."""
    target = Path(out).resolve()
    for label, path in inputs:
        if path is None or not Path(path).exists():
            continue
        found = Path(path).resolve()
        named = f"the input {path}" + (f" ({label})" if label else "")
        if found == target:
            raise WouldOverwrite(f"{option} {out} is {named}: it would be written over; give another {option}")
        if target in found.parents:
            raise WouldOverwrite(f"{option} {out} holds {named}: it could be written over; give {option} "
                                 "a path that holds no input")


def refuse_previous_run(out_dir: str | Path, patterns: Iterable[str], *, what: str, resume_hint: str,
                        resume: bool, overwrite: bool) -> None:
    """Refuse ``--out`` when it holds a previous run's files (names matching ``patterns``),
    unless the command ``resume``s it or was told to ``overwrite`` it."""
    if resume and overwrite:
        raise UserInputError("--resume continues a previous run, --overwrite replaces it: choose one")
    folder = Path(out_dir)
    found = sorted({path.name for pattern in patterns for path in folder.glob(pattern)}) if folder.is_dir() else []
    if found and not (resume or overwrite):
        raise WouldOverwrite(f"--out {out_dir} holds a previous {what} run ({', '.join(found)}): {resume_hint}, "
                             "--overwrite replaces it, or give a new --out folder")


def refuse_existing(paths: Iterable[str | Path], why: str) -> None:
    """Refuse when one of ``paths`` is a file or a folder that is not empty; ``why`` says what
    would write over it and how to go on."""
    for path in map(Path, paths):
        if path.is_dir() and any(path.iterdir()):
            raise WouldOverwrite(f"{path} is a folder that is not empty: {why}")
        if path.exists() and not path.is_dir():
            raise WouldOverwrite(f"{path} already exists: {why}")
