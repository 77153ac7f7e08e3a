"""``rayline retrain``: compare the data now with the champion's, decide, run the pipeline.

A decision reads three things and changes nothing:

- the input files now (``data.path``, narrowed by ``retrain.window``), each with its size,
  mtime, footer rows and hive partition, as the ingest stage records them;
- what the champion was trained on: ``data_inputs`` in its run's ``lineage.json`` (the
  version's ``rayline.mlflow_run_id``), its age, and its ``profile/profile.json``;
- the newest version after the champion (an attempt the gate rejected), so that data a
  rejected challenger was trained on is not trained on again every cycle.

:func:`decide` is pure: the reasons to retrain are new or changed files holding at least
``retrain.min_new_rows`` rows, a new hive partition, new data that drifts past the
``drift`` rules (only the new files are validated and profiled), a champion older than
``retrain.max_age``, or no champion. When it says retrain, :func:`retrain_once` runs the
normal pipeline (:func:`rayline.pipeline.run_pipeline`) on the window and the gate decides.

Exit codes (the README's table, :data:`rayline.submit.EXIT_CODES`): :data:`EXIT_PROMOTED`
0, :data:`EXIT_REJECTED` 3 (retrained, the gate rejected the challenger), :data:`EXIT_NOTHING`
6 (nothing to do); errors 1 and 2 as for every command. ``--dry-run`` exits 0 when it would
retrain and 6 when not.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from rayline.cache import parse_age
from rayline.config import PipelineConfig
from rayline.config.sections import RetrainConfig, RetrainWindow
from rayline.errors import ConfigError

log = logging.getLogger(__name__)

EXIT_PROMOTED = 0
EXIT_REJECTED = 3
EXIT_NOTHING = 6
#: ``--dry-run``: the pipeline would run.
EXIT_WOULD_RETRAIN = 0

LINEAGE = "lineage.json"
PROFILE = "profile/profile.json"


# --------------------------------------------------------------------------- the pure part


@dataclass
class FileRecord:
    """One input file as lineage records it (``lineage.json`` ``data_inputs``)."""

    uri: str
    size: int | None = None
    mtime_ns: int | None = None
    sha256: str | None = None
    rows: int | None = None
    partition: dict[str, str] = field(default_factory=dict)
    mtime: str | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FileRecord:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})

    @property
    def partition_key(self) -> str:
        """``day=4`` (``day=4/region=eu``); empty outside a hive tree."""
        return "/".join(f"{k}={v}" for k, v in self.partition.items())


def changed(now: FileRecord, then: FileRecord) -> bool:
    """Whether a file at the same URI holds other data than when the champion was trained.

    Content digests decide when both sides have one (a file touched but not rewritten is
    unchanged); else a different size, else a different mtime. A record without size or
    mtime (lineage of a rayline that kept URIs only) tells nothing: unchanged.
    """
    if now.sha256 and then.sha256:
        return now.sha256 != then.sha256
    if now.size is not None and then.size is not None and now.size != then.size:
        return True
    return now.mtime_ns is not None and then.mtime_ns is not None and now.mtime_ns != then.mtime_ns


@dataclass
class FileDiff:
    """The files now against a set trained on: new, changed, gone (or out of the window)."""

    new: list[FileRecord]
    changed: list[FileRecord]
    gone: list[FileRecord]
    same: int

    @property
    def any(self) -> bool:
        return bool(self.new or self.changed)

    def rows(self) -> tuple[int, int]:
        """Rows of the new and changed files, and how many of them have no known count."""
        files = self.new + self.changed
        return sum(f.rows or 0 for f in files), sum(f.rows is None for f in files)


def diff_files(now: list[FileRecord], then: list[FileRecord]) -> FileDiff:
    """Compare by URI: files only ``now`` has are new, ones whose content moved changed."""
    before = {f.uri: f for f in then}
    current = {f.uri for f in now}
    new = [f for f in now if f.uri not in before]
    moved = [f for f in now if f.uri in before and changed(f, before[f.uri])]
    gone = [f for f in then if f.uri not in current]
    return FileDiff(new, moved, gone, len(now) - len(new) - len(moved))


def new_partitions(now: list[FileRecord], then: list[FileRecord]) -> list[str]:
    """Hive partitions (``day=4``) of files now that no file trained on lay in."""
    seen = {f.partition_key for f in then}
    return sorted({f.partition_key for f in now if f.partition_key} - seen)


def _sort_values(values: set[str]) -> list[str]:
    try:
        return sorted(values, key=float)
    except ValueError:
        return sorted(values)


def window_files(files: list[str], window: str | RetrainWindow) -> tuple[list[str], list[str]]:
    """The files of ``window`` (``all``, or the last N values of a hive partition key).

    Returns the files kept, in their order, and the partition values kept (sorted).

    Raises:
        ConfigError: the key is not a hive partition of every file.
    """
    from rayline.data.ingest import hive_values

    if window == "all" or not isinstance(window, RetrainWindow):
        return list(files), []
    key = window.partition
    values = {f: hive_values(f).get(key) for f in files}
    missing = [f for f, v in values.items() if v is None]
    if missing:
        keys = sorted({k for f in files for k in hive_values(f)})
        found = (
            f"the hive keys there are {', '.join(keys)}"
            if keys
            else "data.path is not a hive tree (no key=value directories)"
        )
        raise ConfigError(
            [
                f"retrain.window.partition: '{missing[0]}' lies in no '{key}=...' directory "
                f"({len(missing)} of {len(files)} file(s)); {found}. Name one of those keys, "
                "or set retrain.window: all"
            ]
        )
    kept = _sort_values(set(values.values()))[-window.last :]
    keep = set(kept)
    return [f for f in files if values[f] in keep], kept


def age_text(seconds: float) -> str:
    """``3d``, ``5h``, ``12m``, ``40s``: the largest whole unit."""
    for unit, width in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= width:
            return f"{seconds / width:.0f}{unit}" if unit == "d" else f"{seconds / width:.1f}{unit}"
    return f"{seconds:.0f}s"


@dataclass
class Trained:
    """A registered version and the data it was trained on (None: no per-file lineage)."""

    version: str
    created: float  # epoch seconds
    files: list[FileRecord] | None
    gate: str = ""


@dataclass
class Decision:
    """Whether to retrain, and why (each reason a line a person reads)."""

    retrain: bool
    reasons: list[str]
    notes: list[str] = field(default_factory=list)
    champion: str | None = None
    new_files: list[str] = field(default_factory=list)
    changed_files: list[str] = field(default_factory=list)
    new_rows: int = 0
    new_partitions: list[str] = field(default_factory=list)
    drift: dict[str, Any] | None = None
    window: list[str] = field(default_factory=list)
    files: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _names(files: list[FileRecord], limit: int = 3) -> str:
    shown = ", ".join(f.partition_key or f.uri.rsplit("/", 1)[-1] for f in files[:limit])
    return shown + (f" and {len(files) - limit} more" if len(files) > limit else "")


def decide(
    now: list[FileRecord],
    champion: Trained | None,
    cfg: RetrainConfig,
    *,
    at: float,
    attempt: Trained | None = None,
    drift: Any = None,
    drift_fail: bool = False,
) -> Decision:
    """Retrain or not, with reasons: a pure function of what was found.

    Args:
        now: The files of the window now.
        champion: The current champion and its training data; None when there is none.
        cfg: The ``retrain`` section.
        at: The time now (epoch seconds).
        attempt: The newest version after the champion (one the gate rejected), if any.
        drift: The drift of the new files against the champion's profile
            (:class:`rayline.data.drift.DriftReport`), when it was computed.
        drift_fail: Whether that drift would fail the gate (a ``fail`` rule broke).
    """
    out = Decision(False, [], files=len(now))
    max_age = parse_age(cfg.max_age) if cfg.max_age else None
    same_as_attempt = (
        attempt is not None and attempt.files is not None and not diff_files(now, attempt.files).any
    )
    if champion is None:
        if same_as_attempt:
            out.notes.append(
                f"no champion, and v{attempt.version} (gate: {attempt.gate or 'rejected'}) was "
                "trained on exactly this data; nothing new to train on"
            )
            return out
        out.retrain = True
        out.reasons.append("no champion yet: nothing to compare with")
        return out
    out.champion = champion.version
    data_reasons: list[str] = []
    if champion.files is None:
        data_reasons.append(
            f"champion v{champion.version} has no per-file lineage (registered by an older "
            "rayline, or its lineage.json is missing): what it was trained on is unknown"
        )
    else:
        d = diff_files(now, champion.files)
        out.new_files = [f.uri for f in d.new]
        out.changed_files = [f.uri for f in d.changed]
        rows, unknown = d.rows()
        out.new_rows = rows
        parts = new_partitions(now, champion.files)
        out.new_partitions = parts
        if d.gone:
            out.notes.append(
                f"{len(d.gone)} file(s) v{champion.version} was trained on are gone or outside "
                f"the window ({_names(d.gone)})"
            )
        if d.any:
            what = []
            if d.new:
                what.append(f"{len(d.new)} new file(s) ({_names(d.new)})")
            if d.changed:
                what.append(f"{len(d.changed)} changed file(s) ({_names(d.changed)})")
            counted = f"{rows} rows" + (f", {unknown} file(s) uncounted" if unknown else "")
            if parts:
                data_reasons.append(
                    f"new partition(s) {', '.join(parts)}: {' and '.join(what)}, {counted}"
                )
            elif rows >= cfg.min_new_rows:
                data_reasons.append(
                    f"new data: {' and '.join(what)}, {counted} >= min_new_rows {cfg.min_new_rows}"
                )
            elif unknown:  # a file whose rows cannot be counted may hold enough
                data_reasons.append(
                    f"new data: {' and '.join(what)}, {counted}: taken as past min_new_rows "
                    f"{cfg.min_new_rows}"
                )
            else:
                out.notes.append(
                    f"new data: {' and '.join(what)}, {counted} < min_new_rows {cfg.min_new_rows}"
                )
        else:
            out.notes.append(
                f"no new or changed files since v{champion.version}'s training data "
                f"({d.same} file(s))"
            )
        if drift is not None:
            out.drift = drift.to_dict()
            if drift.status in ("warn", "fail"):
                lines = "; ".join(drift.reasons())
                data_reasons.append(f"the new data drifts against v{champion.version}: {lines}")
                if drift_fail:
                    out.notes.append(
                        "drift marked `fail` in the new data: the gate will reject a "
                        "challenger whose train split drifts that far"
                    )
            else:
                out.notes.append(f"the new data against v{champion.version}: drift {drift.status}")
    if data_reasons and same_as_attempt:
        out.notes.append(
            f"v{attempt.version} (gate: {attempt.gate or 'rejected'}) was trained on exactly "
            "this data after the champion; waiting for new data (" + "; ".join(data_reasons) + ")"
        )
        data_reasons = []
    out.reasons.extend(data_reasons)
    age = at - champion.created
    if max_age is not None:
        if age > max_age:
            recent = attempt is not None and at - attempt.created <= max_age
            if recent and same_as_attempt:
                out.notes.append(
                    f"champion v{champion.version} is {age_text(age)} old > max_age "
                    f"{cfg.max_age}, but v{attempt.version} was trained on this data "
                    f"{age_text(at - attempt.created)} ago"
                )
            else:
                out.reasons.append(
                    f"champion v{champion.version} is {age_text(age)} old > max_age {cfg.max_age}"
                )
        else:
            out.notes.append(
                f"champion v{champion.version} is {age_text(age)} old <= max_age {cfg.max_age}"
            )
    out.retrain = bool(out.reasons)
    return out


# --------------------------------------------------------------------------- reading the world


@dataclass
class Plan:
    """A decision and what it rests on: the config to train with (the window applied)."""

    decision: Decision
    cfg: PipelineConfig
    model_name: str
    tracking_uri: str


def _records(cfg: PipelineConfig, sources) -> list[FileRecord]:
    """The window's files now: size and mtime, footer rows; no content read (see below)."""
    from datetime import datetime as dt

    from rayline.data.ingest import hive_values
    from rayline.data.validate import check_file_schemas

    footer_rows = check_file_schemas(sources, cfg.schema_.columns) or {}
    infos = sources.filesystem.get_file_info(list(sources.files))
    out = []
    for path, uri, info in zip(sources.files, sources.uris, infos, strict=True):
        out.append(
            FileRecord(
                uri=uri,
                size=info.size,
                mtime_ns=info.mtime_ns,
                rows=footer_rows.get(uri),
                partition=hive_values(path),
                mtime=(
                    dt.fromtimestamp(info.mtime_ns / 1e9, timezone.utc).isoformat()
                    if info.mtime_ns is not None
                    else None
                ),
            )
        )
    return out


