"""The training loop without Ray: its step, validation and checkpoint functions, a resume, the
per-rank row plan and padding weights, and the non-finite loss error."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
from contextlib import contextmanager

import pytest
import torch

from rayline.config import ModelConfig, TrainConfig
from rayline.data.features import FittedPreprocessor
from rayline.errors import NonFiniteLossError
from rayline.train.loop import (
    COMPLETE_FILE,
    WEIGHTS_FILE,
    StepParts,
    _sha256,
    check_weights,
    clear_stop,
    read_stop,
    record_stop,
    shard_plan,
    train_loop_per_worker,
    train_step,
)
from rayline.train.spec import LoopConfig
from rayline.train.trainer import CheckedTrainer, describe_failure, worker_user_error

ROWS, FEATURES, CLASSES = 36, 3, 2


class _Data:
    """A stand-in for a Ray Data shard: ``iter_torch_batches`` over fixed tensors."""

    def __init__(self, seed: int):
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(ROWS, FEATURES, generator=g)
        self.y = (self.x[:, 0] > 0).long()

    def iter_torch_batches(self, batch_size: int, **_):
        for i in range(0, ROWS, batch_size):
            yield {"x": self.x[i : i + batch_size], "y": self.y[i : i + batch_size]}


class _Checkpoint:
    def __init__(self, path: str):
        self.path = path

    @contextmanager
    def as_directory(self):
        yield self.path


class _Session:
    """Rank 0 of 1 on CPU; keeps a copy of every reported checkpoint."""

    rank, world = 0, 1

    def __init__(self, keep: str, resume_from: str | None = None):
        self.data = {"train": _Data(0), "val": _Data(1)}
        self.keep, self.resume_from = keep, resume_from
        self.reports: list[dict] = []

    def prepare_model(self, model):
        return model, torch.device("cpu")

    def checkpoint(self):
        return _Checkpoint(self.resume_from) if self.resume_from else None

    def dataset(self, name: str):
        return self.data[name]

    def report(self, metrics: dict, checkpoint_dir: str | None) -> None:
        shutil.copytree(checkpoint_dir, os.path.join(self.keep, f"epoch-{metrics['epoch']}"))
        self.reports.append(metrics)


def _spec(tmp_path, **train) -> LoopConfig:
    prep = FittedPreprocessor(
        task="classification",
        target="y",
        classes=list(range(CLASSES)),
        numeric=[{"name": f"c{i}", "mean": 0.0, "std": 1.0, "fill": 0.0} for i in range(FEATURES)],
        categorical=[],
    )
    return LoopConfig(
        model=ModelConfig(task="classification", hidden_sizes=[8]),
        train=TrainConfig(batch_size=8, lr=0.01, cache_mb=0, **train),
        prep_json=prep.to_json(),
        metric="accuracy",
        mode="max",
        train_rows=ROWS,
        ledger_dir=str(tmp_path / "ledger"),
        trial_id="t1",
    )


def _ledger_steps(tmp_path) -> list[int]:
    lines = (tmp_path / "ledger" / "rank-0.jsonl").read_text().splitlines()
    return [json.loads(line)["step"] for line in lines]


def test_epochs_step_validate_checkpoint_and_resume(tmp_path):
    # 36 rows in batches of 8: 5 micro-batches, accumulated in pairs, so 2 steps + 1 leftover.
    first = _Session(str(tmp_path / "a"))
    train_loop_per_worker(_spec(tmp_path, epochs=2, grad_accum_steps=2), session=first)
    assert [m["global_step"] for m in first.reports] == [3, 6]
    assert all(m["train_rows"] == ROWS and 0 <= m["val_accuracy"] <= 1 for m in first.reports)
    assert _ledger_steps(tmp_path) == [1, 2, 3, 4, 5, 6]
    saved = tmp_path / "a" / "epoch-2"
    marker = json.loads((saved / COMPLETE_FILE).read_text())
    assert marker == {
        "epoch": 1,
        "global_step": 6,
        "trial_id": "t1",
        "weights_sha256": _sha256(str(saved / WEIGHTS_FILE)),
        # The epoch's validation metrics, to rank the checkpoint from its own directory.
        "val": {k: v for k, v in first.reports[-1].items() if k.startswith("val_")},
    }
    assert marker["val"]["val_metric"] == first.reports[-1]["val_accuracy"]
    assert first.reports[-1]["weights_sha256"] == marker["weights_sha256"]

    # A third epoch from the second's checkpoint continues its step count and its weights.
    again = _Session(str(tmp_path / "b"), resume_from=str(saved))
    train_loop_per_worker(_spec(tmp_path, epochs=3, grad_accum_steps=2), session=again)
    (only,) = again.reports
    assert only["epoch"] == 3 and only["global_step"] == 9
    assert only["restored_from_epoch"] == 2 and only["restored_from_trial"] == "t1"
    assert _ledger_steps(tmp_path)[-3:] == [7, 8, 9]


# Every row trained: the per-rank plan, the padding's weights, and train_rows.


def _equal_split(rows: list, world: int) -> list[list]:
    """What Ray Data's ``streaming_split(equal=True)`` hands each rank: the same number of
    rows, the leftover ``len(rows) % world`` dropped (here: contiguous chunks)."""
    each = len(rows) // world
    return [rows[r * each : (r + 1) * each] for r in range(world)]


def test_shard_plan_pads_to_equal_shards_that_keep_every_row_and_equal_steps():
    for n in range(0, 60):
        for world in range(1, 6):
            for batch in range(1, 8):
                for accum in range(1, 4):
                    plan = shard_plan(n, world, batch, accum)
                    assert 0 <= plan.pad_rows < world
                    assert plan.rows_per_rank * world == n + plan.pad_rows
                    # The even split of the padded rows drops nothing: every real row is on
                    # exactly one rank, and the copies (weight 0) make up the rest.
                    rows = [("real", i) for i in range(n)] + [("pad", 0)] * plan.pad_rows
                    shards = _equal_split(rows, world)
                    real = sorted(i for s in shards for kind, i in s if kind == "real")
                    assert real == list(range(n))
                    # Every rank runs the same micro-batches and optimizer steps (DDP).
                    for shard in shards:
                        assert len(shard) == plan.rows_per_rank
                        micro = math.ceil(len(shard) / batch)
                        assert micro == plan.micro_batches
                        assert plan.steps == max(1, math.ceil(micro / accum))
    assert shard_plan(241, 2, 64, 1).pad_rows == 1
    assert shard_plan(241, 2, 64, 1).rows_per_rank == 121
    assert shard_plan(307, 3, 64, 1).pad_rows == 2
    assert shard_plan(240, 2, 64, 1).pad_rows == 0


def _parts(model, regression: bool = False, accum: int = 1) -> StepParts:
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    return StepParts(
        model=model,
        optimizer=opt,
        scheduler=torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0),
        loss_fn=torch.nn.MSELoss() if regression else torch.nn.CrossEntropyLoss(),
        regression=regression,
        accum=accum,
        clip=None,
        use_bf16=False,
        device_type="cpu",
    )


def _grad(model) -> torch.Tensor:
    return torch.cat([p.grad.flatten() for p in model.parameters()])


@pytest.mark.parametrize("regression", [False, True])
def test_padding_rows_weigh_nothing_and_real_rows_weigh_as_without_padding(regression):
    # 3 real rows on 2 ranks: rank 0 gets rows a, b; rank 1 gets row c and a copy of a
    # with weight 0. DDP averages the two ranks' gradients of their mean batch losses.
    torch.manual_seed(0)
    model = torch.nn.Linear(FEATURES, 1 if regression else CLASSES)
    x = torch.randn(3, FEATURES)
    y = torch.randn(3) if regression else torch.tensor([0, 1, 1])
    parts = _parts(model, regression)

    def grad_of(batch):
        model.zero_grad()
        loss_sum, rows = train_step(parts, batch, last_micro=True)
        return _grad(model).clone(), loss_sum, rows

    g0, l0, r0 = grad_of({"x": x[:2], "y": y[:2]})
    pad_batch = {"x": x[[2, 0]], "y": y[[2, 0]], "w": torch.tensor([1.0, 0.0])}
    g1, l1, r1 = grad_of(pad_batch)
    ddp = (g0 + g1) / 2

    # Each real row enters with weight 1 / (batch rows x world) = 1/4, the copy with 0.
    per_row = []
    for i in range(3):
        model.zero_grad()
        train_step(parts, {"x": x[i : i + 1], "y": y[i : i + 1]}, last_micro=True)
        per_row.append(_grad(model).clone())
    assert torch.allclose(ddp, sum(per_row) / 4, atol=1e-6)
    # Without the copy, rank 1's lone row would weigh 1/2 instead: the copy keeps row c's
    # weight equal to rows a and b's.
    g_alone, _, _ = grad_of({"x": x[2:], "y": y[2:]})
    assert not torch.allclose((g0 + g_alone) / 2, sum(per_row) / 4, atol=1e-6)
    # The reported loss and rows count real rows only.
    assert (r0, r1) == (2.0, 1.0)
    model.zero_grad()
    loss_c, _ = train_step(parts, {"x": x[2:], "y": y[2:]}, last_micro=True)
    assert l1 == pytest.approx(loss_c, rel=1e-6)
    # An all-ones weight column is the unweighted loss.
    ones = {"x": x, "y": y, "w": torch.ones(3)}
    g_w, l_w, _ = grad_of(ones)
    g_plain, l_plain, _ = grad_of({"x": x, "y": y})
    assert torch.allclose(g_w, g_plain, atol=1e-6) and l_w == pytest.approx(l_plain, rel=1e-6)


class _PaddedData(_Data):
    """A shard whose last ``pad`` rows are zero-weight copies (a padded train split)."""

    def __init__(self, seed: int, pad: int):
        super().__init__(seed)
        self.w = torch.ones(ROWS)
        self.w[ROWS - pad :] = 0.0

    def iter_torch_batches(self, batch_size: int, **_):
        for i in range(0, ROWS, batch_size):
            yield {
                "x": self.x[i : i + batch_size],
                "y": self.y[i : i + batch_size],
                "w": self.w[i : i + batch_size],
            }


def test_train_rows_counts_the_real_rows_of_a_padded_shard(tmp_path):
    session = _Session(str(tmp_path / "a"))
    session.data["train"] = _PaddedData(0, pad=3)
    spec = dataclasses.replace(_spec(tmp_path, epochs=2), train_rows=ROWS - 3)
    train_loop_per_worker(spec, session=session)
    assert [m["train_rows"] for m in session.reports] == [ROWS - 3, ROWS - 3]
    assert all(math.isfinite(m["train_loss"]) for m in session.reports)


# Non-finite loss: a clear error naming where, the value and the likely causes.


def test_inf_in_the_inputs_fails_with_the_epoch_step_value_and_causes(tmp_path):
    session = _Session(str(tmp_path / "a"))
    session.data["train"].x[20, 1] = float("inf")  # in the third batch of 8 rows
    stop = tmp_path / "run" / "stopped.json"
    spec = dataclasses.replace(_spec(tmp_path, epochs=2), stop_file=str(stop))
    with pytest.raises(NonFiniteLossError) as err:
        train_loop_per_worker(spec, session=session)
    msg = str(err.value)
    assert "non-finite training loss (nan) at epoch 1, step 3 (rank 0)" in msg, msg
    assert "allow_inf" in msg and "train.lr" in msg and "train.grad_clip_norm" in msg
    assert "\n" not in msg and len(msg) < 500  # one line: every wrapper keeps it whole
    assert session.reports == []
    # Recorded for the restarted workers, which then end without training or reporting.
    assert json.loads(stop.read_text())["message"] == msg
    again = _Session(str(tmp_path / "b"))
    train_loop_per_worker(spec, session=again)
    assert again.reports == []


def test_a_diverging_learning_rate_fails_instead_of_reporting_nan(tmp_path):
    session = _Session(str(tmp_path / "a"))
    spec = _spec(tmp_path, epochs=3, optimizer="sgd")
    spec = spec.with_overrides({"train": {"lr": 1e12}})
    with pytest.raises(NonFiniteLossError) as err:
        train_loop_per_worker(spec, session=session)
    msg = str(err.value)
    assert "non-finite" in msg and "lower train.lr" in msg and "1e+12" in msg, msg
    assert all(math.isfinite(m["train_loss"]) for m in session.reports)


def test_non_finite_weights_after_an_epoch_fail_before_validation(tmp_path):
    model = torch.nn.Linear(FEATURES, CLASSES)
    parts = _parts(model)
    with torch.no_grad():
        model.weight[0, 0] = float("nan")
    with pytest.raises(NonFiniteLossError, match="non-finite model weights after epoch 2"):
        check_weights(model, "after epoch 2, step 10", parts.optimizer)
    check_weights(torch.nn.Linear(2, 2), "after epoch 1", parts.optimizer)  # finite: fine


class _WorkerGroupError(Exception):
    """Ray Train V2's error for failed workers: tracebacks as text, errors by rank."""

    def __init__(self, failures: dict[int, BaseException]):
        super().__init__("Training failed due to worker errors:\n[Rank 1]\nTraceback ...")
        self.worker_failures = failures


