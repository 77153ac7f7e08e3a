"""The Run context: what one pipeline run knows while its stages execute.

A :class:`Run` holds the run's name and directories, the resume guard (a run resumes only
under the config it started with), the run record ``<run_dir>/run.json`` (each stage's
status, cache key, where its result lives and whether it was reused), the lineage that
goes onto MLflow and the registered model, the registry handle, and the stage timings.
Stages read the config and their upstream results through it and never reach around it.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs

from rayline.cache import StageCache
from rayline.config import PipelineConfig
from rayline.errors import ConfigError
from rayline.lineage import git_info, package_versions
from rayline.paths import filesystem, is_remote, nearest_existing
from rayline.runtime import resolve_storage

log = logging.getLogger(__name__)

RECORD = "run.json"


@dataclass
class StageTiming:
    """Wall time and a one-line summary of one stage.

    ``reused`` is ``"cache"`` (another run's result, or this run's from an earlier
    attempt) or None when the stage ran; ``key`` is its cache key; ``from_run`` the run
    that computed a reused result.
    """

    name: str
    seconds: float
    summary: str = ""
    key: str | None = None
    reused: str | None = None
    from_run: str | None = None

    @property
    def label(self) -> str:
        """The summary line, with ``cached <key[:12]>`` in front of a reused result."""
        if not self.reused:
            return self.summary
        origin = f" from run {self.from_run}" if self.from_run else ""
        return f"cached {(self.key or '')[:12]}{origin}: {self.summary}"


@dataclass
class PipelineResult:
    """What a run produced; :func:`rayline.summary.format_summary` renders it for people."""

    run_name: str
    run_dir: str
    config_hash: str
    tracking_uri: str | None = None
    mlflow_run_id: str | None = None
    data_report: dict[str, Any] | None = None
    train: dict[str, Any] | None = None
    evaluation: dict[str, Any] | None = None
    gate: dict[str, Any] | None = None
    model_name: str | None = None
    model_version: str | None = None
    model_uri: str | None = None
    champion_uri: str | None = None
    promoted: bool = False
    stages: list[StageTiming] = field(default_factory=list)
    trials: list[dict[str, Any]] = field(default_factory=list)
    resumed_at: str | None = None
    already_complete: bool = False
    #: The evaluation report's MLflow artifact path, and its local copy.
    report: str | None = None
    report_path: str | None = None
    #: What the deploy stage did (:class:`rayline.stages.deploy.DeployResult`), if it ran.
    deploy: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PipelineResult:
        """The inverse of :meth:`to_dict` (unknown keys ignored)."""
        known = {f for f in cls.__dataclass_fields__}
        out = cls(**{k: v for k, v in data.items() if k in known})
        out.stages = [StageTiming(**s) for s in data.get("stages", [])]
        return out


def default_run_name(cfg: PipelineConfig) -> str:
    """``<name>-<UTC timestamp>`` unless the config names the run."""
    return cfg.runtime.run_name or f"{cfg.name}-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}"


def now() -> str:
    """The current UTC time, ISO 8601."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def read_text(path: str) -> str | None:
    """A small text file at a local path or URI, or None when it is absent."""
    fs, inner = filesystem(path)
    try:
        if fs.get_file_info(inner).type != pafs.FileType.File:
            return None
        with fs.open_input_stream(inner) as f:
            return f.read().decode()
    except OSError:
        return None


def write_text(path: str, text: str) -> None:
    """Write a small text file atomically where the filesystem allows (local: rename)."""
    if not is_remote(path):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        tmp = f"{path}.tmp-{os.getpid()}"
        Path(tmp).write_text(text)
        os.replace(tmp, path)
        return
    fs, inner = filesystem(path)
    fs.create_dir(inner.rsplit("/", 1)[0], recursive=True)
    with fs.open_output_stream(inner) as f:
        f.write(text.encode())


def read_record(run_dir: str) -> dict[str, Any] | None:
    """A run's record (``run.json``), or None when there is none or it is unreadable."""
    text = read_text(f"{run_dir}/{RECORD}")
    try:
        return json.loads(text) if text else None
    except ValueError:
        return None


def _unwritable(storage: str, run_dir: str, exc: OSError) -> str:
    """What to say when the run directory cannot be written under ``storage``."""
    if not is_remote(storage):
        # The nearest existing ancestor says why: a file in the way, or no permission.
        p = nearest_existing(run_dir)
        if p.is_file():
            return (
                f"runtime.storage_path: '{p}' is a file, so the run directory {run_dir} "
                "cannot be made under it; point runtime.storage_path at a directory (it is "
                "created if missing)"
            )
    reason = exc.strerror or str(exc)
    return (
        f"runtime.storage_path: cannot write the run directory {run_dir} ({reason}); point "
        "runtime.storage_path at a directory this user can write"
    )


