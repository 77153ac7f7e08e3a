"""The per-worker training loop: a plain function that Ray Train runs on every DDP rank.

Setup, then epochs of: stream this rank's shard of the train split, step, evaluate on the
validation split (rank 0), report metrics, and checkpoint. Nothing here knows about Tune or
MLflow: the trainer module wires reports to them.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import random
import tempfile
import time
import uuid
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from rayline.errors import NonFiniteLossError
from rayline.metrics import compute_metrics
from rayline.train import checkpoints
from rayline.train.models import build_model
from rayline.train.schedules import lr_factor
from rayline.train.spec import LoopConfig

if TYPE_CHECKING:
    from rayline.data.features import FittedPreprocessor

log = logging.getLogger(__name__)

WEIGHTS_FILE = "model.pt"
STATE_FILE = "train_state.pt"
COMPLETE_FILE = "COMPLETE"
#: The column of a padded train split that weights each row's loss (see :func:`shard_plan`).
WEIGHT_KEY = "w"


@dataclass(frozen=True)
class ShardPlan:
    """How one epoch's train rows spread over the DDP ranks (see :func:`shard_plan`).

    Attributes:
        pad_rows: Zero-weight rows appended to the split so that it divides by ``world``.
        rows_per_rank: Rows each rank iterates per epoch, padding included.
        micro_batches: Micro-batches each rank runs per epoch.
        steps: Optimizer steps each rank takes per epoch (the same on every rank).
    """

    train_rows: int
    world: int
    pad_rows: int
    rows_per_rank: int
    micro_batches: int
    steps: int


def shard_plan(train_rows: int, world: int, batch_size: int, accum: int) -> ShardPlan:
    """Rows, micro-batches and optimizer steps per rank for ``train_rows`` on ``world`` ranks.

    Ray Train splits the train split with ``streaming_split(equal=True)`` (its
    ``DataConfig``), which gives every rank the same number of rows by *dropping* the
    ``train_rows % world`` rows left over: DDP needs every rank to take the same number of
    optimizer steps (each step all-reduces the gradients), or the ranks with more rows wait
    in a collective forever. So that every row is trained each epoch, the trainer appends
    ``pad_rows = -train_rows % world`` copies of a train row with loss weight 0
    (:data:`WEIGHT_KEY`; :func:`rayline.train.trainer.pad_train`): the split then divides
    evenly, nothing is dropped, and every rank runs ``ceil(train_rows / world)`` rows in
    the same number of micro-batches and steps.

    How rows are weighted: each rank's micro-batch loss is ``sum(w_i * loss_i) / len(batch)``
    with the padding rows in ``len(batch)``, and DDP averages the gradients over the ranks
    (and accumulation over ``accum`` micro-batches), so every real row of a step enters
    the gradient with weight ``1 / (len(batch) * accum * world)``, exactly as without
    padding, and a padding row with weight 0. The per-row gradients therefore count each
    real row once per epoch and the copies not at all. (Dividing by the real rows,
    ``sum(w)``, instead would weight the rows that share a micro-batch with a copy more than
    the same step's rows on the other ranks.) The one step that holds the copies sums to a
    total weight short of 1 by ``pad_rows / (len(batch) * accum * world)``, under
    ``1 / len(batch)``.
    """
    world = max(1, int(world))
    pad = -int(train_rows) % world
    rows = (int(train_rows) + pad) // world
    micro = math.ceil(rows / batch_size)
    return ShardPlan(
        train_rows=int(train_rows),
        world=world,
        pad_rows=pad,
        rows_per_rank=rows,
        micro_batches=micro,
        steps=max(1, math.ceil(micro / accum)),
    )


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch so that a rerun on CPU repeats itself."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """Python, numpy and torch RNG states as tensors/ints (loadable with weights_only=True)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": {
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
        "torch": torch.get_rng_state(),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`rng_state`."""
    random.setstate(_tuplify(state["python"]))
    n = state["numpy"]
    np.random.set_state(
        ("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"])
    )
    torch.set_rng_state(state["torch"])


def _tuplify(x: Any) -> Any:
    return tuple(_tuplify(v) for v in x) if isinstance(x, list | tuple) else x


def _make_optimizer(name: str, params, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay)
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)


def batch_iter_options(batch_size: int, device: Any = None) -> dict[str, Any]:
    """How a worker iterates its Ray Data shard (``iter_torch_batches`` keyword arguments).

    One place, so the training loop and ``benchmarks/ingest.py`` measure the same path.
    """
    options: dict[str, Any] = {"batch_size": batch_size, "prefetch_batches": 1}
    if device is not None:
        options["device"] = device
    return options


def append_padding(arrays: dict[str, np.ndarray], pad_rows: int) -> dict[str, np.ndarray]:
    """``arrays`` with ``pad_rows`` zero-weight copies of their first rows appended, and a
    :data:`WEIGHT_KEY` column (1 for the rows already there unless they carry one); the
    arrays as they are when there is nothing to add."""
    rows = len(arrays["y"])
    if pad_rows <= 0 or rows == 0:
        return arrays
    copies = np.arange(pad_rows) % rows
    out = {k: np.concatenate([v, v[copies]]) for k, v in arrays.items() if k != WEIGHT_KEY}
    weight = arrays.get(WEIGHT_KEY, np.ones(rows, dtype=np.float32))
    out[WEIGHT_KEY] = np.concatenate([weight, np.zeros(pad_rows, dtype=np.float32)])
    return out


def pad_to_multiple(arrays: dict[str, np.ndarray], world: int) -> dict[str, np.ndarray]:
    """``arrays`` padded (:func:`append_padding`) until the rows divide by ``world`` (no
    rows added when they already do, as the trainer's padding makes them)."""
    return append_padding(arrays, -len(arrays["y"]) % max(1, world))


class ShardCache:
    """A worker's shard, streamed from Ray Data once and then served from memory.

    Re-executing the Ray Data pipeline every epoch costs seconds of scheduling per epoch on a
    small machine, far more than the math for a shard that fits in memory. The first pass
    streams batches as usual and keeps them; once the kept bytes would pass ``max_bytes``
    the cache gives up and every epoch streams again, so large shards keep bounded memory.
    """

    def __init__(
        self, data_iter, batch_size: int, max_bytes: int, device, seed: int, shuffle: bool
    ):
        self.data_iter = data_iter
        self.batch_size = batch_size
        self.max_bytes = max_bytes
        self.device = device
        self.seed = seed
        self.shuffle = shuffle
        self.tensors: dict[str, torch.Tensor] | None = None

    def epoch(self, epoch: int):
        """Yield this epoch's batches (dicts of tensors on the worker's device)."""
        if self.tensors is not None:
            yield from self._from_memory(epoch)
            return
        kept: list[dict[str, torch.Tensor]] | None = []
        size = 0
        for batch in self._stream(epoch):
            if kept is not None:
                size += sum(t.element_size() * t.nelement() for t in batch.values())
                kept = kept + [batch] if size <= self.max_bytes else None
            yield batch
        if kept:
            self.tensors = {k: torch.cat([b[k] for b in kept]) for k in kept[0]}

    @classmethod
    def of_arrays(
        cls,
        arrays: Any,
        batch_size: int,
        device,
        seed: int,
        shuffle: bool,
        rank: int = 0,
        world: int = 1,
    ) -> ShardCache:
        """A cache that starts full: a split the trainer handed over as arrays
        (:attr:`LoopConfig.arrays`, an ``ObjectRef`` or the arrays themselves). With
        ``world`` > 1 this rank keeps every ``world``-th row from row ``rank`` (the
        trainer padded the train split to a multiple of the ranks, so each rank holds as
        many rows as the others and takes as many steps); a rank of an unsplit split
        (``world`` 1) keeps every row."""
        if not isinstance(arrays, dict):
            import ray

            arrays = ray.get(arrays)
        arrays = pad_to_multiple(arrays, world)
        cache = cls(None, batch_size, 0, device, seed, shuffle)
        # A copy: the object store's arrays are read-only, and this rank's rows only.
        cache.tensors = {
            k: torch.as_tensor(np.array(v[rank::world], copy=True)).to(device)
            for k, v in arrays.items()
        }
        return cache

    def warm(self, first_epoch: int = 0) -> None:
        """Fill the cache as a run that started at ``first_epoch`` filled it in that epoch.

        A resumed run's first epoch here is a later one; streamed, its order would differ
        from the uninterrupted run's, which serves it from the cache its first epoch kept
        (:meth:`_from_memory`). One pass in the first epoch's order (nothing trained on it)
        makes the resumed epochs the same permutations of the same rows. A shard too large to
        keep streams every epoch either way.
        """
        if self.tensors is not None or self.max_bytes <= 0:
            return
        for _ in self.epoch(first_epoch):
            pass

    def _stream(self, epoch: int):
        return self.data_iter.iter_torch_batches(
            **batch_iter_options(self.batch_size, self.device),
            local_shuffle_buffer_size=4 * self.batch_size if self.shuffle else None,
            local_shuffle_seed=self.seed * 1000 + epoch if self.shuffle else None,
        )

    def _from_memory(self, epoch: int):
        assert self.tensors is not None
        n = len(next(iter(self.tensors.values())))
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 1000 + epoch)
            order = torch.randperm(n, generator=g).to(self.device)
        else:
            order = torch.arange(n, device=self.device)
        for start in range(0, n, self.batch_size):
            idx = order[start : start + self.batch_size]
            yield {k: v[idx] for k, v in self.tensors.items()}


def evaluate(model: nn.Module, batches, prep: FittedPreprocessor) -> dict[str, float]:
    """Metrics of ``model`` over ``batches`` (decoded to the target's units), in eval mode."""
    model.eval()
    outs, ys = [], []
    with torch.no_grad():
        for batch in batches:
            outs.append(model(batch["x"]).float().cpu().numpy())
            ys.append(batch["y"].cpu().numpy())
    if not outs:
        return {}
    y = np.concatenate(ys)
    output = prep.decode_output(np.concatenate(outs))
    y_true = prep.decode_output(y) if prep.task == "regression" else y
    return compute_metrics(prep.task, y_true, output)


class RaySession:
    """What the loop needs from whoever runs it, answered by Ray Train.

    A DDP worker, or Ray Train's local mode (``ScalingConfig(num_workers=0)``) for a single
    in-process run. Ray Train refuses its ``ray.train.*`` calls inside a Tune trial
    ("deprecated when running in a function passed to Ray Tune"), so an in-process Tune
    trial uses :class:`TuneLocalSession` instead.
    """

    def __init__(self) -> None:
        import ray.train

        ctx = ray.train.get_context()
        self.rank, self.world = ctx.get_world_rank(), ctx.get_world_size()

    def prepare_model(self, model: nn.Module) -> tuple[nn.Module, torch.device]:
        import ray.train.torch

        return ray.train.torch.prepare_model(model), ray.train.torch.get_device()

    def checkpoint(self):
        import ray.train

        return ray.train.get_checkpoint()

    def dataset(self, name: str):
        import ray.train

        return ray.train.get_dataset_shard(name)

    def report(self, metrics: dict[str, Any], checkpoint_dir: str | None) -> None:
        import ray.train

        ckpt = ray.train.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None
        ray.train.report(metrics, checkpoint=ckpt)


class TuneLocalSession:
    """An in-process Tune trial (``train.local_mode``): rank 0 of 1, Tune's checkpoints.

    Tune stores each reported checkpoint with the trial; a restored sweep resumes from it and
    PBT hands it to a weaker trial, which continues from these weights and optimizer state.
    """

    rank, world = 0, 1

    def __init__(self, datasets: dict[str, Any], use_gpu: bool = False, checkpoints: bool = True):
        self.datasets = datasets
        self.use_gpu = use_gpu
        # Tune checkpoints are what PBT copies; without PBT a restarted trial resumes from
        # the checkpoints rayline keeps, and each Tune checkpoint would be a second copy
        # (and would make Tune snapshot its experiment state every few reports).
        self.checkpoints = checkpoints

    def prepare_model(self, model: nn.Module) -> tuple[nn.Module, torch.device]:
        device = torch.device("cuda" if self.use_gpu and torch.cuda.is_available() else "cpu")
        return model.to(device), device

    def checkpoint(self):
        import ray.tune

        return ray.tune.get_checkpoint()

    def dataset(self, name: str):
        return self.datasets[name]

    def report(self, metrics: dict[str, Any], checkpoint_dir: str | None) -> None:
        import ray.tune

        ckpt = (
            ray.tune.Checkpoint.from_directory(checkpoint_dir)
            if checkpoint_dir and self.checkpoints
            else None
        )
        ray.tune.report(metrics, checkpoint=ckpt)


@dataclass
class StepParts:
    """What a training step touches: the model, its optimizer and LR schedule, and the loss.

    Attributes:
        regression: The model's single output is squeezed before the loss (MSE).
        accum: Micro-batches per optimizer step (``train.grad_accum_steps``).
        clip: Global gradient-norm clip (``train.grad_clip_norm``), None for none.
        use_bf16: bf16 autocast around forward and loss (CUDA only).
        device_type: The model's device type (``"cuda"`` or ``"cpu"``), for autocast.
    """

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    loss_fn: nn.Module
    regression: bool
    accum: int
    clip: float | None
    use_bf16: bool
    device_type: str

    def __post_init__(self) -> None:
        # The same loss per row, for batches with a weight column (a padded train split).
        self.row_loss_fn = copy.copy(self.loss_fn)
        self.row_loss_fn.reduction = "none"


def train_step(
    parts: StepParts, batch: dict[str, torch.Tensor], last_micro: bool
) -> tuple[float, float]:
    """One micro-batch: forward (bf16 autocast when asked), loss, backward of ``loss / accum``.

    Gradients are all-reduced only on the micro-batch that steps the optimizer
    (``last_micro``); syncing every micro-batch would multiply the communication by
    ``accum``. A batch with a :data:`WEIGHT_KEY` column (padding rows weigh 0) has the loss
    ``sum(w * row loss) / len(batch)``, see :func:`shard_plan`. Returns the batch's summed
    loss over its real rows and their number: one device sync.
    """
    model, x, y = parts.model, batch["x"], batch["y"]
    w = batch.get(WEIGHT_KEY)
    sync = nullcontext() if last_micro or not hasattr(model, "no_sync") else model.no_sync()
    with (
        sync,
        torch.autocast(device_type=parts.device_type, dtype=torch.bfloat16, enabled=parts.use_bf16),
    ):
        out = model(x)
        pred = out.squeeze(-1).float() if parts.regression else out.float()
        if w is None:
            loss = parts.loss_fn(pred, y)
        else:
            per_row = parts.row_loss_fn(pred, y).reshape(len(y), -1).mean(dim=1)
            summed = (per_row * w).sum()
            loss = summed / len(y)
        (loss / parts.accum).backward()
    if w is None:
        return loss.item() * len(y), float(len(y))
    loss_sum, rows = torch.stack([summed.detach().double(), w.sum().double()]).tolist()
    return loss_sum, rows


def optimizer_step(parts: StepParts, global_step: int, epoch: int, ledger: _Ledger) -> int:
    """Clip, step, schedule, zero; record the new global step in the ledger and return it."""
    if parts.clip:
        torch.nn.utils.clip_grad_norm_(parts.model.parameters(), float(parts.clip))
    parts.optimizer.step()
    parts.scheduler.step()
    parts.optimizer.zero_grad(set_to_none=True)
    global_step += 1
    ledger.record(epoch, global_step)
    return global_step


@dataclass
class StepClock:
    """Where one epoch's training time went: blocked on the next batch, or in the step.

    ``data_wait_s`` sums the time spent waiting for each batch from the data iterator (Ray
    Data's, or the in-memory :class:`ShardCache`); ``compute_s`` sums forward, backward
    (with DDP's gradient all-reduce) and the optimizer step. Whatever is left of the epoch's
    wall time is logging and the loop itself. A GPU runs kernels asynchronously, so without
    ``sync`` part of a step's compute is charged to the next batch's wait; ``sync`` makes
    every reading wait for the device first. Only ``rayline bench scaling`` turns it on
    (:attr:`~rayline.train.spec.LoopConfig.sync_timing`): two device syncs per micro-batch
    would cost normal training throughput. On a CPU the readings are exact either way.
    """

    sync: bool = False
    data_wait_s: float = 0.0
    compute_s: float = 0.0

    def now(self) -> float:
        """``time.perf_counter()``, after the GPU's queued work when :attr:`sync` is on."""
        if self.sync:
            torch.cuda.synchronize()
        return time.perf_counter()

    def batches(self, batches):
        """Yield from ``batches``, adding the time each ``next()`` blocks to :attr:`data_wait_s`."""
        it = iter(batches)
        while True:
            started = self.now()
            try:
                batch = next(it)
            except StopIteration:
                return
            self.data_wait_s += self.now() - started
            yield batch


def train_epoch(
    parts: StepParts,
    batches,
    epoch: int,
    global_step: int,
    ledger: _Ledger,
    *,
    history_dir: str | None,
    log_every: int | None,
    world: int,
    rank: int = 0,
    clock: StepClock | None = None,
) -> tuple[torch.Tensor, int]:
    """One epoch of :func:`train_step` over ``batches``, an :func:`optimizer_step` every
    ``accum`` micro-batches (and one more for a leftover), step metrics every ``log_every``.

    Returns ``[summed loss, rows]`` (float64, this rank's real rows) and the new global step;
    ``clock``, when given, accumulates the epoch's data wait and compute seconds.

    Raises:
        NonFiniteLossError: a micro-batch's loss is NaN or infinite (checked on the value
            :func:`train_step` already brought to the host: no extra device sync), before its
            gradients are applied.
    """
    parts.model.train()
    loss_sum = torch.zeros(2, dtype=torch.float64)
    micro = 0
    window = [0.0, 0, time.perf_counter()]  # loss sum, rows, start of the logging window
    clock = clock or StepClock()
    parts.optimizer.zero_grad(set_to_none=True)
    for batch in clock.batches(batches):
        started = clock.now()
        micro += 1
        last_micro = micro % parts.accum == 0
        batch_loss, rows = train_step(parts, batch, last_micro)
        if not math.isfinite(batch_loss):
            raise non_finite_error(
                f"training loss ({batch_loss})",
                f"at epoch {epoch + 1}, step {global_step + 1} (rank {rank})",
                parts.optimizer,
            )
        loss_sum += torch.tensor([batch_loss, rows], dtype=torch.float64)
        window[0] += batch_loss
        window[1] += rows
        if last_micro:
            global_step = optimizer_step(parts, global_step, epoch, ledger)
        clock.compute_s += clock.now() - started
        if last_micro:
            window = _log_step(
                history_dir, log_every, global_step, epoch, window, world, parts.optimizer
            )
    if micro % parts.accum:
        # Leftover micro-batches at the end of the epoch still make one (smaller) step;
        # their gradients were not synced yet, so sync them by a plain all-reduce.
        started = clock.now()
        _sync_grads(parts.model)
        global_step = optimizer_step(parts, global_step, epoch, ledger)
        clock.compute_s += clock.now() - started
        _log_step(history_dir, log_every, global_step, epoch, window, world, parts.optimizer)
    return loss_sum, global_step


def non_finite_error(what: str, where: str, optimizer) -> NonFiniteLossError:
    """The error for a NaN/inf ``what`` (e.g. ``"training loss (nan)"``) found ``where``."""
    lr = float(optimizer.param_groups[0]["lr"])
    return NonFiniteLossError(
        f"non-finite {what} {where}; likely causes: non-finite or extreme inputs (a feature "
        "with inf or huge values: check the schema's allow_inf and min/max bounds for the "
        f"feature columns) or a learning rate too high (the rate was {lr:g}: lower train.lr "
        "or set train.grad_clip_norm)"
    )


def check_weights(model: nn.Module, where: str, optimizer) -> None:
    """Raise :class:`NonFiniteLossError` if any weight is NaN/inf (one device sync).

    The losses are checked as they come; a last step of an epoch whose gradients blew up
    leaves no loss to check before validation and the checkpoint, so the epoch ends with
    this. DDP keeps the weights equal on every rank, so every rank raises together.
    """
    flags = [torch.isfinite(p.detach()).all() for p in model.parameters()]
    if flags and not bool(torch.stack(flags).all()):
        raise non_finite_error("model weights", where, optimizer)


def validate(model: nn.Module, batches, prep: FittedPreprocessor, rank: int) -> dict[str, float]:
    """The validation pass: rank 0 scores the whole (unsplit) val split with :func:`evaluate`;
    the numbers are broadcast so that every rank reports the same dict and takes the same
    decisions. Other ranks never iterate ``batches``."""
    val = [evaluate(model, batches, prep) if rank == 0 else None]
    if dist.is_available() and dist.is_initialized():
        dist.broadcast_object_list(val, src=0)
    return val[0] or {}


def save_checkpoint(
    directory: str,
    model: nn.Module,
    optimizer,
    scheduler,
    *,
    epoch: int,
    global_step: int,
    best_score: float,
    stale_epochs: int,
    trial_id: str | None,
    val: dict[str, Any] | None = None,
) -> str:
    """Write a complete checkpoint to ``directory``; return the weights' sha256.

    The weights (``model.pt``), the training state to resume from (``train_state.pt``:
    optimizer, scheduler, counters, RNG states) and, last, the ``COMPLETE`` marker: a
    checkpoint without it was cut off mid-write (:func:`_restore` refuses it). The marker
    also keeps the epoch's validation metrics (``val``), so a checkpoint can be ranked from
    its own directory when no record of its epoch survives (a trial a scheduler stopped
    while its Train run finished the epoch: :func:`rayline.tune._on_disk`).
    """
    weights = os.path.join(directory, WEIGHTS_FILE)
    torch.save(_unwrap(model).state_dict(), weights)
    digest = _sha256(weights)
    torch.save(
        {
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "epoch": epoch,
            "global_step": global_step,
            "best_score": best_score,
            "stale_epochs": stale_epochs,
            "rng": rng_state(),
        },
        os.path.join(directory, STATE_FILE),
    )
    with open(os.path.join(directory, COMPLETE_FILE), "w") as f:
        json.dump(
            {
                "epoch": epoch,
                "global_step": global_step,
                "trial_id": trial_id,
                "weights_sha256": digest,
                **({"val": val} if val else {}),
            },
            f,
        )
    return digest


#: The key of Ray Train's ``train_loop_config`` dict that carries the :class:`LoopConfig`
#: (Ray Train's run-state tracking validates ``train_loop_config`` as a dict).
RAY_CONFIG_KEY = "loop"


def ray_train_loop(config: dict[str, LoopConfig]) -> None:
    """Ray Train's per-worker entry point: :func:`train_loop_per_worker` on the LoopConfig
    that :func:`rayline.train.trainer.make_trainer` passed under :data:`RAY_CONFIG_KEY`."""
    train_loop_per_worker(config[RAY_CONFIG_KEY])


def train_loop_per_worker(spec: LoopConfig, session: Any = None) -> None:
    """Train one DDP rank as ``spec`` says (built once on the driver; see
    :mod:`rayline.train.spec`). ``session`` defaults to Ray Train's (:class:`RaySession`)."""
    loop_started = time.time()
    tcfg = spec.train
    prep = spec.preprocessor()
    session = session or RaySession()
    rank, world = session.rank, session.world
    if read_stop(spec.stop_file) is not None:
        # A restarted worker group of a run that stopped on a deterministic failure: end
        # at once (every rank alike, before any collective) instead of failing again, which
        # Train would retry up to train.max_failures times (forever with -1). The driver
        # raises the recorded error (rayline.train.trainer.make_trainer).
        log.warning(
            "rank %d: the run recorded a fatal error in %s; not training", rank, spec.stop_file
        )
        return
    seed = tcfg.seed
    seed_everything(seed)
    # Ray gives each worker OMP_NUM_THREADS = its CPUs; keep torch within that share so
    # that workers on one node do not fight over cores.
    torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", "1"))))

    model = build_model(spec.model.model_dump(), prep.output_dim, prep.num_outputs, prep=prep)
    model, device = session.prepare_model(model)
    optimizer = _make_optimizer(tcfg.optimizer, model.parameters(), tcfg.lr, tcfg.weight_decay)
    accum = tcfg.grad_accum_steps
    batch_size = tcfg.batch_size
    epochs = tcfg.epochs
    # The split as the ranks get it, padding included: an elastic run's padding (to a
    # multiple of every worker count in its range) can add a micro-batch per epoch.
    plan = shard_plan(spec.train_rows + spec.pad_rows, world, batch_size, accum)
    total_steps = epochs * plan.steps
    schedule, warmup = tcfg.lr_schedule, float(tcfg.warmup_fraction)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, total_steps, schedule, warmup)
    )
    parts = StepParts(
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        loss_fn=nn.CrossEntropyLoss() if prep.task == "classification" else nn.MSELoss(),
        regression=prep.task == "regression",
        accum=accum,
        clip=tcfg.grad_clip_norm,
        use_bf16=device.type == "cuda" and tcfg.precision in ("auto", "bf16"),
        device_type=device.type,
    )
    metric, mode = spec.metric, spec.mode
    sign = 1.0 if mode == "max" else -1.0
    patience = tcfg.early_stopping_patience

    start_epoch, global_step = 0, 0
    best_score, stale_epochs = -math.inf, 0
    local = tcfg.local_mode
    restored: dict[str, Any] = {}
    with _restore_source(session, local, spec.checkpoint_dir, spec.resume_from) as d:
        if d is not None:
            # A restarted worker group (or a resumed run, or a PBT trial that copies a
            # stronger one) continues exactly where that checkpoint left off.
            restored = _restore(d, model, optimizer, scheduler)
    if restored:
        state = restored.pop("state")
        start_epoch, global_step = int(state["epoch"]) + 1, int(state["global_step"])
        best_score, stale_epochs = float(state["best_score"]), int(state["stale_epochs"])
        set_rng_state(state["rng"])
        # The config's rates win over the checkpoint's: the same on a plain resume, the
        # perturbed values when PBT had this trial copy another.
        base_lr = float(tcfg.lr)
        scheduler.base_lrs = [base_lr for _ in optimizer.param_groups]
        for group in optimizer.param_groups:
            group["initial_lr"] = base_lr
            group["lr"] = base_lr * lr_factor(scheduler.last_epoch, total_steps, schedule, warmup)
            group["weight_decay"] = float(tcfg.weight_decay)

    ledger = _Ledger(spec.ledger_dir, rank, global_step)
    cache_bytes = int(tcfg.cache_mb * 2**20)

    def split_data(name: str, shuffle: bool, split_rank: int, split_world: int) -> ShardCache:
        # A split handed over as arrays, or this rank's Ray Data shard of it.
        if name in spec.arrays:
            return ShardCache.of_arrays(
                spec.arrays[name], batch_size, device, seed, shuffle, split_rank, split_world
            )
        return ShardCache(session.dataset(name), batch_size, cache_bytes, device, seed, shuffle)

    # Only the train split is sharded across the ranks; each scores the whole val split.
    train_data = split_data("train", True, rank, world)
    val_data = split_data("val", False, 0, 1)
    if 0 < start_epoch < epochs:
        # A resumed run trains each later epoch in the order an uninterrupted one would.
        train_data.warm(0)
    history_dir = spec.history_dir if rank == 0 else None

    sync_timing = spec.sync_timing and device.type == "cuda"
    for epoch in range(start_epoch, epochs):
        clock = StepClock(sync=sync_timing)
        steps_before = global_step
        started = time.perf_counter()
        try:
            loss_sum, global_step = train_epoch(
                parts,
                train_data.epoch(epoch),
                epoch,
                global_step,
                ledger,
                history_dir=history_dir,
                log_every=tcfg.log_every_n_steps,
                world=world,
                rank=rank,
                clock=clock,
            )
            check_weights(model, f"after epoch {epoch + 1}, step {global_step}", optimizer)
        except NonFiniteLossError as exc:
            # This rank fails the attempt now; ranks waiting for it in a collective are
            # ended by Train with the worker group.
            record_stop(spec.stop_file, str(exc))
            raise
        elapsed = time.perf_counter() - started
        # One all-reduce for the loss and the timings: the loss sums over the ranks, the
        # timings are averaged below. NCCL reduces device tensors only, hence the move.
        stats = torch.tensor(
            [*loss_sum.tolist(), elapsed, clock.data_wait_s, clock.compute_s], dtype=torch.float64
        )
        if dist.is_available() and dist.is_initialized():
            reduced = stats.to(device)
            dist.all_reduce(reduced)
            stats = reduced.cpu()
        loss_sum = stats[:2]
        loop_s, data_wait_s, compute_s = (stats[2:] / world).tolist()
        if rank == 0 and spec.train_rows and int(loss_sum[1]) != spec.train_rows:
            log.warning(
                "epoch %d trained %d rows of the %d in the train split",
                epoch + 1,
                int(loss_sum[1]),
                spec.train_rows,
            )
        metrics: dict[str, Any] = {
            "epoch": epoch + 1,
            "global_step": global_step,
            "train_loss": float(loss_sum[0] / max(loss_sum[1], 1)),
            "train_rows": int(loss_sum[1]),
            "samples_per_s": float(loss_sum[1] / elapsed) if elapsed > 0 else 0.0,
            "lr": float(optimizer.param_groups[0]["lr"]),
            # Per rank, averaged over the ranks (StepClock): is the epoch data-bound?
            "loop_s": loop_s,
            "data_wait_s": data_wait_s,
            "compute_s": compute_s,
            "steps": global_step - steps_before,
        }
        val = validate(model, val_data.epoch(epoch), prep, rank)
        metrics.update({f"val_{k}": v for k, v in val.items()})
        metrics["val_metric"] = metrics.get(f"val_{metric}", float("nan"))
        # Wall-clock marks (benchmarks/hpo.py: time to target, per-trial start-up).
        now = time.time()
        metrics["epoch_s"] = time.perf_counter() - started
        metrics["wall_time"] = now
        metrics["since_start_s"] = now - float(spec.started_at or loop_started)
        score = sign * metrics["val_metric"]
        if score > best_score:
            best_score, stale_epochs = score, 0
        else:
            stale_epochs += 1
        stop = patience is not None and stale_epochs >= int(patience)
        metrics["early_stopped"] = bool(stop)

        if restored:
            # Where this run's weights came from, on its first epoch after a restore.
            metrics.update({f"restored_{k}": v for k, v in restored.items()})
            restored = {}
        with tempfile.TemporaryDirectory() as tmp:
            if rank == 0:
                metrics["weights_sha256"] = save_checkpoint(
                    tmp,
                    model,
                    optimizer,
                    scheduler,
                    epoch=epoch,
                    global_step=global_step,
                    best_score=best_score,
                    stale_epochs=stale_epochs,
                    trial_id=spec.trial_id,
                    val={k: v for k, v in metrics.items() if k.startswith("val_")},
                )
            if local and spec.checkpoint_dir:
                # Local mode keeps nothing itself: rayline keeps the checkpoints.
                metrics["checkpoint_path"] = checkpoints.persist(
                    tmp,
                    spec.checkpoint_dir,
                    int(metrics["epoch"]),
                    metrics,
                    tcfg.keep_checkpoints,
                    mode,
                )
            if rank == 0 and spec.history_dir:
                write_history_row(spec.history_dir, metrics)
            session.report(metrics, tmp if rank == 0 else None)
        if stop:
            break


