"""What a file that PyTorch could not load is, in a few words, told from its first bytes: the
one-line error names that instead of the loader's internals."""
from __future__ import annotations

import struct
import zipfile
from pathlib import Path

MAGIC = {b"\x89PNG\r\n\x1a\n": "a PNG image", b"\xff\xd8\xff": "a JPEG image", b"GIF8": "a GIF image",
         b"\x1f\x8b": "a gzip archive", b"\x93NUMPY": "a NumPy array file (.npy)"}
ZIP = b"PK\x03\x04"  # torch.save's format since PyTorch 1.6
LEGACY_TORCH = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"  # the pickled magic number before 1.6
HEAD = 512
CHECKPOINT = "PyTorch checkpoint"


def describe(path: Path) -> str:
    """What the file at ``path``, which torch.load refused, is: "an empty file (0 bytes), not a
    PyTorch checkpoint", "a PNG image, not ...", "a damaged PyTorch checkpoint (...)", ..."""
    kind = _kind(path)
    return kind if CHECKPOINT in kind else f"{kind}, not a {CHECKPOINT}"


def _kind(path: Path) -> str:
    size = path.stat().st_size
    if size == 0:
        return "an empty file (0 bytes)"
    with open(path, "rb") as file:
        head = file.read(HEAD)
    for magic, kind in MAGIC.items():
        if head.startswith(magic):
            return kind
    if head.startswith(ZIP):
        return _zip_kind(path, head, size)
    if head.startswith(LEGACY_TORCH):
        return f"a damaged {CHECKPOINT} in the format before PyTorch 1.6 ({size} bytes: truncated?)"
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "a Python pickle that torch.save did not write"
    text = _text(head)
    if text is None:
        return f"binary data of no known kind ({size} bytes, starting {head[:8].hex(' ')})"
    if text.startswith("version https://git-lfs"):
        return "a Git LFS pointer (the file itself was never fetched: git lfs pull)"
    if text.lower().startswith(("<!doctype html", "<html")):
        return "an HTML page (a web page downloaded instead of the file?)"
    first_line = text.splitlines()[0] if text.strip() else text
    return f"a text file (starting {first_line[:40]!r})"


def _zip_kind(path: Path, head: bytes, size: int) -> str:
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError, ValueError):  # its end, the archive's table of contents, is missing
        (name_length,) = struct.unpack("<H", head[26:28]) if len(head) >= 28 else (0,)
        first = head[30:30 + name_length]  # the first entry's name, in its local header
        kind = CHECKPOINT if first.endswith(b"/data.pkl") else "zip archive"
        return f"a truncated {kind} ({size} bytes; an interrupted download or copy?)"
    if not any(name.endswith("/data.pkl") for name in names):
        return "a zip archive of other files than torch.save writes"
    return f"a damaged {CHECKPOINT} (its zip archive is whole, {len(names)} entries, but they do not load)"


def _text(head: bytes) -> str | None:
    """``head`` as text if it is UTF-8 (a character cut at its end allowed) without control bytes."""
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as error:
        if error.start < len(head) - 3:
            return None
        text = head[:error.start].decode("utf-8")
    return text.lstrip("\ufeff") if all(c.isprintable() or c in "\t\n\r" for c in text) else None
