"""Hyperparameter search: a Ray Tune ``Tuner`` whose trials are distributed training runs.

With Ray Train V2 each trial is a function that launches its own ``TorchTrainer``, whose
controller runs in the trial's thread and reports every epoch (and checkpoint path) to Tune
(:mod:`rayline.train.tune_reports`), so ASHA can stop weak trials early and the best trial
is chosen on the validation metric.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import signal
import threading
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from rayline.config import ParamSpec, PipelineConfig
from rayline.data.features import FittedPreprocessor
from rayline.data.stage import IN_PROCESS_MAX_ROWS
from rayline.errors import ClusterError, Interrupted, TrainingError
from rayline.runtime import inherited_by_workers, ray_started_here
from rayline.train.loop import TuneLocalSession, read_history, train_loop_per_worker
from rayline.train.placement import ReleaseStoppedTrials, release_orphaned
from rayline.train.spec import LoopConfig
from rayline.train.trainer import (
    SCORE_KEY,
    TrainResult,
    _first_line,
    build_datasets,
    describe_failure,
    hand_over,
    loop_config,
    make_trainer,
)

log = logging.getLogger(__name__)


@dataclass
class TrialSummary:
    """One trial's sampled parameters, per-epoch history and outcome (for MLflow)."""

    trial_id: str
    params: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    #: The trial's best checkpoint as a training result (None when it reported none).
    result: TrainResult | None = None


def _is_plain(value: Any) -> bool:
    return value is None or isinstance(value, bool | int | float | str)


def encoded_keys(cfg: PipelineConfig) -> set[str]:
    """Choice keys whose values Optuna cannot hold (lists, dicts): they travel as JSON."""
    if cfg.tune.search != "optuna":
        return set()
    return {
        key
        for key, spec in cfg.tune.search_space.items()
        if spec.type == "choice" and not all(_is_plain(v) for v in spec.values or [])
    }


def _distribution(spec: ParamSpec, search: str, encoded: bool):
    from ray import tune

    if search == "grid":
        if spec.type == "randint":
            return tune.grid_search(list(range(int(spec.low), int(spec.high))))
        return tune.grid_search(list(spec.values or []))
    if spec.type == "loguniform":
        return tune.loguniform(spec.low, spec.high)
    if spec.type == "uniform":
        return tune.uniform(spec.low, spec.high)
    if spec.type == "randint":
        return tune.randint(int(spec.low), int(spec.high))
    if encoded:
        return tune.choice([json.dumps(v) for v in spec.values or []])
    return tune.choice(spec.values)


def param_space(cfg: PipelineConfig) -> dict[str, dict[str, Any]]:
    """The Tune search space, nested as ``{"train": {...}, "model": {...}}``."""
    space: dict[str, dict[str, Any]] = {"train": {}, "model": {}}
    encoded = encoded_keys(cfg)
    for key, spec in cfg.tune.search_space.items():
        section, _, name = key.partition(".")
        space[section][name] = _distribution(spec, cfg.tune.search, key in encoded)
    return space


def decode_sampled(sampled: dict[str, Any], encoded: set[str]) -> dict[str, dict[str, Any]]:
    """A trial's sampled values as the config types (JSON-carried choices decoded)."""
    out: dict[str, dict[str, Any]] = {}
    for section in ("train", "model"):
        values = dict(sampled.get(section, {}) or {})
        for name, value in values.items():
            if f"{section}.{name}" in encoded and isinstance(value, str):
                values[name] = json.loads(value)
        out[section] = values
    return out


def num_trials(cfg: PipelineConfig) -> int:
    """Trials the sweep runs: ``num_samples``, or for a grid its size (times num_samples
    when that is set explicitly)."""
    if cfg.tune.search != "grid":
        return cfg.tune.num_samples
    repeats = cfg.tune.num_samples if "num_samples" in cfg.tune.model_fields_set else 1
    return _grid_size(cfg) * repeats


def _grid_size(cfg: PipelineConfig) -> int:
    size = 1
    for spec in cfg.tune.search_space.values():
        size *= int(spec.high - spec.low) if spec.type == "randint" else len(spec.values or [])
    return size


