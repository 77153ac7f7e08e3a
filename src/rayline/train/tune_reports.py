"""A DDP trial that hands Tune real checkpoints, so that PBT can copy it.

Ray's ``TuneReportCallback`` forwards a Train V2 run's metrics to Tune with the checkpoint's
*path* among them, never as a Tune checkpoint: Train has already persisted it and Tune is
not to copy it again. PBT only sees Tune checkpoints (it saves a strong trial's latest and
restarts a weak one from it), so over DDP trials it would find "no checkpoint" and never
exploit. Here the trial function runs ``TorchTrainer.fit()`` in a thread, a Train callback
(in the Train controller) puts each report into a queue, and the trial function reports it
to Tune *with* ``ray.tune.Checkpoint`` of the path Train wrote, which Tune copies into the
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
import threading
from typing import Any

import ray.tune
from ray.train.v2.api.callback import UserCallback
from ray.util.queue import Queue

#: Put by the fit thread after the last report (or the failure).
DONE = "__rayline_fit_done__"


class ForwardReports(UserCallback):
    """Train callback (runs in the Train controller): rank 0's report and its checkpoint's
    path into ``queue``, which the trial function drains (one slot: the controller waits
    for the trial to take each report, as ``TuneReportCallback`` does)."""

    def __init__(self, queue: Queue):
        self.queue = queue

    def after_report(self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: Any):
        row = dict(metrics[0])
        if checkpoint is not None:
            row["checkpoint_path"] = checkpoint.path
        self.queue.put(row)


def run_name(trial_id: str, start: Any) -> str:
    """The Train run of a trial that starts from ``start`` (a Tune checkpoint, or None).

    The same on a restart from the same checkpoint (a restored sweep resumes the Train run
    it left), a new one for every new checkpoint a trial is restarted from.
    """
    if start is None:
        return f"trial-{trial_id}"
    digest = hashlib.sha1(str(start.path).encode()).hexdigest()[:8]
    return f"trial-{trial_id}-from-{digest}"


def fit_reporting_checkpoints(trainer: Any, queue: Queue, filesystem: Any, on_report=None):
    """Run ``trainer.fit()``; report each epoch to Tune with its checkpoint.

    ``trainer`` was made with ``ForwardReports(queue)``; ``filesystem`` is run storage's,
    where Train wrote the checkpoints. ``on_report`` sees each row first (the trial's
    history). Re-raises what ``fit()`` raised, once every report before it reached Tune.
    """
    outcome: dict[str, BaseException] = {}

    def run() -> None:
        try:
            trainer.fit()
        except BaseException as exc:  # re-raised in the trial's thread below
            outcome["error"] = exc
        finally:
            queue.put(DONE)

    thread = threading.Thread(target=run, name="rayline-trial-fit", daemon=True)
    thread.start()
    while True:
        row = queue.get()
        if row == DONE:
            break
        if on_report is not None:
            on_report(row)
        path = row.get("checkpoint_path")
        checkpoint = ray.tune.Checkpoint(path=path, filesystem=filesystem) if path else None
        ray.tune.report(row, checkpoint=checkpoint)
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
