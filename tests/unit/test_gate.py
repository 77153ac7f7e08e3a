"""Behaviour of the promotion gate (rayline.gate.decide)."""

from __future__ import annotations

import json

import pytest

from rayline.config import GateConfig
from rayline.gate import GateDecision, decide

NAN = float("nan")


def policy(thresholds: dict | None = None, min_delta: float = 0.0) -> GateConfig:
    return GateConfig.model_validate({"thresholds": thresholds or {}, "min_delta": min_delta})


def failing(decision: GateDecision) -> list[str]:
    return [r for r in decision.reasons if r.endswith("FAIL")]


# -- thresholds ----------------------------------------------------------------------------------
def test_min_threshold_met():
    d = decide({"accuracy": 0.953}, None, policy({"accuracy": {"min": 0.9}}), "accuracy")
    assert d.passed
    assert "accuracy 0.953 >= min 0.9: ok" in d.reasons


def test_min_threshold_missed():
    d = decide({"accuracy": 0.85}, None, policy({"accuracy": {"min": 0.9}}), "accuracy")
    assert not d.passed
    assert failing(d) == ["accuracy 0.85 < min 0.9: FAIL"]


def test_min_threshold_equal_value_passes():
    d = decide({"accuracy": 0.9}, None, policy({"accuracy": {"min": 0.9}}), "accuracy")
    assert d.passed


def test_max_threshold_met_and_missed():
    ok = decide({"log_loss": 0.25}, None, policy({"log_loss": {"max": 0.3}}), "log_loss")
    assert ok.passed
    assert "log_loss 0.25 <= max 0.3: ok" in ok.reasons

    bad = decide({"log_loss": 0.41}, None, policy({"log_loss": {"max": 0.3}}), "log_loss")
    assert not bad.passed
    assert failing(bad) == ["log_loss 0.41 > max 0.3: FAIL"]


@pytest.mark.parametrize(
    ("value", "passed", "failed_line"),
    [
        (0.5, True, None),
        (0.1, False, "r2 0.1 < min 0.2: FAIL"),
        (0.95, False, "r2 0.95 > max 0.9: FAIL"),
    ],
)
def test_min_and_max_on_one_metric(value, passed, failed_line):
    d = decide({"r2": value}, None, policy({"r2": {"min": 0.2, "max": 0.9}}), "rmse")
    assert d.passed is passed
    # one line per bound, min first
    assert d.reasons[0].startswith(f"r2 {value:g} ") and "min 0.2" in d.reasons[0]
    assert d.reasons[1].startswith(f"r2 {value:g} ") and "max 0.9" in d.reasons[1]
    assert failing(d) == ([failed_line] if failed_line else [])


def test_every_threshold_must_hold_and_each_gets_a_line():
    d = decide(
        {"accuracy": 0.95, "f1_macro": 0.5, "log_loss": 0.2},
        None,
        policy({"accuracy": {"min": 0.9}, "f1_macro": {"min": 0.8}, "log_loss": {"max": 0.3}}),
        "log_loss",
    )
    assert not d.passed
    assert failing(d) == ["f1_macro 0.5 < min 0.8: FAIL"]
    # three threshold lines, then the champion line
    assert len(d.reasons) == 4
    assert d.reasons[-1].startswith("no current champion")


def test_threshold_on_missing_metric_fails_and_says_so():
    d = decide({"accuracy": 0.99}, None, policy({"roc_auc": {"min": 0.8}}), "accuracy")
    assert not d.passed
    [line] = failing(d)
    assert "roc_auc" in line and "missing" in line and "min 0.8" in line


def test_threshold_on_nan_metric_fails_and_says_so():
    d = decide({"roc_auc": NAN}, None, policy({"roc_auc": {"min": 0.8, "max": 1.0}}), "roc_auc")
    assert not d.passed
    [line] = failing(d)
    assert "roc_auc" in line and "NaN" in line
    assert "min 0.8" in line and "max 1" in line


def test_no_thresholds_and_no_champion_passes():
    d = decide({"rmse": 3.0}, None, policy(), "rmse")
    assert d.passed
    assert d.reasons == ["no current champion: challenger accepted on thresholds alone"]


# -- champion comparison -------------------------------------------------------------------------
def test_no_champion_accepts_on_thresholds_alone():
    d = decide({"accuracy": 0.95}, None, policy({"accuracy": {"min": 0.9}}), "accuracy")
    assert d.passed
    assert d.champion is None
    assert d.reasons[-1] == "no current champion: challenger accepted on thresholds alone"


def test_no_champion_does_not_rescue_a_failed_threshold():
    d = decide({"accuracy": 0.5}, None, policy({"accuracy": {"min": 0.9}}), "accuracy")
    assert not d.passed