class Run:
    """One pipeline run: name, directories, record, lineage, registry, timings.

    Args:
        cfg: The resolved pipeline config.
        on_stage: Called with each finished stage's timing (the CLI prints a line).
        kind: ``runs`` for pipeline runs, ``validate`` for ``rayline validate``.
        on_stage_start: Called with a stage's name and this run as the stage starts.
    """

    def __init__(
        self,
        cfg: PipelineConfig,
        on_stage: Callable[[StageTiming], None] | None = None,
        kind: str = "runs",
        on_stage_start: Callable[[str, Run], None] | None = None,
    ):
        self.cfg = cfg
        self.name = default_run_name(cfg)
        self.storage = resolve_storage(cfg.runtime.storage_path)
        self.dir = f"{self.storage}/{kind}/{self.name}"
        # Reports are written next to the run; with remote storage a local scratch copy is
        # kept (the authoritative copies go to MLflow as artifacts).
        self.local_dir = (
            Path(tempfile.mkdtemp(prefix=f"rayline-{self.name}-"))
            if is_remote(self.dir)
            else Path(self.dir)
        )
        self.config_hash = cfg.fingerprint()
        self.result = PipelineResult(self.name, self.dir, self.config_hash)
        #: Shared by every run (``runtime.cache``), or None when off.
        self.cache = StageCache(f"{self.storage}/cache") if cfg.runtime.cache else None
        #: This run's own results, what a resumed run reuses when the shared cache is off.
        self.own = StageCache(f"{self.dir}/stages")
        self.registry: Any = None
        self.resources: dict[str, float] = {}
        self.on_stage = on_stage
        self.on_stage_start = on_stage_start
        self.keys: dict[str, str] = {}
        self.record: dict[str, Any] = {}
        self.previous: dict[str, Any] | None = None
        self.lineage: dict[str, Any] = {
            "run_name": self.name,
            "config_hash": self.config_hash,
            "code": git_info(),
            "packages": package_versions(),
            "started_at": now(),
            "reused": {},
        }

    # -- the resume guard and the record -----------------------------------------------------
    def claim(self, resume: bool = True) -> None:
        """Mark the run directory with the config hash; refuse another config under this name.

        A rerun with the same ``runtime.run_name`` resumes: stages that finished come from
        this run's record or the cache, training restores its latest checkpoint. That is
        only sound for the same config. With ``resume=False`` (``rayline validate``, which
        has nothing to resume) an earlier record under the name is simply replaced.
        """
        existing = read_text(f"{self.dir}/config_hash")
        if resume and existing is not None and existing.strip() != self.config_hash:
            raise ConfigError(
                [
                    f"runtime.run_name: run '{self.name}' already exists at {self.dir} with a "
                    "different config, and a run resumes only under the config it started "
                    "with; choose a new runtime.run_name (or leave it unset for a timestamped "
                    "one)"
                ]
            )
        try:
            write_text(f"{self.dir}/config_hash", self.config_hash)
        except OSError as exc:
            raise ConfigError([_unwritable(self.storage, self.dir, exc)]) from None
        self.previous = read_record(self.dir) if resume else None
        self.record = {
            "run_name": self.name,
            "config_hash": self.config_hash,
            "pipeline": self.cfg.name,
            "started_at": (self.previous or {}).get("started_at", now()),
            "attempts": int((self.previous or {}).get("attempts", 0)) + 1,
            "status": "running",
            "stages": dict((self.previous or {}).get("stages", {})),
        }
        self.save()

    def save(self, **updates: Any) -> None:
        """Update and write the run record."""
        self.record.update(updates)
        self.record["updated_at"] = now()
        write_text(f"{self.dir}/{RECORD}", json.dumps(self.record, indent=2, default=str))

    def set_stage(self, name: str, **fields: Any) -> None:
        """Record a stage's status (``running``, ``done``, ``failed``) and details."""
        stages = self.record.setdefault("stages", {})
        entry = {} if fields.get("status") == "running" else dict(stages.get(name, {}))
        entry.update(fields)
        stages[name] = entry
        self.save()

    def read_marker(self, name: str) -> str | None:
        """A small text file of the run directory."""
        text = read_text(f"{self.dir}/{name}")
        return text.strip() or None if text else None

    def write_marker(self, name: str, value: str) -> None:
        """Write a small text file into the run directory."""
        write_text(f"{self.dir}/{name}", value)

    # -- timings ------------------------------------------------------------------------------
    @contextmanager
    def timed(self, name: str) -> Iterator[StageTiming]:
        """Time a stage; report it to ``on_stage_start`` and ``on_stage`` (or the log)."""
        timing = StageTiming(name, 0.0)
        if self.on_stage_start:
            self.on_stage_start(name, self)
        else:
            log.info("stage %s: started", name)
        start = time.perf_counter()
        yield timing
        timing.seconds = time.perf_counter() - start
        self.result.stages.append(timing)
        if self.on_stage:
            self.on_stage(timing)
        else:
            log.info("stage %s: done in %.1fs %s", name, timing.seconds, timing.label)

    def write_json(self, name: str, data: Any) -> Path:
        """Write a JSON report into the run's local directory."""
        path = self.local_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, indent=2, default=str))
        return path
