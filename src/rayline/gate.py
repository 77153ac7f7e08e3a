"""The promotion gate: may a newly trained model (the challenger) replace the champion?

A pure function of metrics, policy and what the run found out (whether the champion could
be scored, the drift report), with no MLflow and no Ray, so the decision can be tested
exhaustively and explained line by line. The caller looks up the champion, scores it on
the same test split as the challenger, and acts on the returned decision.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Protocol

from rayline.config import GateConfig
from rayline.metrics import METRICS

OK = "ok"
FAIL = "FAIL"


@dataclass(frozen=True)
class GateDecision:
    """The outcome of :func:`decide`, with one reason line per check.

    Attributes:
        passed: True only when every check passed.
        reasons: One human-readable line per check, pass or fail, in the order checked
            (thresholds as declared, min before max, then the champion comparison).
        challenger: The challenger's test metrics.
        champion: The champion's test metrics on the same split, or None when there is
            no champion yet.
        compare_metric: The metric on which the challenger was compared with the champion.
    """

    passed: bool
    reasons: list[str] = field(default_factory=list)
    challenger: dict[str, float] = field(default_factory=dict)
    champion: dict[str, float] | None = None
    compare_metric: str = ""
    #: The paired bootstrap of the improvement (``gate.confidence``), as plain data.
    comparison: dict[str, Any] | None = None
    #: With several challengers: the one this decision is about (registered) ...
    candidate: str = "challenger"
    #: ... and the others' ``{"passed", "metrics", "reasons"}``, by name.
    others: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The decision as JSON-ready plain data.

        Non-finite metric values (NaN, infinity) become None, since strict JSON has no
        spelling for them.

        Returns:
            A dict with the keys ``passed``, ``reasons``, ``challenger``, ``champion`` and
            ``compare_metric``.
        """
        return {
            "passed": self.passed,
            "reasons": list(self.reasons),
            "challenger": _json_metrics(self.challenger),
            "champion": None if self.champion is None else _json_metrics(self.champion),
            "compare_metric": self.compare_metric,
            "comparison": self.comparison,
            "candidate": self.candidate,
            "others": self.others,
        }


class DriftFindings(Protocol):
    """What the gate reads of a drift report (:class:`rayline.data.drift.DriftReport`)."""

    failed: list[str]

    def reasons(self) -> list[str]: ...


def decide(
    challenger: dict[str, float],
    champion: dict[str, float] | None,
    policy: GateConfig,
    compare_metric: str,
    champion_error: str | None = None,
    champion_label: str = "the champion",
    drift: DriftFindings | None = None,
    slices: list[dict[str, Any]] | None = None,
    paired: PairedComparison | None = None,
    model: str = "challenger",
) -> GateDecision:
    """Decide whether the challenger may become the champion.

    Every bound in ``policy.thresholds`` must hold for the challenger; a bound on a metric
    the challenger lacks, or whose value is NaN, fails. When there is a champion, the
    challenger must also improve on ``compare_metric`` in that metric's direction by more
    than zero and by at least ``policy.min_delta``, so that retraining on unchanged data
    does not churn the champion. If the champion lacks ``compare_metric`` (or it is NaN),
    the comparison is skipped and the thresholds alone decide.

    Two findings of the run fail the gate as well. A champion that exists but could not be
    scored on this test split (``champion_error``, e.g. it reads columns the data no longer
    has) fails it: without a comparison on the same rows the challenger has not proven
    itself. Drift that the config marks ``fail`` fails it; drift at ``warn`` only adds its
    reason lines.

    With ``policy.confidence`` set, the champion comparison reads the paired bootstrap of
    the improvement (``paired``) instead of the point values: its lower bound must be above
    zero and clear ``policy.min_delta``. Every bound in ``policy.slice_thresholds`` must
    hold on every slice (``slices``) with at least its ``min_rows`` rows; smaller slices
    are reported but not held to it.

    Args:
        challenger: The new model's test metrics, metric name -> value.
        champion: The current champion's metrics on the same test split, or None when no
            model holds the champion alias yet (or it could not be scored).
        policy: The gate section of the pipeline config.
        compare_metric: The metric for the champion comparison (usually
            ``PipelineConfig.compare_metric``).
        champion_error: Why the existing champion could not be scored, or None.
        champion_label: How reason lines name the champion (its model URI).
        drift: The drift report against the champion's training data, or None.
        slices: Per-slice metrics (:func:`rayline.analysis.slice_metrics`); the model's
            entry (``model``) is checked.
        paired: The paired bootstrap of the improvement on ``compare_metric``
            (:class:`rayline.analysis.PairedDelta` or anything with its fields).
        model: The name of the challenger's entry in ``slices``.

    Returns:
        The decision, with one reason line per check.

    Raises:
        ValueError: ``compare_metric`` is not a known metric, so its direction is unknown.
    """
    if compare_metric not in METRICS:
        raise ValueError(
            f"unknown compare_metric '{compare_metric}'; choose one of {', '.join(METRICS)}"
        )
    reasons: list[str] = []
    passed = True
    for name, bound in policy.thresholds.items():
        for ok, line in _check_threshold(name, challenger.get(name), bound.min, bound.max):
            passed &= ok
            reasons.append(line)

    for name, bound in policy.slice_thresholds.items():
        for ok, line in _check_slices(name, bound, slices or [], model):
            passed &= ok
            reasons.append(line)

    if champion is None:
        reasons.append("no current champion: challenger accepted on thresholds alone")
    else:
        ok, line = _compare(
            compare_metric,
            challenger.get(compare_metric),
            champion.get(compare_metric),
            policy.min_delta,
        )
        if policy.confidence is not None and not line.startswith("champion has"):
            ok, line = _compare_interval(line, ok, paired, policy, compare_metric)
        passed &= ok
        reasons.append(line)

    if champion_error is not None:
        passed = False
        reasons.append(
            f"champion {champion_label} could not be scored on this test split "
            f"({champion_error[:200]}): {FAIL}; promote by hand if the change of inputs is "
            "intended"
        )
    if drift is not None:
        # Drift the config marks `fail` rejects the challenger; `warn` is recorded.
        passed &= not drift.failed
        reasons.extend(drift.reasons())

    return GateDecision(
        passed=passed,
        reasons=reasons,
        challenger=dict(challenger),
        champion=None if champion is None else dict(champion),
        compare_metric=compare_metric,
    )