def search_algorithm(cfg: PipelineConfig, concurrency: int):
    """The seeded searcher for ``tune.search``, carrying the concurrency limit."""
    from ray.tune.search.basic_variant import BasicVariantGenerator

    if cfg.tune.search == "optuna":
        import optuna
        from ray.tune.search import ConcurrencyLimiter
        from ray.tune.search.optuna import OptunaSearch

        sampler = optuna.samplers.TPESampler(seed=cfg.train.seed)
        return ConcurrencyLimiter(OptunaSearch(sampler=sampler), max_concurrent=concurrency)
    # A seeded sampler draws the same trials on a rerun of the same config; it also carries
    # the concurrency limit (Tune ignores max_concurrent_trials beside it).
    return BasicVariantGenerator(random_state=cfg.train.seed, max_concurrent=concurrency)


def trial_scheduler(cfg: PipelineConfig):
    """The early-stopping scheduler for ``tune.scheduler`` (deterministic given results)."""
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, MedianStoppingRule

    grace = min(cfg.tune.grace_period, cfg.train.epochs)
    if cfg.tune.scheduler == "asha":
        return ASHAScheduler(
            time_attr="training_iteration",
            max_t=cfg.train.epochs,
            grace_period=grace,
            reduction_factor=cfg.tune.reduction_factor,
        )
    if cfg.tune.scheduler == "median":
        return MedianStoppingRule(time_attr="training_iteration", grace_period=grace)
    if cfg.tune.scheduler == "pbt":
        from ray.tune.schedulers import PopulationBasedTraining

        # Synchronous: every trial reaches the boundary before the weakest copy the
        # strongest, so which trial copies which does not depend on who reports first.
        return PopulationBasedTraining(
            time_attr="training_iteration",
            perturbation_interval=cfg.tune.perturbation_interval,
            hyperparam_mutations=pbt_mutations(cfg),
            synch=True,
        )
    return FIFOScheduler()


def pbt_mutations(cfg: PipelineConfig) -> dict[str, dict[str, Any]]:
    """What PBT may perturb: the search space's train.* keys, as distributions or lists."""
    mutations: dict[str, dict[str, Any]] = {"train": {}}
    for key, spec in cfg.tune.search_space.items():
        _, _, name = key.partition(".")
        mutations["train"][name] = (
            list(spec.values or [])
            if spec.type == "choice"
            else _distribution(spec, "random", False)
        )
    return mutations


def pbt_population_problem(
    cfg: PipelineConfig, total: int, concurrency: int, fits: int, cluster_cpus: float
) -> str | None:
    """Why a PBT sweep cannot run as configured, or None.

    PBT ranks and copies among the trials alive at a boundary, and Tune adds trials only as
    earlier ones finish; a population that does not train at once never meets (each trial
    would train alone, copying nobody). ``concurrency`` is what will run at once, ``fits``
    what the cluster holds.
    """
    if cfg.tune.scheduler != "pbt" or total <= concurrency:
        return None
    if concurrency < fits:
        why = f"tune.max_concurrent_trials={concurrency}"
        fixes = f"raise tune.max_concurrent_trials to {min(total, fits)}"
    else:
        why = (
            f"{cpus_per_trial(cfg):g} CPUs a trial of the cluster's {cluster_cpus:g}, one kept "
            "for Ray Data"
            + (f"; {gpus_per_trial(cfg):g} GPUs a trial" if gpus_per_trial(cfg) else "")
        )
        fixes = (
            "lower train.num_workers or train.cpus_per_worker, use train.local_mode: true "
            "(one CPU a trial), or add resources"
        )
    return (
        f"tune.scheduler pbt: its population of {total} trials (tune.num_samples) must train "
        f"at once, and {concurrency} run at once here ({why}); lower tune.num_samples to "
        f"{concurrency}, or {fixes}"
    )


#: CPUs a trial's own function holds beside its training workers (Tune's default).
TRIAL_CPUS = 1.0


def largest_trial(cfg: PipelineConfig):
    """The train config of the most resource-hungry trial the search space can sample."""
    update: dict[str, Any] = {}
    for key in ("num_workers", "cpus_per_worker"):
        spec = cfg.tune.search_space.get(f"train.{key}")
        if spec is None:
            continue
        if spec.type == "choice":
            update[key] = max(spec.values)
        elif spec.type == "randint":
            update[key] = int(spec.high) - 1  # Tune's randint excludes the upper bound
        else:
            update[key] = spec.high
    if cfg.tune.search_space.get("train.use_gpu") is not None:
        update["use_gpu"] = any(cfg.tune.search_space["train.use_gpu"].values or [])
    return cfg.train.model_copy(update=update)


