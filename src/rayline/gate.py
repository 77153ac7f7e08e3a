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

    if champion is None:
        reasons.append("no current champion: challenger accepted on thresholds alone")
    else:
        ok, line = _compare(
            compare_metric,
            challenger.get(compare_metric),
            champion.get(compare_metric),
            policy.min_delta,
        )
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


def _check_threshold(
    name: str, value: float | None, lo: float | None, hi: float | None
) -> list[tuple[bool, str]]:
    bounds = " and ".join(
        part
        for part in (
            f">= min {_fmt(lo)}" if lo is not None else "",
            f"<= max {_fmt(hi)}" if hi is not None else "",
        )
        if part
    )
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
    return f"{x:+.6g}" if sign else f"{x:.6g}"


def _json_metrics(metrics: dict[str, float]) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for k, v in metrics.items():
        f = float(v) if v is not None else None
        out[str(k)] = f if f is not None and math.isfinite(f) else None
    return out
