"""Content-addressed stage results: reuse a stage's output whenever its inputs match exactly.

A stage's key is a sha256 over everything its result depends on (:func:`stage_key`): its
config slice, the keys of the upstream results it reads (or, for staging, the input data's
fingerprint), the source of rayline's own modules that compute it, and the source of any
user code its config imports (the module's file; every file of its top-level package when
it is a package). The version string is not used: it is static between releases, while
the source is not.

Entries live under ``<root>/<stage>/<key>/``. A stage writes its files there and
:meth:`StageCache.commit` writes the completion marker ``_COMPLETE.json`` last, so an entry
whose writer died part-way (a killed driver, a full disk) has no marker and is never
served: the next run that needs it clears the directory and computes it again. The same
layout serves two roots: ``<storage>/cache`` (shared by every run, ``runtime.cache``) and a
run's own ``<run_dir>/stages`` (what a resumed run reuses when the shared cache is off).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs

from rayline.paths import filesystem, is_remote

#: Bumped when the layout of entries changes, so older entries stop matching.
CACHE_FORMAT = 1
MARKER = "_COMPLETE.json"
LAST_USED = "_LAST_USED"

log = logging.getLogger(__name__)


def _hash_files(paths: Iterable[str]) -> str:
    h = hashlib.sha256()
    for path in sorted(set(paths)):
        h.update(os.path.basename(path).encode())
        with open(path, "rb") as f:
            h.update(hashlib.sha256(f.read()).digest())
    return h.hexdigest()


def _module_files(name: str) -> list[str]:
    """The source files of an importable module: its file, or every .py of a package."""
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        raise ValueError(f"module '{name}' not found")
    if spec.submodule_search_locations:
        files: list[str] = []
        for root in spec.submodule_search_locations:
            files += [str(p) for p in Path(root).rglob("*.py")]
        return sorted(files)
    return [spec.origin]


@cache
def code_hash(modules: tuple[str, ...]) -> str:
    """sha256 over the source of rayline's own modules (or packages) that compute a stage."""
    return _hash_files(f for m in modules for f in _module_files(m))


def user_code_hash(refs: Iterable[str]) -> tuple[str, list[str]]:
    """sha256 over the source files user code references (``pkg.module:name``) import.

    Returns:
        The hash and the files it covers (empty for built-ins such as ``builder: mlp``).
    """
    from rayline.refs import source_files

    files = sorted({f for ref in refs for f in source_files(ref)})
    return (_hash_files(files) if files else ""), files


