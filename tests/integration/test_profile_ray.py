"""compute_profile on a real Ray Dataset: one aggregate pass whose numbers match pandas."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

pytestmark = pytest.mark.integration

TYPES = {
    "income": "float",
    "age": "int",
    "active": "bool",
    "plan": "string",
    "gone": "float",
    "label": "string",
}


def _table(n: int = 4000) -> pd.DataFrame:
    rng = np.random.default_rng(11)
    df = pd.DataFrame(
        {
            "income": rng.gamma(2.0, 20.0, size=n),
            "age": rng.integers(18, 80, size=n).astype(np.int64),
            "active": rng.random(n) < 0.6,
            "plan": rng.choice(
                ["basic", "plus", "pro", "<b>vip</b>"], p=[0.5, 0.3, 0.15, 0.05], size=n
            ),
            "gone": np.full(n, np.nan),
            "label": [f"u{i % 150}" for i in range(n)],  # 150 categories: past top_k
        }
    )
    df.loc[rng.choice(n, size=n // 20, replace=False), "income"] = np.nan
    df["plan"] = df["plan"].astype(object)
    df.loc[rng.choice(n, size=37, replace=False), "plan"] = None
    df["active"] = df["active"].astype(object)
    df.loc[rng.choice(n, size=n // 40, replace=False), "active"] = None
    return df


def _count_aggregate_calls(monkeypatch, cls) -> list[int]:
    calls: list[int] = []
    original = cls.aggregate

    def counting(self, *aggs):
        calls.append(len(aggs))
        return original(self, *aggs)

    monkeypatch.setattr(cls, "aggregate", counting)
    return calls


@pytest.mark.parametrize("where", ["ray_data", "in_process"])
def test_profile_matches_pandas_in_one_aggregate_pass(ray_session, monkeypatch, where):
    """A Ray Dataset, or a small split in this process (the profile stage's LocalSplit):
    the same statistics from the same aggregations."""
    import ray.data

    from rayline.data.features import LocalSplit
    from rayline.data.profile import QUANTILES, Profile, compute_profile

    df = _table()
    if where == "ray_data":
        # Four blocks, so the per-block partial aggregates really are combined.
        ds = ray.data.from_pandas([df.iloc[i::4] for i in range(4)])
    else:
        ds = LocalSplit(df)
    calls = _count_aggregate_calls(
        monkeypatch, ray.data.Dataset if where == "ray_data" else LocalSplit
    )
    prof = compute_profile(ds, TYPES, top_k=100)
    assert len(calls) == 1, "the profile must take exactly one Dataset.aggregate pass"
    assert prof.rows == len(df)

    for c in ("income", "age", "active"):
        col, s = prof.columns[c], df[c].astype(float)
        assert (col.count, col.nulls) == (len(df), int(s.isna().sum()))
        assert (col.min, col.max) == (s.min(), s.max())
        assert col.mean == pytest.approx(s.mean(), rel=1e-9)
        assert col.std == pytest.approx(s.std(ddof=0), rel=1e-9)
        assert len(col.quantiles) == len(QUANTILES)
        assert (col.quantiles[0], col.quantiles[-1]) == (col.min, col.max)
        # Each quantile's rank in the data (a range when values tie) is within 2% of its p.
        values = np.sort(s.dropna().to_numpy())
        lo = np.searchsorted(values, col.quantiles, side="left") / len(values)
        hi = np.searchsorted(values, col.quantiles, side="right") / len(values)
        p = np.array(QUANTILES)
        assert np.all((lo <= p + 0.02) & (hi >= p - 0.02)), c
    assert prof.columns["income"].nulls == len(df) // 20
    assert prof.columns["active"].nulls == len(df) // 40

    plan = prof.columns["plan"]
    assert plan.nulls == 37 and plan.distinct == 4 and plan.other_count == 0
    assert plan.top == df["plan"].value_counts().to_dict()
    assert list(plan.top) == list(df["plan"].value_counts().index)  # most frequent first

    label = prof.columns["label"]
    counts = df["label"].value_counts()
    expected = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:100]
    assert label.top == dict(expected) and label.distinct == 150
    assert label.other_count == len(df) - sum(label.top.values())

    gone = prof.columns["gone"]  # all null: no statistics, and no NaN in the JSON
    assert gone.nulls == len(df) and gone.mean is None and gone.quantiles is None
    assert Profile.from_json(prof.to_json()) == prof


def test_empty_dataset_profiles_to_zero_rows(ray_session):
    import ray.data

    from rayline.config import DriftConfig
    from rayline.data.drift import compare
    from rayline.data.profile import Profile, compute_profile

    df = _table(100).iloc[:0]
    prof = compute_profile(ray.data.from_pandas(df), TYPES)
    assert prof.rows == 0
    assert all(c.count == 0 and c.nulls == 0 for c in prof.columns.values())
    assert prof.columns["income"].mean is None and prof.columns["plan"].top == {}
    assert Profile.from_json(prof.to_json()) == prof
    assert compare(prof, prof, DriftConfig()).status == "ok"
