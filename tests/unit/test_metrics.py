"""rayline.metrics agrees with scikit-learn on random data."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn import metrics as skm

from rayline import metrics as rm

REL = 1e-12


def approx(x: float):
    return pytest.approx(x, rel=REL, abs=1e-12)


def softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def classification_data(n_classes: int, n: int = 500, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, n_classes, size=n)
    # Signal towards the true class so the metrics are far from their chance values.
    logits = rng.normal(size=(n, n_classes))
    logits[np.arange(n), y] += 1.0
    return y, softmax(logits)


def tied_classification_data(n_classes: int, n: int = 400, seed: int = 1):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, n_classes, size=n)
    # Integer logits from a tiny range: many rows share exactly the same probabilities.
    logits = rng.integers(0, 3, size=(n, n_classes)).astype(np.float64)
    logits[np.arange(n), y] += rng.integers(0, 2, size=n)
    return y, softmax(logits)


# -- classification ------------------------------------------------------------------------------
@pytest.mark.parametrize("n_classes", [2, 3])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_accuracy(n_classes, seed):
    y, proba = classification_data(n_classes, seed=seed)
    assert rm.accuracy(y, proba) == approx(skm.accuracy_score(y, proba.argmax(axis=1)))


@pytest.mark.parametrize("n_classes", [2, 3])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_f1_macro(n_classes, seed):
    y, proba = classification_data(n_classes, seed=seed)
    expected = skm.f1_score(y, proba.argmax(axis=1), average="macro")
    assert rm.f1_macro(y, proba) == approx(expected)


def test_f1_macro_with_a_class_never_predicted():
    y, proba = classification_data(3, seed=3)
    proba[:, 2] = 0.0  # class 2 is present in y but never the argmax
    proba /= proba.sum(axis=1, keepdims=True)
    y_pred = proba.argmax(axis=1)
    assert 2 in y and 2 not in y_pred
    expected = skm.f1_score(y, y_pred, average="macro", zero_division=0.0)
    assert rm.f1_macro(y, proba) == approx(expected)
    # the never-predicted class counts as F1 = 0 in the mean
    per_class = skm.f1_score(y, y_pred, average=None, zero_division=0.0)
    assert per_class[2] == 0.0
    assert rm.f1_macro(y, proba) == approx(per_class.mean())


def test_f1_macro_with_a_class_predicted_but_never_true():
    y, proba = classification_data(3, seed=4)
    y = np.where(y == 2, 0, y)  # class 2 is predicted for some rows but never true
    assert 2 in proba.argmax(axis=1) and 2 not in y
    expected = skm.f1_score(y, proba.argmax(axis=1), average="macro", zero_division=0.0)
    assert rm.f1_macro(y, proba) == approx(expected)


def test_f1_macro_ignores_a_class_neither_true_nor_predicted():
    y, proba = classification_data(2, seed=5)
    # a third probability column that never wins and has no true rows
    proba3 = np.column_stack([proba, np.zeros(len(y))])
    expected = skm.f1_score(y, proba.argmax(axis=1), average="macro")
    assert rm.f1_macro(y, proba3) == approx(expected)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_roc_auc_binary(seed):
    y, proba = classification_data(2, seed=seed)
    assert rm.roc_auc(y, proba) == approx(skm.roc_auc_score(y, proba[:, 1]))


def test_roc_auc_binary_with_ties():
    rng = np.random.default_rng(6)
    y = rng.integers(0, 2, size=300)
    p1 = np.clip(rng.integers(0, 5, size=300) / 4 + 0.25 * y, 0, 1)  # only 5 distinct scores
    proba = np.column_stack([1 - p1, p1])
    assert len(np.unique(p1)) <= 5
    assert rm.roc_auc(y, proba) == approx(skm.roc_auc_score(y, proba[:, 1]))


def test_roc_auc_all_scores_tied_is_one_half():
    y = np.array([0, 1, 0, 1, 1])
    proba = np.full((5, 2), 0.5)
    assert rm.roc_auc(y, proba) == approx(skm.roc_auc_score(y, proba[:, 1])) == 0.5


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_roc_auc_multiclass_ovr_macro(seed):
    y, proba = classification_data(3, seed=seed)
    expected = skm.roc_auc_score(y, proba, multi_class="ovr", average="macro")
    assert rm.roc_auc(y, proba) == approx(expected)


@pytest.mark.parametrize("n_classes", [2, 3])
def test_roc_auc_with_tied_scores(n_classes):
    y, proba = tied_classification_data(n_classes)
    assert len(np.unique(proba[:, 1])) < len(y) // 10  # heavily tied
    if n_classes == 2:
        expected = skm.roc_auc_score(y, proba[:, 1])
    else:
        expected = skm.roc_auc_score(y, proba, multi_class="ovr", average="macro")
    assert rm.roc_auc(y, proba) == approx(expected)


def test_roc_auc_single_class_is_nan():
    # scikit-learn raises here; rayline reports NaN so the gate can explain it
    y = np.zeros(4, dtype=int)
    proba = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.5, 0.5]])
    assert math.isnan(rm.roc_auc(y, proba))


@pytest.mark.parametrize("n_classes", [2, 3])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_log_loss(n_classes, seed):
    y, proba = classification_data(n_classes, seed=seed)
    expected = skm.log_loss(y, proba, labels=list(range(n_classes)))
    assert rm.log_loss(y, proba) == approx(expected)


def test_log_loss_with_tied_scores():
    y, proba = tied_classification_data(3)
    assert rm.log_loss(y, proba) == approx(skm.log_loss(y, proba, labels=[0, 1, 2]))


def test_log_loss_renormalises_rows():
    y, proba = classification_data(3, seed=7)
    assert rm.log_loss(y, proba * 3.0) == approx(skm.log_loss(y, proba, labels=[0, 1, 2]))


def test_log_loss_of_a_zero_probability_is_finite():
    y = np.array([0, 1])
    proba = np.array([[0.0, 1.0], [0.0, 1.0]])
    value = rm.log_loss(y, proba)
    assert math.isfinite(value) and value > 10


# -- regression ----------------------------------------------------------------------------------
def regression_data(seed: int, n: int = 400):
    rng = np.random.default_rng(seed)
    y = rng.normal(loc=5.0, scale=3.0, size=n)
    pred = y + rng.normal(scale=1.5, size=n)
    return y, pred


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_rmse(seed):
    y, pred = regression_data(seed)
    assert rm.rmse(y, pred) == approx(math.sqrt(skm.mean_squared_error(y, pred)))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mae(seed):
    y, pred = regression_data(seed)
    assert rm.mae(y, pred) == approx(skm.mean_absolute_error(y, pred))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_r2(seed):
    y, pred = regression_data(seed)
    assert rm.r2(y, pred) == approx(skm.r2_score(y, pred))


def test_r2_of_a_poor_model_is_negative_like_sklearn():
    y, _ = regression_data(8)
    pred = -y
    assert rm.r2(y, pred) == approx(skm.r2_score(y, pred))
    assert rm.r2(y, pred) < 0


@pytest.mark.parametrize("pred", [np.full(5, 2.0), np.array([2.0, 2.0, 2.0, 2.0, 3.0])])
def test_r2_constant_target_matches_sklearn(pred):
    y = np.full(5, 2.0)
    assert rm.r2(y, pred) == skm.r2_score(y, pred)


def test_regression_metrics_accept_column_predictions():
    y, pred = regression_data(9)
    col = pred.reshape(-1, 1)  # a model's (n, 1) output
    assert rm.rmse(y, col) == approx(rm.rmse(y, pred))
    assert rm.mae(y, col) == approx(rm.mae(y, pred))
    assert rm.r2(y, col) == approx(rm.r2(y, pred))


# -- the table -----------------------------------------------------------------------------------
def test_compute_metrics_classification_returns_exactly_the_task_metrics():
    y, proba = classification_data(3)
    out = rm.compute_metrics("classification", y, proba)
    assert list(out) == rm.metric_names("classification")
    assert set(out) == {"accuracy", "f1_macro", "roc_auc", "log_loss"}
    assert all(isinstance(v, float) for v in out.values())
    assert out["accuracy"] == approx(skm.accuracy_score(y, proba.argmax(axis=1)))


def test_compute_metrics_regression_returns_exactly_the_task_metrics():
    y, pred = regression_data(0)
    out = rm.compute_metrics("regression", y, pred)
    assert list(out) == rm.metric_names("regression")
    assert set(out) == {"rmse", "mae", "r2"}
    assert all(isinstance(v, float) for v in out.values())
    assert out["r2"] == approx(skm.r2_score(y, pred))


@pytest.mark.parametrize(
    ("name", "higher"),
    [
        ("accuracy", True),
        ("f1_macro", True),
        ("roc_auc", True),
        ("log_loss", False),
        ("rmse", False),
        ("mae", False),
        ("r2", True),
    ],
)
def test_metric_direction(name, higher):
    spec = rm.METRICS[name]
    assert spec.higher_is_better is higher
    assert spec.mode == ("max" if higher else "min")