def default_concurrency(cfg: PipelineConfig, cluster_cpus: float, cluster_gpus: float = 0) -> int:
    """Trials that fit at once while leaving a CPU for Ray Data, and within the GPUs.

    Each trial holds one CPU for its driver function plus its workers' CPUs (none in local
    mode, where the trial's own process trains), and with ``train.use_gpu`` its GPUs.
    """
    fits = max(1, math.floor((cluster_cpus - 1) / cpus_per_trial(cfg)))
    gpus = gpus_per_trial(cfg)
    if gpus > 0 and cluster_gpus > 0:
        fits = min(fits, max(1, math.floor(cluster_gpus / gpus + 1e-9)))
    return fits


def gpus_per_trial(cfg: PipelineConfig) -> float:
    """GPUs one trial holds: per worker 1, or ``train.resources_per_worker.GPU`` (a fraction
    lets several trials share a GPU); in local mode the trial's own process holds them."""
    if not cfg.train.use_gpu:
        return 0.0
    per_worker = float(cfg.train.resources_per_worker.get("GPU", 1.0))
    return per_worker if cfg.train.local_mode else per_worker * cfg.train.num_workers


def cpus_per_trial(cfg: PipelineConfig) -> float:
    """CPUs one trial holds: its function's plus its workers' (none in local mode)."""
    workers = 0 if cfg.train.local_mode else cfg.train.num_workers
    return TRIAL_CPUS + workers * cfg.train.cpus_per_worker


def _trial(
    sampled: dict[str, Any],
    base: LoopConfig,
    staged_path: str,
    storage_path: str,
    mode: str,
    encoded: frozenset[str] = frozenset(),
    tune_checkpoints: bool = False,
    in_process_max_rows: int = IN_PROCESS_MAX_ROWS,
    autoscaler_requests: bool = True,
    inherited_env: dict[str, str] | None = None,
) -> None:
    """The Tune function trainable: one distributed training run with sampled values.

    ``base`` is the sweep's loop config; the trial's own applies the sampled values to it
    (validated as the config sections are). A DDP trial runs Ray Train's controller in
    this thread, which reports each epoch to Tune (:mod:`rayline.train.tune_reports`).
    ``autoscaler_requests`` and ``inherited_env``: as :func:`make_trainer`'s (the driver
    knows whether it started its Ray itself, and with what environment; this process does
    not).
    """
    import ray.tune

    from rayline.train.tune_reports import ReportToTune

    started_at = time.time()
    trial_id = ray.tune.get_context().get_trial_id()
    loop_cfg = base.with_overrides(
        decode_sampled(sampled, set(encoded)), started_at=started_at, trial_id=trial_id
    )
    prep = loop_cfg.preprocessor()
    datasets = build_datasets(staged_path, prep, in_process_max_rows)
    if loop_cfg.train.local_mode:
        # In-process: the loop runs in this trial's process and reports to Tune itself,
        # with its checkpoint (Tune stores it with the trial: a restored sweep and PBT
        # continue from it); a copy under the trial's run directory is what the pipeline
        # picks the best from. Not through Ray Train's local mode: Ray Train refuses its
        # ray.train.* calls inside a Tune trial.
        # Small splits are read from their arrays in this process, larger ones stream.
        arrays, streamed = hand_over(datasets)
        loop_cfg = loop_cfg.with_overrides(
            checkpoint_dir=f"{storage_path}/trial-{trial_id}/checkpoints",
            # Tune rewrites a restored trial's result files; the per-epoch files keep its
            # lineage.
            history_dir=f"{storage_path}/trial-{trial_id}/history",
            arrays=arrays,
        )
        session = TuneLocalSession(
            streamed,
            use_gpu=loop_cfg.train.use_gpu,
            checkpoints=tune_checkpoints,
        )
        try:
            train_loop_per_worker(loop_cfg, session=session)
        except Exception as exc:
            raise TrainingError(f"trial {trial_id}: {_first_line(exc)}") from None
        return
    name = f"trial-{trial_id}"
    report = ReportToTune()
    if tune_checkpoints:
        name, loop_cfg, report = _with_tune_checkpoints(loop_cfg, storage_path, trial_id)
    # The Train run is named after the trial, so a restored sweep's unfinished trial finds
    # its own checkpoints again.
    trainer = make_trainer(
        loop_cfg,
        datasets,
        storage_path=storage_path,
        name=name,
        mode=mode,
        # The sweep removes dead controllers' placement groups (ReleaseStoppedTrials).
        ray_placement_cleaner=False,
        controller_in_process=True,
        autoscaler_requests=autoscaler_requests,
        inherited_env=inherited_env,
        callbacks=[report],
    )
    try:
        trainer.fit()
    except Exception as exc:  # Ray's wrapped worker/controller errors: one line for the table
        raise TrainingError(f"trial {trial_id}: {describe_failure(exc, loop_cfg.train)}") from None