def _digest_where_needed(sources, now: list[FileRecord], then: list[FileRecord]) -> None:
    """Hash the local files whose size matches the trained copy's but whose mtime does not.

    A file with the same size and mtime is the same; one of another size changed; only a
    touched file of the same size needs its content read to tell.
    """
    import hashlib

    import pyarrow.fs as pafs

    if not isinstance(sources.filesystem, pafs.LocalFileSystem):
        return
    before = {f.uri: f for f in then}
    paths = dict(zip(sources.uris, sources.files, strict=True))
    for f in now:
        old = before.get(f.uri)
        if old is None or not old.sha256 or old.size != f.size or old.mtime_ns == f.mtime_ns:
            continue
        h = hashlib.sha256()
        with open(paths[f.uri], "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        f.sha256 = h.hexdigest()


def _text_rows(sources, path: str) -> int:
    """Lines of a CSV (less its header) or JSON Lines file: the rows, near enough."""
    n = last = 0
    with sources.filesystem.open_input_stream(path) as f:
        while chunk := f.read(1 << 20):
            n += chunk.count(b"\n")
            last = chunk[-1]
    if last and last != ord("\n"):
        n += 1
    return max(0, n - 1) if sources.format == "csv" else n


def _trained(registry, name: str, version: str) -> Trained:
    """A version's creation time, gate tag and the per-file lineage of its run."""
    mv = registry.model_version(name, version)
    created = (mv.creation_timestamp or 0) / 1000
    gate = (mv.tags or {}).get("rayline.gate", "")
    text = registry.version_artifact_text(name, version, LINEAGE)
    files = None
    if text:
        try:
            lineage = json.loads(text)
        except ValueError:
            lineage = {}
        if lineage.get("data_inputs") is not None:
            files = [FileRecord.from_dict(r) for r in lineage["data_inputs"]]
        elif lineage.get("data_files"):  # URIs only: new files can still be told
            files = [FileRecord(uri=u) for u in lineage["data_files"]]
    return Trained(str(version), created, files, gate)


def _new_data_drift(cfg: PipelineConfig, sources, records, registry, name, version):
    """Drift of the new files alone against the champion's training profile, or None."""
    from rayline.data import drift as drift_mod
    from rayline.data import stage
    from rayline.data.ingest import SourceFiles
    from rayline.data.profile import Profile, compute_profile
    from rayline.runtime import init_ray, train_env

    if not cfg.drift.enabled or not records:
        return None, False
    text = registry.version_artifact_text(name, version, PROFILE)
    if not text:
        return None, False
    reference = Profile.from_json(text)
    uris = {r.uri for r in records}
    pairs = [(f, u) for f, u in zip(sources.files, sources.uris, strict=True) if u in uris]
    new = SourceFiles(
        files=[f for f, _ in pairs],
        format=sources.format,
        filesystem=sources.filesystem,
        uris=[u for _, u in pairs],
    )
    # Partition keys (day=...) are new by construction: never drift.
    keys = {k for r in records for k in r.partition}
    types = {c: s.type for c, s in cfg.schema_.columns.items() if c not in keys}
    # As the pipeline starts it (this Ray runs the retraining that may follow).
    init_ray(cfg.runtime, worker_env=train_env(cfg.train))
    current = compute_profile(stage.valid_rows(cfg, new), types)
    if current.rows == 0:
        return None, False
    report = drift_mod.compare(current, reference, cfg.drift, f"{name} v{version}")
    return report, bool(report.failed)


def plan(cfg: PipelineConfig, at: float | None = None) -> Plan:
    """Look at the data and the registry; decide (nothing is trained or written).

    Raises:
        DataSourceError / DataValidationError: the inputs cannot be listed or break the
            schema (footers only).
        ConfigError: ``retrain.window`` names no hive key of the inputs.
        RegistryError: the MLflow store cannot be read.
    """
    from rayline.data.ingest import SourceFiles, resolve_sources
    from rayline.registry import Registry, resolve_tracking_uri
    from rayline.runtime import resolve_storage

    at = time.time() if at is None else at
    found = resolve_sources(cfg.data.path, cfg.data.format, cfg.data.endpoint_url)
    kept, values = window_files(found.uris, cfg.retrain.window)
    keep = set(kept)
    pairs = [(f, u) for f, u in zip(found.files, found.uris, strict=True) if u in keep]
    sources = SourceFiles(
        files=[f for f, _ in pairs],
        format=found.format,
        filesystem=found.filesystem,
        uris=[u for _, u in pairs],
    )
    now = _records(cfg, sources)
    name = cfg.model_name
    storage = resolve_storage(cfg.runtime.storage_path)
    uri = resolve_tracking_uri(cfg.registry, storage)
    champion = attempt = None
    drift = None
    drift_fail = False
    store_missing = (
        uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file()
    )
    if not store_missing:  # a store no pipeline wrote has no champion; do not create it
        registry = Registry(cfg.registry, storage)
        version = registry.alias_version(name)
        newest = _newest_version(registry, name)
        if version is not None:
            champion = _trained(registry, name, version)
        if newest is not None and (version is None or int(newest) > int(version)):
            attempt = _trained(registry, name, newest)
        if champion is not None and champion.files is not None:
            _digest_where_needed(sources, now, champion.files)
            if attempt is not None and attempt.files is not None:
                _digest_where_needed(sources, now, attempt.files)
            d = diff_files(now, champion.files)
            fresh = d.new + d.changed
            for f in fresh:
                if f.rows is None:
                    path = dict(zip(sources.uris, sources.files, strict=True))[f.uri]
                    f.rows = _text_rows(sources, path)
            # Data a rejected attempt was trained on is not trained on again: no need to
            # profile it (a Ray Data pass) for a decision that is "nothing to do" anyway.
            covered = (
                attempt is not None
                and attempt.files is not None
                and not diff_files(now, attempt.files).any
            )
            if not covered:
                drift, drift_fail = _new_data_drift(cfg, sources, fresh, registry, name, version)
    decision = decide(
        now, champion, cfg.retrain, at=at, attempt=attempt, drift=drift, drift_fail=drift_fail
    )
    decision.window = values
    train_cfg = cfg
    if values:
        train_cfg = cfg.model_copy(deep=True)
        train_cfg.data.path = list(kept)
    return Plan(decision, train_cfg, name, uri)


def _newest_version(registry, name: str) -> str | None:
    from rayline.errors import RegistryError

    try:
        versions = registry.versions(name)
    except RegistryError:
        if registry.alias_version(name) is None:
            return None  # no such model yet
        raise
    return str(versions[0].version) if versions else None


# --------------------------------------------------------------------------- the command


def format_decision(plan: Plan, cfg: PipelineConfig) -> str:
    """The decision as a person reads it: the verdict, each reason, then notes."""
    d = plan.decision
    where = f"{plan.model_name}@{cfg.registry.alias}"
    head = (
        f"retrain: yes ({where}: {'v' + d.champion if d.champion else 'none'})"
        if d.retrain
        else f"retrain: nothing to do ({where}: {'v' + d.champion if d.champion else 'none'})"
    )
    lines = [head]
    lines += [f"  - {r}" for r in d.reasons]
    lines += [f"  . {n}" for n in d.notes]
    window = cfg.retrain.window
    if isinstance(window, RetrainWindow):
        lines.append(
            f"window: the last {window.last} value(s) of {window.partition}: "
            f"{', '.join(d.window)} ({d.files} file(s))"
        )
    return "\n".join(lines)


@dataclass
class Outcome:
    """One retrain cycle: the decision, the pipeline's result if it ran, the exit code."""

    plan: Plan
    result: Any = None
    code: int = EXIT_NOTHING
    dry_run: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "decision": self.plan.decision.to_dict(),
            "dry_run": self.dry_run,
            "exit_code": self.code,
            "result": self.result.to_dict() if self.result is not None else None,
        }