def test_describe_failure_keeps_a_workers_message_whole():
    msg = "non-finite training loss (nan) at epoch 2, step 7 (rank 1); likely causes: " + (
        "x" * 600
    )
    exc = _WorkerGroupError(
        {0: RuntimeError("gloo: connection closed"), 1: NonFiniteLossError(msg)}
    )
    tcfg = TrainConfig()
    assert describe_failure(exc, tcfg) == msg
    assert isinstance(worker_user_error(exc), NonFiniteLossError)
    # Other failures keep their one-line summary.
    assert describe_failure(RuntimeError("boom\n  at x"), tcfg) == "boom"


class _FakeTrainer:
    def __init__(self, stop_file: str | None = None, message: str | None = None):
        self.stop_file, self.message = stop_file, message

    def fit(self):
        if self.message:  # a worker recorded it, then the restarted workers ended cleanly
            record_stop(self.stop_file, self.message)
        return "result"


def test_checked_trainer_raises_the_recorded_failure_after_a_clean_restart(tmp_path):
    stop = str(tmp_path / "run" / "stopped.json")
    assert CheckedTrainer(_FakeTrainer(), stop).fit() == "result"
    checked = CheckedTrainer(_FakeTrainer(stop, "non-finite training loss (inf) ..."), stop)
    with pytest.raises(NonFiniteLossError, match=r"loss \(inf\)"):
        checked.fit()
    assert checked.message == "non-finite training loss (inf) ..."  # the rest is the trainer's
    clear_stop(stop)
    assert read_stop(stop) is None