def _with_tune_checkpoints(loop_cfg: LoopConfig, storage_path: str, trial_id: str):
    """A DDP trial whose every epoch reaches Tune with its checkpoint (for PBT; see
    :mod:`rayline.train.tune_reports`), continuing from the checkpoint Tune gives it:
    ``(train run name, loop config, report callback)``."""
    import ray.tune

    from rayline.paths import filesystem
    from rayline.train.loop import write_history_row
    from rayline.train.tune_reports import ReportToTune, run_name

    start = ray.tune.get_checkpoint()
    # The trial writes its history itself, with each epoch's checkpoint path (rank 0 writes
    # its rows before Train names the checkpoint); the per-epoch files keep its lineage
    # across the restarts PBT makes.
    history_dir = f"{storage_path}/trial-{trial_id}/history"
    if start is not None:
        loop_cfg = loop_cfg.with_overrides(resume_from=start)
    report = ReportToTune(
        filesystem=filesystem(storage_path)[0],
        on_report=lambda row: write_history_row(history_dir, row),
    )
    return run_name(trial_id, start), loop_cfg, report


@contextmanager
def _trials_without_runtime_env():
    """Start Tune's trial actors without the ``runtime_env`` of env vars Tune gives each
    (``PL_DISABLE_FORK=1`` and any of its settings set in this process's environment) where
    every worker of this Ray has those values already (:func:`inherited_by_workers`).

    Every process a trial starts inherits its ``runtime_env``: with one, each of a DDP
    trial's four processes (the trial, its synchronization actor, two workers) starts
    through Ray's ``setup_worker.py`` and the runtime-env agent, and none can take one of
    Ray's idle workers (benchmarks/RESULTS.md, issue 9). Tune builds it from two module
    globals when it starts a trial's actor; they are back as they were when the sweep ends.
    """
    try:
        from ray.tune.execution import class_cache

        defaults, propagated = class_cache.DEFAULT_ENV_VARS, class_cache.ENV_VARS_TO_PROPAGATE
    except (ImportError, AttributeError):  # another Ray's internals: Tune's own way
        yield
        return
    wanted = {**defaults, **{k: os.environ[k] for k in propagated if k in os.environ}}
    if not inherited_by_workers(wanted):
        yield
        return
    class_cache.DEFAULT_ENV_VARS, class_cache.ENV_VARS_TO_PROPAGATE = {}, set()
    try:
        yield
    finally:
        class_cache.DEFAULT_ENV_VARS, class_cache.ENV_VARS_TO_PROPAGATE = defaults, propagated


def _flatten(sampled: dict[str, Any]) -> dict[str, Any]:
    return {f"{s}.{k}": v for s in ("train", "model") for k, v in sampled.get(s, {}).items()}