def test_challenger_better_than_champion_passes():
    d = decide({"accuracy": 0.96}, {"accuracy": 0.95}, policy(min_delta=0.005), "accuracy")
    assert d.passed
    assert d.reasons == [
        "accuracy 0.96 vs champion 0.95 (+0.01, needs > 0 and >= min_delta 0.005): ok"
    ]


def test_challenger_worse_than_champion_fails():
    d = decide({"accuracy": 0.94}, {"accuracy": 0.95}, policy(), "accuracy")
    assert not d.passed
    [line] = failing(d)
    assert line.startswith("accuracy 0.94 vs champion 0.95 (-0.01")


def test_identical_retrain_does_not_move_the_champion():
    # min_delta 0 (the default) still needs a strictly positive improvement
    d = decide({"accuracy": 0.95}, {"accuracy": 0.95}, policy(), "accuracy")
    assert not d.passed
    assert "needs > 0" in failing(d)[0]


def test_thresholds_and_comparison_must_both_hold():
    pol = policy({"accuracy": {"min": 0.97}})
    d = decide({"accuracy": 0.96}, {"accuracy": 0.90}, pol, "accuracy")
    assert not d.passed
    assert failing(d) == ["accuracy 0.96 < min 0.97: FAIL"]
    assert d.reasons[-1].endswith(": ok")


@pytest.mark.parametrize(
    ("challenger", "passed"),
    [
        (0.955, True),  # improvement == min_delta exactly
        (0.9549, False),  # just below
        (0.956, True),
    ],
)
def test_min_delta_boundary_higher_is_better(challenger, passed):
    d = decide({"accuracy": challenger}, {"accuracy": 0.95}, policy(min_delta=0.005), "accuracy")
    assert d.passed is passed


def test_min_delta_boundary_survives_float_rounding():
    # 0.3 - 0.2 == 0.09999999999999998 in binary floating point
    assert 0.3 - 0.2 < 0.1
    d = decide({"r2": 0.3}, {"r2": 0.2}, policy(min_delta=0.1), "r2")
    assert d.passed


@pytest.mark.parametrize("metric", ["log_loss", "rmse", "mae"])
def test_lower_is_better_metrics(metric):
    better = decide({metric: 0.30}, {metric: 0.40}, policy(min_delta=0.05), metric)
    assert better.passed
    assert better.reasons[0].startswith(f"{metric} 0.3 vs champion 0.4 (-0.1")
    assert "lower is better" in better.reasons[0]
    assert better.reasons[0].endswith(": ok")

    worse = decide({metric: 0.45}, {metric: 0.40}, policy(), metric)
    assert not worse.passed
    assert "(+0.05" in worse.reasons[0]

    equal = decide({metric: 0.40}, {metric: 0.40}, policy(), metric)
    assert not equal.passed


@pytest.mark.parametrize(("challenger", "passed"), [(0.35, True), (0.36, False)])
def test_min_delta_boundary_lower_is_better(challenger, passed):
    d = decide({"rmse": challenger}, {"rmse": 0.40}, policy(min_delta=0.05), "rmse")
    assert d.passed is passed
    assert "min_delta 0.05" in d.reasons[0]


@pytest.mark.parametrize("champion", [{"f1_macro": 0.9}, {"accuracy": NAN}])
def test_champion_without_usable_metric_skips_comparison(champion):
    d = decide({"accuracy": 0.5}, champion, policy({"accuracy": {"min": 0.4}}), "accuracy")
    assert d.passed
    line = d.reasons[-1]
    assert "accuracy" in line and "comparison skipped" in line and "thresholds alone" in line
    assert ("NaN" in line) is (champion.get("accuracy") is not None)


def test_champion_without_usable_metric_still_needs_thresholds():
    d = decide({"accuracy": 0.3}, {}, policy({"accuracy": {"min": 0.4}}), "accuracy")
    assert not d.passed


@pytest.mark.parametrize(("challenger", "word"), [({}, "missing"), ({"accuracy": NAN}, "NaN")])
def test_challenger_without_compare_metric_fails_comparison(challenger, word):
    d = decide(challenger, {"accuracy": 0.9}, policy(), "accuracy")
    assert not d.passed
    [line] = failing(d)
    assert "accuracy" in line and word in line and "champion 0.9" in line


def test_unknown_compare_metric_is_a_programming_error():
    with pytest.raises(ValueError, match="unknown compare_metric 'acc'"):
        decide({"acc": 1.0}, None, policy(), "acc")