def test_the_lr_schedule_counts_the_steps_padding_adds(tmp_path):
    """32 real rows padded to 36 (an elastic run's padding): 5 batches of 8 per epoch, not 4,
    so a cosine schedule over 2 epochs is half done after the first and ends at 0."""
    session = _Session(str(tmp_path / "a"))
    session.data["train"] = _PaddedData(0, pad=4)
    spec = dataclasses.replace(
        _spec(tmp_path, epochs=2, lr_schedule="cosine", warmup_fraction=0.0),
        train_rows=ROWS - 4,
        pad_rows=4,
    )
    train_loop_per_worker(spec, session=session)
    assert [m["global_step"] for m in session.reports] == [5, 10]
    assert session.reports[0]["lr"] == pytest.approx(0.01 * 0.5)
    assert session.reports[1]["lr"] == pytest.approx(0.0, abs=1e-12)


class _ShuffledData(_Data):
    """A shard whose streamed order follows ``local_shuffle_seed``, as Ray Data's does."""

    def iter_torch_batches(self, batch_size: int, local_shuffle_seed=None, **_):
        if local_shuffle_seed is None:
            order = torch.arange(ROWS)
        else:
            order = torch.randperm(
                ROWS, generator=torch.Generator().manual_seed(local_shuffle_seed)
            )
        for i in range(0, ROWS, batch_size):
            idx = order[i : i + batch_size]
            yield {"x": self.x[idx], "y": self.y[idx]}


