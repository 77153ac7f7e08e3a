"""The training loop without Ray: its step, validation and checkpoint functions, and a resume."""

from __future__ import annotations

import json
import os
import shutil
from contextlib import contextmanager

import torch

from rayline.config import ModelConfig, TrainConfig
from rayline.data.features import FittedPreprocessor
from rayline.train.loop import COMPLETE_FILE, WEIGHTS_FILE, _sha256, train_loop_per_worker
from rayline.train.spec import LoopConfig

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
    }
    assert first.reports[-1]["weights_sha256"] == marker["weights_sha256"]

    # A third epoch from the second's checkpoint continues its step count and its weights.
    again = _Session(str(tmp_path / "b"), resume_from=str(saved))
    train_loop_per_worker(_spec(tmp_path, epochs=3, grad_accum_steps=2), session=again)
    (only,) = again.reports
    assert only["epoch"] == 3 and only["global_step"] == 9
    assert only["restored_from_epoch"] == 2 and only["restored_from_trial"] == "t1"
    assert _ledger_steps(tmp_path)[-3:] == [7, 8, 9]
