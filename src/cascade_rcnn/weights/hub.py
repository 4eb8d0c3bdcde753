"""Weights on the Hugging Face Hub: ``hf://ORG/REPO[@REVISION][/FILE]``.

Files come through ``huggingface_hub`` (the optional extra ``hub``), so its cache
(``HF_HOME`` / ``HF_HUB_CACHE``), its offline mode (``HF_HUB_OFFLINE=1``: the cache only), its
token and its mirror setting (``HF_ENDPOINT``) apply unchanged. Without FILE the repository's
``model.safetensors`` is used, else its ``model.pth``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .errors import CheckpointError

PREFIX = "hf://"
DEFAULT_FILES = ("model.safetensors", "model.pth")


@dataclass(frozen=True)
class HubName:
    """A parsed ``hf://`` name: the repository id (``ORG/REPO``), a revision, a file (or None)."""

    repo_id: str
    revision: str | None
    filename: str | None

    def files(self) -> tuple[str, ...]:
        return (self.filename,) if self.filename else DEFAULT_FILES


def is_hub_name(text: str) -> bool:
    return text.startswith(PREFIX)


def parse(text: str) -> HubName:
    """``hf://ORG/REPO[@REVISION][/FILE]`` -> its parts; a one-line error for anything else."""
    parts = text[len(PREFIX):].split("/")
    if len(parts) < 2 or not all(parts):
        raise CheckpointError(f"{text}: not a Hub name; expected hf://ORG/REPO[@REVISION][/FILE]")
    repo, _, revision = parts[1].partition("@")
    if not repo or (_ and not revision):
        raise CheckpointError(f"{text}: not a Hub name; expected hf://ORG/REPO[@REVISION][/FILE]")
    return HubName(f"{parts[0]}/{repo}", revision or None, "/".join(parts[2:]) or None)


def hub_file(text: str) -> Path:
    """The local path of the Hub file ``text`` names: from huggingface_hub's cache, downloaded
    into it first if needed (and allowed)."""
    name = parse(text)
    try:
        import huggingface_hub
        from huggingface_hub import constants
        from huggingface_hub.utils import (
            EntryNotFoundError,
            RepositoryNotFoundError,
            RevisionNotFoundError,
        )
    except ImportError:
        raise CheckpointError(f"{text}: weights from the Hugging Face Hub need the huggingface_hub package: "
                              "pip install \"cascade_rcnn[hub]\"") from None
    absent: list[tuple[str, Exception]] = []  # (file, why) for each file name tried in vain
    for filename in name.files():
        # Once the Hub could not be reached, the other default names are looked up in the cache only.
        unreachable = any(isinstance(error, FileNotFoundError) for _, error in absent)
        try:
            return Path(huggingface_hub.hf_hub_download(name.repo_id, filename, revision=name.revision,
                                                        local_files_only=unreachable))
        except EntryNotFoundError as error:  # not in the cache (offline) or not in the repository
            absent.append((filename, error))
        except RevisionNotFoundError:
            raise CheckpointError(f"{text}: the repository {name.repo_id} has no revision {name.revision!r}") from None
        except RepositoryNotFoundError:  # also gated and private repositories without access
            raise CheckpointError(f"{text}: no repository {name.repo_id} on the Hub, or it is private or gated "
                                  "(log in with `hf auth login`, or set HF_TOKEN)") from None
        except (OSError, ValueError) as error:
            raise CheckpointError(f"{text}: could not get it from the Hub ({_first_line(error)})") from None
    raise _absent(text, name, absent, constants)


def _absent(text: str, name: HubName, absent: list[tuple[str, Exception]], constants) -> CheckpointError:
    """The error for a Hub file found neither in the cache nor (where allowed) on the Hub."""
    files = " or ".join(filename for filename, _ in absent)
    fetch = f"`hf download {name.repo_id} {absent[0][0]}{f' --revision {name.revision}' if name.revision else ''}`"
    cache = constants.HF_HUB_CACHE
    if all(not isinstance(error, FileNotFoundError) for _, error in absent):  # the Hub answered: no such file
        return CheckpointError(f"{text}: the repository {name.repo_id} has no {files}; name the file: "
                               f"hf://{name.repo_id}/FILE")
    if constants.HF_HUB_OFFLINE:
        return CheckpointError(f"{text}: no {files} in the Hugging Face cache ({cache}), and HF_HUB_OFFLINE=1 "
                               f"forbids downloading: run {fetch} where there is network and copy that cache "
                               "here (same HF_HUB_CACHE), or unset HF_HUB_OFFLINE")
    cause = next((error.__cause__ for _, error in absent if error.__cause__ is not None), absent[0][1])
    return CheckpointError(f"{text}: cannot reach the Hub ({_first_line(cause)}), and no {files} in the "
                           f"Hugging Face cache ({cache}): check the connection (or HF_ENDPOINT), or run {fetch} "
                           "where there is network and copy that cache here")


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]
