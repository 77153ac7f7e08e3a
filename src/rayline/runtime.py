"""Connecting to Ray and laying out run storage.

Locally, Ray is started with more logical CPUs than the machine has cores: Ray Train workers
each reserve a CPU, and on a 2-core laptop two workers would otherwise take every CPU and
leave Ray Data none to read and transform with, so training waits forever for its first
batch. Oversubscribing logical CPUs is safe here because the workers and the data tasks
mostly take turns.
"""

from __future__ import annotations

import importlib
import logging
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rayline.config import RuntimeConfig, TrainConfig
from rayline.errors import ClusterError
from rayline.paths import is_remote

log = logging.getLogger(__name__)


class Background:
    """``fn()`` running in a thread; :meth:`result` waits for it and returns what it
    returned or raises what it raised."""

    def __init__(self, fn: Callable[[], Any], name: str):
        self._value: Any = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(fn,), name=name, daemon=True)
        self._thread.start()

    def _run(self, fn: Callable[[], Any]) -> None:
        try:
            self._value = fn()
        except BaseException as exc:  # noqa: BLE001 - re-raised by result()
            self._error = exc

    def join(self) -> None:
        self._thread.join()

    def result(self) -> Any:
        self.join()
        if self._error is not None:
            raise self._error
        return self._value


@contextmanager
def in_background(fn: Callable[[], Any], name: str = "rayline-background") -> Iterator[Background]:
    """Run ``fn`` in a thread while the block runs; the block may wait for its result
    (:meth:`Background.result`), and leaves only once it is done, also when the block
    raised (so that, e.g., a database it creates is never left half made)."""
    job = Background(fn, name)
    try:
        yield job
    finally:
        job.join()


def import_quietly(modules: tuple[str, ...]) -> None:
    """Import ``modules``; one that fails is imported again, with its error, by whoever
    needs it."""
    for name in modules:
        try:
            importlib.import_module(name)
        except BaseException:  # noqa: BLE001 - the importer that needs it sees the error
            log.debug("background import of %s failed", name, exc_info=True)


def import_in_background(modules: tuple[str, ...]):
    """Import ``modules`` in a thread while the block runs (joined when it ends).

    For modules that do not import Ray, while the block starts it: the two import
    disjoint packages, so neither waits on a module the other is importing.
    """
    return in_background(lambda: import_quietly(modules), name="rayline-imports")


def default_local_cpus() -> int:
    """Logical CPUs for a local Ray: twice the cores, at least 8."""
    return max(8, 2 * (os.cpu_count() or 1))


def init_ray(cfg: RuntimeConfig, worker_env: dict[str, str] | None = None) -> dict[str, float]:
    """Start or connect to Ray as the config says; return the cluster's total resources.

    Reuses an already initialised Ray session (tests share one per module). ``worker_env``:
    variables set in this process's environment before a local Ray starts, which its workers
    then inherit (settings Ray Train reads from the environment of the process that calls
    ``fit()``, see :func:`inherited_by_workers`).

    Raises:
        ClusterError: the configured address cannot be reached.
    """
    import ray

    from rayline.progress import capturing

    # Worker output is streamed to the driver when the console shows it (-v) and when a
    # command captures it into <run_dir>/ray.log (rayline.progress); otherwise it stays in
    # Ray's session logs only.
    log_to_driver = cfg.log_to_driver or capturing()
    global _started_here
    if not ray.is_initialized():
        address = cfg.address or os.environ.get("RAY_ADDRESS")
        _started_here = False
        try:
            if address:
                _forget_api_address()
                log.info("connecting to Ray at %s", address)
                ray.init(address=address, log_to_driver=log_to_driver)
            else:
                num_cpus = cfg.num_cpus or default_local_cpus()
                # Train V2's controller picks up each ray.train.report() only when it polls
                # (every 2 s by default): with short epochs every report waits up to 2 s and
                # teardown takes ~6 s. Measured: per-epoch overhead 1.9 s -> 0.05 s at 0.2 s
                # (benchmarks/RESULTS.md). Local workers inherit this environment; set it in
                # the job's runtime_env on a cluster. A value already set wins.
                os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.25")
                # Train V2 starts a watcher actor per worker group that polls for nodes
                # being drained (spot preemption); one machine is never drained, and on 2
                # cores each extra actor process costs ~1 s of CPU per training run.
                os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")
                # What Tune (PL_DISABLE_FORK, ray-project/ray#28197) and Train V2's
                # controller (RAY_WARN_BLOCKING_GET_INSIDE_ASYNC) give their actors in a
                # runtime_env: in the environment every local worker inherits, those actors
                # need none (see inherited_by_workers).
                for key, value in INHERITED_DEFAULTS.items():
                    os.environ.setdefault(key, value)
                os.environ.update(worker_env or {})
                global _started_env
                _started_env = dict(os.environ)
                log.info("starting a local Ray with %d logical CPUs", num_cpus)
                # address="local" starts a fresh instance even when a `ray start` cluster
                # is running on this machine; connecting to one is what runtime.address is for.
                ray.init(
                    address="local",
                    num_cpus=num_cpus,
                    object_store_memory=cfg.object_store_memory,
                    log_to_driver=log_to_driver,
                    **_dashboard_options(cfg.dashboard),
                )
                _started_here = True
        except Exception as exc:  # Ray raises plain Exception when its start-up times out
            where = f"at '{address}'" if address else "locally"
            hint = (
                "Check runtime.address / RAY_ADDRESS (unset both to run locally) and that the "
                "cluster is up (`ray status`)."
                if address
                else "A local Ray that does not come up in time usually means an overloaded "
                "machine: retry, or lower runtime.num_cpus; Ray's own logs are under "
                "/tmp/ray/session_latest/logs."
            )
            raise ClusterError(
                f"could not start or reach Ray {where}: {type(exc).__name__}: {exc}. {hint}"
            ) from None
        log.info("Ray's session logs: %s", _session_logs())
    _configure_ray_data()
    return dict(ray.cluster_resources())


