"""Pure evaluation metrics (numpy only: no Ray, no torch, no scikit-learn at run time).

Each metric takes ``y_true`` and the model output for the task (class probabilities for
classification, predictions for regression) and returns a float. They are checked against
scikit-learn in ``tests/unit/test_metrics.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

_EPS = 1e-15


def accuracy(y_true: np.ndarray, proba: np.ndarray) -> float:
    """Fraction of rows whose most probable class is the true class."""
    y_true = np.asarray(y_true).astype(np.int64)
    return float(np.mean(np.argmax(proba, axis=1) == y_true)) if len(y_true) else float("nan")


def f1_macro(y_true: np.ndarray, proba: np.ndarray) -> float:
    """Unweighted mean of per-class F1 over the classes present in labels or predictions.

    A class with no true and no predicted rows is left out (scikit-learn's behaviour when
    ``labels`` is not given); a class with zero precision and recall counts as F1 = 0.
    """
    y_true = np.asarray(y_true).astype(np.int64)
    y_pred = np.argmax(proba, axis=1)
    classes = np.union1d(y_true, y_pred)
    scores = []
    for c in classes:
        tp = np.sum((y_pred == c) & (y_true == c))
        fp = np.sum((y_pred == c) & (y_true != c))
        fn = np.sum((y_pred != c) & (y_true == c))
        denom = 2 * tp + fp + fn
        scores.append(0.0 if denom == 0 else 2 * tp / denom)
    return float(np.mean(scores)) if scores else float("nan")


def _binary_auc(y_binary: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve via the Mann-Whitney U statistic (ties get average ranks)."""
    n_pos = int(np.sum(y_binary))
    n_neg = len(y_binary) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(score, kind="mergesort")
    sorted_scores = score[order]
    ranks = np.empty(len(score), dtype=np.float64)
    # Average ranks over runs of equal scores so that ties count as half a win.
    i = 0
    while i < len(sorted_scores):
        j = i
        while j + 1 < len(sorted_scores) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    rank_sum_pos = np.sum(ranks[y_binary == 1])
    return float((rank_sum_pos - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def roc_auc(y_true: np.ndarray, proba: np.ndarray) -> float:
    """ROC-AUC: binary on the positive-class probability, else one-vs-rest macro average.

    Matches ``sklearn.metrics.roc_auc_score`` (``multi_class="ovr"``, ``average="macro"``).
    """
    y_true = np.asarray(y_true).astype(np.int64)
    proba = np.asarray(proba, dtype=np.float64)
    if proba.shape[1] == 2:
        return _binary_auc((y_true == 1).astype(np.int64), proba[:, 1])
    aucs = [_binary_auc((y_true == c).astype(np.int64), proba[:, c]) for c in range(proba.shape[1])]
    return float(np.mean(aucs))


def log_loss(y_true: np.ndarray, proba: np.ndarray) -> float:
    """Mean negative log-likelihood of the true class; rows are renormalised and clipped."""
    y_true = np.asarray(y_true).astype(np.int64)
    proba = np.asarray(proba, dtype=np.float64)
    proba = proba / proba.sum(axis=1, keepdims=True)
    p = np.clip(proba[np.arange(len(y_true)), y_true], _EPS, 1.0)
    return float(-np.mean(np.log(p)))


def rmse(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Root mean squared error."""
    diff = np.asarray(y_true, dtype=np.float64) - np.asarray(y_pred, dtype=np.float64).reshape(-1)
    return float(np.sqrt(np.mean(diff**2)))


def mae(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean absolute error."""
    diff = np.asarray(y_true, dtype=np.float64) - np.asarray(y_pred, dtype=np.float64).reshape(-1)
    return float(np.mean(np.abs(diff)))


def r2(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Coefficient of determination (1 - SS_res / SS_tot)."""
    y_true = np.asarray(y_true, dtype=np.float64)
    y_pred = np.asarray(y_pred, dtype=np.float64).reshape(-1)
    ss_res = np.sum((y_true - y_pred) ** 2)
    ss_tot = np.sum((y_true - y_true.mean()) ** 2)
    if ss_tot == 0:
        return 1.0 if ss_res == 0 else 0.0
    return float(1.0 - ss_res / ss_tot)


@dataclass(frozen=True)
class MetricSpec:
    """A named metric: the function, the task it applies to, and which way is better."""

    fn: Callable[[np.ndarray, np.ndarray], float]
    task: str
    higher_is_better: bool

    @property
    def mode(self) -> str:
        """``"max"`` or ``"min"``, as Ray Tune and Ray Train's CheckpointConfig spell it."""
        return "max" if self.higher_is_better else "min"


METRICS: dict[str, MetricSpec] = {
    "accuracy": MetricSpec(accuracy, "classification", True),
    "f1_macro": MetricSpec(f1_macro, "classification", True),
    "roc_auc": MetricSpec(roc_auc, "classification", True),
    "log_loss": MetricSpec(log_loss, "classification", False),
    "rmse": MetricSpec(rmse, "regression", False),
    "mae": MetricSpec(mae, "regression", False),
    "r2": MetricSpec(r2, "regression", True),
}


def metric_names(task: str) -> list[str]:
    """The metric names that apply to ``task`` ("classification" or "regression")."""
    return [name for name, spec in METRICS.items() if spec.task == task]


def compute_metrics(task: str, y_true: np.ndarray, output: np.ndarray) -> dict[str, float]:
    """Every metric for ``task``: ``output`` is class probabilities or regression predictions."""
    return {name: METRICS[name].fn(y_true, output) for name in metric_names(task)}
