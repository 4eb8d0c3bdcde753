"""Downloading published weights into the cache, hash-checked, with errors a user can act on.

A URL's file lands in ``cache_dir() / <its file name>`` and is looked up there first, so a file
fetched by hand (or by ``cascade-rcnn download`` on another machine) and put there is used as is.
"""
from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from urllib.parse import urlparse

import torch

from ..atomic_write import atomic_path
from .errors import CheckpointError

# torch.hub's naming convention for published weights: <name>-<first hex digits of SHA-256>.<ext>
HASH_IN_NAME = re.compile(r"-([0-9a-f]{8,64})\.\w+$")
# Detectron2's model zoo: model_final_<first 6 hex digits of the MD5>.pkl (its MODEL_ZOO.md).
MD5_IN_NAME = re.compile(r"^model_final_([0-9a-f]{6})\.pkl$")


class DownloadError(CheckpointError):
    """A download that failed or fails its hash check; the message names the URL and the fix."""


def cache_dir() -> Path:
    """Where downloaded weights live: $CASCADE_RCNN_CACHE, else ~/.cache/cascade_rcnn."""
    return Path(os.environ.get("CASCADE_RCNN_CACHE", Path.home() / ".cache" / "cascade_rcnn"))


def is_url(text: str) -> bool:
    return urlparse(text).scheme in ("http", "https")


def cached_path(url: str) -> Path:
    """Where ``url``'s file is (or will be) in the cache."""
    return cache_dir() / Path(urlparse(url).path).name


def fetch(url: str, check_hash: bool = False) -> tuple[Path, bool]:
    """``url``'s file in the cache, downloaded with a progress bar unless it is there already.

    Returns the path and whether it was downloaded now. With ``check_hash`` a file named
    ``<name>-<hex>.<ext>`` (torch.hub's convention) must have a SHA-256 starting with that hex, or
    the download is deleted and refused. A failed download raises ``DownloadError`` saying which
    URL, why (one line) and how to fetch the file by hand.
    """
    target = cached_path(url)
    if target.is_file():
        return target, False
    target.parent.mkdir(parents=True, exist_ok=True)
    # A name of its own, so processes downloading the same file at once do not collide.
    with atomic_path(target, suffix=".part") as partial:
        try:
            torch.hub.download_url_to_file(url, str(partial), progress=True)
        except Exception as error:  # urllib, ssl and socket errors, HTTP status errors, ...
            raise DownloadError(f"{url}: download failed ({one_line(error)}). {by_hand(url, target)}") from None
        if check_hash:
            mismatch = hash_mismatch(partial, target.name)
            if mismatch:
                raise DownloadError(f"{url}: the download fails its hash check ({mismatch}): "
                                    "truncated or corrupted; deleted, try again")
    return target, True


def ensure(url: str) -> tuple[Path, str]:
    """``url``'s file in the cache with its hash checked, for ``cascade-rcnn download``: fetched
    if absent, re-checked if present (it may have been put there by hand). Returns the path and
    what was done."""
    path, downloaded = fetch(url, check_hash=True)
    if downloaded:
        return path, "downloaded"
    mismatch = hash_mismatch(path, path.name)
    if mismatch:
        raise DownloadError(f"{path}: in the cache but fails its hash check ({mismatch}): not the file "
                            f"{url} serves, or damaged; delete it and fetch it again")
    return path, "already in the cache"


# The digests a published file's name may carry: (pattern, hashlib algorithm, what we call it).
NAMED_HASHES = ((HASH_IN_NAME, "sha256", "SHA-256"), (MD5_IN_NAME, "md5", "MD5"))


def named_hash(name: str) -> tuple[str, str, str] | None:
    """(hashlib algorithm, its name, hex prefix) of the digest ``name`` carries, or None."""
    for pattern, algorithm, label in NAMED_HASHES:
        match = pattern.search(name)
        if match is not None:
            return algorithm, label, match.group(1)
    return None


def hash_mismatch(path: Path, name: str) -> str | None:
    """None when ``path``'s digest starts with the hex in ``name`` (SHA-256 for torch.hub's names,
    MD5 for Detectron2's; or ``name`` has none), else what differs."""
    named = named_hash(name)
    if named is None:
        return None
    algorithm, label, expected = named
    digest = hashlib.new(algorithm)
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    actual = digest.hexdigest()
    if actual.startswith(expected):
        return None
    return f"{label} starts {actual[:len(expected)]}, the file name says {expected}"


def by_hand(url: str, target: Path) -> str:
    """How to get ``url``'s file without this program's download."""
    return (f"Fetch it by hand (a browser, `curl -LO {url}`, or another machine) and pass the file's path as the "
            f"weights, or save it as {target}, which is looked up first (`cascade-rcnn download` checks its hash)")


def one_line(error: BaseException) -> str:
    """The first line of an error's message (its type name if it has none)."""
    reason = getattr(error, "reason", None)  # urllib's URLError keeps the cause here (ssl, socket)
    text = str(reason if isinstance(reason, BaseException) else error).strip()
    return (text.splitlines() or [type(error).__name__])[0]
