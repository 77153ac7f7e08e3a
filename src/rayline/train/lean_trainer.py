"""A ``TorchTrainer`` that starts only the parts of Ray Train a run uses.

Its own module, imported where a trainer is built, so that importing
:mod:`rayline.train.trainer` does not import Ray Train. Each part it leaves out is an actor
process (or a wait on one) that costs ~2 s of CPU on 2 cores (benchmarks/RESULTS.md).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

import ray
from ray.train.torch import TorchTrainer
from ray.train.v2._internal.execution.controller import TrainController
from ray.train.v2._internal.execution.worker_group import WorkerGroup

from rayline.runtime import covers, worker_environment

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
    #: What every worker process of this Ray inherits of Ray Train's variables (see
    #: :func:`inherited_train_env`); None: not known, Train's own runtime_envs.
    inherited_env: dict[str, str] | None = None

    def _create_default_callbacks(self):
        callbacks = super()._create_default_callbacks()
        return [cb for cb in callbacks if not isinstance(cb, self.skip_callbacks)]

    def _initialize_and_run_controller(self, **controller_init_kwargs):
        if not self.autoscaler_requests:
            controller_init_kwargs["scaling_policy"] = _without_autoscaler_requests(
                controller_init_kwargs["scaling_policy"]
            )
        inherited = self.inherited_env
        if self.controller_in_process:
            # The same controller, its loop run here: it starts the worker group, polls it,
            # runs every callback and applies the failure policy exactly as in its actor.
            controller = LeanController(inherited_env=inherited, **controller_init_kwargs)
            asyncio.run(controller.run())
            return controller.get_result()
        if inherited is None or not covers(inherited, _controller_env_vars()):
            return super()._initialize_and_run_controller(**controller_init_kwargs)
        # Train's own actor, on the driver's node, without its runtime_env of env vars:
        # every one of them is in the environment the actor inherits anyway.
        controller = ray.remote(
            num_cpus=0,
            label_selector={ray._raylet.RAY_NODE_ID_KEY: ray.get_runtime_context().get_node_id()},
        )(LeanController).remote(inherited_env=inherited, **controller_init_kwargs)
        if threading.current_thread() is threading.main_thread():
            self._register_sigint_handler(controller)
        ray.get(controller.run.remote())
        return ray.get(controller.get_result.remote())


class LeanController(TrainController):
    """Train's controller, whose worker group leaves out of its workers' ``runtime_env``
    the env vars that they inherit anyway (``inherited_env``, when known).

    Train V2 gives every worker a ``runtime_env`` of the Train variables set in the
    controller's environment (its health-check interval, start timeout, ...), and every
    process with a ``runtime_env`` starts through Ray's ``setup_worker.py`` and the
    runtime-env agent and cannot take one of Ray's idle workers
    (:func:`rayline.runtime.inherited_by_workers`).
    """

    def __init__(self, *, inherited_env: dict[str, str] | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        if inherited_env is not None:
            self.worker_group_cls = _inheriting_worker_group(inherited_env)


def _inheriting_worker_group(inherited: dict[str, str]) -> type:
    class InheritingWorkerGroup(WorkerGroup):
        def _get_worker_runtime_env(self, custom_runtime_env):
            runtime_env = WorkerGroup._get_worker_runtime_env(custom_runtime_env)
            return without_inherited(runtime_env, inherited)

    return InheritingWorkerGroup


def without_inherited(runtime_env: dict[str, Any], inherited: dict[str, str]) -> dict[str, Any]:
    """``runtime_env`` without its ``env_vars`` when every one of them has its value in
    ``inherited`` already; as it is otherwise."""
    if not covers(inherited, runtime_env.get("env_vars") or {}):
        return runtime_env
    return {k: v for k, v in runtime_env.items() if k != "env_vars"}


def _controller_env_vars() -> dict[str, str]:
    """The env vars Train V2 (2.60) gives its controller actor."""
    from ray.train.v2._internal.constants import (
        DEFAULT_RAY_WARN_BLOCKING_GET_INSIDE_ASYNC_VALUE,
        RAY_WARN_BLOCKING_GET_INSIDE_ASYNC_ENV_VAR,
        get_env_vars_to_propagate,
    )

    env_vars = get_env_vars_to_propagate()
    env_vars.setdefault(
        RAY_WARN_BLOCKING_GET_INSIDE_ASYNC_ENV_VAR, DEFAULT_RAY_WARN_BLOCKING_GET_INSIDE_ASYNC_VALUE
    )
    return env_vars


def inherited_train_env() -> dict[str, str] | None:
    """The values of Ray Train's variables (those it passes on from the driver to its
    controller and workers) in the environment that every worker of this process's Ray
    inherits, where this process started that Ray (:func:`rayline.runtime.worker_environment`);
    None otherwise. Small and free of other settings, so a Tune trial can carry it."""
    from ray.train.v2._internal.constants import (
        ENV_VARS_TO_PROPAGATE,
        RAY_WARN_BLOCKING_GET_INSIDE_ASYNC_ENV_VAR,
    )

    return worker_environment([*ENV_VARS_TO_PROPAGATE, RAY_WARN_BLOCKING_GET_INSIDE_ASYNC_ENV_VAR])


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
    inherited_env: dict[str, str] | None = None,
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
    * ``inherited_env`` (:func:`inherited_train_env`): the controller (as an actor) and the
      workers start without a ``runtime_env`` where it would only set what they inherit.
    """
    trainer = LeanTorchTrainer(**kwargs)
    trainer.controller_in_process = controller_in_process
    trainer.autoscaler_requests = autoscaler_requests
    trainer.inherited_env = inherited_env
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
