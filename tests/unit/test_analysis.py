"""The evaluation report's numbers (rayline.analysis) against scikit-learn and by hand."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from rayline import analysis
from rayline.metrics import roc_auc


def _binary(n=200, seed=0, noise=1.0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    logit = (y * 2 - 1) * 1.5 + rng.normal(0, noise, n)
    p1 = 1 / (1 + np.exp(-logit))
    return y, np.stack([1 - p1, p1], axis=1)


def test_fast_auc_matches_the_metric_with_ties():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 300)
    proba = rng.dirichlet([1, 1, 1], 300).round(1)  # rounding makes many ties
    assert analysis._fast_auc(y, proba) == pytest.approx(roc_auc(y, proba))


def test_classification_detail_matches_sklearn():
    y, proba = _binary()
    d = analysis.classification_detail(y, proba, ["no", "yes"])
    pred = proba.argmax(axis=1)
    assert d["confusion_matrix"] == skm.confusion_matrix(y, pred).tolist()
    yes = d["per_class"][1]
    assert yes["class"] == "yes"
    assert yes["precision"] == pytest.approx(skm.precision_score(y, pred))
    assert yes["recall"] == pytest.approx(skm.recall_score(y, pred))
    assert yes["support"] == int((y == 1).sum())
    (curve,) = d["curves"]
    assert curve["roc_auc"] == pytest.approx(skm.roc_auc_score(y, proba[:, 1]))
    assert d["calibration"]["brier"] == pytest.approx(skm.brier_score_loss(y, proba[:, 1]))


def test_ece_is_zero_for_calibrated_bins_and_large_for_overconfident():
    # Every row predicts 0.7 for class 1 and 70% of rows are class 1: perfectly calibrated.
    y = np.array([1] * 7 + [0] * 3)
    proba = np.tile([0.3, 0.7], (10, 1))
    assert analysis.calibration(y, proba)["ece"] == pytest.approx(0.0)
    sure = np.tile([0.01, 0.99], (10, 1))
    assert analysis.calibration(y, sure)["ece"] == pytest.approx(0.29)


def test_multiclass_brier_and_per_class_curves():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 3, 120)
    proba = rng.dirichlet([1, 1, 1], 120)
    d = analysis.classification_detail(y, proba, None)
    assert len(d["curves"]) == 3 and len(d["per_class"]) == 3
    onehot = np.eye(3)[y]
    assert d["calibration"]["brier"] == pytest.approx(np.mean(((proba - onehot) ** 2).sum(1)))
    assert d["calibration"]["basis"] == "top-label confidence"


def test_regression_detail_deciles_account_for_every_row():
    rng = np.random.default_rng(3)
    y = rng.normal(0, 1, 500)
    pred = y + rng.normal(0, 0.1 + np.abs(y) * 0.5)
    d = analysis.regression_detail(y, pred)
    rows = d["by_target_decile"]
    assert sum(r["rows"] for r in rows) == 500 and len(rows) == 10
    # The noise grows with |y|: the extreme deciles err more than the middle ones.
    assert rows[0]["mae"] > rows[5]["mae"] and rows[-1]["mae"] > rows[4]["mae"]
    assert d["residuals"]["mae"] == pytest.approx(skm.mean_absolute_error(y, pred))


def test_bootstrap_is_seeded_and_covers_the_point_value():
    y, proba = _binary(n=150)
    a = analysis.bootstrap_intervals("classification", y, {"m": proba}, 300, seed=7)
    b = analysis.bootstrap_intervals("classification", y, {"m": proba}, 300, seed=7)
    c = analysis.bootstrap_intervals("classification", y, {"m": proba}, 300, seed=8)
    assert a == b and a != c
    lo, hi = a["m"]["accuracy"]
    point = float(np.mean(proba.argmax(1) == y))
    assert lo <= point <= hi and hi - lo > 0


def test_intervals_narrow_with_more_rows():
    small = analysis.bootstrap_intervals("classification", *_binary(60)[:1], {}, 10, 0)
    assert small == {m: {} for m in small}  # no models, nothing to resample
    w = {}
    for n in (60, 1500):
        y, proba = _binary(n, seed=n)
        lo, hi = analysis.bootstrap_intervals("classification", y, {"m": proba}, 300, 0)["m"][
            "accuracy"
        ]
        w[n] = hi - lo
    assert w[1500] < w[60] / 2


def test_paired_delta_detects_a_real_improvement_and_not_a_fake_one():
    y, good = _binary(n=400, seed=4, noise=0.5)
    _, bad = _binary(n=400, seed=5, noise=4.0)
    bad_aligned = np.where(
        np.random.default_rng(0).random(400)[:, None] < 0.35, good[:, ::-1], good
    )
    real = analysis.paired_delta("classification", "accuracy", y, good, bad_aligned, 1000, 0, 0.95)
    assert real.delta > 0 and real.low > 0 and real.rows_needed == 400
    same = analysis.paired_delta("classification", "accuracy", y, good, good, 200, 0, 0.95)
    assert same.delta == 0 and same.low == 0 and same.high == 0 and same.rows_needed is None


def test_paired_delta_lower_is_better_metric_counts_a_drop_as_improvement():
    y, good = _binary(n=200, seed=6, noise=0.5)
    worse = np.clip(good * 0.6 + 0.2, 0, 1)
    d = analysis.paired_delta("classification", "log_loss", y, good, worse, 300, 0, 0.9)
    assert d.delta > 0 and d.low > 0


def test_rows_needed_grows_when_the_delta_is_small():
    rng = np.random.default_rng(9)
    y = rng.integers(0, 2, 100)
    right = np.eye(2)[y] * 0.8 + 0.1
    wrong = right[:, ::-1]
    # The challenger is right on rows 0-59, the champion on rows 10-64: each wins some
    # rows, the challenger 10 and the champion 5, a small delta on few discordant rows.
    idx = np.arange(100)[:, None]
    new = np.where(idx < 60, right, wrong)
    old = np.where((idx >= 10) & (idx < 65), right, wrong)
    d = analysis.paired_delta("classification", "accuracy", y, new, old, 1000, 0, 0.95)
    assert d.delta == pytest.approx(0.05)
    assert d.low <= 0 < d.high
    assert d.rows_needed > 100


def test_slices_by_value_and_by_bins_with_missing_and_outside():
    y = np.array([0, 1, 1, 0, 1, 0])
    proba = np.eye(2)[[0, 1, 0, 0, 1, 1]].astype(float)
    cols = {
        "plan": np.array(["a", "a", "b", None, "b", "a"], dtype=object),
        "age": np.array([5, 15, 25, None, 100, 10], dtype=object),
    }
    out = analysis.slice_metrics(
        "classification", y, {"challenger": proba}, cols, [("plan", None), ("age", [0, 10, 30])]
    )
    plan = {s["slice"]: s for s in out if s["column"] == "plan"}
    assert {k: v["rows"] for k, v in plan.items()} == {"a": 3, "b": 2, "(missing)": 1}
    assert plan["a"]["metrics"]["challenger"]["accuracy"] == pytest.approx(2 / 3)
    age = [(s["slice"], s["rows"]) for s in out if s["column"] == "age"]
    assert age == [("[0, 10)", 1), ("[10, 30]", 3), ("> 30", 1), ("(missing)", 1)]
    assert sum(r for _, r in age) == len(y)