def test_a_resumed_run_trains_each_epoch_in_the_uninterrupted_run_s_order(tmp_path):
    """The in-memory shard: an uninterrupted run streams epoch 1 and serves later epochs
    from memory; a run resumed at epoch 2 fills the cache in epoch 1's order first, so its
    epochs 2 and 3 are the uninterrupted run's, to the bit."""

    def spec(name: str):
        s = _spec(tmp_path / name, epochs=3)
        return dataclasses.replace(s, train=s.train.model_copy(update={"cache_mb": 1}))

    straight = _Session(str(tmp_path / "a"))
    straight.data["train"] = _ShuffledData(0)
    train_loop_per_worker(spec("s"), session=straight)
    again = _Session(str(tmp_path / "b"), resume_from=str(tmp_path / "a" / "epoch-1"))
    again.data["train"] = _ShuffledData(0)
    train_loop_per_worker(spec("r"), session=again)
    assert [m["epoch"] for m in again.reports] == [2, 3]
    assert [m["train_loss"] for m in again.reports] == [
        m["train_loss"] for m in straight.reports[1:]
    ]
    assert again.reports[-1]["weights_sha256"] == straight.reports[-1]["weights_sha256"]


def test_arrays_shards_hold_every_row_once_in_equal_counts_and_the_padding_weighs_nothing():
    import numpy as np

    from rayline.train.loop import WEIGHT_KEY, ShardCache, pad_to_multiple
    from rayline.train.trainer import InMemorySplit

    rows = 241
    split = InMemorySplit(
        {"x": np.arange(rows * 2, dtype=np.float32).reshape(rows, 2), "y": np.arange(rows)}
    )
    world = 2
    plan = shard_plan(rows, world, 32, 1)
    padded = split.padded(plan.pad_rows)
    padded = {k: v.copy() for k, v in padded.items()}
    for v in padded.values():  # as the object store hands them over
        v.setflags(write=False)
    shards = [
        ShardCache.of_arrays(padded, 32, torch.device("cpu"), 0, True, rank=r, world=world)
        for r in range(world)
    ]
    seen = []
    for shard in shards:
        batches = list(shard.epoch(0))
        assert sum(len(b["y"]) for b in batches) == plan.rows_per_rank
        assert len(batches) == plan.micro_batches  # every rank takes the same steps
        for b in batches:
            assert b["x"].dtype == torch.float32 and b["y"].dtype == torch.int64
            real = b[WEIGHT_KEY] > 0
            seen += b["y"][real].tolist()
            assert torch.equal(b["x"][:, 0], b["y"].float() * 2)  # rows stay whole
    assert sorted(seen) == list(range(rows))  # every real row once, the copy not at all
    # Shuffled per epoch, reproducibly; an unsplit split (val) keeps every row in order.
    again = ShardCache.of_arrays(padded, 32, torch.device("cpu"), 0, True, rank=0, world=world)
    assert [b["y"].tolist() for b in again.epoch(1)] == [
        b["y"].tolist() for b in shards[0].epoch(1)
    ]
    assert [b["y"].tolist() for b in shards[0].epoch(1)] != [
        b["y"].tolist() for b in shards[0].epoch(2)
    ]
    val = ShardCache.of_arrays(split.padded(), 50, torch.device("cpu"), 0, False)
    assert torch.cat([b["y"] for b in val.epoch(0)]).tolist() == list(range(rows))
    # Rows that do not divide by the ranks (no trainer padding) are padded, never dropped.
    extra = pad_to_multiple(split.padded(), 3)
    assert len(extra["y"]) == 243 and extra[WEIGHT_KEY].tolist()[-3:] == [1.0, 0.0, 0.0]


