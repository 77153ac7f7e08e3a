"""Scoring models on the test split with Ray Data batch inference.

The test rows are read raw and scored with :class:`rayline.inference.Predictor` inside
``map_batches`` actors, exactly as the registered model will see them. Only the predictions
(a few numbers per row) come back to the driver, where the pure metric functions run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rayline.data.features import BatchTransform, FittedPreprocessor
from rayline.data.stage import read_split
from rayline.inference import Predictor, output_from_frame
from rayline.metrics import compute_metrics
from rayline.train.loop import WEIGHTS_FILE

log = logging.getLogger(__name__)

BASELINE_MAX_ROWS = 1_000_000


@dataclass
class EvalReport:
    """Test-split metrics of the challenger (and, when there is one, of the champion)."""

    rows: int
    metrics: dict[str, float]
    champion_metrics: dict[str, float] | None = None
    champion_uri: str | None = None
    baseline: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


class _ScoreWithCheckpoint:
    """``map_batches`` actor: raw test rows -> true labels and model output."""

    def __init__(self, prep_json: str, model_spec: dict[str, Any], weights: bytes):
        import io

        import torch

        prep = FittedPreprocessor.from_json(prep_json)
        # The weights travel as bytes through the object store: the actor may run on a node
        # that cannot see the driver's disk.
        state = torch.load(io.BytesIO(weights), map_location="cpu", weights_only=True)
        self.predictor = Predictor(prep, model_spec, state)

    def __call__(self, batch: pd.DataFrame) -> dict[str, np.ndarray]:
        prep = self.predictor.prep
        return {"y": prep.true_values(batch[prep.target]), "out": self.predictor.output(batch)}


class _ScoreWithLoader:
    """``map_batches`` actor: score raw rows with a model from ``loader(uri)`` (e.g. MLflow)."""

    def __init__(self, prep_json: str, loader: Callable[[str], Any], uri: str):
        self.prep = FittedPreprocessor.from_json(prep_json)
        self.model = loader(uri)

    def __call__(self, batch: pd.DataFrame) -> dict[str, np.ndarray]:
        frame = self.model.predict(batch[[c for c in batch.columns if c != self.prep.target]])
        return {
            "y": self.prep.true_values(batch[self.prep.target]),
            "out": output_from_frame(frame, self.prep),
        }


def _one_actor():
    from ray.data import ActorPoolStrategy

    return ActorPoolStrategy(size=1)


def _collect(ds) -> tuple[np.ndarray, np.ndarray]:
    ys, outs = [], []
    for batch in ds.iter_batches(batch_format="numpy", batch_size=None):
        ys.append(batch["y"])
        outs.append(batch["out"])
    if not ys:
        return np.array([]), np.array([])
    return np.concatenate(ys), np.concatenate(outs)


def score_checkpoint(
    staged_path: str,
    prep: FittedPreprocessor,
    model_spec: dict[str, Any],
    checkpoint_dir: str,
    batch_size: int,
) -> tuple[int, dict[str, float]]:
    """Test-split row count and metrics of the network in the local ``checkpoint_dir``."""
    ds = read_split(staged_path, "test").map_batches(
        _ScoreWithCheckpoint,
        fn_constructor_kwargs={
            "prep_json": prep.to_json(),
            "model_spec": model_spec,
            "weights": Path(checkpoint_dir, WEIGHTS_FILE).read_bytes(),
        },
        batch_format="pandas",
        batch_size=batch_size,
        compute=_one_actor(),
        # Scoring is cheap to redo; no restarts also keeps Ray from warning about
        # constructor arguments held in the object store.
        max_restarts=0,
    )
    y, out = _collect(ds)
    return len(y), compute_metrics(prep.task, y, out)


def score_model_uri(
    staged_path: str,
    prep: FittedPreprocessor,
    loader: Callable[[str], Any],
    uri: str,
    batch_size: int,
) -> dict[str, float]:
    """Test-split metrics of a served model (``loader(uri).predict`` on raw rows)."""
    ds = read_split(staged_path, "test").map_batches(
        _ScoreWithLoader,
        fn_constructor_kwargs={"prep_json": prep.to_json(), "loader": loader, "uri": uri},
        batch_format="pandas",
        batch_size=batch_size,
        compute=_one_actor(),
        # Scoring is cheap to redo; no restarts also keeps Ray from warning about
        # constructor arguments held in the object store.
        max_restarts=0,
    )
    y, out = _collect(ds)
    return compute_metrics(prep.task, y, out)


def baseline_metrics(staged_path: str, prep: FittedPreprocessor) -> dict[str, Any]:
    """A scikit-learn linear model on the same features and splits, for perspective.

    LogisticRegression for classification, Ridge for regression; fitted on at most
    ``BASELINE_MAX_ROWS`` train rows pulled to the driver.
    """
    from sklearn.linear_model import LogisticRegression, Ridge

    def arrays(split: str, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        ds = read_split(staged_path, split, columns=prep.input_columns + [prep.target])
        if limit:
            ds = ds.limit(limit)
        xs, ys = [], []
        for b in ds.map_batches(BatchTransform(prep), batch_format="pandas").iter_batches(
            batch_format="numpy", batch_size=None
        ):
            xs.append(b["x"])
            ys.append(b["y"])
        return np.concatenate(xs), np.concatenate(ys)

    x_train, y_train = arrays("train", BASELINE_MAX_ROWS)
    x_test, y_test = arrays("test")
    if prep.task == "classification":
        model = LogisticRegression(max_iter=2000).fit(x_train, y_train)
        proba = np.zeros((len(x_test), prep.num_outputs))
        proba[:, model.classes_] = model.predict_proba(x_test)
        metrics = compute_metrics("classification", y_test, proba)
        name = "LogisticRegression"
    else:
        model = Ridge().fit(x_train, y_train)
        pred = prep.decode_output(model.predict(x_test))
        metrics = compute_metrics("regression", prep.decode_output(y_test), pred)
        name = "Ridge"
    return {"model": f"sklearn.linear_model.{name}", "train_rows": len(x_train), "metrics": metrics}
