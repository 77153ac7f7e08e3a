"""Scoring models on the test split: the challenger and the champion in one pass.

The test rows are read raw and scored with :class:`rayline.inference.Predictor` (the
challenger) and through MLflow (the champion), exactly as the registered model will see
them: in the driver for a small split, else in one Ray Data ``map_batches`` actor that
holds both models. Only the predictions come back, and the pure metric functions run on
the driver.
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
from rayline.data.stage import IN_PROCESS_MAX_ROWS, read_split, read_split_frame
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


#: A test split with at most this many rows is scored in the driver, in one pass: Ray
#: Data's actor start-up (a worker importing torch and, for the champion, MLflow) costs
#: 10-30 s on a small machine, while scoring 100k rows of a tabular model takes well under
#: a second. Larger splits stream through Ray Data with one actor for both models.
DRIVER_MAX_ROWS = IN_PROCESS_MAX_ROWS


@dataclass
class Scores:
    """One scoring pass: the challenger's metrics and, when asked, the champion's.

    The predictions stay with it (``y``, ``outputs``), so that bootstrap intervals, slices,
    the paired comparison and the report's curves are computed from this one pass.

    Attributes:
        y: The true values (class indices, or the decoded regression target).
        outputs: Model output per scored model: ``"challenger"``, each extra challenger by
            its name, and ``"champion"`` when it was scored.
        columns: The raw values of the asked-for columns (slices), row-aligned with ``y``.
        others: Test metrics of the extra challengers, by name.
    """

    rows: int
    metrics: dict[str, float]
    champion_metrics: dict[str, float] | None = None
    champion_error: str | None = None
    y: np.ndarray | None = None
    outputs: dict[str, np.ndarray] = field(default_factory=dict)
    columns: dict[str, np.ndarray] = field(default_factory=dict)
    others: dict[str, dict[str, float]] = field(default_factory=dict)


@dataclass(frozen=True)
class Candidate:
    """A model to score: a name, its model spec and its weights (``model.pt``) directory."""

    name: str
    model_spec: dict[str, Any]
    checkpoint_dir: str


class _Scorer:
    """Raw test rows -> true labels, the challenger's output and the champion's.

    The champion (``loader(uri)``, an MLflow pyfunc) is optional, and its failure (e.g. it
    reads columns this data lacks) is kept as a message instead of failing the pass: the
    challenger is still scored, and the gate decides what an unscorable champion means.
    """

    def __init__(
        self,
        prep_json: str,
        models: list[tuple[str, dict[str, Any], bytes]],
        loader: Callable[[str], Any] | None = None,
        uri: str | None = None,
        columns: tuple[str, ...] = (),
    ):
        import io

        import torch

        self.prep = FittedPreprocessor.from_json(prep_json)
        self.columns = tuple(columns)
        # The weights travel as bytes: the scorer may run on a node that cannot see the
        # driver's disk. All challengers share the fitted features, so one transform feeds
        # every model.
        self.predictors = {
            name: Predictor(
                self.prep,
                spec,
                torch.load(io.BytesIO(weights), map_location="cpu", weights_only=True),
            )
            for name, spec, weights in models
        }
        self.champion = None
        self.error = None
        if loader is not None and uri is not None:
            try:
                self.champion = loader(uri)
            except Exception as exc:
                self.error = _describe(exc)

    def __call__(self, batch: pd.DataFrame) -> dict[str, np.ndarray]:
        out = {"y": self.prep.true_values(batch[self.prep.target])}
        features = None
        for i, predictor in enumerate(self.predictors.values()):
            if features is None:
                features = predictor.features(batch)
            out[f"out:{i}"] = predictor.output_from_features(features)
        for i, c in enumerate(self.columns):
            out[f"col:{i}"] = np.asarray(batch[c].astype(object).to_numpy(), dtype=object)
        first = out["out:0"]
        width = first.shape[1:] if first.ndim > 1 else ()
        champion = np.full((len(batch), *width), np.nan)
        error = self.error
        if self.champion is not None and error is None:
            try:
                frame = self.champion.predict(
                    batch[[c for c in batch.columns if c != self.prep.target]]
                )
                champion = output_from_frame(frame, self.prep)
            except Exception as exc:  # e.g. the champion reads columns this data lacks
                error = _describe(exc)
        out["champion"] = champion
        out["champion_error"] = np.array([error or ""] * len(batch), dtype=object)
        return out


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:1000]


def score(
    staged_path: str,
    prep: FittedPreprocessor,
    model_spec: dict[str, Any],
    checkpoint_dir: str,
    batch_size: int,
    champion: tuple[Callable[[str], Any], str] | None = None,
    test_rows: int | None = None,
    max_rows: int = DRIVER_MAX_ROWS,
    others: list[Candidate] | tuple[Candidate, ...] = (),
    columns: list[str] | tuple[str, ...] = (),
) -> Scores:
    """Score the challenger (weights in the local ``checkpoint_dir``) and the champion.

    All models see the same raw test rows in one pass: in the driver when the split has
    at most :data:`DRIVER_MAX_ROWS` rows (``test_rows``, from the data report), else in
    one Ray Data actor (``map_batches``, ``batch_size`` rows per call) that holds them all.
    The rows are read and transformed once however many models score them.

    Args:
        champion: ``(loader, uri)``: ``loader(uri)`` returns the champion's pyfunc model.
        test_rows: The test split's row count, when known.
        max_rows: The most rows scored in the driver (``runtime.in_process_max_rows``).
        others: More challengers (a sweep's runners-up), scored in the same pass.
        columns: Raw columns whose values come back with the predictions (slices).
    """
    loader, uri = champion if champion is not None else (None, None)
    models = [Candidate("challenger", model_spec, checkpoint_dir), *others]
    names = [m.name for m in models]
    if len(set(names)) != len(names):
        raise ValueError(f"challenger names must differ, got {names}")
    columns = tuple(columns)
    kwargs = {
        "prep_json": prep.to_json(),
        "models": [
            (m.name, m.model_spec, Path(m.checkpoint_dir, WEIGHTS_FILE).read_bytes())
            for m in models
        ],
        "loader": loader,
        "uri": uri,
        "columns": columns,
    }
    if test_rows is not None and test_rows <= max_rows:
        frame = read_split_frame(staged_path, "test")
        scorer = _Scorer(**kwargs)
        parts = [scorer(frame.iloc[i : i + batch_size]) for i in range(0, len(frame), batch_size)]
    else:
        from ray.data import ActorPoolStrategy

        ds = read_split(staged_path, "test").map_batches(
            _Scorer,
            fn_constructor_kwargs=kwargs,
            batch_format="pandas",
            batch_size=batch_size,
            compute=ActorPoolStrategy(size=1),
        )
        parts = list(ds.iter_batches(batch_format="numpy", batch_size=None))
    if not parts:
        return Scores(0, compute_metrics(prep.task, np.array([]), np.array([])))
    y = np.concatenate([p["y"] for p in parts])
    outputs = {name: np.concatenate([p[f"out:{i}"] for p in parts]) for i, name in enumerate(names)}
    result = Scores(
        len(y),
        compute_metrics(prep.task, y, outputs["challenger"]),
        y=y,
        outputs=outputs,
        columns={
            c: np.concatenate([np.asarray(p[f"col:{i}"], dtype=object) for p in parts])
            for i, c in enumerate(columns)
        },
        others={n: compute_metrics(prep.task, y, outputs[n]) for n in names[1:]},
    )
    if champion is not None:
        errors = [e for p in parts for e in p["champion_error"] if e]
        if errors:
            result.champion_error = str(errors[0])
        else:
            outputs["champion"] = np.concatenate([p["champion"] for p in parts])
            result.champion_metrics = compute_metrics(prep.task, y, outputs["champion"])
    return result


def baseline_metrics(
    staged_path: str,
    prep: FittedPreprocessor,
    splits: dict[str, int] | None = None,
    max_rows: int = DRIVER_MAX_ROWS,
) -> dict[str, Any]:
    """A scikit-learn linear model on the same features and splits, for perspective.

    LogisticRegression for classification, Ridge for regression; fitted on at most
    ``BASELINE_MAX_ROWS`` train rows pulled to the driver. Splits of at most
    :data:`DRIVER_MAX_ROWS` rows (``splits``: row counts from the data report) are read
    with pyarrow in the driver, larger ones stream through Ray Data.
    """
    from sklearn.linear_model import LogisticRegression, Ridge

    columns = prep.input_columns + [prep.target]

    def arrays(split: str, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        rows = (splits or {}).get(split)
        if rows is not None and rows <= max_rows:
            frame = read_split_frame(staged_path, split, columns)
            if limit:
                frame = frame.iloc[:limit]
            b = BatchTransform(prep)(frame)
            return b["x"], b["y"]
        ds = read_split(staged_path, split, columns=columns)
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
        name, output = "LogisticRegression", proba
    else:
        model = Ridge().fit(x_train, y_train)
        pred = prep.decode_output(model.predict(x_test))
        metrics = compute_metrics("regression", prep.decode_output(y_test), pred)
        name, output = "Ridge", pred
    return {
        "model": f"sklearn.linear_model.{name}",
        "train_rows": len(x_train),
        "metrics": metrics,
        # The test split's true values and the baseline's output on them, for the report's
        # curves; popped by the evaluate stage before the report goes to JSON.
        "y": y_test if prep.task == "classification" else prep.decode_output(y_test),
        "output": output,
    }