class PairedComparison(Protocol):
    """What the gate reads of a paired bootstrap (:class:`rayline.analysis.PairedDelta`)."""

    metric: str
    delta: float
    low: float | None
    high: float | None
    level: float
    resamples: int
    rows: int
    rows_needed: int | None


def _compare_interval(
    point_line: str,
    point_ok: bool,
    paired: PairedComparison | None,
    policy: GateConfig,
    metric: str,
) -> tuple[bool, str]:
    """The champion comparison on the lower bound of the improvement's interval."""
    level = f"{policy.confidence:.0%}"
    head = point_line.rsplit(": ", 1)[0]
    if paired is None or paired.metric != metric:
        return False, (
            f"{head}; gate.confidence {level} needs a paired bootstrap of {metric} on the "
            f"same test rows, and none was computed: {FAIL}"
        )
    if paired.low is None or paired.high is None:
        return False, (
            f"{head}; the {level} interval of the improvement is undefined on these "
            f"{paired.rows} test rows: {FAIL}"
        )
    floor = policy.min_delta
    ok = paired.low > 0 and (paired.low >= floor or math.isclose(paired.low, floor, abs_tol=1e-12))
    line = (
        f"{metric} improvement over the champion {_fmt(paired.delta, sign=True)}, {level} interval "
        f"[{_fmt(paired.low, sign=True)}, {_fmt(paired.high, sign=True)}] "
        f"({paired.resamples} paired resamples of {paired.rows} test rows; the lower bound "
        f"needs > 0 and >= min_delta {_fmt(floor)})"
    )
    if not ok:
        if paired.rows_needed is not None:
            line += (
                f"; if this delta held, about {paired.rows_needed} test rows would make the "
                "lower bound clear it"
            )
        else:
            line += "; the observed delta itself does not clear min_delta"
    return ok, f"{line}: {OK if ok else FAIL}"


def _check_slices(
    name: str, bound: Any, slices: list[dict[str, Any]], model: str
) -> list[tuple[bool, str]]:
    """``bound`` (a SliceThreshold) on every slice with enough rows: one line per miss,
    else one line for all."""
    wanted = [s for s in slices if bound.columns is None or s["column"] in bound.columns]
    held = [s for s in wanted if s["rows"] >= bound.min_rows]
    small = len(wanted) - len(held)
    note = f" ({small} slice(s) under min_rows {bound.min_rows} not held to it)" if small else ""
    results = []
    for s in held:
        value = (s["metrics"].get(model) or {}).get(name)
        for ok, line in _check_threshold(name, value, bound.min, bound.max):
            if not ok:
                results.append(
                    (False, f"slice {s['column']}={s['slice']} ({s['rows']} rows): {line}")
                )
    if results:
        return results
    if not held:
        return [
            (
                True,
                f"{name} slice bounds: no slice has >= {bound.min_rows} test rows, none "
                f"checked{note}: {OK}",
            )
        ]
    bounds = _bounds_text(bound.min, bound.max)
    return [(True, f"{name} {bounds} on all {len(held)} slice(s) with enough rows{note}: {OK}")]


