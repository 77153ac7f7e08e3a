"""What the training loop is given: one typed, frozen object that crosses the Ray boundary.

:class:`LoopConfig` is built once on the driver (:func:`rayline.train.trainer.loop_config`)
from the pipeline config. Its ``model`` and ``train`` fields ARE the validated pydantic
sections, so every default has exactly one source, :mod:`rayline.config`; the other fields
are the run's wiring (where to write the history, ledger and checkpoints). Ray pickles it to
the workers; a Tune trial derives its own with :meth:`LoopConfig.with_overrides`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rayline.config import ModelConfig, TrainConfig
    from rayline.data.features import FittedPreprocessor


@dataclass(frozen=True)
class LoopConfig:
    """Everything :func:`rayline.train.loop.train_loop_per_worker` needs.

    Attributes:
        model: The ``model`` section (validated).
        train: The ``train`` section (validated).
        prep_json: The fitted preprocessor as JSON (see :meth:`preprocessor`).
        metric: The validation metric that ranks epochs and checkpoints.
        mode: Its direction, ``"min"`` or ``"max"``.
        train_rows: Rows in the train split (sizes the LR schedule and the padding that
            lets every rank train the same number of steps; see
            :func:`rayline.train.loop.shard_plan`).
        ledger_dir: Where each rank records the steps it trained (local paths only).
        history_dir: Where rank 0 writes one metrics file per epoch (and per logged step).
        checkpoint_dir: Where rayline keeps checkpoints itself (``train.local_mode``).
        stop_file: Where a rank records a deterministic failure (a non-finite loss), so that
            Train's restarts end at once instead of repeating it; set by
            :func:`rayline.train.trainer.make_trainer`.
        trial_id: The Tune trial this run is, if any (stamped into its checkpoints).
        started_at: Wall-clock start of the run (a trial's), for ``since_start_s``.
        sync_timing: Wait for the GPU before each reading of the step clock, so that the
            epoch's ``data_wait_s`` and ``compute_s`` are exact on CUDA
            (:class:`rayline.train.loop.StepClock`); ``rayline bench scaling`` sets it.
            Off in normal training: the syncs would cost throughput. No effect on CPU.
        resume_from: A checkpoint (``ray.train.Checkpoint``) the run starts from when Ray
            Train has none of its own for it: a DDP trial that PBT had copy a stronger
            one (Train V2 takes no ``resume_from_checkpoint``; see :mod:`rayline.tune`).
        arrays: Splits that reach the workers as arrays (see the field).
    """

    model: ModelConfig
    train: TrainConfig
    prep_json: str
    metric: str
    mode: str
    train_rows: int
    ledger_dir: str | None = None
    history_dir: str | None = None
    checkpoint_dir: str | None = None
    stop_file: str | None = None
    trial_id: str | None = None
    started_at: float | None = None
    sync_timing: bool = False
    #: Zero-weight rows the trainer appended to the train split (an elastic run pads to a
    #: multiple of every worker count it may run with); the LR schedule counts the steps
    #: they add. Set by :func:`rayline.train.trainer.make_trainer`.
    pad_rows: int = 0
    resume_from: Any = None
    #: Splits handed to the workers as arrays, not Ray Datasets: ``{"train": ..., "val":
    #: ...}``, each an ``ObjectRef`` of (or, in-process, the) ``{"x", "y"[, weight]}``
    #: arrays, the train split already padded. Set by
    #: :func:`rayline.train.trainer.make_trainer` for splits small enough for memory.
    arrays: dict[str, Any] = dataclasses.field(default_factory=dict)

    def preprocessor(self) -> FittedPreprocessor:
        """The fitted preprocessor (parsed from :attr:`prep_json`)."""
        from rayline.data.features import FittedPreprocessor

        return FittedPreprocessor.from_json(self.prep_json)

    def with_overrides(
        self, values: dict[str, dict[str, Any]] | None = None, **fields: Any
    ) -> LoopConfig:
        """A copy with section values replaced and validated, e.g. a Tune trial's sample.

        Args:
            values: ``{"train": {"lr": ...}, "model": {"hidden_sizes": ...}}``; either
                section may be missing.
            fields: Other fields to replace (``trial_id=...``, ``history_dir=...``).
        """
        values = values or {}
        sections = {
            name: _updated(getattr(self, name), values[name])
            for name in ("model", "train")
            if values.get(name)
        }
        return dataclasses.replace(self, **sections, **fields)

    def params(self) -> dict[str, dict[str, Any]]:
        """The hyperparameters as plain data: ``{"model": {...}, "train": {...}}``."""
        return {"model": self.model.model_dump(), "train": self.train.model_dump()}


@dataclass
class TrainResult:
    """The outcome of one training run (or of the best Tune trial)."""

    checkpoint_path: str
    metrics: dict[str, Any]
    params: dict[str, Any]
    history: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    trial_id: str | None = None
    step_history: list[dict[str, Any]] = dataclasses.field(default_factory=list)


def _updated(section: Any, update: dict[str, Any]) -> Any:
    """``section`` (a pydantic model) with ``update`` applied, validated like the config."""
    return type(section).model_validate({**section.model_dump(), **update})
