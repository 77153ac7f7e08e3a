"""Drift math on hand-built profiles: PSI against numpy, categorical shares, statuses, HTML."""

from __future__ import annotations

import numpy as np
import pytest

from rayline.config import DriftConfig
from rayline.data.profile import (
    QUANTILES,
    ColumnProfile,
    Profile,
    compare,
    numeric_bins,
    numeric_shares,
    psi,
    render_html,
)


def numeric(values: np.ndarray, nulls: int = 0) -> ColumnProfile:
    return ColumnProfile(
        kind="numeric",
        count=len(values) + nulls,
        nulls=nulls,
        min=float(values.min()),
        max=float(values.max()),
        mean=float(values.mean()),
        std=float(values.std()),
        quantiles=[float(q) for q in np.quantile(values, QUANTILES)],
    )


def categorical(counts: dict[str, int], nulls: int = 0, other: int = 0) -> ColumnProfile:
    return ColumnProfile(
        kind="categorical",
        count=sum(counts.values()) + nulls + other,
        nulls=nulls,
        top=counts,
        other_count=other,
    )


def test_identical_profiles_have_zero_psi():
    x = np.random.default_rng(0).normal(size=20_000)
    p = Profile(rows=len(x), columns={"x": numeric(x)})
    report = compare(p, p, DriftConfig())
    assert report.columns["x"].psi == pytest.approx(0.0, abs=1e-9)
    assert report.status == "ok" and report.reasons() == []


def test_numeric_psi_matches_numpy_on_the_reference_bins():
    rng = np.random.default_rng(1)
    ref, cur = rng.normal(size=50_000), rng.normal(loc=0.5, size=50_000)
    rp, cp = numeric(ref), numeric(cur)
    edges = numeric_bins(rp, 10)
    assert len(edges) == 9
    full = [-np.inf, *edges, np.inf]
    expected = psi(np.histogram(cur, full)[0] / len(cur), np.histogram(ref, full)[0] / len(ref))
    got = psi(numeric_shares(cp, edges)[1:], numeric_shares(rp, edges)[1:])
    assert got == pytest.approx(expected, rel=0.05)
    assert 0.2 < got < 0.35  # half a standard deviation: a moderate-to-large shift


def test_nulls_are_a_bin_of_their_own():
    x = np.random.default_rng(2).normal(size=10_000)
    shares = numeric_shares(numeric(x, nulls=2_500), numeric_bins(numeric(x), 4))
    assert shares[0] == pytest.approx(0.2)
    assert shares.sum() == pytest.approx(1.0)
    assert shares[1:] == pytest.approx([0.2] * 4, abs=0.01)


def test_constant_and_all_null_columns_do_not_crash():
    const = numeric(np.full(100, 3.0))
    empty = ColumnProfile(kind="numeric", count=50, nulls=50)
    p = Profile(rows=100, columns={"c": const, "e": empty})
    q = Profile(rows=100, columns={"c": numeric(np.full(100, 4.0)), "e": empty})
    report = compare(q, p, DriftConfig())
    assert report.columns["c"].psi > 1  # every row moved out of the reference's only bin
    assert report.columns["e"].psi == pytest.approx(0.0)


def test_categorical_psi_and_unseen_rate():
    ref = categorical({"a": 500, "b": 300, "c": 200})
    cur = categorical({"a": 400, "b": 300, "d": 300})
    cfg = DriftConfig(columns={"plan": {"psi": 10.0, "unseen_rate": 0.1, "action": "fail"}})
    report = compare(Profile(1000, {"plan": cur}), Profile(1000, {"plan": ref}), cfg)
    col = report.columns["plan"]
    assert col.unseen_rate == pytest.approx(0.3)
    expected = psi(np.array([0.4, 0.3, 0.0, 0.3, 0, 0]), np.array([0.5, 0.3, 0.2, 0.0, 0, 0]))
    assert col.psi == pytest.approx(expected)
    assert col.status == "fail" and report.failed == ["plan"]
    assert report.reasons() == ["drift: plan unseen categories 30.0% > 10% (fail)"]


def test_thresholds_give_warn_and_fail_with_reasons():
    rng = np.random.default_rng(3)
    ref = Profile(
        10_000, {"x": numeric(rng.normal(size=10_000)), "y": numeric(rng.normal(size=10_000))}
    )
    cur = Profile(
        10_000,
        {"x": numeric(rng.normal(2, size=10_000)), "y": numeric(rng.normal(2, size=10_000))},
    )
    cfg = DriftConfig(columns={"y": {"psi": 0.2, "action": "fail"}})
    report = compare(cur, ref, cfg, "m v1")
    assert report.columns["x"].status == "warn" and report.columns["y"].status == "fail"
    assert report.status == "fail" and report.failed == ["y"]
    assert report.reasons()[0].startswith("drift: x PSI ") and report.reasons()[0].endswith(
        "(warn)"
    )
    assert report.to_dict()["reference"] == "m v1"


def test_a_column_missing_from_the_reference_is_skipped():
    x = np.arange(100.0)
    report = compare(Profile(100, {"new": numeric(x)}), Profile(100, {}), DriftConfig())
    assert report.columns["new"].status == "skipped" and report.status == "skipped"


def test_json_round_trip():
    p = Profile(10, {"x": numeric(np.arange(10.0)), "s": categorical({"a": 7}, nulls=3)})
    assert Profile.from_json(p.to_json()) == p


def test_html_report_escapes_names_and_draws_every_column():
    ref = Profile(
        100, {"x": numeric(np.arange(100.0)), "s": categorical({"<script>": 60, "b": 40})}
    )
    cur = Profile(
        100, {"x": numeric(np.arange(100.0) + 5), "s": categorical({"<script>": 50, "b": 50})}
    )
    page = render_html(cur, ref, compare(cur, ref, DriftConfig(), "m v1"), "t <1>")
    assert "<script>" not in page and "&lt;script&gt;" in page and "t &lt;1&gt;" in page
    assert page.count("<svg") == 2 and "champion (m v1)" in page
    assert "<svg" in render_html(cur)  # without a reference: one series per chart