def run_tune(
    cfg: PipelineConfig,
    prep: FittedPreprocessor,
    staged_path: str,
    storage_path: str,
    name: str,
    cluster_cpus: float,
    train_rows: int,
    callbacks: list[Any] | None = None,
    cluster_gpus: float = 0,
) -> tuple[TrainResult, list[TrialSummary]]:
    """Run the search; return the best trial's best checkpoint and every trial's summary.

    Raises:
        TrainingError: every trial failed, or none reported the validation metric.
    """
    from ray import tune

    from rayline.train.lean_trainer import inherited_train_env

    mode = cfg.metric_mode
    base = loop_config(cfg, prep, train_rows)
    encoded = encoded_keys(cfg)
    total = num_trials(cfg)
    fits = default_concurrency(cfg, cluster_cpus, cluster_gpus)
    concurrency = cfg.tune.max_concurrent_trials or fits
    if concurrency > fits:
        # More would take every CPU: the trials' Ray Data reads and transforms would then
        # never be scheduled and every trial would wait on its first batch forever.
        log.warning(
            "tune.max_concurrent_trials=%d: %d trials of %g CPUs and %g GPUs each do not fit "
            "the cluster's %g CPUs (one kept for Ray Data) and %g GPUs; running %d at a time "
            "(add resources, or lower train.num_workers, to run more)",
            concurrency,
            concurrency,
            cpus_per_trial(cfg),
            gpus_per_trial(cfg),
            cluster_cpus,
            cluster_gpus,
            fits,
        )
        concurrency = fits
    problem = pbt_population_problem(cfg, total, concurrency, fits, cluster_cpus)
    if problem:
        raise ClusterError(problem)
    trainable = tune.with_parameters(
        _trial,
        base=base,
        staged_path=staged_path,
        storage_path=f"{storage_path}/trials",
        mode=mode,
        encoded=frozenset(encoded),
        tune_checkpoints=cfg.tune.scheduler == "pbt",
        in_process_max_rows=cfg.runtime.in_process_max_rows,
        autoscaler_requests=not ray_started_here(),
        inherited_env=inherited_train_env(),
    )
    if cfg.train.local_mode:
        # The trial's own process trains: it holds the trial's CPU (and GPU when asked).
        trainable = tune.with_resources(trainable, {"cpu": TRIAL_CPUS, "gpu": gpus_per_trial(cfg)})
    if cfg.tune.scheduler == "pbt":
        # PBT draws its perturbations from Python's global RNG (in this driver process).
        random.seed(cfg.train.seed)
    experiment = f"{storage_path}/{name}"
    if tune.Tuner.can_restore(experiment):
        # The same run was interrupted or killed (or finished and failed later): finished
        # trials keep their results, unfinished ones start again from their checkpoints.
        log.info("tuning: resuming the sweep in %s", experiment)
        tuner = tune.Tuner.restore(
            experiment,
            trainable,
            resume_unfinished=True,
            resume_errored=False,
            restart_errored=False,
            param_space=param_space(cfg),
        )
    else:
        tuner = tune.Tuner(
            trainable,
            param_space=param_space(cfg),
            tune_config=tune.TuneConfig(
                metric=SCORE_KEY,
                mode=mode,
                # A grid's num_samples repeats the whole grid.
                num_samples=total // _grid_size(cfg) if cfg.tune.search == "grid" else total,
                scheduler=trial_scheduler(cfg),
                search_alg=search_algorithm(cfg, concurrency),
                # In-process trials: a finished trial's process runs the next one, so a trial
                # does not pay a new Python process (2-3 s of imports on a small machine;
                # hpo.py --quick per-trial start-up 2.4 s -> 1.1 s). Every trial sets its own
                # seeds, threads and datasets at its start (rayline.train.loop). DDP trials
                # keep a fresh actor each: theirs is one process of several per trial, and
                # a failed trial's placement is released before the next one starts.
                reuse_actors=cfg.train.local_mode,
            ),
            run_config=tune.RunConfig(
                name=name,
                storage_path=storage_path,
                verbose=0,
                # Local-mode trials report Tune checkpoints (small: one model); PBT needs
                # a recent one of every trial (it warns below 3).
                checkpoint_config=tune.CheckpointConfig(num_to_keep=4),
                # Frees each stopped trial's training placement group (a stopped trial's
                # Train controller dies before it can; see rayline.train.placement).
                callbacks=[ReleaseStoppedTrials(), *(callbacks or [])],
            ),
        )
    log.info("tuning: %d trials (%s search), %d at a time", total, cfg.tune.search, concurrency)
    with _interrupt_watch() as interrupted, warnings.catch_warnings():
        # DDP trials keep a fresh actor each on purpose (see reuse_actors above).
        warnings.filterwarnings("ignore", "Consider boosting PBT performance", UserWarning)
        try:
            with _trials_without_runtime_env():
                grid = tuner.fit()
        finally:
            release_orphaned("after the sweep")
    unfinished = _unfinished_trials(grid)
    if interrupted() or unfinished:
        raise Interrupted(
            f"the sweep was stopped with {len(grid)} of {total} trials started; nothing was "
            "evaluated or registered. Run the same config again with the same "
            "runtime.run_name to resume it: finished trials are kept"
        )

    summaries: list[TrialSummary] = []
    best: tuple[float, TrainResult] | None = None
    sign = 1.0 if mode == "max" else -1.0
    trial_objs = getattr(getattr(grid, "_experiment_analysis", None), "trials", None) or []
    ids = [t.trial_id for t in trial_objs] if len(trial_objs) == len(grid) else []
    for i, result in enumerate(grid):
        # The Trial's own id: a PBT trial's last result can carry the id of the trial whose
        # checkpoint it copied.
        trial_id = ids[i] if ids else str((result.metrics or {}).get("trial_id") or i)
        history = read_history(f"{storage_path}/trials/trial-{trial_id}/history")
        if not history:
            df = result.metrics_dataframe
            history = df.to_dict("records") if df is not None else []
        scored = [h for h in history if _finite(h.get(SCORE_KEY)) and h.get("checkpoint_path")]
        top = _best_row(scored, sign) or {}
        if not top or not _exists(top["checkpoint_path"], storage_path):
            # A trial stopped by the scheduler can have its history's checkpoint replaced
            # by the one Tune kept last, or a history without checkpoint paths: take
            # Tune's own record of what it kept.
            kept = _kept_checkpoint(result, sign)
            if kept and not _exists(kept["checkpoint_path"], storage_path):
                kept = None
            top = kept or _on_disk(f"{storage_path}/trials/trial-{trial_id}", history, mode) or {}
        sampled = decode_sampled(result.config or {}, encoded)
        trained = (
            TrainResult(
                checkpoint_path=top["checkpoint_path"],
                metrics={
                    k: v for k, v in top.items() if not k.startswith(("config/", "checkpoint"))
                },
                params=base.with_overrides(sampled).params(),
                history=history,
                trial_id=trial_id,
            )
            if top
            else None
        )
        summaries.append(
            TrialSummary(
                trial_id=trial_id,
                params=_flatten(sampled),
                history=history,
                best=top,
                error=_error_line(result.error) if result.error else None,
                result=trained,
            )
        )
        if trained is not None and (best is None or sign * top[SCORE_KEY] > sign * best[0]):
            best = (top[SCORE_KEY], trained)
    if best is None:
        errors = [s.error for s in summaries if s.error]
        raise TrainingError(
            f"no trial reported '{SCORE_KEY}' with a checkpoint"
            + (f"; first error: {errors[0]}" if errors else "")
        )
    log.info("best trial %s: %s=%.4f", best[1].trial_id, cfg.metric, best[0])
    return best[1], summaries


