"""The project's error types: what the command line reports in one line instead of a traceback.

An error of ours (``CascadeRCNNError``) says what is wrong with something the user gave - an
option, a file, a data set - and how to fix it. Everything else (a ``TypeError``, a ``KeyError``, a
plain ``ValueError`` from deep inside) is a bug and keeps its traceback.
"""
from __future__ import annotations

import difflib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager


class CascadeRCNNError(Exception):
    """Base of the errors that are the user's to fix; the message names the input and the problem."""


class UserInputError(CascadeRCNNError, ValueError):
    """A value the user gave (an option, a setting, a file's contents) that cannot be used. Also a
    ``ValueError``, so Python callers' ``except ValueError`` keeps working."""


class ConfigError(UserInputError):
    """A config file that cannot be read as data (or names what we do not build); the message
    names the file (and line or key) and the problem."""


@contextmanager
def user_input() -> Iterator[None]:
    """Re-raise a ``ValueError`` or ``KeyError`` from the block as a ``UserInputError`` with the
    same message. Wrap only calls that check values the user gave (so the error is about them,
    not a bug): a ``ValueError`` anywhere else keeps its type and traceback."""
    try:
        yield
    except CascadeRCNNError:
        raise
    except (ValueError, KeyError) as error:
        # str(KeyError("x")) is "'x'": the message is its first argument.
        message = error.args[0] if isinstance(error, KeyError) and error.args else str(error)
        raise UserInputError(message) from error


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """" (did you mean A, B or C?)": the choices closest to a mistyped ``word``; "" if none is close."""
    close = difflib.get_close_matches(word, list(choices), n=3)
    if not close:
        return ""
    listed = close[0] if len(close) == 1 else f"{', '.join(close[:-1])} or {close[-1]}"
    return f" (did you mean {listed}?)"