def _sha256(path: str) -> str:
    import hashlib

    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


@contextmanager
def _restore_source(session: Any, local: bool, checkpoint_dir: str | None, resume_from: Any = None):
    """The checkpoint directory to continue from, or None for a fresh start.

    The session's (Ray Train's, for a restarted worker group or a rerun of the same run;
    Tune's, for a restored sweep or PBT's copy of a stronger trial in local mode), else the
    one the run was told to start from (a DDP trial's copy of a stronger one), else, in
    local mode, the newest one rayline kept for this run.
    """
    checkpoint = session.checkpoint()
    if checkpoint is None:
        checkpoint = resume_from
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            yield d
        return
    entry = checkpoints.latest(checkpoint_dir) if local and checkpoint_dir else None
    if entry is None:
        yield None
        return
    with tempfile.TemporaryDirectory() as tmp:
        yield checkpoints.fetch(entry["path"], checkpoint_dir, os.path.join(tmp, "ckpt"))


def _restore(d: str, model: nn.Module, optimizer, scheduler) -> dict[str, Any]:
    """Load weights, optimizer and scheduler from checkpoint directory ``d``; return the
    training state and where the checkpoint came from (trial, epoch, weights digest)."""
    if not os.path.exists(os.path.join(d, COMPLETE_FILE)):
        raise RuntimeError(f"checkpoint {d} is incomplete (no {COMPLETE_FILE})")
    with open(os.path.join(d, COMPLETE_FILE)) as f:
        origin = json.load(f)
    _unwrap(model).load_state_dict(torch.load(os.path.join(d, WEIGHTS_FILE), weights_only=True))
    state = torch.load(os.path.join(d, STATE_FILE), weights_only=True)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    return {
        "state": state,
        "from_trial": str(origin.get("trial_id")),
        "from_epoch": int(origin.get("epoch", -1)) + 1,
        "weights_sha256": _sha256(os.path.join(d, WEIGHTS_FILE)),
    }


