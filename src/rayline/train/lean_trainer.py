"""A ``TorchTrainer`` that starts only the parts of Ray Train a run uses.

Its own module, imported where a trainer is built, so that importing
:mod:`rayline.train.trainer` does not import Ray Train.
"""

from __future__ import annotations

import logging
from typing import Any

from ray.train.torch import TorchTrainer

log = logging.getLogger(__name__)


class LeanTorchTrainer(TorchTrainer):
    """A ``TorchTrainer`` without the default callbacks in :attr:`skip_callbacks`
    (see :func:`lean_trainer`)."""

    skip_callbacks: tuple[type, ...] = ()

    def _create_default_callbacks(self):
        callbacks = super()._create_default_callbacks()
        return [cb for cb in callbacks if not isinstance(cb, self.skip_callbacks)]


def lean_trainer(*, with_datasets: bool, placement_cleaner: bool, **kwargs: Any) -> Any:
    """A :class:`LeanTorchTrainer` (``kwargs`` are ``TorchTrainer``'s): without Ray Datasets
    (every split in memory) no dataset manager actor, which Train V2 (2.60) starts for every
    run, datasets or none; without ``placement_cleaner`` not Ray's detached placement-group
    cleaner, where rayline removes stopped trials' placement groups itself (a sweep's
    :class:`rayline.train.placement.ReleaseStoppedTrials`). Each is an actor process, ~2 s
    of CPU on 2 cores (benchmarks/RESULTS.md)."""
    trainer = LeanTorchTrainer(**kwargs)
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