# -- the decision object -------------------------------------------------------------------------
def test_one_reason_per_check_pass_or_fail():
    d = decide(
        {"accuracy": 0.96, "log_loss": 0.2},
        {"accuracy": 0.95},
        policy({"accuracy": {"min": 0.9}, "log_loss": {"max": 0.3}}),
        "accuracy",
    )
    assert d.passed
    assert d.reasons == [
        "accuracy 0.96 >= min 0.9: ok",
        "log_loss 0.2 <= max 0.3: ok",
        "accuracy 0.96 vs champion 0.95 (+0.01, needs > 0 and >= min_delta 0): ok",
    ]


def test_decision_keeps_inputs_and_to_dict_is_json_ready():
    challenger = {"accuracy": 0.96, "roc_auc": NAN}
    champion = {"accuracy": 0.95}
    d = decide(challenger, champion, policy(), "accuracy")
    challenger["accuracy"] = 0.0  # the decision holds its own copy
    assert d.challenger["accuracy"] == 0.96
    assert d.champion == {"accuracy": 0.95}
    assert d.compare_metric == "accuracy"

    out = d.to_dict()
    assert out["passed"] is True
    assert out["reasons"] == d.reasons
    assert out["challenger"] == {"accuracy": 0.96, "roc_auc": None}
    assert out["champion"] == {"accuracy": 0.95}
    assert out["compare_metric"] == "accuracy"
    # strict JSON: no NaN tokens
    assert json.loads(json.dumps(out, allow_nan=False)) == out


def test_to_dict_without_champion():
    out = decide({"rmse": 1.0}, None, policy(), "rmse").to_dict()
    assert out["champion"] is None
    assert json.dumps(out, allow_nan=False)


def test_decision_is_frozen():
    d = decide({"rmse": 1.0}, None, policy(), "rmse")
    with pytest.raises(AttributeError):
        d.passed = False  # type: ignore[misc]


# -- what the run found: an unscorable champion, drift ---------------------------------------
class _Drift:
    def __init__(self, failed: list[str], lines: list[str]):
        self.failed = failed
        self._lines = lines

    def reasons(self) -> list[str]:
        return list(self._lines)


def test_an_unscorable_champion_fails_the_gate_and_says_why():
    d = decide(
        {"accuracy": 0.99},
        None,
        policy({"accuracy": {"min": 0.9}}),
        "accuracy",
        champion_error="KeyError: 'plan'",
        champion_label="models:/churn/3",
    )
    assert not d.passed
    assert d.reasons[-1].startswith(
        "champion models:/churn/3 could not be scored on this test split (KeyError: 'plan'): "
        "FAIL; promote by hand"
    )
    assert d.reasons[0].endswith("ok")  # the thresholds were still checked and reported


def test_drift_marked_fail_rejects_and_warn_only_reports():
    good = {"accuracy": 0.99}
    p = policy({"accuracy": {"min": 0.9}})
    warn = decide(good, None, p, "accuracy", drift=_Drift([], ["drift: age psi 0.15: warn"]))
    assert warn.passed and warn.reasons[-1] == "drift: age psi 0.15: warn"
    fail = decide(good, None, p, "accuracy", drift=_Drift(["age"], ["drift: age psi 0.4: FAIL"]))
    assert not fail.passed and fail.reasons[-1] == "drift: age psi 0.4: FAIL"
    # Without findings the decision is the point comparison alone.
    assert decide(good, None, p, "accuracy").passed


# -- the interval comparison, slices, several challengers ----------------------------------------
def _paired(delta, low, high, rows=80, needed=None, metric="accuracy"):
    from rayline.analysis import PairedDelta

    return PairedDelta(metric, delta, low, high, 0.95, 2000, rows, 0.0, needed)


def _confident(min_delta=0.0, **more):
    return GateConfig.model_validate({"confidence": 0.95, "min_delta": min_delta, **more})


def test_interval_lower_bound_above_min_delta_passes():
    d = decide(
        {"accuracy": 0.95},
        {"accuracy": 0.90},
        _confident(0.01),
        "accuracy",
        paired=_paired(0.05, 0.02, 0.08),
    )
    assert d.passed
    line = [r for r in d.reasons if "interval" in r][0]
    assert "improvement over the champion +0.05, 95% interval [+0.02, +0.08]" in line
    assert line.endswith(": ok")


def test_interval_straddling_zero_fails_and_says_rows_needed():
    d = decide(
        {"accuracy": 0.95},
        {"accuracy": 0.93},
        _confident(),
        "accuracy",
        paired=_paired(0.02, -0.01, 0.05, needed=1234),
    )
    assert not d.passed
    (line,) = failing(d)
    assert "[-0.01, +0.05]" in line and "about 1234 test rows" in line