def _fs(uri: str):
    from rayline.paths import filesystem

    return filesystem(uri)


def record_stop(path: str | None, message: str) -> None:
    """Record a deterministic failure's message at ``path`` (local or URI) for
    :func:`read_stop`; best effort: the error is raised whether or not this succeeds."""
    if not path:
        return
    try:
        fs, inner = _fs(path)
        fs.create_dir(inner.rsplit("/", 1)[0], recursive=True)
        with fs.open_output_stream(inner) as f:
            f.write(json.dumps({"message": message}).encode())
    except Exception:  # storage trouble must not hide the error itself
        log.exception("could not record the failure in %s", path)


def read_stop(path: str | None) -> str | None:
    """The message :func:`record_stop` left at ``path``, or None."""
    if not path:
        return None
    import pyarrow.fs as pafs

    fs, inner = _fs(path)
    if fs.get_file_info(inner).type != pafs.FileType.File:
        return None
    with fs.open_input_stream(inner) as f:
        return str(json.loads(f.read())["message"])


def clear_stop(path: str | None) -> None:
    """Remove a recorded failure (a new fit of the run starts without one)."""
    if not path:
        return
    import pyarrow.fs as pafs

    fs, inner = _fs(path)
    if fs.get_file_info(inner).type == pafs.FileType.File:
        fs.delete_file(inner)