#: Whether this process started the local Ray it last initialised (see :func:`ray_started_here`).
_started_here = False


def ray_started_here() -> bool:
    """True when this process's Ray is a local one that it started itself (no
    ``runtime.address``): one machine, which no autoscaler grows."""
    import ray

    return _started_here and ray.is_initialized()


#: Set in a local Ray's environment before it starts (see :func:`init_ray`).
INHERITED_DEFAULTS = {"PL_DISABLE_FORK": "1", "RAY_WARN_BLOCKING_GET_INSIDE_ASYNC": "0"}

#: The environment this process's last local Ray was started with: its raylet, and so
#: every worker process of that Ray, inherits it.
_started_env: dict[str, str] | None = None


def inherited_by_workers(env_vars: dict[str, str]) -> bool:
    """True when every worker process of this process's Ray starts with ``env_vars``
    already in its environment: a local Ray started here with those values set.

    A ``runtime_env`` that sets only such variables changes nothing in the worker, and costs
    a lot on a small machine: Ray starts each process that has one through its
    ``setup_worker.py`` (a second import of Ray, ~0.5 s of CPU) and the runtime-env agent,
    and cannot hand it one of its idle, already started workers. Every actor and task that
    process starts inherits the ``runtime_env`` in turn (a trial's Train workers, its
    synchronization actor).
    """
    env = worker_environment(env_vars)
    return env is not None and covers(env, env_vars)


def worker_environment(keys: Iterable[str]) -> dict[str, str] | None:
    """The ``keys`` of the environment every worker of this process's Ray starts with (those
    set there), where this process started that Ray locally; None otherwise."""
    if not ray_started_here() or _started_env is None:
        return None
    return {k: _started_env[k] for k in keys if k in _started_env}


def covers(env: dict[str, str], env_vars: dict[str, str]) -> bool:
    """Whether ``env`` holds every one of ``env_vars`` with the same value."""
    return all(env.get(k) == v for k, v in env_vars.items())


def _session_logs() -> str | None:
    """The local Ray session's log directory (raylet, GCS, every worker's output)."""
    try:
        import ray

        return ray._private.worker._global_node.get_logs_dir_path()
    except Exception:  # connected to a remote cluster, or Ray moved it
        return None


def _dashboard_options(enabled: bool) -> dict[str, Any]:
    """``ray.init`` options for a local Ray's dashboard, which serves the State API.

    Ray Train's placement-group cleaner asks the State API whether a trainer's controller
    is still alive; without a dashboard every query fails and nothing is cleaned (rayline
    releases stopped trials' placement groups itself as well, see
    :mod:`rayline.train.placement`). Inside Ray's workers the State API client finds its
    server by looking for *a* local Ray instance, which is ambiguous, or wrong, when
    another Ray runs on the same machine; so the dashboard gets a port picked here, and
    every worker of this job is told its address (``RAY_API_SERVER_ADDRESS``).
    """
    _forget_api_address()
    if not enabled:
        return {"include_dashboard": False}
    import importlib.util

    if importlib.util.find_spec("aiohttp_cors") is None:  # ray[default] is not installed
        log.warning(
            "Ray's dashboard dependencies are missing (pip install 'ray[default]'); starting "
            "without the dashboard and its State API"
        )
        return {"include_dashboard": False}
    port = _free_port()
    # Through the environment the local raylet (and so every worker) inherits, not the
    # job's runtime_env: with a runtime_env each worker process starts through Ray's
    # setup_worker.py and the runtime-env agent, which doubles the cost of every actor
    # (measured here: 12 empty actors, 11.7 vs 6.2 core-seconds).
    global _api_address_set
    _api_address_set = f"http://127.0.0.1:{port}"
    os.environ["RAY_API_SERVER_ADDRESS"] = _api_address_set
    return {"include_dashboard": True, "dashboard_host": "127.0.0.1", "dashboard_port": port}


