"""How a DDP trial's epochs reach Tune: straight from Ray Train's controller, which runs in
the trial's own thread (:attr:`rayline.train.lean_trainer.LeanTorchTrainer.controller_in_process`).

Ray's own ``TuneReportCallback`` runs in a controller *actor* and hands each report to the
trial through a queue actor: two more processes per trial, ~2 s of CPU each on 2 cores, and
a hand-off that could leave a trial RUNNING forever when the last report and the trial's
end crossed (Ray 2.60). With the controller in the trial's thread, :class:`ReportToTune`
calls ``ray.tune.report`` itself, as any function trainable does.

It reports the checkpoint's *path* among the metrics (as ``TuneReportCallback`` does: Train
has already persisted it); under PBT also as a Tune checkpoint, since PBT only sees those (it
saves a strong trial's latest and restarts a weak one from it), and Tune copies it into the
trial's own directory.

When PBT restarts a trial from a donor's checkpoint (or a restored sweep restarts one from
its own latest), ``ray.tune.get_checkpoint()`` returns it. Train V2 takes no
``resume_from_checkpoint``, so the checkpoint travels in the loop's config
(:attr:`LoopConfig.resume_from`) and the loop starts from it when Train has none of its own;
the Train run is named after the checkpoint, so that Train's own run state of the trial's
earlier lineage (which Train would resume first) is not found again.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import ray.tune
from ray.train.v2.api.callback import UserCallback


class ReportToTune(UserCallback):
    """Train callback for a controller in the trial's own thread: rank 0's report to Tune,
    with its checkpoint's path as ``checkpoint_path``.

    ``filesystem`` (run storage's, where Train wrote the checkpoints): also report each
    checkpoint as a Tune checkpoint (PBT). ``on_report`` sees each row first (the trial's
    history). ``ray.tune.report`` returns once Tune has taken the row, so the controller
    waits for Tune as a function trainable does.
    """

    def __init__(self, filesystem: Any = None, on_report: Callable[[dict], None] | None = None):
        self.filesystem = filesystem
        self.on_report = on_report

    def after_report(self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: Any):
        row = dict(metrics[0])
        if checkpoint is not None:
            row["checkpoint_path"] = checkpoint.path
        if self.on_report is not None:
            self.on_report(row)
        tune_checkpoint = None
        if checkpoint is not None and self.filesystem is not None:
            tune_checkpoint = ray.tune.Checkpoint(path=checkpoint.path, filesystem=self.filesystem)
        ray.tune.report(row, checkpoint=tune_checkpoint)


def run_name(trial_id: str, start: Any) -> str:
    """The Train run of a trial that starts from ``start`` (a Tune checkpoint, or None).

    The same on a restart from the same checkpoint (a restored sweep resumes the Train run
    it left), a new one for every new checkpoint a trial is restarted from.
    """
    if start is None:
        return f"trial-{trial_id}"
    digest = hashlib.sha1(str(start.path).encode()).hexdigest()[:8]
    return f"trial-{trial_id}-from-{digest}"