def stage_key(
    stage: str,
    config: dict[str, Any],
    upstream: dict[str, str],
    code: str,
    user_code: str = "",
    extra: dict[str, Any] | None = None,
) -> str:
    """The cache key of one stage result: sha256 of its canonical inputs."""
    blob = json.dumps(
        {
            "format": CACHE_FORMAT,
            "stage": stage,
            "config": config,
            "upstream": upstream,
            "code": code,
            "user_code": user_code,
            "extra": extra or {},
        },
        sort_keys=True,
        separators=(",", ":"),
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()


@dataclass
class Entry:
    """One complete cache entry, as ``rayline cache list`` shows it."""

    stage: str
    key: str
    path: str
    created: float
    last_used: float
    bytes: int
    run_name: str | None


class StageCache:
    """Complete stage results under ``root/<stage>/<key>/`` (local path or URI)."""

    def __init__(self, root: str):
        self.root = root.rstrip("/")
        self.fs, self.inner = filesystem(self.root)

    def path(self, stage: str, key: str) -> str:
        """Where the entry's files go (the URI form callers hand to readers)."""
        return f"{self.root}/{stage}/{key}"

    def _inner(self, stage: str, key: str) -> str:
        return f"{self.inner}/{stage}/{key}"

    def lookup(self, stage: str, key: str) -> dict[str, Any] | None:
        """The completion record of a complete entry, or None (absent or half-written)."""
        try:
            with self.fs.open_input_stream(f"{self._inner(stage, key)}/{MARKER}") as f:
                meta = json.loads(f.read())
        except (OSError, ValueError):
            return None
        if meta.get("key") != key or meta.get("format") != CACHE_FORMAT:
            return None
        return meta

    def begin(self, stage: str, key: str) -> str:
        """An empty directory for a new entry; clears whatever an unfinished writer left."""
        inner = self._inner(stage, key)
        if self.fs.get_file_info(inner).type != pafs.FileType.NotFound:
            log.info("cache: clearing an incomplete %s entry %s", stage, key[:12])
            self.fs.delete_dir(inner)
        self.fs.create_dir(inner, recursive=True)
        return self.path(stage, key)

    def commit(self, stage: str, key: str, meta: dict[str, Any]) -> dict[str, Any]:
        """Mark the entry complete: the marker is the last thing written."""
        record = {**meta, "key": key, "stage": stage, "format": CACHE_FORMAT}
        record.setdefault("created", time.time())
        inner = self._inner(stage, key)
        data = json.dumps(record, indent=2, default=str).encode()
        if is_remote(self.root):
            with self.fs.open_output_stream(f"{inner}/{MARKER}") as f:
                f.write(data)
        else:  # write-then-rename: a reader never sees a half-written marker
            tmp = f"{inner}/.{MARKER}.tmp"
            Path(tmp).write_bytes(data)
            os.replace(tmp, f"{inner}/{MARKER}")
        return record

    def touch(self, stage: str, key: str) -> None:
        """Record a reuse (``cache prune`` keeps what was used recently)."""
        try:
            with self.fs.open_output_stream(f"{self._inner(stage, key)}/{LAST_USED}") as f:
                f.write(str(time.time()).encode())
        except OSError as exc:  # a read-only cache still serves
            log.debug("cache: could not record use of %s/%s: %s", stage, key[:12], exc)

    def entries(self) -> list[Entry]:
        """Every complete entry, oldest use first."""
        out: list[Entry] = []
        if self.fs.get_file_info(self.inner).type != pafs.FileType.Directory:
            return out
        for stage_info in self.fs.get_file_info(pafs.FileSelector(self.inner)):
            if stage_info.type != pafs.FileType.Directory:
                continue
            stage = stage_info.base_name
            for info in self.fs.get_file_info(pafs.FileSelector(stage_info.path)):
                meta = self.lookup(stage, info.base_name)
                if meta is None:
                    continue
                out.append(
                    Entry(
                        stage=stage,
                        key=info.base_name,
                        path=self.path(stage, info.base_name),
                        created=float(meta.get("created", 0)),
                        last_used=self._last_used(stage, info.base_name, meta),
                        bytes=self._size(info.path),
                        run_name=meta.get("run_name"),
                    )
                )
        return sorted(out, key=lambda e: e.last_used)

    def _last_used(self, stage: str, key: str, meta: dict[str, Any]) -> float:
        try:
            with self.fs.open_input_stream(f"{self._inner(stage, key)}/{LAST_USED}") as f:
                return max(float(f.read().decode()), float(meta.get("created", 0)))
        except (OSError, ValueError):
            return float(meta.get("created", 0))

    def _size(self, inner: str) -> int:
        infos = self.fs.get_file_info(pafs.FileSelector(inner, recursive=True))
        return sum(i.size or 0 for i in infos if i.type == pafs.FileType.File)

    def remove(self, stage: str, key: str) -> None:
        """Delete one entry (marker first, so a concurrent reader never sees it half-gone)."""
        inner = self._inner(stage, key)
        try:
            self.fs.delete_file(f"{inner}/{MARKER}")
        except OSError:
            pass
        self.fs.delete_dir(inner)

    def prune(
        self, older_than_s: float, keep: set[str] = frozenset(), dry_run: bool = False
    ) -> list[Entry]:
        """Delete entries not used for ``older_than_s`` seconds, except keys in ``keep``.

        With ``dry_run`` nothing is deleted; the entries that would go are returned.
        """
        cutoff = time.time() - older_than_s
        gone = [e for e in self.entries() if e.last_used < cutoff and e.key not in keep]
        if not dry_run:
            for e in gone:
                self.remove(e.stage, e.key)
        return gone


def parse_age(text: str) -> float:
    """``7d``, ``12h``, ``30m``, ``45s`` (or plain seconds) -> seconds."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
    text = text.strip().lower()
    try:
        if text and text[-1] in units:
            value = float(text[:-1]) * units[text[-1]]
        else:
            value = float(text)
    except ValueError:
        value = -1.0
    if value < 0:
        raise ValueError(
            f"age '{text}' is not understood; write a number with a unit, e.g. 7d, 12h, 30m"
        )
    return value
