"""Train or tune: the model's weights, from one Ray Train run or the best Tune trial.

Cached by the features key + ``model`` + ``train`` (+ ``tune`` when sweeping) + the source
of rayline's training code and of a user model builder. Ray Train's own checkpoints stay
under the run directory (``<run_dir>/train`` or ``/tune``), so a killed run that is run
again under the same name restores its latest checkpoint (or finished trials); the cache
entry keeps a copy of the best checkpoint, which is what evaluation and registration read.
"""

from __future__ import annotations

import shutil
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any

from rayline.errors import Interrupted
from rayline.paths import filesystem, is_remote
from rayline.stages.base import Stage, jsonable
from rayline.train.spec import TrainResult

CHECKPOINT = "best_checkpoint"
CODE = (
    "rayline.train",
    "rayline.tune",
    "rayline.metrics",
    "rayline.data.features",
    "rayline.data.transforms",
)


@dataclass
class Trained:
    """The best weights (a local directory holding ``model.pt``) and how they were found."""

    best: TrainResult
    best_dir: str
    trials: list[dict[str, Any]] = field(default_factory=list)
    #: A sweep's trials with a checkpoint, best first: ``{"trial_id", "score",
    #: "checkpoint_path", "storage", "model"}``. The runners-up's checkpoints stay in the
    #: sweep's run storage until evaluation fetches the ``gate.challengers`` it scores.
    ranked: list[dict[str, Any]] = field(default_factory=list)


def _keep(run, checkpoint_path: str, storage: str, out: str) -> str:
    """Copy the best checkpoint into the stage's entry; return a local directory of it."""
    import pyarrow.fs as pafs

    from rayline.train import trainer

    if not is_remote(out):
        return trainer.fetch_checkpoint(checkpoint_path, storage, f"{out}/{CHECKPOINT}")
    local = str(run.local_dir / CHECKPOINT)
    shutil.rmtree(local, ignore_errors=True)
    trainer.fetch_checkpoint(checkpoint_path, storage, local)
    fs, inner = filesystem(f"{out}/{CHECKPOINT}")
    pafs.copy_files(local, inner, destination_filesystem=fs)
    return local


def _local_copy(run, out: str) -> str:
    if not is_remote(out):
        return f"{out}/{CHECKPOINT}"
    import pyarrow.fs as pafs

    local = str(run.local_dir / CHECKPOINT)
    shutil.rmtree(local, ignore_errors=True)
    fs, inner = filesystem(f"{out}/{CHECKPOINT}")
    pafs.copy_files(inner, local, source_filesystem=fs)
    return local


class _Training(Stage):
    needs = ("validate+split", "features")
    cacheable = True
    code = CODE
    provides = "train"

    def user_code(self, cfg) -> list[str]:
        return [cfg.model.builder] if ":" in cfg.model.builder else []

    def save(self, result: Trained, out: str) -> dict[str, Any]:
        return {
            "best": jsonable(asdict(result.best)),
            "trials": jsonable(result.trials),
            "ranked": jsonable(result.ranked),
        }

    def load(self, run, meta: dict[str, Any], out: str) -> Trained:
        return Trained(
            TrainResult(**meta["best"]),
            _local_copy(run, out),
            meta.get("trials", []),
            meta.get("ranked", []),
        )

    def finish(self, run, inputs, result: Trained) -> Trained:
        best, registry = result.best, run.registry
        registry.log_history(best.history)
        registry.log_step_history(best.step_history)
        if run.cfg.tune.enabled:
            from rayline.registry import flatten

            # The winning trial's sampled values, beside the config's starting point.
            chosen = flatten(best.params)
            registry.log_params(
                {f"best.{k}": chosen[k] for k in run.cfg.tune.search_space if k in chosen}
            )
        run.result.train = {
            "checkpoint_path": best.checkpoint_path,
            "metrics": best.metrics,
            "params": best.params,
            "trial_id": best.trial_id,
        }
        run.result.trials = result.trials
        return result


class Train(_Training):
    """One Ray Train run (DDP over ``train.num_workers``) with the config's hyperparameters."""

    name = "train"
    reads = ("model", "train")

    def enabled(self, cfg) -> bool:
        return not cfg.tune.enabled

    def compute(self, run, inputs, out) -> Trained:
        from rayline.progress import watch_epochs
        from rayline.train import trainer

        report = inputs["validate+split"]
        storage = f"{run.dir}/train"
        # The loop writes each epoch's metrics under <storage>/<name>/history: a line each.
        with watch_epochs(f"{storage}/train/history", run.cfg.train.epochs, run.cfg.metric):
            best = trainer.fit(
                run.cfg, inputs["features"], report.staged_path, storage, "train",
                report.splits["train"],
            )  # fmt: skip
        return Trained(best, _keep(run, best.checkpoint_path, storage, out))

    def summary(self, run, result: Trained) -> str:
        m = result.best.metrics
        return (
            f"best epoch {m.get('epoch')}: "
            f"val_{run.cfg.metric}={m.get('val_metric', float('nan')):.4f}"
        )


class Tune(_Training):
    """A Ray Tune sweep, one Ray Train run per trial; the best trial's weights."""

    name = "tune"
    reads = ("model", "train", "tune")

    def enabled(self, cfg) -> bool:
        return cfg.tune.enabled

    def compute(self, run, inputs, out) -> Trained:
        from rayline import tune as tune_mod
        from rayline.sweep_progress import SweepProgress

        cfg, report = run.cfg, inputs["validate+split"]
        progress = SweepProgress(
            tracking_uri=run.registry.tracking_uri,
            experiment_id=run.registry.experiment_id,
            parent_run_id=run.result.mlflow_run_id,
            metric=cfg.metric,
            mode=cfg.metric_mode,
            epochs=cfg.train.epochs,
            total=tune_mod.num_trials(cfg),
            decode=partial(tune_mod.decode_sampled, encoded=tune_mod.encoded_keys(cfg)),
        )
        storage = f"{run.dir}/tune"
        try:
            best, trials = tune_mod.run_tune(
                cfg,
                inputs["features"],
                report.staged_path,
                storage,
                "tune",
                run.resources.get("CPU", 1),
                report.splits["train"],
                callbacks=[progress],
                cluster_gpus=run.resources.get("GPU", 0),
            )
        except Interrupted as exc:
            raise Interrupted(f"run '{run.name}': {exc} (runtime.run_name={run.name})") from None
        run.registry.finish_trials(trials, run.result.mlflow_run_id)
        rows = [tune_mod.trial_row(tr, cfg) for tr in trials]
        sign = 1.0 if cfg.metric_mode == "max" else -1.0
        scored = [t for t in trials if t.result is not None]
        # The best trial first (as run_tune chose it), then the others by their score.
        scored.sort(key=lambda t: (t.trial_id != best.trial_id, -sign * t.best[tune_mod.SCORE_KEY]))
        ranked = [
            {
                "trial_id": t.trial_id,
                "score": float(t.best[tune_mod.SCORE_KEY]),
                "checkpoint_path": t.result.checkpoint_path,
                "storage": storage,
                "model": t.result.params["model"],
            }
            for t in scored
        ]
        return Trained(best, _keep(run, best.checkpoint_path, storage, out), rows, ranked)

    def summary(self, run, result: Trained) -> str:
        failed = sum(1 for t in result.trials if t.get("error"))
        return (
            f"{len(result.trials)} trials ({failed} failed), best {result.best.trial_id}: "
            f"val_{run.cfg.metric}={result.best.metrics.get('val_metric', float('nan')):.4f}"
        )
