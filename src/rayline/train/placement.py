"""Releasing the placement groups that stopped Tune trials leave behind.

Each Tune trial runs a ``TorchTrainer`` whose controller actor reserves the training
workers' CPUs/GPUs in a placement group. When Tune stops a trial (ASHA, the end of its
budget, an error, Ctrl-C) it kills the trial's actor, and the controller dies with it
before it can remove that placement group. Ray keeps a placement group until its creator
actor *and* its job are gone, so the reservation outlives the trial for as long as the sweep
runs: with more trials than fit at once, the next trial's workers wait for CPUs that
nothing will ever free, and the sweep hangs.

Ray Train leaves this to a detached ``PlacementGroupCleaner`` that asks the State API
(served by Ray's dashboard) whether the controller is alive. That fails silently when the
dashboard is not running, is down, or when another Ray instance on the machine makes the
State API client's address lookup ambiguous. rayline therefore does not depend on it: the
driver asks the GCS itself for this job's placement groups whose creator actor has died and
removes them (:class:`ReleaseStoppedTrials`, a Tune callback, after every finished or failed
trial and every couple of seconds while the sweep runs; :func:`release_orphaned` once more
when it ends).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

#: Seconds between sweeps while a Tune run is in progress.
SWEEP_INTERVAL_S = 2.0


@dataclass(frozen=True)
class OrphanedGroup:
    """A placement group of this job whose creator actor is dead but which still holds
    (or waits for) resources."""

    id_hex: str
    state: str
    resources: dict[str, float]


def orphaned_placement_groups() -> list[OrphanedGroup]:
    """This job's non-detached placement groups whose creator actor has died.

    Reads the GCS placement-group table directly (no dashboard needed). A group created by
    the driver itself (Tune's per-trial reservations) has no creator actor and is never
    listed; nor is one that belongs to another job on a shared cluster.
    """
    import ray
    from ray._private.state import state as global_state
    from ray.core.generated import gcs_pb2

    job_hex = ray.get_runtime_context().get_job_id()
    nil_actor = ray.ActorID.nil().binary()  # the creator of the driver's own groups
    table = gcs_pb2.PlacementGroupTableData
    out = []
    for raw in global_state._connect_and_get_accessor().get_placement_group_table():
        pg = table.FromString(raw)
        if pg.state == table.REMOVED or pg.is_detached or not pg.creator_actor_dead:
            continue
        if pg.creator_actor_id in (b"", nil_actor) or pg.creator_job_id.hex() != job_hex:
            continue
        resources: dict[str, float] = {}
        for bundle in pg.bundles:
            for name, amount in bundle.unit_resources.items():
                resources[name] = resources.get(name, 0.0) + amount
        out.append(
            OrphanedGroup(
                id_hex=pg.placement_group_id.hex(),
                state=table.PlacementGroupState.Name(pg.state),
                resources=resources,
            )
        )
    return out


def release_orphaned(reason: str = "") -> list[OrphanedGroup]:
    """Remove every orphaned placement group of this job; return what was removed.

    Never raises: a failure to list or remove is logged, and the next sweep tries again.
    """
    from ray import PlacementGroupID
    from ray.util.placement_group import PlacementGroup, remove_placement_group

    try:
        groups = orphaned_placement_groups()
    except Exception as exc:  # an internal table whose shape may change between Ray versions
        log.warning("could not list placement groups to release (%s): %s", reason, exc)
        return []
    released = []
    for group in groups:
        try:
            remove_placement_group(PlacementGroup(PlacementGroupID(bytes.fromhex(group.id_hex))))
        except Exception as exc:
            log.warning("could not remove placement group %s: %s", group.id_hex, exc)
            continue
        released.append(group)
        log.info(
            "released placement group %s (%s, %s) left by a stopped trial%s",
            group.id_hex[:12],
            group.state,
            ", ".join(f"{k}={v:g}" for k, v in sorted(group.resources.items())),
            f" ({reason})" if reason else "",
        )
    return released


def _tune_callback_base() -> type:
    from ray import tune

    return tune.Callback


class ReleaseStoppedTrials(_tune_callback_base()):  # type: ignore[misc]
    """Tune callback (runs in the driver): free what stopped trials' trainers reserved."""

    def __init__(self, interval_s: float = SWEEP_INTERVAL_S):
        self.interval_s = interval_s
        self._last = 0.0
        self.released: list[OrphanedGroup] = []

    def _sweep(self, reason: str) -> None:
        self._last = time.monotonic()
        self.released += release_orphaned(reason)

    def on_step_begin(self, iteration: int, trials: list[Any], **info: Any) -> None:
        if time.monotonic() - self._last >= self.interval_s:
            self._sweep("periodic")

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any):
        self._sweep(f"trial {trial.trial_id} ended")

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any):
        self._sweep(f"trial {trial.trial_id} failed")

    def on_experiment_end(self, trials: list[Any], **info: Any) -> None:
        self._sweep("sweep ended")