def run_name(cfg: PipelineConfig) -> str | None:
    """A fixed ``runtime.run_name`` would return its first run's result every cycle: a
    retrain run is ``<run_name>-<UTC timestamp>`` (None: the default name, already timed)."""
    if not cfg.runtime.run_name:
        return None
    return f"{cfg.runtime.run_name}-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}"


def retrain_once(
    cfg: PipelineConfig,
    dry_run: bool = False,
    on_stage=None,
    on_stage_start=None,
    on_decision=None,
) -> Outcome:
    """Decide; unless nothing is to be done (or ``dry_run``), run the pipeline.

    ``on_decision(plan)`` is called with the decision before anything trains.
    """
    from rayline.pipeline import run_pipeline

    p = plan(cfg)
    if on_decision is not None:
        on_decision(p)
    if not p.decision.retrain:
        return Outcome(p, code=EXIT_NOTHING, dry_run=dry_run)
    if dry_run:
        return Outcome(p, code=EXIT_WOULD_RETRAIN, dry_run=True)
    train_cfg = p.cfg
    name = run_name(train_cfg)
    if name:
        train_cfg = train_cfg.model_copy(deep=True)
        train_cfg.runtime.run_name = name
    result = run_pipeline(train_cfg, on_stage=on_stage, on_stage_start=on_stage_start)
    _tag_reasons(train_cfg, result, p.decision)
    code = EXIT_PROMOTED if result.promoted else EXIT_REJECTED
    return Outcome(p, result, code)