#: The ``RAY_API_SERVER_ADDRESS`` this process set for its last local Ray, if any.
_api_address_set: str | None = None


def _forget_api_address() -> None:
    """Unset the State API address an earlier local Ray of this process left behind (a
    later session has another dashboard, or none); a value the user set stays."""
    global _api_address_set
    if _api_address_set is not None and os.environ.get("RAY_API_SERVER_ADDRESS") == (
        _api_address_set
    ):
        del os.environ["RAY_API_SERVER_ADDRESS"]
    _api_address_set = None


def _free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _configure_ray_data() -> None:
    """Ray Data settings for rayline's pipelines (the driver's ``DataContext``).

    * Quiet: progress bars and per-operator logs drown the pipeline's own stage output.
    * Parquet reads through Ray Data's V1 datasource. Measured here (2 cores, Ray 2.60,
      2M rows in 4 files), the default DataSourceV2 path (``ListFiles -> ReadFiles``) takes
      5-7 s to the first batch against 0.2-1.1 s for V1, and 1.3-1.8x longer in total; see
      benchmarks/RESULTS.md. ``RAY_DATA_USE_DATASOURCE_V2`` set in the environment wins.
    """
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    if "RAY_DATA_USE_DATASOURCE_V2" not in os.environ:
        ctx.use_datasource_v2 = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)


def check_training_fits(
    train: TrainConfig, resources: dict[str, float], trial_cpus: float = 0
) -> None:
    """Fail fast when the training workers can never be scheduled, instead of waiting forever.

    ``trial_cpus`` is what a Tune trial holds beside its workers (its own driver function):
    a sweep whose one trial cannot fit must fail before any trial trains.

    Raises:
        ClusterError: the request exceeds the cluster's total CPUs or GPUs.
    """
    # Local mode trains in the calling process: one "worker" that reserves nothing itself.
    # Elastic training starts once its fewest workers fit.
    n_workers = 1 if train.local_mode else train.fewest_workers
    for name, amount in train.resources_per_worker.items():
        if name in ("CPU", "GPU") or train.local_mode:
            continue
        need, have = n_workers * amount, resources.get(name, 0)
        if need > have:
            raise ClusterError(
                f"training asks for {n_workers} workers x {amount:g} '{name}' = {need:g}, "
                f"but the cluster has {have:g}; lower train.resources_per_worker.{name} or "
                "train.num_workers"
            )
    workers = 0 if train.local_mode else n_workers  # local mode: no worker processes
    need_cpu = workers * train.cpus_per_worker + trial_cpus
    have_cpu = resources.get("CPU", 0)
    if need_cpu > have_cpu:
        trial = f" + {trial_cpus:g} for the Tune trial itself" if trial_cpus else ""
        raise ClusterError(
            f"training asks for {workers} workers x {train.cpus_per_worker:g} CPU"
            f"{trial} = {need_cpu:g} CPUs but the cluster has {have_cpu:g}; lower "
            "train.num_workers or train.cpus_per_worker, or raise runtime.num_cpus for a local run"
        )
    if train.use_gpu:
        have_gpu = resources.get("GPU", 0)
        if n_workers * float(train.resources_per_worker.get("GPU", 1.0)) > have_gpu:
            raise ClusterError(
                f"train.use_gpu is true with {n_workers} workers, but the cluster has "
                f"{have_gpu:g} GPUs; set train.use_gpu=false, lower train.num_workers, or add "
                "GPU nodes"
            )


def resolve_storage(path: str) -> str:
    """An absolute local path (so Ray workers agree on it) or the URI unchanged."""
    if is_remote(path):
        return path.rstrip("/")
    return str(Path(path).expanduser().resolve())


#: Ray Train V2's environment variable for the worker-group start-up (placement) timeout.
WORKER_GROUP_START_TIMEOUT_ENV = "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S"


def train_env(tcfg: TrainConfig) -> dict[str, str]:
    """What :func:`rayline.train.trainer.make_trainer` sets in the environment for Ray
    Train, which reads it in the process that calls ``fit()`` and passes it on to its
    controller and workers: the placement timeout (with a zero controller failure budget,
    workers that cannot be placed fail the run after it)."""
    return {WORKER_GROUP_START_TIMEOUT_ENV: str(float(tcfg.placement_timeout_s))}
