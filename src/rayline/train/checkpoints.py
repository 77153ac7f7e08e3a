"""Checkpoints that rayline keeps itself when training runs in-process (``train.local_mode``).

Ray Train's local mode (``ScalingConfig(num_workers=0)``) runs the loop in the calling
process and persists nothing: a reported checkpoint is only remembered in memory. So the
loop copies each epoch's checkpoint to ``<storage>/<run>/checkpoints/checkpoint_epoch-N``
itself, keeps the best ``train.keep_checkpoints`` by the validation metric plus the latest
(to resume from), and records them in ``index.json``, written last and atomically, so a
checkpoint being copied when the process dies is never listed.
"""

from __future__ import annotations

import json
import os
from typing import Any

INDEX_FILE = "index.json"


def _fs(uri: str):
    from rayline.paths import filesystem

    return filesystem(uri)


def read_index(directory: str) -> list[dict[str, Any]]:
    """The kept checkpoints, oldest first: ``{"epoch", "path", "metrics"}`` each."""
    import pyarrow.fs as pafs

    fs, root = _fs(directory)
    if fs.get_file_info(f"{root}/{INDEX_FILE}").type != pafs.FileType.File:
        return []
    with fs.open_input_stream(f"{root}/{INDEX_FILE}") as f:
        return json.loads(f.read())


def _score(entry: dict[str, Any], mode: str) -> tuple[float, int]:
    value = entry["metrics"].get("val_metric")
    if not isinstance(value, int | float) or value != value:  # NaN ranks last
        return (float("-inf"), entry["epoch"])
    return ((value if mode == "max" else -value), entry["epoch"])


def persist(
    src_dir: str, directory: str, epoch: int, metrics: dict[str, Any], keep: int, mode: str
) -> str:
    """Copy ``src_dir`` as epoch ``epoch``'s checkpoint; apply retention; return its path.

    On a tie of the metric the later checkpoint ranks higher (as Ray's own manager does).
    """
    import pyarrow.fs as pafs

    fs, root = _fs(directory)
    dest = f"{root}/checkpoint_epoch-{epoch:05d}"
    fs.create_dir(root, recursive=True)
    if fs.get_file_info(dest).type != pafs.FileType.NotFound:
        fs.delete_dir(dest)  # a rerun of this epoch (resumed run) replaces it
    fs.create_dir(dest, recursive=True)
    pafs.copy_files(
        src_dir, dest, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=fs
    )
    entries = [e for e in read_index(directory) if e["epoch"] != epoch]
    entries.append({"epoch": epoch, "path": dest, "metrics": _plain(metrics)})
    ranked = sorted(entries, key=lambda e: _score(e, mode), reverse=True)
    kept = {e["epoch"] for e in ranked[: max(1, keep)]} | {max(e["epoch"] for e in entries)}
    index = sorted((e for e in entries if e["epoch"] in kept), key=lambda e: e["epoch"])
    tmp = f"{root}/{INDEX_FILE}.tmp"
    with fs.open_output_stream(tmp) as f:
        f.write(json.dumps(index).encode())
    fs.move(tmp, f"{root}/{INDEX_FILE}")
    for e in entries:
        if e["epoch"] not in kept and fs.get_file_info(e["path"]).type != pafs.FileType.NotFound:
            fs.delete_dir(e["path"])
    return dest


def latest(directory: str) -> dict[str, Any] | None:
    """The newest kept checkpoint, or None."""
    index = read_index(directory)
    return index[-1] if index else None


def best(directory: str, mode: str) -> dict[str, Any] | None:
    """The best kept checkpoint by the validation metric, or None."""
    index = read_index(directory)
    return max(index, key=lambda e: _score(e, mode)) if index else None


def fetch(path: str, directory: str, dest: str) -> str:
    """Copy a kept checkpoint (``path`` as recorded in the index) to local ``dest``."""
    import pyarrow.fs as pafs

    fs, _ = _fs(directory)
    os.makedirs(dest, exist_ok=True)
    pafs.copy_files(path, dest, source_filesystem=fs, destination_filesystem=pafs.LocalFileSystem())
    return dest


def _plain(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in metrics.items() if isinstance(v, bool | int | float | str)}