def _exists(path: str, storage_path: str) -> bool:
    """Whether a checkpoint directory reported by Ray is still in run storage."""
    import pyarrow.fs as pafs

    from rayline.paths import filesystem

    try:
        return filesystem(storage_path)[0].get_file_info(path).type != pafs.FileType.NotFound
    except (OSError, ValueError):
        return False


def _on_disk(trial_dir: str, history: list[dict[str, Any]], mode: str) -> dict[str, Any] | None:
    """The best complete checkpoint a trial left in its run directory, as a history row.

    The last resort when neither the trial's history nor Tune's record names a checkpoint
    that still exists (a trial the scheduler stopped): rayline's own index of a local-mode
    trial's checkpoints, else the trial's Train run's checkpoint directories, each scored
    by the history row of the epoch its ``COMPLETE`` marker names, or by the validation
    metrics the marker keeps (an epoch trained after the trial's last report reached Tune).
    """
    import pyarrow.fs as pafs

    from rayline.paths import filesystem
    from rayline.train import checkpoints
    from rayline.train.loop import COMPLETE_FILE

    try:
        kept = checkpoints.best(f"{trial_dir}/checkpoints", mode)
    except (OSError, ValueError):
        kept = None
    if kept and _finite(kept["metrics"].get(SCORE_KEY)):
        return {**kept["metrics"], "checkpoint_path": kept["path"]}
    by_epoch = {
        int(h["epoch"]): h
        for h in history
        if _finite(h.get(SCORE_KEY)) and isinstance(h.get("epoch"), int | float)
    }
    try:
        fs, root = filesystem(trial_dir)
        infos = fs.get_file_info(pafs.FileSelector(root, allow_not_found=True))
    except (OSError, ValueError):
        return None
    found = []
    for info in infos:
        if info.type != pafs.FileType.Directory or not info.base_name.startswith("checkpoint_"):
            continue
        try:
            with fs.open_input_stream(f"{info.path}/{COMPLETE_FILE}") as f:
                marker = json.loads(f.read())
            epoch = int(marker["epoch"]) + 1  # the marker's epoch counts from 0
        except (OSError, ValueError, KeyError, TypeError):
            continue  # an incomplete checkpoint
        row = by_epoch.get(epoch)
        if row is None and _finite((marker.get("val") or {}).get(SCORE_KEY)):
            # An epoch the trial trained after its last report reached Tune: the marker
            # has its validation metrics.
            row = {"epoch": epoch, **marker["val"]}
        if row is not None:
            found.append({**row, "checkpoint_path": info.path})
    return _best_row(found, 1.0 if mode == "max" else -1.0)


