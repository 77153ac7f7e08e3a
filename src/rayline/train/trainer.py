"""Building and running the Ray Train ``TorchTrainer`` (the only module that makes Train configs)."""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from rayline.config import PipelineConfig
from rayline.data.features import BatchTransform, FittedPreprocessor
from rayline.data.stage import IN_PROCESS_MAX_ROWS, read_split, read_split_frame, split_rows
from rayline.errors import NonFiniteLossError, RaylineError, TrainingError, find_user_error
from rayline.paths import filesystem, is_remote
from rayline.runtime import ray_started_here, train_env
from rayline.train import checkpoints
from rayline.train.loop import (
    RAY_CONFIG_KEY,
    WEIGHT_KEY,
    append_padding,
    clear_stop,
    ray_train_loop,
    read_history,
    read_stop,
    shard_plan,
)
from rayline.train.spec import LoopConfig, TrainResult

if TYPE_CHECKING:
    from rayline.config import TrainConfig

log = logging.getLogger(__name__)

SCORE_KEY = "val_metric"


#: Rows per ``map_batches`` call of the feature transform. The transform's cost per row
#: falls by ~2x from 4k- to 64k-row batches (pandas/numpy per-call overhead); workers
#: re-batch to the training batch size when they iterate (benchmarks/ingest.py).
TRANSFORM_BATCH_ROWS = 65536


#: Bytes of features (float32) a split may hold to be built in memory (see
#: :func:`build_datasets`); above it, or above ``IN_PROCESS_MAX_ROWS`` rows, it streams.
IN_MEMORY_MAX_BYTES = 256 * 2**20


@dataclass
class InMemorySplit:
    """A small split's ``{"x", "y"}`` arrays, transformed once in the process that built it.

    A training run hands it to its workers through Ray's object store
    (:func:`make_trainer` puts :meth:`padded` once; each rank takes its share of the rows
    in :class:`rayline.train.loop.ShardCache`), not as a Ray Dataset: for a split this
    small, Ray Data's per-run machinery (a dataset manager and a split coordinator actor,
    split and metadata tasks, each a process that imports Ray Data on 2 cores) cost more
    than the training itself (benchmarks/RESULTS.md). :meth:`dataset` is the same rows as
    one Ray Data block, for code that wants a Dataset.
    """

    batch: dict[str, np.ndarray]

    @property
    def rows(self) -> int:
        return len(self.batch["y"])

    def padded(self, pad_rows: int = 0) -> dict[str, np.ndarray]:
        """The arrays with ``pad_rows`` zero-weight copies of the first rows appended (and
        a :data:`WEIGHT_KEY` column), as :func:`pad_train` does to a streamed split."""
        return append_padding(self.batch, pad_rows)

    def dataset(self, pad_rows: int = 0) -> Any:
        """The split (padded as :meth:`padded`) as one in-memory Ray Data block."""
        import ray.data
        from ray.data.block import BlockAccessor

        return ray.data.from_arrow(BlockAccessor.batch_to_block(self.padded(pad_rows)))


def build_datasets(
    staged_path: str, prep: FittedPreprocessor, max_rows: int = IN_PROCESS_MAX_ROWS
) -> dict[str, Any]:
    """The train/val splits as training reads them: ``{"x", "y"}`` batches of the used columns.

    A split of at most ``max_rows`` rows (``runtime.in_process_max_rows``) and ``IN_MEMORY_MAX_BYTES`` of features
    is read with pyarrow and transformed here, in one pass, into an :class:`InMemorySplit`;
    a larger one is a lazy Ray Dataset (``read_parquet -> map_batches``) that every worker
    streams. Measured on the demo (394 train rows, 2 trials of 2 DDP workers on 2 cores),
    the streamed splits cost each trial 50-80 s of Ray Data task start-up before its
    first epoch; the in-memory ones start none (benchmarks/RESULTS.md).
    """
    columns = prep.input_columns + [prep.target]
    transform = BatchTransform(prep)
    bytes_per_row = 4 * (prep.output_dim + 2)
    out: dict[str, Any] = {}
    for split in ("train", "val"):
        rows = split_rows(staged_path, split)
        if rows is not None and rows <= max_rows and rows * bytes_per_row <= IN_MEMORY_MAX_BYTES:
            frame = read_split_frame(staged_path, split, columns)
            out[split] = InMemorySplit(transform(frame))
        else:
            out[split] = read_split(staged_path, split, columns=columns).map_batches(
                transform, batch_format="pandas", batch_size=TRANSFORM_BATCH_ROWS
            )
    return out


