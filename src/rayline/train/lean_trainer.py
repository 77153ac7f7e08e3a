"""A ``TorchTrainer`` that starts only the parts of Ray Train a run uses.

Its own module, imported where a trainer is built, so that importing
:mod:`rayline.train.trainer` does not import Ray Train. Each part it leaves out is an actor
process (or a wait on one) that costs ~2 s of CPU on 2 cores (benchmarks/RESULTS.md).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from ray.train.torch import TorchTrainer

log = logging.getLogger(__name__)


class LeanTorchTrainer(TorchTrainer):
    """A ``TorchTrainer`` without the default callbacks in :attr:`skip_callbacks`, with its
    controller in this process (:attr:`controller_in_process`) and without resource
    requests to Ray's autoscaling coordinator (:attr:`autoscaler_requests`); see
    :func:`lean_trainer`."""

    skip_callbacks: tuple[type, ...] = ()
    #: Run Ray Train's controller in the calling thread instead of as an actor of its own.
    controller_in_process: bool = False
    #: Tell Ray's autoscaling coordinator what the workers need (Train's default).
    autoscaler_requests: bool = True

    def _create_default_callbacks(self):
        callbacks = super()._create_default_callbacks()
        return [cb for cb in callbacks if not isinstance(cb, self.skip_callbacks)]

    def _initialize_and_run_controller(self, **controller_init_kwargs):
        if not self.autoscaler_requests:
            controller_init_kwargs["scaling_policy"] = _without_autoscaler_requests(
                controller_init_kwargs["scaling_policy"]
            )
        if not self.controller_in_process:
            return super()._initialize_and_run_controller(**controller_init_kwargs)
        from ray.train.v2._internal.execution.controller import TrainController

        # The same controller, its loop run here: it starts the worker group, polls it,
        # runs every callback and applies the failure policy exactly as in its actor.
        controller = TrainController(**controller_init_kwargs)
        asyncio.run(controller.run())
        return controller.get_result()


try:
    from ray.train.v2._internal.execution.scaling_policy.fixed import FixedScalingPolicy
except ImportError:  # another Ray's internals: Train's own policy, requests and all
    FixedScalingPolicy = None
else:

    class FixedWithoutRequests(FixedScalingPolicy):
        """Train's fixed-size policy without its requests to the autoscaling coordinator:
        nothing could grow the cluster, and the first request starts that actor and waits
        for it."""

        def _maybe_send_resource_request(self):
            pass

        def _send_resource_request(self):
            pass

        def _cancel_resource_request(self):
            pass


def _without_autoscaler_requests(policy: Any) -> Any:
    """``policy`` without its resource requests when it is the fixed-size one; any other as
    it is (an elastic policy asks the coordinator what it may use)."""
    if FixedScalingPolicy is None or type(policy) is not FixedScalingPolicy:
        return policy
    return FixedWithoutRequests(scaling_config=policy.scaling_config)


def lean_trainer(
    *,
    with_datasets: bool,
    placement_cleaner: bool,
    controller_in_process: bool = False,
    autoscaler_requests: bool = True,
    **kwargs: Any,
) -> Any:
    """A :class:`LeanTorchTrainer` (``kwargs`` are ``TorchTrainer``'s).

    * Without Ray Datasets (every split in memory), no dataset manager actor, which Train V2
      (2.60) starts for every run, datasets or none.
    * Without ``placement_cleaner``, not Ray's detached placement-group cleaner, where
      rayline removes stopped trials' placement groups itself (a sweep's
      :class:`rayline.train.placement.ReleaseStoppedTrials`).
    * ``controller_in_process``: the controller runs in the thread that calls ``fit()``, not
      in an actor of its own. For a Tune trial, whose process exists only to wait for the
      run: its callbacks then run in the trial's thread and report to Tune directly
      (:class:`rayline.train.tune_reports.ReportToTune`). The workers and the placement
      group belong to the trial's process, as they belonged to the controller actor that
      the trial owned, and end with it.
    * Without ``autoscaler_requests``, no resource requests to Ray's autoscaling
      coordinator (a detached actor that the first request starts): for a Ray that rayline
      started on this machine, which no autoscaler grows.
    """
    trainer = LeanTorchTrainer(**kwargs)
    trainer.controller_in_process = controller_in_process
    trainer.autoscaler_requests = autoscaler_requests
    try:
        from ray.train.v2._internal.callbacks.datasets import DatasetsCallback
        from ray.train.v2._internal.callbacks.placement_group_callback import (
            PlacementGroupCleanerCallback,
        )
    except ImportError:  # another Ray's internals: keep every default callback
        log.warning("Ray Train's internal callbacks moved: this run starts every default one")
        return trainer
    skip: list[type] = []
    if not with_datasets:
        skip.append(DatasetsCallback)
    if not placement_cleaner:
        skip.append(PlacementGroupCleanerCallback)
    trainer.skip_callbacks = tuple(skip)
    return trainer