def _best_row(rows: list[dict[str, Any]], sign: float) -> dict[str, Any] | None:
    """The best-scored row; on a tie the later epoch (Ray's checkpoint manager keeps the
    later checkpoint, so prefer it too)."""
    return max(rows, key=lambda h: (sign * h[SCORE_KEY], h.get("epoch", 0))) if rows else None


def _kept_checkpoint(result: Any, sign: float) -> dict[str, Any] | None:
    """The best of the checkpoints Tune kept for a trial, as a history row."""
    kept = [
        (c, m)
        for c, m in (getattr(result, "best_checkpoints", None) or [])
        if _finite((m or {}).get(SCORE_KEY))
    ]
    if not kept:
        # No scored checkpoint on record: the trial's latest one, with its last metrics.
        latest, metrics = getattr(result, "checkpoint", None), getattr(result, "metrics", None)
        if latest is None or not _finite((metrics or {}).get(SCORE_KEY)):
            return None
        return {**metrics, "checkpoint_path": latest.path}
    checkpoint, metrics = max(kept, key=lambda cm: sign * cm[1][SCORE_KEY])
    return {**metrics, "checkpoint_path": checkpoint.path}


def trial_row(summary: TrialSummary, cfg: PipelineConfig) -> dict[str, Any]:
    """One trial for the summary table: sampled values, best metric, epochs, how it ended."""
    from rayline.sweep_progress import trial_outcome

    epochs = max((int(h.get("epoch") or 0) for h in summary.history), default=0)
    early = any(bool(h.get("early_stopped")) for h in summary.history)
    best = summary.best.get(SCORE_KEY) if summary.best else None
    return {
        "trial_id": summary.trial_id,
        "params": summary.params,
        "best": float(best) if _finite(best) else None,
        "epochs": epochs,
        "outcome": trial_outcome(epochs, cfg.train.epochs, summary.error, early),
        "error": summary.error,
    }


def _error_line(error: BaseException) -> str:
    """A trial's error as the one line its trainable raised, without Ray's traceback."""
    from rayline.errors import find_user_error

    found = find_user_error(error)
    if found is not None:
        return str(found)
    lines = [ln for ln in str(error).strip().splitlines() if ln.strip()]
    return (lines[-1] if lines else type(error).__name__)[:500]


@contextmanager
def _interrupt_watch():
    """Yield a function that tells, after ``Tuner.fit``, whether Tune was stopped by Ctrl-C.

    Tune catches the first SIGINT itself, ends the sweep, marks the running trials
    TERMINATED and returns normally; its only trace is that its handler puts back the one it
    found. So a marker handler is installed first: finding it again afterwards means Tune's
    handler ran. The handler from before is restored either way.
    """
    if threading.current_thread() is not threading.main_thread():
        yield lambda: False
        return
    previous = signal.getsignal(signal.SIGINT)

    def marker(signum, frame):  # a second Ctrl-C, after Tune gave its handler back
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, marker)
    seen: list[bool] = []
    try:
        yield lambda: bool(seen) and seen[0]
    finally:
        seen.append(signal.getsignal(signal.SIGINT) is marker)
        signal.signal(signal.SIGINT, previous)


def _unfinished_trials(grid: Any) -> list[str]:
    """Trials Tune left neither TERMINATED nor ERROR: the run was cut short (Ctrl-C)."""
    trials = getattr(getattr(grid, "_experiment_analysis", None), "trials", None) or []
    return [t.trial_id for t in trials if t.status not in ("TERMINATED", "ERROR")]


def _finite(v: Any) -> bool:
    return isinstance(v, int | float) and math.isfinite(v)
