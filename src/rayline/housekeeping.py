"""``rayline cache`` and ``rayline runs``: what is stored, what used it, and pruning.

Reads the cache (:mod:`rayline.cache`) and the run records (``<storage>/runs/*/run.json``,
:mod:`rayline.run`); deletes only what its age and the registry allow. A run directory that
a registered model version names (tag ``rayline.run_name``) is never pruned: it holds the
checkpoints and staged data that version's audit trail points at.
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from typing import Any

import pyarrow.fs as pafs

from rayline.cache import StageCache, parse_age
from rayline.config import PipelineConfig
from rayline.errors import ConfigError
from rayline.paths import filesystem
from rayline.run import RECORD, read_record, read_text
from rayline.runtime import resolve_storage


def _age(text: str) -> float:
    try:
        return parse_age(text)
    except ValueError as exc:
        raise ConfigError([f"--older-than: {exc}"]) from None


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _ago(ts: float) -> str:
    s = max(0.0, time.time() - ts)
    for unit, width in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= width:
            return f"{s / width:.0f}{unit} ago"
    return f"{s:.0f}s ago"


def _ts(iso: str | None) -> float:
    try:
        return datetime.fromisoformat(str(iso)).timestamp()
    except ValueError:
        return 0.0


def run_records(cfg: PipelineConfig) -> list[dict[str, Any]]:
    """Every run's record under ``<storage>/runs``, oldest first (``dir`` added)."""
    root = f"{resolve_storage(cfg.runtime.storage_path)}/runs"
    fs, inner = filesystem(root)
    if fs.get_file_info(inner).type != pafs.FileType.Directory:
        return []
    out = []
    for info in fs.get_file_info(pafs.FileSelector(inner)):
        if info.type != pafs.FileType.Directory:
            continue
        path = f"{root}/{info.base_name}"
        record = read_record(path) or {
            "run_name": info.base_name,
            "status": "unknown (no run.json: made before run records)",
            "stages": {},
            "updated_at": datetime.fromtimestamp(
                (info.mtime.timestamp() if info.mtime else 0), timezone.utc
            ).isoformat(),
        }
        record["dir"] = path
        out.append(record)
    return sorted(out, key=lambda r: str(r.get("started_at") or r.get("updated_at")))


def _users(records: list[dict[str, Any]]) -> dict[str, list[str]]:
    """Cache key -> the runs whose record used it."""
    users: dict[str, list[str]] = {}
    for r in records:
        for st in r.get("stages", {}).values():
            if st.get("key"):
                users.setdefault(st["key"], []).append(r["run_name"])
    return users


def cache_table(cfg: PipelineConfig) -> str:
    """The ``rayline cache list`` table."""
    cache = StageCache(f"{resolve_storage(cfg.runtime.storage_path)}/cache")
    entries = cache.entries()
    if not entries:
        return f"no cache entries under {cache.root}"
    users = _users(run_records(cfg))
    lines = [f"{'stage':<15} {'key':<13} {'size':>10}  {'last used':<10}  made by / used by"]
    for e in entries:
        used = [u for u in users.get(e.key, []) if u != e.run_name]
        lines.append(
            f"{e.stage:<15} {e.key[:12]:<13} {_size(e.bytes):>10}  {_ago(e.last_used):<10}  "
            f"{e.run_name or '?'}" + (f" / {', '.join(sorted(set(used)))}" if used else "")
        )
    total = sum(e.bytes for e in entries)
    lines.append(f"{len(entries)} entries, {_size(total)} under {cache.root}")
    return "\n".join(lines)


def prune_cache(cfg: PipelineConfig, older_than: str, dry_run: bool = False) -> str:
    """Delete cache entries not used for ``older_than``; say what went."""
    cache = StageCache(f"{resolve_storage(cfg.runtime.storage_path)}/cache")
    old = cache.prune(_age(older_than), dry_run=dry_run)
    verb = "would remove" if dry_run else "removed"
    lines = [
        f"{verb} {e.stage} {e.key[:12]} ({_size(e.bytes)}, used {_ago(e.last_used)})" for e in old
    ]
    lines.append(
        f"{verb} {len(old)} cache entries ({_size(sum(e.bytes for e in old))}) not used for {older_than}"
    )
    return "\n".join(lines)


