"""A running sweep, live: one nested MLflow run per trial as it happens, and a progress line.

A Tune callback in the driver (trial processes never write to MLflow: several processes
writing one local sqlite store hit "database is locked"):

* each trial's nested run is created when the trial starts (its sampled values as params,
  tag ``rayline.trial_id``) and gets the trial's metrics every epoch, so the MLflow UI shows
  the sweep while it runs; it ends FINISHED, or FAILED with the error;
* the parent run carries the best so far (``sweep.best_val_metric`` per finished epoch,
  tag ``rayline.sweep.best_trial``) and the counts (``sweep.trials_*``);
* a restored sweep finds each trial's run by its tag under the same parent and goes on
  logging into it, so a trial never gets two runs;
* a line per change on the ``rayline.sweep`` logger, which ``rayline run`` shows by default
  (:func:`progress_line`): trials done / running (/ stopped early / failed), the best so far.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from ray import tune

from rayline.progress import line

log = logging.getLogger("rayline.sweep")

_METRIC_PREFIXES = ("train_", "val_")


def _numeric(row: dict[str, Any]) -> dict[str, float]:
    return {
        k: float(v)
        for k, v in row.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
    }


def trial_outcome(epochs_run: int, planned: int, error: str | None, early_stopped: bool) -> str:
    """How a trial ended, for people: completed, stopped early (by whom), or failed."""
    if error:
        return "failed"
    if early_stopped:
        return "stopped early (patience)"
    if epochs_run < planned:
        return "stopped early (scheduler)"
    return "completed"


def progress_line(
    counts: dict[str, int], total: int, metric: str, best: tuple[float, str] | None
) -> str:
    """``tune  trials 3/8 done, 2 running, 1 failed; best val_log_loss=0.4556 (trial x)``.

    Stopped-early and failed counts appear once there are any.
    """
    parts = [f"trials {counts['done']}/{total} done", f"{counts['running']} running"]
    parts += [f"{counts[k]} {k}" for k in ("stopped early", "failed") if counts.get(k)]
    text = ", ".join(parts)
    if best:
        text += f"; best val_{metric}={best[0]:.4f} (trial {best[1]})"
    return line("tune", text)


class SweepProgress(tune.Callback):
    """Live MLflow runs per trial and a progress line; see the module docstring."""

    def __init__(
        self,
        *,
        tracking_uri: str,
        experiment_id: str,
        parent_run_id: str,
        metric: str,
        mode: str,
        epochs: int,
        total: int,
        decode: Any = None,
    ):
        self.tracking_uri = tracking_uri
        self.experiment_id = experiment_id
        self.parent_run_id = parent_run_id
        self.metric = metric
        self.sign = 1.0 if mode == "max" else -1.0
        self.epochs = epochs
        self.total = total
        self.decode = decode
        self._reset()

    def _reset(self) -> None:
        self._client = None
        self.runs: dict[str, str] = {}
        self.best: tuple[float, str] | None = None
        self.results = 0
        self.last_epoch: dict[str, int] = {}
        self.status: dict[str, str] = {}
        self._last_line = ""

    # Tune pickles its callbacks with the experiment; the MLflow client is made afresh.
    def __getstate__(self) -> dict[str, Any]:
        keep = ("tracking_uri", "experiment_id", "parent_run_id", "metric", "sign", "epochs")
        return {k: self.__dict__[k] for k in (*keep, "total", "decode")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._reset()

    @property
    def client(self):
        if self._client is None:
            from mlflow import MlflowClient

            self._client = MlflowClient(self.tracking_uri, self.tracking_uri)
        return self._client

    def _run_id(self, trial: Any) -> str:
        """The trial's nested run: found by tag under this parent, else created."""
        if trial.trial_id in self.runs:
            return self.runs[trial.trial_id]
        found = self.client.search_runs(
            [self.experiment_id],
            f"tags.mlflow.parentRunId = '{self.parent_run_id}' "
            f"and tags.rayline.trial_id = '{trial.trial_id}'",
            max_results=1,
        )
        if found:
            rid = found[0].info.run_id
        else:
            run = self.client.create_run(
                self.experiment_id,
                run_name=f"trial-{trial.trial_id}",
                tags={
                    "mlflow.parentRunId": self.parent_run_id,
                    "rayline.trial_id": trial.trial_id,
                },
            )
            rid = run.info.run_id
            from rayline.registry import _param_text

            for k, v in self._params(trial).items():
                self.client.log_param(rid, k, _param_text(v))
        self.runs[trial.trial_id] = rid
        return rid

    def _params(self, trial: Any) -> dict[str, Any]:
        config = trial.config or {}
        sampled = self.decode(config) if self.decode else config
        return {f"{s}.{k}": v for s in ("train", "model") for k, v in sampled.get(s, {}).items()}

    # -- Tune hooks ---------------------------------------------------------------------------
    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.status[trial.trial_id] = "running"
        self._safe(self._run_id, trial)
        self._line(trials)

    def on_trial_restore(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.status[trial.trial_id] = "running"

    def on_trial_result(
        self, iteration: int, trials: list, trial: Any, result: dict, **info: Any
    ) -> None:
        epoch = int(result.get("epoch") or result.get("training_iteration") or 0)
        self.last_epoch[trial.trial_id] = epoch
        values = {k: v for k, v in _numeric(result).items() if k.startswith(_METRIC_PREFIXES)}
        values["epoch"] = float(epoch)

        def log_epoch():
            rid = self._run_id(trial)
            for k, v in values.items():
                self.client.log_metric(rid, k, v, step=epoch)

        self._safe(log_epoch)
        score = values.get("val_metric")
        self.results += 1
        if score is not None and (
            self.best is None or self.sign * score > self.sign * self.best[0]
        ):
            self.best = (score, trial.trial_id)

            def log_best():
                self.client.log_metric(
                    self.parent_run_id, "sweep.best_val_metric", score, step=self.results
                )
                self.client.set_tag(self.parent_run_id, "rayline.sweep.best_trial", trial.trial_id)

            self._safe(log_best)
            self._line(trials)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        last = trial.last_result or {}
        epochs_run = int(last.get("epoch") or self.last_epoch.get(trial.trial_id) or 0)
        self.status[trial.trial_id] = trial_outcome(
            epochs_run, self.epochs, None, bool(last.get("early_stopped"))
        )
        self._finish(trial, "FINISHED")
        self._line(trials)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.status[trial.trial_id] = "failed"
        self._finish(trial, "FAILED")
        self._line(trials)

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        def counts():
            c = self._counts()
            for k, v in c.items():
                self.client.log_metric(self.parent_run_id, f"sweep.trials_{k.replace(' ', '_')}", v)

        self._safe(counts)

    # -- helpers ------------------------------------------------------------------------------
    def _finish(self, trial: Any, status: str) -> None:
        self._safe(lambda: self.client.set_terminated(self._run_id(trial), status=status))

    def _counts(self) -> dict[str, int]:
        out = {"done": 0, "running": 0, "stopped early": 0, "failed": 0}
        for s in self.status.values():
            key = "stopped early" if s.startswith("stopped early") else s
            key = "done" if key == "completed" else key
            out[key] = out.get(key, 0) + 1
        out["done"] += out["stopped early"] + out["failed"]
        return out

    def _line(self, trials: list) -> None:
        text = progress_line(self._counts(), self.total, self.metric, self.best)
        if text != self._last_line:  # one line per change
            self._last_line = text
            log.info(text)

    @staticmethod
    def _safe(fn, *args) -> Any:
        """MLflow trouble must not stop the sweep; it is logged and the sweep goes on."""
        try:
            return fn(*args)
        except Exception as exc:
            log.warning("could not log the sweep to MLflow: %s", exc)
            return None