def test_the_loop_trains_from_arrays_without_a_dataset(tmp_path):
    import numpy as np

    g = np.random.default_rng(0)
    x = g.standard_normal((ROWS, FEATURES)).astype(np.float32)
    arrays = {"x": x, "y": (x[:, 0] > 0).astype(np.int64)}
    session = _Session(str(tmp_path / "kept"))
    session.data = {}  # any dataset() call fails
    spec = dataclasses.replace(_spec(tmp_path, epochs=3), arrays={"train": arrays, "val": arrays})
    train_loop_per_worker(spec, session=session)
    assert [r["epoch"] for r in session.reports] == [1, 2, 3]
    assert session.reports[-1]["val_accuracy"] > 0.5


def test_a_run_with_every_split_in_memory_starts_no_dataset_manager_and_a_sweep_no_cleaner(
    tmp_path,
):
    import numpy as np

    from rayline.train.trainer import InMemorySplit, make_trainer

    def callbacks(**kwargs):
        arrays = {"x": np.zeros((ROWS, FEATURES), np.float32), "y": np.zeros(ROWS, np.int64)}
        splits = {"train": InMemorySplit(arrays), "val": InMemorySplit(arrays)}
        trainer = make_trainer(
            _spec(tmp_path, num_workers=2, cpus_per_worker=0.5),
            splits,
            storage_path=str(tmp_path),
            name="r",
            mode="max",
            **kwargs,
        )
        return {type(cb).__name__ for cb in trainer.trainer._create_default_callbacks()}

    with _ray_for_puts():
        single = callbacks()
        sweep = callbacks(ray_placement_cleaner=False)
    assert "DatasetsCallback" not in single and "PlacementGroupCleanerCallback" in single
    assert "BackendSetupCallback" in single  # the DDP set-up stays
    assert "PlacementGroupCleanerCallback" not in sweep