def test_interval_below_min_delta_fails_even_if_point_clears_it():
    # The point delta 0.05 clears min_delta 0.03; its lower bound 0.01 does not.
    d = decide(
        {"accuracy": 0.95},
        {"accuracy": 0.90},
        _confident(0.03),
        "accuracy",
        paired=_paired(0.05, 0.01, 0.09, needed=400),
    )
    assert not d.passed


def test_confidence_without_a_paired_bootstrap_fails_not_silently_passes():
    d = decide({"accuracy": 0.99}, {"accuracy": 0.5}, _confident(), "accuracy")
    assert not d.passed
    assert "needs a paired bootstrap" in failing(d)[0]


def test_confidence_without_champion_is_thresholds_alone():
    d = decide({"accuracy": 0.9}, None, _confident(), "accuracy")
    assert d.passed


def test_point_comparison_stays_the_default():
    # confidence null: the paired interval, even if given, does not decide.
    d = decide(
        {"accuracy": 0.95}, {"accuracy": 0.9}, policy(), "accuracy",
        paired=_paired(0.05, -0.2, 0.3),
    )  # fmt: skip
    assert d.passed


def _slices(values_rows):
    return [
        {"column": "plan", "slice": name, "rows": rows, "metrics": {"challenger": {"accuracy": v}}}
        for name, v, rows in values_rows
    ]


def test_slice_with_enough_rows_missing_its_bound_fails_naming_the_slice():
    pol = GateConfig.model_validate(
        {"slice_thresholds": {"accuracy": {"min": 0.8, "min_rows": 30}}}
    )
    d = decide(
        {"accuracy": 0.9}, None, pol, "accuracy",
        slices=_slices([("basic", 0.95, 50), ("pro", 0.7, 40), ("tiny", 0.1, 5)]),
    )  # fmt: skip
    assert not d.passed
    (line,) = failing(d)
    assert line.startswith("slice plan=pro (40 rows): accuracy 0.7 < min 0.8")


def test_slices_under_min_rows_are_not_held():
    pol = GateConfig.model_validate(
        {"slice_thresholds": {"accuracy": {"min": 0.8, "min_rows": 30}}}
    )
    d = decide(
        {"accuracy": 0.9}, None, pol, "accuracy",
        slices=_slices([("basic", 0.95, 50), ("tiny", 0.1, 5)]),
    )  # fmt: skip
    assert d.passed
    assert any("1 slice(s) under min_rows 30 not held" in r for r in d.reasons)


def test_slice_bounds_restricted_to_columns():
    pol = GateConfig.model_validate(
        {"slice_thresholds": {"accuracy": {"min": 0.8, "min_rows": 1, "columns": ["region"]}}}
    )
    d = decide({"accuracy": 0.9}, None, pol, "accuracy", slices=_slices([("pro", 0.1, 40)]))
    assert d.passed


def test_slice_nan_metric_fails():
    pol = GateConfig.model_validate({"slice_thresholds": {"accuracy": {"min": 0.5, "min_rows": 1}}})
    d = decide({"accuracy": 0.9}, None, pol, "accuracy", slices=_slices([("a", NAN, 3)]))
    assert not d.passed


def test_select_prefers_the_best_passing_challenger():
    from rayline.gate import select

    pol = policy({"accuracy": {"min": 0.8}})
    decisions = {
        "challenger": decide({"accuracy": 0.78}, None, pol, "accuracy"),
        "trial-b": decide({"accuracy": 0.85}, None, pol, "accuracy"),
        "trial-c": decide({"accuracy": 0.9}, None, pol, "accuracy"),
    }
    assert select(decisions, "accuracy", ["challenger", "trial-b", "trial-c"]) == "trial-c"


def test_select_lower_is_better_and_none_passing_falls_back_to_the_first():
    from rayline.gate import select

    pol = policy({"log_loss": {"max": 0.5}})
    decisions = {
        "challenger": decide({"log_loss": 0.4}, None, pol, "log_loss"),
        "trial-b": decide({"log_loss": 0.3}, None, pol, "log_loss"),
    }
    assert select(decisions, "log_loss", ["challenger", "trial-b"]) == "trial-b"
    bad = {n: decide({"log_loss": 0.9}, None, pol, "log_loss") for n in ("challenger", "x")}
    assert select(bad, "log_loss", ["challenger", "x"]) == "challenger"


def test_decision_json_carries_candidate_and_comparison():
    d = decide(
        {"accuracy": 0.95}, {"accuracy": 0.9}, _confident(), "accuracy",
        paired=_paired(0.05, 0.01, 0.09),
    )  # fmt: skip
    data = json.loads(json.dumps(d.to_dict()))
    assert data["candidate"] == "challenger" and data["others"] == {}
