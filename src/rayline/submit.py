"""``rayline submit`` and ``rayline jobs``: the pipeline as a Ray job on a cluster.

The config is loaded and validated here, on the submitting machine, before anything is
sent: a typo fails in a second, not after the cluster has set up a runtime environment.
The job is ``python -m rayline run CONFIG [overrides]`` run by Ray's Jobs API in an
uploaded copy of the working directory (:func:`prepare`); its driver's exit code becomes
``rayline submit``'s (:func:`exit_code`), so a scheduler reads the same codes from ``run``
and ``submit`` (the README's table, :data:`EXIT_CODES`).

Relative paths in the config would resolve inside that temporary copy and be lost with it.
So they are made absolute here when the cluster shares this machine's filesystem
(``--shared-fs``, the default for a loopback address whose nodes all run on this machine:
:func:`shares_filesystem`), and refused, naming the key and the
fix, when it does not.

The Ray token (token auth) is sent as an ``Authorization`` header read from
``$RAY_AUTH_TOKEN``, the file ``$RAY_AUTH_TOKEN_PATH`` or ``~/.ray/auth_token``, in that
order (Ray's own order); it is never put into the job's environment, entrypoint or metadata.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from rayline.config import PipelineConfig, load_config
from rayline.errors import ClusterError, ConfigError
from rayline.paths import is_remote

#: What each exit code of ``rayline run`` / ``submit`` means (the README's table).
EXIT_CODES: dict[int, str] = {
    0: "done: the pipeline finished (the gate may still have rejected the model)",
    1: "internal error: a bug in rayline; rerun with --verbose and report it",
    2: "user error: bad config, data, paths, or an unreachable service; the message says which",
    3: "gate rejected the model (run and submit only with --fail-on-reject; retrain: "
    "retrained, the challenger was rejected)",
    4: "job stopped (rayline jobs stop, ray job stop, or the cluster's operator)",
    5: "job lost: the cluster stopped answering, or the job died without a rayline exit "
    "code (its node was lost, or rayline is not installed on the cluster)",
    6: "nothing to do: rayline retrain found no reason to retrain (no new data, no drift, "
    "champion not too old)",
    130: "interrupted (Ctrl-C); a rerun with the same runtime.run_name resumes",
}
EXIT_OK, EXIT_INTERNAL, EXIT_USER, EXIT_REJECTED, EXIT_STOPPED, EXIT_LOST = 0, 1, 2, 3, 4, 5
EXIT_NOTHING = 6  # rayline retrain: nothing to do
#: Driver exit codes that are rayline's own and pass through ``submit`` unchanged.
RAYLINE_CODES = (EXIT_OK, EXIT_INTERNAL, EXIT_USER, EXIT_REJECTED, EXIT_NOTHING, 130)

#: Never uploaded with the working directory (on top of what .gitignore lists).
#: Leading "/" anchors a pattern at the working directory's root (gitignore syntax).
EXCLUDES = [
    "/.git",
    "/.venv",
    "/venv",
    "/data",
    "/rayline-runs",
    "/mlruns",
    "**/__pycache__",
    "*.egg-info",
    ".pytest_cache",
    ".ruff_cache",
]

TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")
LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")


# --------------------------------------------------------------------------- addresses


def jobs_address(address: str | None) -> str:
    """The Jobs API URL from ``--address`` or ``$RAY_ADDRESS`` (``host:port`` gets http://).

    Raises:
        ClusterError: neither is set, or it names the GCS or Ray Client port.
    """
    address = (address or os.environ.get("RAY_ADDRESS") or "").strip()
    if not address:
        raise ClusterError(
            "no cluster address: pass --address http://HEAD:8265 (the Ray dashboard's Jobs "
            "API; for KubeRay, port-forward service/<cluster>-head-svc 8265) or set RAY_ADDRESS"
        )
    if address.startswith("ray://") or address == "auto":
        raise ClusterError(
            f"--address {address} is a Ray Client / GCS address; rayline submit talks to the "
            "Jobs API on the dashboard port: use http://HEAD:8265"
        )
    if "://" not in address:
        address = f"http://{address}"
    parsed = urlparse(address)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ClusterError(f"--address {address} is not an http(s) URL; use http://HEAD:8265")
    if parsed.port in (6379, 10001):
        raise ClusterError(
            f"--address {address} is the cluster's {'GCS' if parsed.port == 6379 else 'Ray Client'} "
            "port; rayline submit talks to the Jobs API on the dashboard port (8265 by default): "
            f"use http://{parsed.hostname}:8265"
        )
    return address.rstrip("/")


def is_loopback(address: str) -> bool:
    return (urlparse(address).hostname or "") in LOOPBACK


#: How long the dashboard's node summary may take to answer (then loopback decides).
NODES_TIMEOUT_S = 30.0


def node_hostnames(client_: Any) -> list[str] | None:
    """The hostnames of the cluster's nodes, from the dashboard's node summary (the server
    that serves the Jobs API); None when it does not say."""
    try:
        response = client_._do_request("GET", "/nodes?view=summary", timeout=NODES_TIMEOUT_S)
        if response.status_code != 200:
            return None
        rows = response.json()["data"]["summary"]
    except Exception:  # noqa: BLE001 - an older or a proxied dashboard: we cannot tell
        return None
    names = [str(row.get("hostname") or "") for row in rows if isinstance(row, dict)]
    return [n for n in names if n] or None


def shares_filesystem(address: str, hostnames: list[str] | None) -> bool:
    """The default of ``--shared-fs``: a loopback address whose nodes all run on this
    machine (a ``ray start`` cluster here). A loopback address whose nodes are other hosts
    is a port-forward (``kubectl port-forward``, an SSH tunnel) to a remote cluster, which
    sees none of this machine's files. When the cluster does not say, loopback decides."""
    if not is_loopback(address):
        return False
    if hostnames is None:
        return True
    import socket

    return all(name == socket.gethostname() for name in hostnames)


def find_token() -> tuple[str | None, str]:
    """The Ray auth token and where it came from, in Ray's order of precedence."""
    if os.environ.get("RAY_AUTH_TOKEN", "").strip():
        return os.environ["RAY_AUTH_TOKEN"].strip(), "$RAY_AUTH_TOKEN"
    path = os.environ.get("RAY_AUTH_TOKEN_PATH")
    if path:
        try:
            return Path(path).read_text().strip() or None, f"$RAY_AUTH_TOKEN_PATH ({path})"
        except OSError:
            return None, f"$RAY_AUTH_TOKEN_PATH ({path}, unreadable)"
    default = Path.home() / ".ray" / "auth_token"
    if default.is_file():
        return default.read_text().strip() or None, str(default)
    return None, "no token"


def client(address: str | None):
    """A ``JobSubmissionClient`` for the cluster, with the token when one is found.

    Raises:
        ClusterError: the address does not answer, is not a Ray Jobs API, or refuses
            the token (or its absence); the message names the address and the fix.
    """
    url = jobs_address(address)
    try:
        from ray.job_submission import JobSubmissionClient
    except ImportError as exc:  # pragma: no cover - ray[default] is a base dependency
        raise ClusterError(
            f"the Ray Jobs client is not installed ({exc}); install 'ray[default]'"
        ) from None
    token, source = find_token()
    headers = {"Authorization": f"Bearer {token}"} if token else None
    try:
        return JobSubmissionClient(url, headers=headers)
    except Exception as exc:  # noqa: BLE001 - Ray raises several types; mapped below
        raise _connect_error(url, exc, token, source) from None


def _connect_error(url: str, exc: Exception, token: str | None, source: str) -> ClusterError:
    text = str(exc)
    if type(exc).__name__ == "AuthenticationError" or "Authentication" in text[:40]:
        if token is None:
            return ClusterError(
                f"the cluster at {url} has token authentication on and no token was found "
                "(looked in $RAY_AUTH_TOKEN, $RAY_AUTH_TOKEN_PATH and ~/.ray/auth_token): set "
                "RAY_AUTH_TOKEN_PATH to a file holding the cluster's token (on the head node: "
                "`ray get-auth-token`)"
            )
        return ClusterError(
            f"the cluster at {url} refused the token from {source}: it is not this cluster's "
            "token; set RAY_AUTH_TOKEN_PATH to a file with the right one (on the head node: "
            "`ray get-auth-token`)"
        )
    if isinstance(exc, ConnectionError) or "Failed to connect" in text:
        return ClusterError(
            f"cannot reach the Ray Jobs API at {url}: check the address (the head's dashboard "
            "port, 8265 by default; for KubeRay port-forward the head service) and that the "
            "cluster is up"
        )
    return ClusterError(
        f"{url} does not answer as a Ray Jobs API ({text.strip().splitlines()[0][:200]}): "
        "point --address at the Ray dashboard (http://HEAD:8265) of a cluster started with "
        "ray[default] (the dashboard serves the Jobs API)"
    )


# --------------------------------------------------------------------------- submission


@dataclass
class Submission:
    """What goes to the Jobs API: an entrypoint, a runtime_env and metadata."""

    entrypoint: str
    runtime_env: dict[str, Any]
    metadata: dict[str, str]
    submission_id: str
    #: Overrides rayline added (relative paths made absolute), for the user to see.
    resolved: list[str] = field(default_factory=list)


def _is_relative(path: str) -> bool:
    """A local path that would resolve against the job's working directory."""
    return not is_remote(path) and not os.path.isabs(path)


def _data_paths(cfg: PipelineConfig) -> list[str]:
    return cfg.data.path if isinstance(cfg.data.path, list) else [cfg.data.path]


def _relative_paths(cfg: PipelineConfig) -> list[tuple[str, str, Callable[[Path], str]]]:
    """``(key, value, override value for a base dir)`` for every relative path in ``cfg``."""
    out: list[tuple[str, str, Callable[[Path], str]]] = []
    paths = _data_paths(cfg)
    if any(_is_relative(p) for p in paths):

        def data_value(base: Path) -> str:
            new = [str(base / p) if _is_relative(p) else p for p in paths]
            return json.dumps(new if isinstance(cfg.data.path, list) else new[0])

        out.append(("data.path", json.dumps(cfg.data.path), data_value))
    sp = cfg.runtime.storage_path
    if _is_relative(sp):
        out.append(("runtime.storage_path", sp, lambda base: json.dumps(str(base / sp))))
    uri = cfg.registry.tracking_uri
    if uri:
        rel = _relative_tracking_path(uri)
        if rel is not None:
            prefix = uri[: len(uri) - len(rel)]
            out.append(
                ("registry.tracking_uri", uri, lambda base: json.dumps(prefix + str(base / rel)))
            )
    return out


def _relative_tracking_path(uri: str) -> str | None:
    """The relative file path inside a tracking URI (``sqlite:///x.db``, ``mlruns``), if any."""
    if uri.startswith("sqlite:///"):
        rest = uri[len("sqlite:///") :]
        return rest if rest and not rest.startswith("/") else None
    if uri.startswith("file:"):
        rest = uri[len("file:") :]
        return rest if rest and not rest.startswith("/") else None
    if not _is_relative(uri) or re.match(r"^[A-Za-z]+:", uri):
        return None
    return uri


def prepare(
    config: str,
    overrides: list[str],
    *,
    address: str,
    shared_fs: bool | Callable[[], bool] | None = None,
    working_dir: str | None = None,
    fail_on_reject: bool = False,
    submission_id: str | None = None,
    command: tuple[str, ...] = ("run",),
    extra_args: tuple[str, ...] = (),
) -> Submission:
    """Validate the config here and build the job; relative paths resolved or refused.

    The job runs ``python -m rayline <command> CONFIG <overrides> <extra_args>``: the
    pipeline (``run``) or, e.g., ``bench scaling`` with its options. ``shared_fs`` may be a
    function that tells (:func:`shares_filesystem`, which asks the cluster); it is called
    only when the config has relative paths, once the config has validated.

    Raises:
        ConfigError: the config or an override is invalid, the config file is outside the
            working directory, or a relative path cannot reach the cluster.
    """
    cfg = load_config(config, overrides)
    wd = Path(working_dir or os.getcwd()).resolve()
    if not wd.is_dir():
        raise ConfigError([f"--working-dir {wd} is not a directory"])
    cfg_path = Path(config).resolve()
    try:
        cfg_rel = cfg_path.relative_to(wd)
    except ValueError:
        raise ConfigError(
            [
                f"the config {cfg_path} is outside the working directory {wd}, which is what "
                "is uploaded to the cluster: run rayline submit from a directory that holds "
                "the config, or pass --working-dir"
            ]
        ) from None
    relative = _relative_paths(cfg)
    if shared_fs is None:
        shared_fs = is_loopback(address)
    elif callable(shared_fs):
        shared_fs = bool(relative) and shared_fs()
    base = Path(os.getcwd()).resolve()
    resolved: list[str] = []
    problems: list[str] = []
    for key, value, absolute in relative:
        if shared_fs:
            resolved.append(f"{key}={absolute(base)}")
        else:
            problems.append(
                f"{key}: {value} is a relative path; the job runs in a temporary copy of the "
                "working directory on the cluster, so it would read nothing there (data) or "
                "write where nothing is kept (runs, MLflow). Give it a location every node "
                "reaches (s3://..., gs://..., an http:// MLflow server, or an absolute path "
                "on a volume mounted on every node), or pass --shared-fs when the cluster's "
                "nodes share this machine's filesystem"
            )
    if problems:
        raise ConfigError(problems, config)
    final = list(overrides) + resolved
    load_config(config, final)  # the job's exact config still validates
    args = ["python", "-m", "rayline", *command, cfg_rel.as_posix(), *final, *extra_args]
    if fail_on_reject:
        args.append("--fail-on-reject")
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    name = re.sub(r"[^A-Za-z0-9_-]+", "-", cfg.name).strip("-")[:40] or "pipeline"
    sid = submission_id or f"rayline-{name}-{stamp}-{os.urandom(2).hex()}"
    from rayline import __version__

    runtime_env: dict[str, Any] = {
        "working_dir": str(wd),
        "excludes": _excludes(wd, cfg, base),
        # The job's output reaches its log line by line, as `rayline run` prints it.
        "env_vars": {"PYTHONUNBUFFERED": "1"},
    }
    metadata = {
        "rayline": __version__,
        "rayline_config": cfg_rel.as_posix(),
        "rayline_command": " ".join(command),
        "rayline_pipeline": cfg.name,
        "submitted_from": f"{os.uname().nodename}:{base}",
    }
    return Submission(shlex.join(args), runtime_env, metadata, sid, resolved)


def _excludes(wd: Path, cfg: PipelineConfig, base: Path) -> list[str]:
    """:data:`EXCLUDES` plus the run storage and local data when they lie inside ``wd``."""
    out = list(EXCLUDES)
    for p in [cfg.runtime.storage_path, *_data_paths(cfg)]:
        if is_remote(p):
            continue
        full = (base / p).resolve()  # an absolute p replaces base
        try:
            rel = full.relative_to(wd)
        except ValueError:
            continue
        # The first path component that is not a glob: data/*.parquet excludes data/.
        parts = [part for part in rel.parts if not any(c in part for c in "*?[")]
        if parts and "/" + parts[0] not in out:
            out.append("/" + parts[0])
    return out


def submit(client_: Any, sub: Submission) -> str:
    """Send ``sub``; the job id. Runtime-env upload failures become a ClusterError."""
    try:
        return client_.submit_job(
            entrypoint=sub.entrypoint,
            runtime_env=sub.runtime_env,
            metadata=sub.metadata,
            submission_id=sub.submission_id,
        )
    except Exception as exc:  # noqa: BLE001 - HTTP errors come back as RuntimeError
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise ClusterError(f"the cluster did not accept the job: {first}") from None


# --------------------------------------------------------------------------- following


def exit_code(info: Any) -> int:
    """rayline's exit code for a finished job (``JobDetails``/``JobInfo``)."""
    status = str(getattr(info.status, "value", info.status))
    if status == "SUCCEEDED":
        return EXIT_OK
    if status == "STOPPED":
        return EXIT_STOPPED
    code = getattr(info, "driver_exit_code", None)
    if code in RAYLINE_CODES and code != EXIT_OK:
        return int(code)
    return EXIT_LOST


def explain(info: Any) -> str:
    """One line on how a job ended, for stderr."""
    status = str(getattr(info.status, "value", info.status))
    code = exit_code(info)
    if status == "SUCCEEDED":
        return f"job {info.submission_id} succeeded"
    if status == "STOPPED":
        return f"job {info.submission_id} was stopped (exit {code})"
    driver = getattr(info, "driver_exit_code", None)
    if code == EXIT_LOST:
        msg = (info.message or "").strip().splitlines()
        why = msg[0][:300] if msg else "no message from the cluster"
        hint = (
            " (127: the entrypoint's `python` or rayline is not installed on the cluster's "
            "head node; install rayline there)"
            if driver == 127
            else ""
        )
        return f"job {info.submission_id} failed without a rayline exit code: {why}{hint}"
    return f"job {info.submission_id} failed: exit {code} ({EXIT_CODES[code].split(':')[0]})"


def follow(
    client_: Any,
    job_id: str,
    write: Callable[[str], None],
    *,
    poll_s: float = 1.0,
    lost_after_s: float = 120.0,
) -> Any:
    """Stream the job's logs through ``write`` until it ends; its final ``JobDetails``.

    Raises:
        ClusterError: the cluster stopped answering for ``lost_after_s`` (the job may be
            running still).
    """

    async def tail() -> None:
        async for chunk in client_.tail_job_logs(job_id):
            write(chunk)

    try:
        asyncio.run(tail())
    except KeyboardInterrupt:
        raise
    except Exception:  # noqa: BLE001 - the websocket dropped; fall back to polling
        pass
    deadline = time.monotonic() + lost_after_s
    while True:
        try:
            info = client_.get_job_info(job_id)
            deadline = time.monotonic() + lost_after_s
            if str(getattr(info.status, "value", info.status)) in TERMINAL:
                return info
        except Exception as exc:  # noqa: BLE001
            if time.monotonic() > deadline:
                raise ClusterError(
                    f"lost contact with the cluster while following job {job_id} "
                    f"({str(exc).strip()[:200]}); it may still be running: "
                    f"`rayline jobs status {job_id}` once the cluster answers"
                ) from None
        time.sleep(poll_s)


# --------------------------------------------------------------------------- jobs


def job_rows(client_: Any, include_all: bool = False) -> list[dict[str, Any]]:
    """The cluster's jobs, newest first; only rayline's unless ``include_all``."""
    rows = []
    for j in client_.list_jobs():
        meta = j.metadata or {}
        if not include_all and "rayline" not in meta:
            continue
        finished = str(getattr(j.status, "value", j.status)) in TERMINAL
        rows.append(
            {
                "job_id": j.submission_id or j.job_id,
                "status": str(getattr(j.status, "value", j.status)),
                "exit_code": exit_code(j) if finished else None,
                "pipeline": meta.get("rayline_pipeline", ""),
                "config": meta.get("rayline_config", ""),
                "start": _ts(j.start_time),
                "end": _ts(j.end_time),
                "entrypoint": j.entrypoint,
            }
        )
    rows.sort(key=lambda r: r["start"] or "", reverse=True)
    return rows


def _ts(ms: int | None) -> str | None:
    if not ms:
        return None
    return datetime.fromtimestamp(ms / 1000, timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def jobs_table(rows: Iterable[dict[str, Any]]) -> str:
    rows = list(rows)
    if not rows:
        return "no rayline jobs on this cluster (--all lists every job)"
    head = ("JOB ID", "STATUS", "EXIT", "PIPELINE", "STARTED (UTC)", "ENDED (UTC)")
    table = [
        (
            r["job_id"],
            r["status"],
            "" if r["exit_code"] is None else str(r["exit_code"]),
            r["pipeline"] or r["entrypoint"][:40],
            r["start"] or "",
            r["end"] or "",
        )
        for r in rows
    ]
    widths = [max(len(str(x)) for x in col) for col in zip(head, *table, strict=False)]
    return "\n".join(
        "  ".join(str(c).ljust(w) for c, w in zip(line, widths, strict=True)).rstrip()
        for line in [head, *table]
    )


def job_info(client_: Any, job_id: str) -> Any:
    """``JobDetails`` of ``job_id``; a clear error when the cluster has no such job."""
    try:
        return client_.get_job_info(job_id)
    except Exception as exc:  # noqa: BLE001 - Ray raises RuntimeError on a 404
        if "404" in str(exc) or "does not exist" in str(exc):
            raise ClusterError(
                f"no job {job_id} on this cluster; `rayline jobs list` shows its jobs"
            ) from None
        raise ClusterError(f"cannot read job {job_id}: {str(exc).strip()[:200]}") from None


def stop(client_: Any, job_id: str, wait_s: float = 60.0) -> Any:
    """Ask the cluster to stop ``job_id`` and wait (bounded) until it has; its details."""
    job_info(client_, job_id)
    client_.stop_job(job_id)
    deadline = time.monotonic() + wait_s
    while True:
        info = client_.get_job_info(job_id)
        if str(getattr(info.status, "value", info.status)) in TERMINAL:
            return info
        if time.monotonic() > deadline:
            return info
        time.sleep(1.0)


@contextmanager
def quiet_ray_client(verbose: bool) -> Iterator[None]:
    """Hide the Jobs client's packaging and websocket INFO/WARNING lines unless ``verbose``;
    Ray's loggers get their levels back afterwards."""
    import logging

    import ray.job_submission  # noqa: F401 - Ray sets its loggers' levels on import

    level = logging.DEBUG if verbose else logging.ERROR
    names = [
        n for n in ["ray", *logging.Logger.manager.loggerDict] if n == "ray" or n.startswith("ray.")
    ]
    saved = {n: logging.getLogger(n).level for n in names}
    for n in names:
        logging.getLogger(n).setLevel(level)
    try:
        yield
    finally:
        for n, lvl in saved.items():
            logging.getLogger(n).setLevel(lvl)


def write_stdout(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()
