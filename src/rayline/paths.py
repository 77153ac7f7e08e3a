"""Local paths and URIs in one place: which is which, and the pyarrow filesystem for either.

rayline's storage, staged data, checkpoints and caches may live on a local disk or behind a
URI (``s3://``, ``gs://``, ``file://``); every module asks here instead of testing for
``"://"`` itself.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from rayline.errors import ConfigError

if TYPE_CHECKING:
    import pyarrow.fs as pafs


def is_remote(path: str) -> bool:
    """True for a URI with a scheme (``s3://bucket/x``), False for a local path."""
    return "://" in str(path)


def uri_scheme(path: str) -> str:
    """The scheme prefix of a URI (``"s3://"`` for ``s3://bucket/x``); ``""`` for a local path."""
    return str(path).split("://", 1)[0] + "://" if is_remote(path) else ""


def absolute(path: str) -> str:
    """A local path made absolute; a URI unchanged."""
    return str(path) if is_remote(path) else os.path.abspath(path)


def filesystem(path: str) -> tuple[pafs.FileSystem, str]:
    """The pyarrow filesystem for ``path`` and the path inside it (local paths absolute)."""
    import pyarrow.fs as pafs  # imported on use: rayline.runtime stays light to import

    return pafs.FileSystem.from_uri(absolute(path))


def nearest_existing(path: str | os.PathLike[str]) -> Path:
    """``path`` or its nearest ancestor that exists: what is in the way of creating it."""
    p = Path(path)
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def output_dir(path: str | os.PathLike[str], what: str) -> Path:
    """Create the local directory ``path`` (and its parents) to write into.

    ``what`` names where the path came from (``--out``, ``runtime.storage_path``) for the
    message.

    Raises:
        ConfigError: ``path`` or one of its parents is a file, or the directory cannot be
            created or written (permissions, a read-only filesystem).
    """
    p = Path(path)
    try:
        p.mkdir(parents=True, exist_ok=True)
        if not os.access(p, os.W_OK):
            raise PermissionError(13, "Permission denied", str(p))
    except OSError as exc:
        blocker = nearest_existing(p)
        if blocker.is_file():
            why = f"'{blocker}' is a file, not a directory"
        else:
            why = f"cannot create or write '{p}' ({exc.strerror or exc})"
        raise ConfigError(
            [f"{what}: {why}; give a directory this user can write (it is created if missing)"]
        ) from None
    return p