def write_history_row(directory: str, metrics: dict[str, Any]) -> None:
    """Record one epoch's metrics as ``epoch-NNNNN.json`` under ``directory`` (local or URI).

    One file per epoch, overwritten when a restarted attempt reports the epoch again, so
    the history has every epoch exactly once however often workers restarted.
    """
    fs, root = _fs(directory)
    fs.create_dir(root, recursive=True)
    with fs.open_output_stream(f"{root}/epoch-{int(metrics['epoch']):05d}.json") as f:
        f.write(json.dumps(metrics).encode())


def write_step_row(directory: str, metrics: dict[str, Any]) -> None:
    """Record step-level metrics as ``steps/step-NNNNNNNNN.json`` (overwritten on retries)."""
    fs, root = _fs(f"{directory}/steps")
    fs.create_dir(root, recursive=True)
    with fs.open_output_stream(f"{root}/step-{int(metrics['global_step']):09d}.json") as f:
        f.write(json.dumps(metrics).encode())


def read_history(directory: str, prefix: str = "epoch-") -> list[dict[str, Any]]:
    """Rows written by :func:`write_history_row` (or, with ``prefix="step-"`` and
    ``directory/steps``, by :func:`write_step_row`), in order."""
    import pyarrow.fs as pafs

    fs, root = _fs(directory)
    infos = fs.get_file_info(pafs.FileSelector(root, allow_not_found=True))
    rows = []
    for info in sorted(infos, key=lambda i: i.path):
        if info.type == pafs.FileType.File and info.base_name.startswith(prefix):
            with fs.open_input_stream(info.path) as f:
                rows.append(json.loads(f.read()))
    return rows