def _tag_reasons(cfg: PipelineConfig, result, decision: Decision) -> None:
    """Why this run trained, on its MLflow run and its model version."""
    from rayline.registry import Registry
    from rayline.runtime import resolve_storage

    value = json.dumps(decision.reasons)[:5000]
    registry = Registry(cfg.registry, resolve_storage(cfg.runtime.storage_path))
    if result.mlflow_run_id:
        registry.call(
            "tagging the run",
            registry.client.set_tag,
            result.mlflow_run_id,
            "rayline.retrain",
            value,
        )
    if result.model_name and result.model_version:
        registry.set_version_tags(
            result.model_name, result.model_version, {"rayline.retrain": value}
        )


def outcome_text(outcome: Outcome, alias: str) -> str:
    """The closing line of a cycle that ran the pipeline."""
    result = outcome.result
    if result is None:
        return ""
    gate = result.gate or {}
    drift = (result.data_report or {}).get("drift") or {}
    lines = []
    if drift.get("failed"):
        lines.append(
            f"drift marked fail on {', '.join(drift['failed'])}: the gate rejected the "
            "challenger for it (see the gate's reasons)"
        )
    if result.promoted:
        lines.append(f"retrained: {result.model_name} v{result.model_version} promoted to @{alias}")
    else:
        before = outcome.plan.decision.champion
        why = "the gate rejected it" if not gate.get("passed") else "it lost the alias race"
        lines.append(
            f"retrained: {result.model_name} v{result.model_version} not promoted ({why}); "
            f"@{alias} stays at {'v' + before if before else 'no version'}"
        )
    return "\n".join(lines)
