"""Building and running the Ray Train ``TorchTrainer`` (the only module that makes Train configs)."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from rayline.config import PipelineConfig
from rayline.data.features import BatchTransform, FittedPreprocessor
from rayline.data.stage import read_split
from rayline.errors import TrainingError
from rayline.paths import filesystem, is_remote
from rayline.train import checkpoints
from rayline.train.loop import RAY_CONFIG_KEY, ray_train_loop, read_history
from rayline.train.spec import LoopConfig

if TYPE_CHECKING:
    from rayline.config import TrainConfig

log = logging.getLogger(__name__)

SCORE_KEY = "val_metric"


@dataclass
class TrainResult:
    """The outcome of one training run (or of the best Tune trial)."""

    checkpoint_path: str
    metrics: dict[str, Any]
    params: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)
    trial_id: str | None = None
    step_history: list[dict[str, Any]] = field(default_factory=list)


#: Rows per ``map_batches`` call of the feature transform. The transform's cost per row
#: falls by ~2x from 4k- to 64k-row batches (pandas/numpy per-call overhead); workers
#: re-batch to the training batch size when they iterate (benchmarks/ingest.py).
TRANSFORM_BATCH_ROWS = 65536


def build_datasets(staged_path: str, prep: FittedPreprocessor) -> dict[str, Any]:
    """Lazy train/val datasets of ``{"x", "y"}`` batches, read only for the columns used."""
    columns = prep.input_columns + [prep.target]
    transform = BatchTransform(prep)
    return {
        split: read_split(staged_path, split, columns=columns).map_batches(
            transform, batch_format="pandas", batch_size=TRANSFORM_BATCH_ROWS
        )
        for split in ("train", "val")
    }


def loop_config(
    cfg: PipelineConfig,
    prep: FittedPreprocessor,
    train_rows: int,
    *,
    ledger_dir: str | None = None,
    history_dir: str | None = None,
    checkpoint_dir: str | None = None,
) -> LoopConfig:
    """The training loop's config, built once here on the driver from the pipeline config.

    Its ``model`` and ``train`` are (copies of) the validated config sections, so the
    workers read every default from :mod:`rayline.config` and nowhere else.
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
    )


#: Ray Train V2's environment variable for the worker-group start-up (placement) timeout.
WORKER_GROUP_START_TIMEOUT_ENV = "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S"


def worker_resources(tcfg: TrainConfig) -> dict[str, float]:
    """What one training worker reserves (GPUs are added by Ray Train when ``use_gpu``)."""
    return {"CPU": tcfg.cpus_per_worker, **tcfg.resources_per_worker}


def describe_failure(exc: BaseException, tcfg: TrainConfig) -> str:
    """One line for people: what failed; for a placement timeout, what was waited for."""
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


def make_trainer(
    loop_cfg: LoopConfig,
    datasets: dict[str, Any],
    *,
    storage_path: str,
    name: str,
    mode: str,
    callbacks: list[Any] | None = None,
):
    """A ``TorchTrainer`` for one training run; ``loop_cfg`` as from :func:`loop_config`.

    The workers receive it inside Ray Train's ``train_loop_config`` dict (see
    :func:`rayline.train.loop.ray_train_loop`).
    """
    import ray.train
    from ray.data import ExecutionOptions
    from ray.train.torch import TorchConfig, TorchTrainer

    tcfg = loop_cfg.train
    resources = worker_resources(tcfg)
    # Ray Train reads its worker-group start-up timeout from the environment of the process
    # that calls fit() (and forwards it to its controller); with it and a zero controller
    # failure budget, workers that cannot be placed fail the run after placement_timeout_s
    # instead of retrying every 60 s forever (Train V2's default budget is unlimited).
    os.environ[WORKER_GROUP_START_TIMEOUT_ENV] = str(float(tcfg.placement_timeout_s))
    return TorchTrainer(
        ray_train_loop,
        train_loop_config={RAY_CONFIG_KEY: loop_cfg},
        # Local mode (num_workers=0) runs the loop in this process: no workers to start.
        scaling_config=(
            ray.train.ScalingConfig(num_workers=0)
            if tcfg.local_mode
            else ray.train.ScalingConfig(
                num_workers=tcfg.num_workers,
                use_gpu=tcfg.use_gpu,
                resources_per_worker=resources,
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
            datasets_to_split=["train"],
            execution_options=ExecutionOptions(preserve_order=tcfg.deterministic),
        ),
        datasets=datasets,
        run_config=ray.train.RunConfig(
            name=name,
            storage_path=storage_path,
            checkpoint_config=ray.train.CheckpointConfig(
                num_to_keep=tcfg.keep_checkpoints,
                checkpoint_score_attribute=SCORE_KEY,
                checkpoint_score_order=mode,
            ),
            failure_config=ray.train.FailureConfig(
                max_failures=tcfg.max_failures, controller_failure_limit=0
            ),
            callbacks=callbacks,
        ),
    )


def fit(
    cfg: PipelineConfig,
    prep: FittedPreprocessor,
    staged_path: str,
    storage_path: str,
    name: str,
    train_rows: int,
) -> TrainResult:
    """Train once with the config's hyperparameters; return the best epoch's checkpoint.

    Raises:
        TrainingError: the workers failed more often than ``train.max_failures`` allows.
    """
    local = cfg.train.local_mode
    loop_cfg = loop_config(
        cfg,
        prep,
        train_rows,
        ledger_dir=None if is_remote(storage_path) else f"{storage_path}/{name}/ledger",
        history_dir=f"{storage_path}/{name}/history",
        checkpoint_dir=f"{storage_path}/{name}/checkpoints" if local else None,
    )
    trainer = make_trainer(
        loop_cfg,
        build_datasets(staged_path, prep),
        storage_path=storage_path,
        name=name,
        mode=cfg.metric_mode,
    )
    try:
        result = trainer.fit()
    except Exception as exc:  # Ray wraps worker errors in its own types
        raise TrainingError(f"training failed: {describe_failure(exc, loop_cfg.train)}") from exc
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
