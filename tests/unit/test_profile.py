"""Drift math on hand-built profiles: PSI against numpy, categorical shares, statuses, HTML;
the equal-width histograms read off the profile's quantile sketch."""

from __future__ import annotations

import numpy as np
import pytest

from rayline.config import DriftConfig
from rayline.data.drift import compare, numeric_bins, numeric_shares, psi
from rayline.data.profile import (
    ColumnProfile,
    Profile,
    _block_quantile_cls,
    _numeric_profile,
    histogram_edges,
    sketch_histogram,
)
from rayline.data.profile_html import render_html, write_html


def numeric(
    values: np.ndarray, nulls: int = 0, points: int = 101, hist: bool = False
) -> ColumnProfile:
    edges = histogram_edges(float(values.min()), float(values.max())) if hist else None
    return ColumnProfile(
        kind="numeric",
        type="float",
        count=len(values) + nulls,
        nulls=nulls,
        min=float(values.min()),
        max=float(values.max()),
        mean=float(values.mean()),
        std=float(values.std()),
        quantiles=[float(q) for q in np.quantile(values, np.linspace(0, 1, points))],
        histogram=[int(k) for k in np.histogram(values, edges)[0]] if hist else None,
        histogram_edges=edges,
    )


def categorical(counts: dict[str, int], nulls: int = 0, other: int = 0) -> ColumnProfile:
    return ColumnProfile(
        kind="categorical",
        type="string",
        distinct=len(counts),
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


def test_numeric_psi_with_nulls_matches_numpy_through_compare():
    rng = np.random.default_rng(4)
    ref, cur = rng.gamma(2.0, 20.0, size=40_000), rng.gamma(2.0, 24.0, size=40_000)
    rp, cp = numeric(ref, nulls=400), numeric(cur, nulls=4_000)
    full = [-np.inf, *np.quantile(ref, np.arange(1, 10) / 10), np.inf]
    r_sh = np.concatenate([[400 / 40_400], np.histogram(ref, full)[0] / 40_400])
    c_sh = np.concatenate([[4_000 / 44_000], np.histogram(cur, full)[0] / 44_000])
    report = compare(Profile(44_000, {"x": cp}), Profile(40_400, {"x": rp}), DriftConfig())
    assert report.columns["x"].psi == pytest.approx(psi(c_sh, r_sh), rel=0.05)
    assert report.columns["x"].bins[0] == "null" and len(report.columns["x"].bins) == 11


def test_bins_follow_the_reference_quantiles_at_any_resolution():
    x = np.random.default_rng(5).normal(size=10_000)
    coarse = numeric(x, points=51)  # a profile computed with quantiles=50
    edges = numeric_bins(coarse, 4)
    assert edges == pytest.approx(np.quantile(x, [0.25, 0.5, 0.75]), abs=0.05)
    assert numeric_shares(coarse, edges)[1:] == pytest.approx([0.25] * 4, abs=1e-9)
    assert numeric_shares(numeric(x), edges)[1:] == pytest.approx([0.25] * 4, abs=0.01)


def test_point_masses_dedupe_edges_and_compare_exactly():
    rng = np.random.default_rng(6)
    ref = numeric(rng.choice([1.0, 2.0, 3.0], p=[0.5, 0.3, 0.2], size=10_000).astype(float))
    edges = numeric_bins(ref, 10)
    assert edges == [1.0, 2.0, 3.0]
    assert numeric_shares(ref, edges)[1:] == pytest.approx([0.5, 0.3, 0.2, 0.0], abs=0.011)


def test_bool_columns_compare_their_true_share():
    def boolean(true: float, nulls: int = 0) -> ColumnProfile:
        return ColumnProfile(
            kind="numeric", type="bool", count=1000, nulls=nulls, min=0.0, max=1.0, mean=true
        )

    report = compare(
        Profile(1000, {"b": boolean(0.3, nulls=100)}),
        Profile(1000, {"b": boolean(0.6)}),
        DriftConfig(),
    )
    col = report.columns["b"]
    assert col.bins == ["null", "false", "true"]
    assert col.current_shares == pytest.approx([0.1, 0.63, 0.27])
    assert col.psi == pytest.approx(psi(np.array([0.1, 0.63, 0.27]), np.array([0, 0.4, 0.6])))


def test_unseen_rate_is_marked_an_upper_bound_when_the_reference_is_truncated():
    ref = categorical({"a": 500, "b": 300}, other=200)
    cur = categorical({"a": 500, "c": 500})
    col = compare(Profile(1000, {"s": cur}), Profile(1000, {"s": ref}), DriftConfig()).columns["s"]
    assert col.unseen_rate == pytest.approx(0.5)
    assert "upper bound" in col.note
    exact = compare(Profile(1000, {"s": cur}), Profile(1000, {"s": cur}), DriftConfig())
    assert exact.columns["s"].unseen_rate == 0.0 and exact.columns["s"].note == ""


def test_reasons_name_the_column_the_value_and_the_threshold():
    rng = np.random.default_rng(7)
    ref = Profile(5000, {"income": numeric(rng.normal(size=5000))})
    cur = Profile(5000, {"income": numeric(rng.normal(0.7, size=5000))})
    cfg = DriftConfig(default={"psi": 0.2, "action": "fail"})
    report = compare(cur, ref, cfg)
    value = report.columns["income"].psi
    assert report.reasons() == [f"drift: income PSI {value:.3f} > 0.2 (fail)"]
    assert report.to_dict()["failed"] == ["income"]
    relaxed = compare(cur, ref, DriftConfig(default={"psi": 10.0}))
    assert relaxed.status == "ok" and relaxed.reasons() == []
    assert relaxed.columns["income"].reason.endswith("<= 10 (ok)")


def test_columns_only_one_side_has_are_noted_not_failed():
    x = np.arange(100.0)
    cur = Profile(100, {"x": numeric(x), "s": numeric(x)})
    ref = Profile(100, {"x": numeric(x), "s": categorical({"a": 100}), "gone": numeric(x)})
    report = compare(cur, ref, DriftConfig(default={"psi": 0.0, "action": "fail"}))
    assert report.columns["gone"].status == "skipped"
    assert "not in this one" in report.columns["gone"].reason
    assert "was categorical" in report.columns["s"].reason
    assert report.failed == [] and report.status == "ok"  # x: PSI 0, not > 0


def test_json_is_plain_and_versioned():
    empty = ColumnProfile(kind="numeric", type="float", count=0, nulls=0)
    p = Profile(0, {"e": empty, "s": categorical({})})
    text = p.to_json()
    assert "NaN" not in text and '"format_version": 1' in text
    assert Profile.from_json(text) == p
    with pytest.raises(ValueError, match="format_version 99"):
        Profile.from_json(text.replace('"format_version": 1', '"format_version": 99'))


def test_html_without_drift_overlays_the_reference_and_folds_long_tails(tmp_path):
    counts = {f"c{i:03d}": 1000 - i for i in range(60)}
    cur = Profile(60_000, {"s": categorical(counts), "x": numeric(np.arange(500.0))})
    ref = Profile(60_000, {"s": categorical(counts), "x": numeric(np.arange(500.0) * 2)})
    page = render_html(cur, ref, None, "profile")
    assert "champion" in page and 'class="ref"' in page
    assert "c000" in page and "c019" in page and "c020" not in page and "(other)" in page
    assert "≤ 99.8" in page  # the reference's first decile edge labels the first bin
    out = write_html(tmp_path / "r" / "p.html", cur, ref, compare(cur, ref, DriftConfig()))
    assert out.read_text().startswith("<!doctype html>")
    assert render_html(cur).count('class="ref"') == 0


def _sketch(values: np.ndarray):
    from datasketches import kll_doubles_sketch

    sketch = kll_doubles_sketch(800)
    sketch.update(np.asarray(values, dtype=np.float64))
    return sketch


def test_histogram_counts_add_up_and_match_numpy_on_equal_width_bins():
    rng = np.random.default_rng(8)
    small = rng.gamma(2.0, 20.0, size=700)  # below the sketch's k: every item kept, exact
    edges, counts = sketch_histogram(_sketch(small), 20)
    assert len(edges) == 21 and edges[0] == small.min() and edges[-1] == small.max()
    assert np.diff(edges) == pytest.approx([np.ptp(small) / 20] * 20)
    assert counts == np.histogram(small, edges)[0].tolist() and sum(counts) == 700
    big = rng.normal(size=200_000)  # compacted: approximate counts, still adding up exactly
    edges, counts = sketch_histogram(_sketch(big), 20)
    assert sum(counts) == 200_000
    assert np.abs(np.array(counts) - np.histogram(big, edges)[0]).max() < 0.01 * 200_000


def test_integer_bins_hold_whole_values_and_constants_get_one_bin():
    ages = np.random.default_rng(9).integers(0, 5, size=700).astype(float)
    edges, counts = sketch_histogram(_sketch(ages), 20, integer=True)
    assert edges == [-0.5, 0.5, 1.5, 2.5, 3.5, 4.5]
    assert counts == [int((ages == v).sum()) for v in range(5)]
    assert sketch_histogram(_sketch(np.full(10, 3.0)), 20) == ([2.5, 3.5], [10])
    # 62 values (18..79) in bins of 4 whole values each: 16 bins, none a value short.
    assert histogram_edges(18, 79, 20, integer=True) == [17.5 + 4 * k for k in range(17)]
    from datasketches import kll_doubles_sketch

    assert sketch_histogram(kll_doubles_sketch(800), 20) is None


def test_the_profile_aggregate_gives_a_histogram_of_the_non_null_rows():
    """The profiling pass's quantile aggregate, fed blocks as Ray Data would (no cluster);
    700 rows stay below the sketch's k, so the counts are exact."""
    import pyarrow as pa

    rng = np.random.default_rng(10)
    values = rng.exponential(3.0, size=700)
    column = pa.array([None if i % 7 == 0 else v for i, v in enumerate(values)], pa.float64())
    agg = _block_quantile_cls()("x", [0.0, 0.5, 1.0], alias_name="q:x", histogram_bins=20)
    parts = [agg.aggregate_block(pa.table({"x": column.slice(i, 250)})) for i in (0, 250, 500)]
    sketched = agg.finalize(agg.combine(agg.combine(parts[0], parts[1]), parts[2]))
    non_null = column.drop_null().to_numpy()
    stats = {
        "n:x": len(non_null),
        "q:x": sketched,
        "min:x": non_null.min(),
        "max:x": non_null.max(),
        "mean:x": non_null.mean(),
        "std:x": non_null.std(),
    }
    col = _numeric_profile(stats, "x", 700, "float")
    assert col.nulls == 100 and sum(col.histogram) == col.count - col.nulls == len(non_null)
    assert len(col.histogram) == 20 and len(col.histogram_edges) == 21
    assert col.histogram == np.histogram(non_null, col.histogram_edges)[0].tolist()
    assert Profile.from_json(Profile(700, {"x": col}).to_json()).columns["x"] == col
    bools = _block_quantile_cls()("b", [0.0, 1.0], alias_name="q:b")  # no histogram asked
    assert bools.finalize(bools.aggregate_block(pa.table({"b": [0.0, 1.0]})))["edges"] is None


def test_html_draws_histograms_with_the_champion_overlaid():
    rng = np.random.default_rng(11)
    ref = Profile(4000, {"x": numeric(rng.normal(size=4000), hist=True)})
    cur = Profile(5000, {"x": numeric(rng.normal(3, 2, size=5000), nulls=50, hist=True)})
    page = render_html(cur, ref, compare(cur, ref, DriftConfig(), "m v1"))
    assert page.count('class="cur"') == 20  # one bar per equal-width bin of this run
    assert page.count('<path class="ref"') == 1 and "champion on its own bins" in page
    assert "share of non-null rows per bin" in page and "≤ " not in page  # no decile bars
    alone = render_html(cur)
    assert alone.count('class="cur"') == 20 and 'class="ref"' not in alone


def test_html_overlays_a_champion_profile_without_histogram_from_its_percentiles():
    rng = np.random.default_rng(12)
    old = Profile(4000, {"x": numeric(rng.normal(size=4000))})  # written before histograms
    new = Profile(4000, {"x": numeric(rng.normal(size=4000), hist=True)})
    page = render_html(new, old, compare(new, old, DriftConfig()))
    assert '<path class="ref"' in page and "read off its percentiles" in page
    # An old profile as this run's: its decile bars, noted, never a crash.
    back = render_html(old, new, compare(old, new, DriftConfig()))
    assert "has no histogram" in back and "≤ " in back and 'class="ref"' in back