_SHORT = {"done": "ok", "running": "..", "failed": "FAIL", "interrupted": "INT"}


def runs_table(cfg: PipelineConfig) -> str:
    """The ``rayline runs list`` table."""
    records = run_records(cfg)
    if not records:
        return f"no runs under {resolve_storage(cfg.runtime.storage_path)}/runs"
    lines = [f"{'run':<32} {'started':<20} {'status':<12} {'model':<8} {'gate':<9} stages"]
    for r in records:
        stages = " ".join(
            f"{name}:{'cached' if st.get('reused') else _SHORT.get(st.get('status'), '?')}"
            for name, st in r.get("stages", {}).items()
        )
        version = r.get("model_version")
        lines.append(
            f"{r['run_name']:<32} {str(r.get('started_at', ''))[:19]:<20} "
            f"{str(r.get('status', '?'))[:12]:<12} {('v' + str(version)) if version else '-':<8} "
            f"{r.get('gate') or '-':<9} {stages}"
        )
    return "\n".join(lines)


def show_run(cfg: PipelineConfig, name: str) -> str:
    """The ``rayline runs show NAME`` text: the record, stage by stage, and the summary."""
    from rayline.run import PipelineResult
    from rayline.summary import format_summary

    root = f"{resolve_storage(cfg.runtime.storage_path)}/runs/{name}"
    record = read_record(root)
    if record is None:
        known = ", ".join(r["run_name"] for r in run_records(cfg)[-10:]) or "none"
        raise ConfigError(
            [f"run '{name}': no {RECORD} under {root}; `rayline runs list` shows the runs "
             f"(recent: {known})"]
        )  # fmt: skip
    lines = [
        f"run {record['run_name']}: {record.get('status')}",
        f"  directory:   {root}",
        f"  config hash: {record.get('config_hash')}",
        f"  started:     {record.get('started_at')}  (attempts: {record.get('attempts', 1)})",
        f"  updated:     {record.get('updated_at')}",
    ]
    if record.get("resumed_at"):
        lines.append(f"  resumed at:  {record['resumed_at']}")
    lines.append("  stages:")
    for stage, st in record.get("stages", {}).items():
        origin = (
            f"cached {str(st.get('key'))[:12]} from {st.get('from_run')}"
            if st.get("reused")
            else (f"key {str(st.get('key'))[:12]}" if st.get("key") else "")
        )
        lines.append(
            f"    {stage:<15} {st.get('status', '?'):<12} {float(st.get('seconds') or 0):7.1f}s  "
            f"{origin}  {st.get('summary') or st.get('error') or ''}".rstrip()
        )
    stored = read_text(f"{root}/pipeline_result.json")
    if stored:
        lines += [
            "",
            format_summary(PipelineResult.from_dict(json.loads(stored)), cfg.registry.alias),
        ]
    return "\n".join(lines)


def prune_runs(cfg: PipelineConfig, older_than: str, dry_run: bool = False) -> str:
    """Delete run directories not updated for ``older_than``, except registered ones."""
    from rayline.registry import Registry

    storage = resolve_storage(cfg.runtime.storage_path)
    registry = Registry(cfg.registry, storage)
    registry.connect()
    keep = registry.referenced_runs()
    cutoff = time.time() - _age(older_than)
    lines, gone = [], 0
    verb = "would remove" if dry_run else "removed"
    for r in run_records(cfg):
        if _ts(r.get("updated_at")) >= cutoff:
            continue
        if r["run_name"] in keep:
            lines.append(f"kept {r['run_name']}: a registered model version names it")
            continue
        if not dry_run:
            fs, inner = filesystem(r["dir"])
            fs.delete_dir(inner)
        gone += 1
        lines.append(f"{verb} {r['run_name']} ({r['dir']})")
    lines.append(f"{verb} {gone} run(s) not updated for {older_than}")
    return "\n".join(lines)
