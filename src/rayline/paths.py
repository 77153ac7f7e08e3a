"""Local paths and URIs in one place: which is which, and the pyarrow filesystem for either.

rayline's storage, staged data, checkpoints and caches may live on a local disk or behind a
URI (``s3://``, ``gs://``, ``file://``); every module asks here instead of testing for
``"://"`` itself.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

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