def hand_over(
    datasets: dict[str, Any], pad_rows: int = 0, put: Any = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """:func:`build_datasets`' splits as a run hands them over: ``(arrays, streamed)``.

    The in-memory splits become :attr:`LoopConfig.arrays` (``put`` of their arrays:
    ``ray.put`` for workers in other processes; the arrays themselves when not given), the
    others stay Ray Datasets; the train split either way padded by ``pad_rows``.
    """
    arrays, streamed = {}, {}
    for name, ds in datasets.items():
        pad = pad_rows if name == "train" else 0
        if isinstance(ds, InMemorySplit):
            arrays[name] = ds.padded(pad) if put is None else put(ds.padded(pad))
        else:
            streamed[name] = pad_train(ds, pad)
    return arrays, streamed


def as_datasets(datasets: dict[str, Any], pad_rows: int = 0) -> dict[str, Any]:
    """Ray Datasets of :func:`build_datasets`' splits, the train split padded by ``pad_rows``."""
    out = {}
    for name, ds in datasets.items():
        pad = pad_rows if name == "train" else 0
        out[name] = ds.dataset(pad) if isinstance(ds, InMemorySplit) else pad_train(ds, pad)
    return out


class _Weight:
    """The ``map_batches`` callable that adds a loss-weight column of ``value``."""

    def __init__(self, value: float):
        self.value = value

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows = len(batch["y"])
        return {**batch, WEIGHT_KEY: np.full(rows, self.value, dtype=np.float32)}


def pad_train(ds: Any, pad_rows: int) -> Any:
    """The train dataset with ``pad_rows`` zero-weight copies of its first rows appended.

    Ray Train's even split across ranks drops the rows left over from dividing the split by
    the number of ranks; with the copies it divides evenly and every real row is trained
    (the weighting is explained in :func:`rayline.train.loop.shard_plan`). Without padding
    the dataset is returned as it is (no weight column: every row weighs 1).
    """
    if pad_rows <= 0:
        return ds
    weighted = ds.map_batches(
        _Weight(1.0), batch_format="numpy", batch_size=None, zero_copy_batch=True
    )
    copies = ds.limit(pad_rows).map_batches(_Weight(0.0), batch_format="numpy", batch_size=None)
    return weighted.union(copies)


def loop_config(
    cfg: PipelineConfig,
    prep: FittedPreprocessor,
    train_rows: int,
    *,
    ledger_dir: str | None = None,
    history_dir: str | None = None,
    checkpoint_dir: str | None = None,
    sync_timing: bool = False,
) -> LoopConfig:
    """The training loop's config, built once here on the driver from the pipeline config.

    Its ``model`` and ``train`` are (copies of) the validated config sections, so the
    workers read every default from :mod:`rayline.config` and nowhere else.
    ``sync_timing``: see :attr:`LoopConfig.sync_timing` (``rayline bench scaling``).
    """
    return LoopConfig(
        model=cfg.model.model_copy(deep=True),
        train=cfg.train.model_copy(deep=True),
        prep_json=prep.to_json(),
        metric=cfg.metric,
        mode=cfg.metric_mode,
        train_rows=train_rows,
        ledger_dir=ledger_dir,
        history_dir=history_dir,
        checkpoint_dir=checkpoint_dir,
        sync_timing=sync_timing,
    )


def worker_resources(tcfg: TrainConfig) -> dict[str, float]:
    """What one training worker reserves (GPUs are added by Ray Train when ``use_gpu``)."""
    return {"CPU": tcfg.cpus_per_worker, **tcfg.resources_per_worker}


def worker_user_error(exc: BaseException) -> RaylineError | None:
    """The rayline error (e.g. a non-finite loss) that a worker raised inside ``exc``.

    Ray Train V2 raises a ``WorkerGroupError`` whose ``worker_failures`` maps each failed
    rank to the exception it raised; its text is the workers' tracebacks.
    """
    failures = getattr(exc, "worker_failures", None) or {}
    for candidate in [exc, *(failures[r] for r in sorted(failures))]:
        found = find_user_error(candidate)
        if found is not None:
            return found
    return None


def describe_failure(exc: BaseException, tcfg: TrainConfig) -> str:
    """One line for people: what failed; a worker's rayline error (a non-finite loss) with
    its message intact; for a placement timeout, what was waited for."""
    user = worker_user_error(exc)
    if user is not None:
        return str(user)
    text = str(exc)
    if "worker group startup timed out" not in text.lower():
        return _first_line(exc)
    import ray

    per = dict(worker_resources(tcfg))
    if tcfg.use_gpu:
        per["GPU"] = per.get("GPU", 1.0)
    n = tcfg.num_workers
    need = ", ".join(f"{n * v:g} {k}" for k, v in sorted(per.items()))
    try:
        free, total = ray.available_resources(), ray.cluster_resources()
        have = ", ".join(f"{free.get(k, 0):g} of {total.get(k, 0):g} {k} free" for k in sorted(per))
    except Exception:  # not connected: say what was asked only
        have = "unknown"
    return (
        f"the {n} training workers ({', '.join(f'{v:g} {k}' for k, v in sorted(per.items()))} "
        f"each, {need} in all) could not be placed within "
        f"{tcfg.placement_timeout_s:g} s (cluster: {have}); lower "
        "train.num_workers or tune.max_concurrent_trials, add resources (runtime.num_cpus for a "
        "local run), or raise train.placement_timeout_s while a cluster autoscales"
    )


#: The file under a run's directory where a worker records a deterministic failure.
STOP_FILE = "stopped.json"


class CheckedTrainer:
    """A ``TorchTrainer`` whose ``fit()`` raises the failure the workers recorded.

    A rank that meets a non-finite loss records it (``LoopConfig.stop_file``) and fails the
    attempt. Ray Train restarts the worker group up to ``train.max_failures`` times (-1:
    without end); the restarted workers find the record and return at once without
    training, so the run ends after that one restart, and here ``fit()`` raises the
    recorded :class:`~rayline.errors.NonFiniteLossError`. With ``max_failures: 0`` Ray
    raises the worker's error itself (see :func:`describe_failure`). Everything else is the
    wrapped trainer's.
    """

    def __init__(self, trainer: Any, stop_file: str):
        self.trainer = trainer
        self.stop_file = stop_file

    def fit(self):
        result = self.trainer.fit()
        message = read_stop(self.stop_file)
        if message is not None:
            raise NonFiniteLossError(message)
        return result

    def __getattr__(self, name: str) -> Any:
        return getattr(self.trainer, name)


def make_trainer(
    loop_cfg: LoopConfig,
    datasets: dict[str, Any],
    *,
    storage_path: str,
    name: str,
    mode: str,
    callbacks: list[Any] | None = None,
    ray_placement_cleaner: bool = True,
    controller_in_process: bool = False,
    autoscaler_requests: bool | None = None,
    inherited_env: dict[str, str] | None = None,
) -> CheckedTrainer:
    """A ``TorchTrainer`` for one training run; ``loop_cfg`` as from :func:`loop_config`.

    The workers receive it inside Ray Train's ``train_loop_config`` dict (see
    :func:`rayline.train.loop.ray_train_loop`). The train split is padded with zero-weight
    rows to a multiple of the number of workers (:func:`pad_train`), so that Ray Train's
    even split drops none of its rows. Splits small enough for memory
    (:class:`InMemorySplit`) go to the workers as arrays in the object store
    (:attr:`LoopConfig.arrays`) instead of as Ray Datasets. ``ray_placement_cleaner``:
    False where the caller removes a dead controller's placement group itself (a sweep).
    ``controller_in_process``: Ray Train's controller runs in the calling thread (a Tune
    trial's). ``autoscaler_requests``: whether Train tells Ray's autoscaling coordinator
    what the workers need; by default only when this process did not start its Ray
    itself (see :func:`rayline.train.lean_trainer.lean_trainer`). ``inherited_env``: what
    the workers inherit of Ray Train's variables
    (:func:`rayline.train.lean_trainer.inherited_train_env`; None: this process's own
    Ray's, which is None in a Ray worker, so a Tune trial passes its driver's).
    """
    import ray.train
    from ray.data import ExecutionOptions
    from ray.train.torch import TorchConfig

    from rayline.train.lean_trainer import inherited_train_env, lean_trainer

    tcfg = loop_cfg.train
    world = 1 if tcfg.local_mode else tcfg.num_workers
    if tcfg.elastic:
        # The worker count may be anything in [min, max] from one attempt to the next: pad
        # the split to a multiple of every count in that range, so none drops a row.
        world = math.lcm(*range(tcfg.fewest_workers, tcfg.num_workers + 1))
    plan = shard_plan(loop_cfg.train_rows, world, tcfg.batch_size, tcfg.grad_accum_steps)
    # Small splits go to the workers as arrays in the object store, put once here; only the
    # streamed ones are Ray Datasets of the run.
    arrays, streamed = hand_over(datasets, plan.pad_rows, put=ray.put)
    stop_file = f"{storage_path.rstrip('/')}/{name}/{STOP_FILE}"
    clear_stop(stop_file)  # a new fit of the run (a resume) starts without the old failure
    loop_cfg = dataclasses.replace(
        loop_cfg, stop_file=stop_file, pad_rows=plan.pad_rows, arrays=arrays
    )
    resources = worker_resources(tcfg)
    # Ray Train reads its worker-group start-up timeout from the environment of the process
    # that calls fit() (and forwards it to its controller); with it and a zero controller
    # failure budget, workers that cannot be placed fail the run after placement_timeout_s
    # instead of retrying every 60 s forever (Train V2's default budget is unlimited).
    # pipeline._setup sets the same before a local Ray starts, so its workers inherit it.
    os.environ.update(train_env(tcfg))
    trainer = lean_trainer(
        inherited_env=inherited_env if inherited_env is not None else inherited_train_env(),
        with_datasets=bool(streamed),
        placement_cleaner=ray_placement_cleaner,
        controller_in_process=controller_in_process,
        autoscaler_requests=(
            not ray_started_here() if autoscaler_requests is None else autoscaler_requests
        ),
        train_loop_per_worker=ray_train_loop,
        train_loop_config={RAY_CONFIG_KEY: loop_cfg},
        # Local mode (num_workers=0) runs the loop in this process: no workers to start.
        scaling_config=(
            ray.train.ScalingConfig(num_workers=0)
            if tcfg.local_mode
            else ray.train.ScalingConfig(
                # Elastic: Train V2 starts with as many as fit (up to max) and restarts a
                # failed group with what is left, down to min.
                num_workers=(
                    (tcfg.fewest_workers, tcfg.num_workers) if tcfg.elastic else tcfg.num_workers
                ),
                use_gpu=tcfg.use_gpu,
                resources_per_worker=resources,
                placement_strategy=tcfg.placement_strategy,
            )
        ),
        torch_config=TorchConfig(
            backend="nccl" if tcfg.use_gpu else "gloo",
            timeout_s=int(tcfg.collective_timeout_s),
        ),
        # Only the train split is sharded across ranks; rank 0 scores the whole val split.
        # preserve_order makes the streaming split hand each rank the same blocks in the same
        # order on every run, which is what makes a CPU rerun repeat its metrics.
        dataset_config=ray.train.DataConfig(
            datasets_to_split=["train"] if "train" in streamed else [],
            execution_options=ExecutionOptions(preserve_order=tcfg.deterministic),
        ),
        datasets=streamed,
        run_config=ray.train.RunConfig(
            name=name,
            storage_path=storage_path,
            checkpoint_config=ray.train.CheckpointConfig(
                num_to_keep=tcfg.keep_checkpoints,
                checkpoint_score_attribute=SCORE_KEY,
                checkpoint_score_order=mode,
            ),
            failure_config=ray.train.FailureConfig(
                max_failures=tcfg.max_failures,
                # A fixed group that cannot be placed fails the run (no endless retries). An
                # elastic one gets max_failures more tries: right after a node is lost Ray may
                # still count its resources, so the first restart can ask for more workers
                # than fit; the next one counts again and starts with what is left.
                controller_failure_limit=(max(1, tcfg.max_failures) if tcfg.elastic else 0),
            ),
            callbacks=callbacks,
        ),
    )
    return CheckedTrainer(trainer, stop_file)


def fit(
    cfg: PipelineConfig,
    prep: FittedPreprocessor,
    staged_path: str,
    storage_path: str,
    name: str,
    train_rows: int,
    *,
    sync_timing: bool = False,
) -> TrainResult:
    """Train once with the config's hyperparameters; return the best epoch's checkpoint.

    ``sync_timing``: exact per-epoch data-wait/compute timings on GPUs, at some cost
    (:attr:`LoopConfig.sync_timing`; ``rayline bench scaling``).

    Raises:
        TrainingError: the workers failed more often than ``train.max_failures`` allows.
        NonFiniteLossError: the training loss became NaN/inf (a TrainingError; not retried
            past one restart of the workers, see :class:`CheckedTrainer`).
    """
    local = cfg.train.local_mode
    loop_cfg = loop_config(
        cfg,
        prep,
        train_rows,
        ledger_dir=None if is_remote(storage_path) else f"{storage_path}/{name}/ledger",
        history_dir=f"{storage_path}/{name}/history",
        checkpoint_dir=f"{storage_path}/{name}/checkpoints" if local else None,
        sync_timing=sync_timing,
    )
    trainer = make_trainer(
        loop_cfg,
        build_datasets(staged_path, prep, cfg.runtime.in_process_max_rows),
        storage_path=storage_path,
        name=name,
        mode=cfg.metric_mode,
    )
    try:
        result = trainer.fit()
    except Exception as exc:  # Ray wraps worker errors in its own types
        kind = (
            NonFiniteLossError
            if isinstance(worker_user_error(exc), NonFiniteLossError)
            else TrainingError
        )
        raise kind(f"training failed: {describe_failure(exc, loop_cfg.train)}") from exc
    # Ray keeps only the retained checkpoints' metrics; the per-epoch files have them all.
    history_dir = str(loop_cfg.history_dir)
    history = read_history(history_dir)
    if local:
        kept = checkpoints.best(str(loop_cfg.checkpoint_dir), cfg.metric_mode)
        if kept is None:
            raise TrainingError("training finished without a checkpoint; check train.epochs")
        best_path, best_metrics = kept["path"], kept["metrics"]
    else:
        best = result.get_best_checkpoint(metric=SCORE_KEY, mode=cfg.metric_mode)
        if best is None:
            raise TrainingError("training finished without a checkpoint; check train.epochs")
        best_path = best.path
        best_metrics = next(
            (m for ckpt, m in result.best_checkpoints if ckpt.path == best.path), result.metrics
        )
    return TrainResult(
        checkpoint_path=best_path,
        metrics=dict(best_metrics),
        params=loop_cfg.params(),
        history=history,
        step_history=read_history(f"{history_dir}/steps", prefix="step-"),
    )


def _first_line(exc: BaseException) -> str:
    """The message of a (Ray-wrapped) worker error without the worker's traceback."""
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    keep = [line for line in lines if not line.startswith((" ", "Traceback", "[Rank"))]
    return (keep[-1] if keep else (lines[0] if lines else type(exc).__name__))[:500]


def fetch_checkpoint(path: str, storage_path: str, dest: str) -> str:
    """Copy a checkpoint from run storage to a local directory on this machine.

    Ray reports checkpoint paths without their URI scheme, so the filesystem comes from
    the storage path; on a multi-node cluster the checkpoint may live on another node or
    in object storage, never on the driver's disk.
    """
    import ray.train

    fs = filesystem(storage_path)[0]
    return ray.train.Checkpoint(path=path, filesystem=fs).to_directory(dest)
