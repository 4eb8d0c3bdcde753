"""Files written whole or not at all: written under a temporary name beside their own, renamed
over it only once complete, with the permissions any new file gets (0666 less the umask)."""
from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ".tmp") -> Iterator[Path]:
    """A new empty file beside ``path`` for the block to write (or replace); when the block ends
    without an error it becomes ``path``, otherwise it is removed."""
    path = Path(path)
    temporary = path.with_name(f"{path.name}.{secrets.token_hex(4)}{suffix}")
    os.close(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))  # the umask applies, as to any file
    mode = temporary.stat().st_mode & 0o777
    try:
        yield temporary
        os.chmod(temporary, mode)  # a writer that renamed its own file here (mkstemp's 0600) gets it too
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
