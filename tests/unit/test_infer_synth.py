"""Contract inference from batch summaries, and the synthetic dataset generator."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from rayline.config import validate_config
from rayline.data.infer import column_spec, merge_summaries, summarize_batch
from rayline.data.synth import column_names, synthetic_config, write_synthetic


def _infer(*batches: pd.DataFrame, native=None, max_categories=20):
    cols = list(batches[0].columns)
    parts = [r for b in batches for r in summarize_batch(b, cols).to_dict("records")]
    merged = merge_summaries(parts)
    return {c: column_spec(merged[c], (native or {}).get(c), max_categories) for c in cols}


def test_types_ranges_nulls_and_categories_from_text():
    a = pd.DataFrame(
        {
            "id": ["1", "2", "3"],
            "score": ["0.5", None, "2"],
            "flag": ["true", "False", "yes"],
            "plan": ["pro", "basic", "pro"],
            "label": ["0", "1", "1"],
        }
    )
    b = pd.DataFrame(
        {"id": ["10"], "score": ["-1.25"], "flag": ["no"], "plan": ["plus"], "label": ["0"]}
    )
    specs = _infer(a, b)
    assert specs["id"] == {"type": "int", "nullable": False, "min": 1, "max": 10}
    assert specs["score"] == {"type": "float", "nullable": True, "min": -1.25, "max": 2.0}
    assert specs["flag"] == {"type": "bool", "nullable": False}
    assert specs["plan"] == {
        "type": "string",
        "nullable": False,
        "allowed": ["basic", "plus", "pro"],
    }
    assert specs["label"]["allowed"] == [0, 1]


def test_a_mixed_column_is_text_and_many_values_get_no_allowed_list():
    df = pd.DataFrame({"v": ["1", "x", "2"], "name": [f"n{i}" for i in range(3)]})
    specs = _infer(df, max_categories=2)
    assert specs["v"]["type"] == "string"
    assert "allowed" not in specs["name"]


def test_native_types_win_and_all_null_columns_are_nullable_text():
    df = pd.DataFrame({"x": [1.0, 2.0], "empty": [None, None]})
    specs = _infer(df, native={"x": "float"})
    assert specs["x"] == {"type": "float", "nullable": False, "min": 1.0, "max": 2.0}
    assert specs["empty"] == {"type": "string", "nullable": True}


def test_inferred_spec_is_a_valid_contract():
    df = pd.DataFrame({"a": ["1", "2"], "b": ["x", "y"], "y": ["0", "1"]})
    specs = _infer(df)
    cfg = validate_config(
        {
            "name": "t",
            "data": {"path": "d", "target": "y"},
            "schema": {"columns": specs},
            "model": {"task": "classification"},
        }
    )
    assert cfg.schema_.columns["a"].type == "int"


def test_synthetic_data_is_deterministic_sharded_and_learnable(tmp_path):
    paths = write_synthetic(tmp_path / "a", rows=6000, cols=8, shards=3, seed=1)
    again = write_synthetic(tmp_path / "b", rows=6000, cols=8, shards=3, seed=1)
    digest = [hashlib.sha256(p.read_bytes()).hexdigest() for p in paths]
    assert digest == [hashlib.sha256(p.read_bytes()).hexdigest() for p in again]
    df = pd.concat(pq.read_table(p).to_pandas() for p in paths)
    numeric, categorical = column_names(8)
    assert len(df) == 6000 and df["row_id"].tolist() == list(range(6000))
    assert list(df.columns) == ["row_id", *numeric, *categorical, "label"]
    assert df["x1"].isna().mean() == pytest.approx(0.02, abs=0.01)
    assert 0.3 < df["label"].mean() < 0.7

    from sklearn.linear_model import LogisticRegression

    x = pd.get_dummies(df[numeric + categorical].fillna(0.0), columns=categorical).to_numpy(float)
    y = df["label"].to_numpy()
    model = LogisticRegression(max_iter=500).fit(x[:4000], y[:4000])
    assert model.score(x[4000:], y[4000:]) > 0.75  # the target carries learnable signal


def test_synthetic_config_matches_the_data(tmp_path):
    write_synthetic(tmp_path, rows=100, cols=8)
    cfg = validate_config(synthetic_config(str(tmp_path), 8))
    assert set(cfg.schema_.columns) == set(pq.read_schema(tmp_path / "part-00000.parquet").names)
    assert np.isclose(sum([cfg.data.split.train, cfg.data.split.val, cfg.data.split.test]), 1)