def _log_step(
    history_dir: str | None,
    log_every: int | None,
    global_step: int,
    epoch: int,
    window: list,
    world: int,
    optimizer,
) -> list:
    """Write step metrics (rank 0) every ``log_every`` steps; return the window, reset if due."""
    if not log_every or global_step % log_every:
        return window
    if history_dir:
        write_step_row(
            history_dir,
            {
                "global_step": global_step,
                "epoch": epoch + 1,
                "train_loss": window[0] / max(window[1], 1),
                "lr": float(optimizer.param_groups[0]["lr"]),
                "samples_per_s": window[1] * world / max(time.perf_counter() - window[2], 1e-9),
            },
        )
    return [0.0, 0, time.perf_counter()]


def _sync_grads(model: nn.Module) -> None:
    if not (dist.is_available() and dist.is_initialized()) or not hasattr(model, "no_sync"):
        return
    world = dist.get_world_size()
    for p in model.parameters():
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad /= world


class _Ledger:
    """Each rank appends the global steps it trained to ``rank-<r>.jsonl``, tagged by attempt.

    After a failure and restore, the ledger shows which steps the final attempt retrained:
    every step after the restored checkpoint, exactly once.
    """

    def __init__(self, directory: str | None, rank: int, start_step: int):
        self.path = None
        if directory:
            os.makedirs(directory, exist_ok=True)
            self.path = os.path.join(directory, f"rank-{rank}.jsonl")
        self.attempt = uuid.uuid4().hex[:12]
        self.start_step = start_step
        # The Ray node this rank runs on: where a placement strategy put it.
        try:
            import ray

            self.node = ray.get_runtime_context().get_node_id()
        except Exception:  # outside Ray (unit tests)
            self.node = None

    def record(self, epoch: int, step: int) -> None:
        if self.path:
            with open(self.path, "a") as f:
                f.write(
                    json.dumps(
                        {
                            "attempt": self.attempt,
                            "restored_at": self.start_step,
                            "epoch": epoch,
                            "step": step,
                            "pid": os.getpid(),
                            "node": self.node,
                        }
                    )
                    + "\n"
                )


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if hasattr(model, "module") else model