def select(decisions: dict[str, GateDecision], compare_metric: str, order: list[str]) -> str:
    """The challenger to register among several: the best on ``compare_metric`` that passed
    every check, else (none passed) the first in ``order`` (the sweep's best trial).

    Args:
        decisions: challenger name -> its gate decision.
        compare_metric: The metric that ranks passing challengers (its direction counts).
        order: The challengers' names, the sweep's best first.
    """
    higher = METRICS[compare_metric].higher_is_better
    passing = [n for n in order if decisions[n].passed]
    if not passing:
        return order[0]

    def value(name: str) -> float:
        v = decisions[name].challenger.get(compare_metric)
        v = float("nan") if v is None else float(v)
        return -math.inf if math.isnan(v) else (v if higher else -v)

    # max() keeps the first of equals, so a tie goes to the sweep's better trial.
    return max(passing, key=value)


def _bounds_text(lo: float | None, hi: float | None) -> str:
    """``>= min a and <= max b`` for the bounds given ("" for none)."""
    return " and ".join(
        part
        for part in (
            f">= min {_fmt(lo)}" if lo is not None else "",
            f"<= max {_fmt(hi)}" if hi is not None else "",
        )
        if part
    )


def _check_threshold(
    name: str, value: float | None, lo: float | None, hi: float | None
) -> list[tuple[bool, str]]:
    bounds = _bounds_text(lo, hi)
    if not bounds:
        return []  # config validation rejects an empty threshold; nothing to check here
    if value is None:
        return [(False, f"{name} missing from the challenger's metrics (needs {bounds}): {FAIL}")]
    value = float(value)
    if math.isnan(value):
        return [(False, f"{name} is NaN for the challenger (needs {bounds}): {FAIL}")]
    results = []
    if lo is not None:
        if value >= lo:
            results.append((True, f"{name} {_fmt(value)} >= min {_fmt(lo)}: {OK}"))
        else:
            results.append((False, f"{name} {_fmt(value)} < min {_fmt(lo)}: {FAIL}"))
    if hi is not None:
        if value <= hi:
            results.append((True, f"{name} {_fmt(value)} <= max {_fmt(hi)}: {OK}"))
        else:
            results.append((False, f"{name} {_fmt(value)} > max {_fmt(hi)}: {FAIL}"))
    return results


def _compare(name: str, new: float | None, old: float | None, min_delta: float) -> tuple[bool, str]:
    if old is None or math.isnan(float(old)):
        why = "has no" if old is None else "has NaN for"
        return (
            True,
            f"champion {why} {name}: comparison skipped, challenger accepted on thresholds alone",
        )
    old = float(old)
    if new is None or math.isnan(float(new)):
        why = (
            "missing from the challenger's metrics" if new is None else "is NaN for the challenger"
        )
        return False, f"{name} {why}, cannot compare with champion {_fmt(old)}: {FAIL}"
    new = float(new)
    higher = METRICS[name].higher_is_better
    change = new - old
    improvement = change if higher else -change
    # Decimal metrics rarely subtract exactly in binary floating point (0.3 - 0.2 falls a
    # hair below 0.1), so a delta that equals min_delta on paper must still count as enough.
    enough = improvement >= min_delta or math.isclose(
        improvement, min_delta, rel_tol=1e-9, abs_tol=1e-12
    )
    ok = improvement > 0 and enough
    if higher:
        needs = f"needs > 0 and >= min_delta {_fmt(min_delta)}"
    else:
        needs = f"lower is better: needs < 0 and a drop >= min_delta {_fmt(min_delta)}"
    return (
        ok,
        f"{name} {_fmt(new)} vs champion {_fmt(old)} ({_fmt(change, sign=True)}, {needs}): "
        f"{OK if ok else FAIL}",
    )


def _fmt(x: float, sign: bool = False) -> str:
    # Six significant digits keep lines short while telling apart values that a gate
    # decision turned on (0.8999 vs 0.9); exact values remain in the metric dicts.
    x = x + 0.0  # -0.0 prints as 0
    return f"{x:+.6g}" if sign else f"{x:.6g}"


def _json_metrics(metrics: dict[str, float]) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for k, v in metrics.items():
        f = float(v) if v is not None else None
        out[str(k)] = f if f is not None and math.isfinite(f) else None
    return out
