"""The evaluation report's numbers: per-class and calibration metrics, bootstrap intervals,
slices and the paired comparison of two models on the same test rows.

Everything here is computed from the predictions of the one scoring pass
(:class:`rayline.evaluate.Scores`), never from another read of the data. It uses
scikit-learn's metrics, so only the evaluation stage imports it: the registered model's code
path (:mod:`rayline.inference`, :mod:`rayline.serving`) and :mod:`rayline.metrics` stay
numpy-only, and the served model's requirements stay torch, mlflow, numpy and pandas.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from rayline.metrics import METRICS, metric_names

#: Points kept per ROC / PR curve in the JSON report (the PNGs draw every point).
CURVE_POINTS = 200
#: Equal-width confidence bins of the reliability diagram and the ECE.
CALIBRATION_BINS = 10
#: Bootstrap resamples are drawn this many at a time, to bound memory on large splits.
_CHUNK = 64
MISSING = "(missing)"


# -- per-class, calibration, regression detail -------------------------------------------------
def classification_detail(
    y: np.ndarray, proba: np.ndarray, classes: list[Any] | None
) -> dict[str, Any]:
    """Per-class precision/recall/F1, the confusion matrix, ROC/PR curves and calibration.

    Args:
        y: True class indices.
        proba: Class probabilities, ``(rows, classes)``.
        classes: The class labels, in index order (for names in the report).
    """
    from sklearn.metrics import (
        average_precision_score,
        confusion_matrix,
        precision_recall_curve,
        precision_recall_fscore_support,
        roc_auc_score,
        roc_curve,
    )

    y = np.asarray(y).astype(np.int64)
    proba = np.asarray(proba, dtype=np.float64)
    k = proba.shape[1]
    labels = [str(c) for c in (classes or range(k))]
    pred = proba.argmax(axis=1) if len(y) else np.array([], dtype=np.int64)
    precision, recall, f1, support = precision_recall_fscore_support(
        y, pred, labels=list(range(k)), zero_division=0
    )
    per_class = [
        {
            "class": labels[i],
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
        }
        for i in range(k)
    ]
    curves = []
    # Binary: the positive class only (the other is its mirror); else one-vs-rest.
    for c in [1] if k == 2 else range(k):
        truth = (y == c).astype(np.int64)
        entry: dict[str, Any] = {"class": labels[c]}
        if 0 < truth.sum() < len(truth):
            fpr, tpr, _ = roc_curve(truth, proba[:, c])
            prec, rec, _ = precision_recall_curve(truth, proba[:, c])
            entry.update(
                roc_auc=float(roc_auc_score(truth, proba[:, c])),
                average_precision=float(average_precision_score(truth, proba[:, c])),
                roc=_thin(fpr, tpr),
                pr=_thin(rec, prec),
            )
        else:
            entry.update(roc_auc=None, average_precision=None, roc=None, pr=None)
        curves.append(entry)
    return {
        "classes": labels,
        "per_class": per_class,
        "confusion_matrix": confusion_matrix(y, pred, labels=list(range(k))).tolist(),
        "curves": curves,
        "calibration": calibration(y, proba),
    }


def calibration(y: np.ndarray, proba: np.ndarray, bins: int = CALIBRATION_BINS) -> dict[str, Any]:
    """Brier score, expected calibration error and the reliability diagram's bins.

    Binary models are calibrated on the positive class (scikit-learn's ``calibration_curve``
    convention); multi-class ones on the top-label confidence. The Brier score is the mean
    squared distance between the probability vector and the one-hot truth (for two classes
    this is twice scikit-learn's binary ``brier_score_loss``, so the binary one is reported).
    ECE is the row-weighted mean gap between confidence and accuracy over equal-width bins.
    """
    from sklearn.metrics import brier_score_loss

    y = np.asarray(y).astype(np.int64)
    proba = np.asarray(proba, dtype=np.float64)
    if not len(y):
        return {"brier": None, "ece": None, "bins": [], "basis": ""}
    k = proba.shape[1]
    if k == 2:
        brier = float(brier_score_loss((y == 1).astype(int), proba[:, 1], pos_label=1))
        conf, hit, basis = proba[:, 1], (y == 1).astype(float), "positive class"
    else:
        onehot = np.eye(k)[y]
        brier = float(np.mean(np.sum((proba - onehot) ** 2, axis=1)))
        conf = proba.max(axis=1)
        hit = (proba.argmax(axis=1) == y).astype(float)
        basis = "top-label confidence"
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, bins - 1)
    rows, ece = [], 0.0
    for b in range(bins):
        mask = which == b
        n = int(mask.sum())
        if n:
            gap = abs(float(conf[mask].mean()) - float(hit[mask].mean()))
            ece += gap * n / len(y)
            rows.append(
                {
                    "lo": float(edges[b]),
                    "hi": float(edges[b + 1]),
                    "rows": n,
                    "confidence": float(conf[mask].mean()),
                    "observed": float(hit[mask].mean()),
                }
            )
    return {"brier": brier, "ece": float(ece), "bins": rows, "basis": basis}


def regression_detail(y: np.ndarray, pred: np.ndarray) -> dict[str, Any]:
    """Residual summary and the error by target decile."""
    from sklearn.metrics import (
        explained_variance_score,
        max_error,
        mean_absolute_error,
        median_absolute_error,
    )

    y = np.asarray(y, dtype=np.float64)
    pred = np.asarray(pred, dtype=np.float64).reshape(-1)
    if not len(y):
        return {"residuals": {}, "by_target_decile": []}
    resid = y - pred
    edges = np.unique(np.quantile(y, np.linspace(0, 1, 11)))
    deciles = []
    if len(edges) > 1:
        which = np.clip(np.searchsorted(edges, y, side="right") - 1, 0, len(edges) - 2)
        for b in range(len(edges) - 1):
            mask = which == b
            if mask.any():
                r = resid[mask]
                deciles.append(
                    {
                        "lo": float(edges[b]),
                        "hi": float(edges[b + 1]),
                        "rows": int(mask.sum()),
                        "mae": float(np.mean(np.abs(r))),
                        "rmse": float(np.sqrt(np.mean(r**2))),
                        "mean_residual": float(np.mean(r)),
                    }
                )
    return {
        "residuals": {
            "mean": float(resid.mean()),
            "std": float(resid.std()),
            "median_absolute_error": float(median_absolute_error(y, pred)),
            "max_error": float(max_error(y, pred)),
            "explained_variance": float(explained_variance_score(y, pred)),
            "mae": float(mean_absolute_error(y, pred)),
        },
        "by_target_decile": deciles,
    }


def _thin(x: np.ndarray, y: np.ndarray, points: int = CURVE_POINTS) -> dict[str, list[float]]:
    if len(x) > points:
        keep = np.unique(np.linspace(0, len(x) - 1, points).round().astype(int))
        x, y = x[keep], y[keep]
    return {"x": [float(v) for v in x], "y": [float(v) for v in y]}


# -- bootstrap ----------------------------------------------------------------------------------
def _fast_auc(y: np.ndarray, proba: np.ndarray) -> float:
    """:func:`rayline.metrics.roc_auc` with scipy's ranks (the same Mann-Whitney statistic),
    fast enough to run once per resample."""
    from scipy.stats import rankdata

    y = np.asarray(y).astype(np.int64)

    def binary(truth: np.ndarray, score: np.ndarray) -> float:
        n_pos = int(truth.sum())
        n_neg = len(truth) - n_pos
        if n_pos == 0 or n_neg == 0:
            return float("nan")
        ranks = rankdata(score)
        return float((ranks[truth == 1].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))

    if proba.shape[1] == 2:
        return binary((y == 1).astype(np.int64), proba[:, 1])
    return float(
        np.mean([binary((y == c).astype(np.int64), proba[:, c]) for c in range(proba.shape[1])])
    )


def _metric_fn(name: str) -> Callable[[np.ndarray, np.ndarray], float]:
    return _fast_auc if name == "roc_auc" else METRICS[name].fn


def _resamples(rows: int, n: int, seed: int):
    """``n`` bootstrap index arrays over ``rows`` rows, in chunks; the same for a seed."""
    rng = np.random.default_rng(seed)
    done = 0
    while done < n:
        take = min(_CHUNK, n - done)
        yield from rng.integers(0, rows, size=(take, rows))
        done += take


def _interval(values: np.ndarray, level: float) -> tuple[float | None, float | None]:
    values = values[np.isfinite(values)]
    if not len(values):
        return None, None
    tail = (1.0 - level) / 2.0 * 100.0
    lo, hi = np.percentile(values, [tail, 100.0 - tail])
    return float(lo), float(hi)


def bootstrap_intervals(
    task: str,
    y: np.ndarray,
    outputs: dict[str, np.ndarray],
    resamples: int,
    seed: int,
    level: float = 0.95,
) -> dict[str, dict[str, tuple[float | None, float | None]]]:
    """Percentile bootstrap intervals of every task metric, per model.

    Every model is scored on the same resampled rows (one index draw per resample), so the
    intervals of challenger and champion are comparable. Resamples where a metric is
    undefined (a resample without one of the classes, for ROC-AUC) are left out of it.

    Returns:
        model name -> metric -> ``(low, high)``.
    """
    names = metric_names(task)
    y = np.asarray(y)
    values = {m: {n: [] for n in names} for m in outputs}
    if resamples <= 0 or not len(y):
        return {}
    for idx in _resamples(len(y), resamples, seed):
        for model, out in outputs.items():
            for n in names:
                values[model][n].append(_metric_fn(n)(y[idx], out[idx]))
    return {
        model: {n: _interval(np.asarray(v, dtype=np.float64), level) for n, v in per.items()}
        for model, per in values.items()
    }


@dataclass(frozen=True)
class PairedDelta:
    """The challenger's improvement over the champion on the same rows, with its interval.

    ``delta``, ``low`` and ``high`` are improvements in the metric's better direction (a
    drop in log loss is positive). ``rows_needed`` estimates how many test rows would make
    the interval's lower bound clear ``min_delta`` if the observed delta held (None when the
    observed delta does not clear it at all).
    """

    metric: str
    delta: float
    low: float | None
    high: float | None
    level: float
    resamples: int
    rows: int
    min_delta: float
    rows_needed: int | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


def paired_delta(
    task: str,
    metric: str,
    y: np.ndarray,
    challenger: np.ndarray,
    champion: np.ndarray,
    resamples: int,
    seed: int,
    level: float,
    min_delta: float = 0.0,
) -> PairedDelta:
    """Paired bootstrap of ``metric(challenger) - metric(champion)`` on the same test rows.

    Each resample draws row indices once and scores both models on them, so what the two
    models share (hard rows, easy rows) cancels out of the difference: the interval is much
    tighter than comparing two independent intervals.
    """
    from scipy.stats import norm

    if METRICS[metric].task != task:
        raise ValueError(f"'{metric}' is not a {task} metric")
    sign = 1.0 if METRICS[metric].higher_is_better else -1.0
    fn = _metric_fn(metric)
    y = np.asarray(y)
    point = sign * (fn(y, challenger) - fn(y, champion))
    diffs = np.asarray(
        [
            sign * (fn(y[idx], challenger[idx]) - fn(y[idx], champion[idx]))
            for idx in _resamples(len(y), resamples, seed)
        ],
        dtype=np.float64,
    )
    low, high = _interval(diffs, level)
    needed = None
    finite = diffs[np.isfinite(diffs)]
    margin = point - min_delta
    if math.isfinite(point) and margin > 0 and len(finite) > 1:
        se = float(finite.std(ddof=1))
        z = float(norm.ppf(1.0 - (1.0 - level) / 2.0))
        # The standard error shrinks as 1/sqrt(rows): solve point - z*se' = min_delta.
        needed = len(y) if se == 0 else max(len(y), math.ceil(len(y) * (z * se / margin) ** 2))
    return PairedDelta(
        metric=metric,
        delta=float(point),
        low=low,
        high=high,
        level=level,
        resamples=resamples,
        rows=len(y),
        min_delta=min_delta,
        rows_needed=needed,
    )


# -- slices -------------------------------------------------------------------------------------
def slice_labels(values: np.ndarray, bins: list[float] | None) -> np.ndarray:
    """Each row's slice: its value as text, or for a numeric column its bin ``[a, b)``.

    Null values form the ``(missing)`` slice; with bins, values below the first edge form
    ``< a`` and above the last ``> b``; the last bin is closed (``[a, b]``).
    """
    import pandas as pd

    series = pd.Series(values, dtype=object)
    missing = series.isna().to_numpy()
    out = np.empty(len(series), dtype=object)
    if bins is None:
        out[:] = [str(v) for v in series]
        out[missing] = MISSING
        return out
    nums = pd.to_numeric(series, errors="coerce").to_numpy(dtype=np.float64)
    edges = np.asarray(bins, dtype=np.float64)
    names = [f"[{_num(a)}, {_num(b)})" for a, b in zip(edges[:-1], edges[1:], strict=True)]
    names[-1] = names[-1][:-1] + "]"
    which = np.searchsorted(edges, nums, side="right") - 1
    which[nums == edges[-1]] = len(edges) - 2
    for i, name in enumerate(names):
        out[which == i] = name
    out[nums < edges[0]] = f"< {_num(edges[0])}"
    out[nums > edges[-1]] = f"> {_num(edges[-1])}"
    out[np.isnan(nums)] = MISSING
    return out


def _num(x: float) -> str:
    return f"{x:g}"


def slice_metrics(
    task: str,
    y: np.ndarray,
    outputs: dict[str, np.ndarray],
    columns: dict[str, np.ndarray],
    specs: list[tuple[str, list[float] | None]],
) -> list[dict[str, Any]]:
    """Every task metric per slice value, per model, with the slice's row count.

    Args:
        outputs: model name -> output, row-aligned with ``y``.
        columns: column -> raw values, row-aligned with ``y``.
        specs: ``(column, bins or None)`` per slice column, in config order.

    Returns:
        One entry per (column, slice): ``{"column", "slice", "rows", "metrics": {model:
        {metric: value}}}``, slices in order of their first bin / sorted by label.
    """
    names = metric_names(task)
    y = np.asarray(y)
    out: list[dict[str, Any]] = []
    for column, bins in specs:
        labels = slice_labels(columns[column], bins)
        for label in sorted(set(labels.tolist()), key=lambda v: (v == MISSING, _order(v, bins))):
            mask = labels == label
            entry = {
                "column": column,
                "slice": label,
                "rows": int(mask.sum()),
                "metrics": {
                    model: {n: float(METRICS[n].fn(y[mask], o[mask])) for n in names}
                    for model, o in outputs.items()
                },
            }
            out.append(entry)
    return out


def _order(label: str, bins: list[float] | None):
    if bins is None:
        return (0, label)
    if label.startswith("<"):
        return (-1, 0.0)
    if label.startswith(">"):
        return (2, 0.0)
    try:
        return (1, float(label[1:].split(",")[0]))
    except ValueError:
        return (3, 0.0)