def test_a_fixed_size_run_on_a_ray_started_here_asks_no_autoscaler_and_an_elastic_one_does():
    """Without autoscaler requests a fixed-size run never starts Ray's autoscaling
    coordinator actor (Train's own policy does, at its first request); it still decides
    the same worker count. An elastic policy is left as it is."""
    from types import SimpleNamespace

    import ray
    from ray.train import ScalingConfig
    from ray.train.v2._internal.execution.scaling_policy import create_scaling_policy

    from rayline.train.lean_trainer import _without_autoscaler_requests

    def coordinator_exists() -> bool:
        try:
            ray.get_actor("AutoscalingCoordinator", namespace="AutoscalingCoordinator")
        except ValueError:
            return False
        return True

    run = SimpleNamespace(run_id="r")
    with _ray_for_puts():
        assert not coordinator_exists()
        lean = _without_autoscaler_requests(create_scaling_policy(ScalingConfig(num_workers=2)))
        lean.after_controller_start(run)
        assert lean.make_decision_for_non_running_worker_group().num_workers == 2
        lean._cancel_resource_request()
        assert not coordinator_exists()
        # What it leaves out: Train's own policy starts the coordinator at its first request.
        own = create_scaling_policy(ScalingConfig(num_workers=2))
        own.after_controller_start(run)
        assert coordinator_exists()
        own._cancel_resource_request()
    elastic = create_scaling_policy(ScalingConfig(num_workers=(1, 2)))
    assert _without_autoscaler_requests(elastic) is elastic


def test_a_worker_runtime_env_loses_only_env_vars_its_workers_inherit_with_the_same_values(
    monkeypatch,
):
    """Train's workers get their runtime_env from the worker group: without its env_vars
    when every one has its value in the inherited environment; as it is otherwise, and its
    other fields stay either way."""
    from ray.train.v2._internal.constants import (
        DEFAULT_RAY_WARN_BLOCKING_GET_INSIDE_ASYNC_VALUE,
        ENV_VARS_TO_PROPAGATE,
        RAY_WARN_BLOCKING_GET_INSIDE_ASYNC_ENV_VAR,
    )
    from ray.train.v2._internal.execution.worker_group import WorkerGroup

    from rayline.runtime import INHERITED_DEFAULTS
    from rayline.train.lean_trainer import _inheriting_worker_group, without_inherited

    # What a local Ray is started with is what Train gives its controller actor.
    assert (
        INHERITED_DEFAULTS[RAY_WARN_BLOCKING_GET_INSIDE_ASYNC_ENV_VAR]
        == DEFAULT_RAY_WARN_BLOCKING_GET_INSIDE_ASYNC_VALUE
    )

    inherited = {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.25", "PL_DISABLE_FORK": "1"}
    env = {"env_vars": {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.25"}}
    assert without_inherited(env, inherited) == {}
    assert without_inherited({**env, "pip": ["x"]}, inherited) == {"pip": ["x"]}
    other = {"env_vars": {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "2"}}
    assert without_inherited(other, inherited) is other
    later = {"env_vars": {"RAY_TRAIN_COLLECTIVE_TIMEOUT_S": "60"}}
    assert without_inherited(later, inherited) is later
    # The worker group of a LeanController applies it to what Train would give: the Train
    # variables set in the controller's environment, and the run's worker_runtime_env.
    for key in ENV_VARS_TO_PROPAGATE:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.25")
    group_cls = _inheriting_worker_group(inherited)
    assert issubclass(group_cls, WorkerGroup)
    group = group_cls.__new__(group_cls)
    assert group._get_worker_runtime_env({"env_vars": {"PL_DISABLE_FORK": "1"}}) == {}
    assert group._get_worker_runtime_env({"env_vars": {"PL_DISABLE_FORK": "0"}}) == {
        "env_vars": {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.25", "PL_DISABLE_FORK": "0"}
    }
    monkeypatch.setenv("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "1")  # not what workers inherit
    assert group._get_worker_runtime_env({}) == {
        "env_vars": {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "1"}
    }


@contextmanager
def _ray_for_puts():
    import ray

    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        yield
    finally:
        if started:
            ray.shutdown()
