"""Where a dataset's files live, and the error when they are not there or not usable.

A folder the user names (``--set data_dir=DIR``) must exist: a mistyped one is an error, never
created. netadv's own cache (``NETADV_DATA``, else ``~/.cache/netadv/data``) is created only
when something is downloaded into it.
"""

from __future__ import annotations

import os
from pathlib import Path

from netadv.errors import ConfigError


class DatasetMissingError(FileNotFoundError):
    """A dataset is not on this machine, or its files are unusable (empty, truncated, not in
    the expected format, not the official ones); the message says what to do."""


def default_root() -> Path:
    """netadv's data cache: ``NETADV_DATA``, else ``~/.cache/netadv/data``."""
    return Path(os.environ.get("NETADV_DATA", Path.home() / ".cache" / "netadv" / "data"))


def data_root(data_dir: str | Path | None, holds: str) -> tuple[Path, bool]:
    """(the folder to read, whether the user named it). A named folder must exist; ``holds``
    says what it should hold, for the message."""
    if data_dir is None:
        return default_root(), False
    root = Path(data_dir).expanduser()
    if not root.is_dir():
        what = "is not a folder" if root.exists() else "does not exist"
        raise ConfigError(
            f"data_dir {root.absolute()} {what}: --set data_dir=DIR must name an existing "
            f"folder holding {holds}"
        )
    return root, True


def read_bytes(path: Path, fix: str) -> bytes:
    """The file's bytes; an unreadable or empty file is a one-line error ending in ``fix``."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise DatasetMissingError(f"cannot read {path} ({e.strerror or e}): {fix}") from None
    if not data:
        raise DatasetMissingError(f"{path} is empty: {fix}")
    return data


def first_line(error: BaseException) -> str:
    """An exception's message cut to its first line (torchvision's are several)."""
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__
