"""Per-column transform chains: each step's math against numpy, terminal steps, expressions,
stable hashing, and the preprocessor's layout and JSON with chains."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from rayline.config import validate_config
from rayline.data.features import FittedPreprocessor
from rayline.data.transforms import (
    apply_chain,
    eval_expression,
    fit_step,
    parse_expression,
    stable_hash,
)
from rayline.errors import DataValidationError

X = pd.Series([1.0, None, 4.0, 9.0, 100.0])


def test_numeric_steps_match_numpy():
    imp = fit_step(
        {"op": "impute", "strategy": "median", "indicator": True}, "c", {"impute:c": [4.0]}
    )
    std = {"op": "standardize", "mean": 2.0, "std": 4.0}
    dense, idx = apply_chain([imp, {"op": "log1p"}, std], X)
    assert idx is None
    x = np.array([1.0, 4.0, 4.0, 9.0, 100.0])
    np.testing.assert_allclose(dense[:, 0], [0, 1, 0, 0, 0])  # was-missing indicator
    np.testing.assert_allclose(dense[:, 1], (np.log1p(x) - 2.0) / 4.0)

    mm = fit_step({"op": "minmax"}, "c", {"minmax:c:min": 1.0, "minmax:c:max": 9.0})
    np.testing.assert_allclose(apply_chain([mm], pd.Series([1.0, 5.0, 9.0]))[0][:, 0], [0, 0.5, 1])
    rb = fit_step({"op": "robust"}, "c", {"robust:c": [2.0, 4.0, 10.0]})
    np.testing.assert_allclose(apply_chain([rb], pd.Series([4.0, 12.0]))[0][:, 0], [0.0, 1.0])
    clip = fit_step({"op": "clip", "upper_quantile": 0.9, "lower": 0}, "c", {"clip:c": [0.0, 9.0]})
    np.testing.assert_allclose(apply_chain([clip], X)[0][:, 0], [1, 0, 4, 9, 9])  # null -> 0


def test_impute_strategies():
    assert fit_step({"op": "impute", "strategy": "mean"}, "c", {"impute:c": 2.5})["fill"] == 2.5
    vc = {"values": [1.0, 3.0, None], "counts": [5, 7, 9]}
    assert fit_step({"op": "impute", "strategy": "mode"}, "c", {"impute:c": vc})["fill"] == 3.0
    const = fit_step({"op": "impute", "strategy": "constant", "value": -1}, "c", {})
    np.testing.assert_allclose(apply_chain([const], X)[0][:, 0], [1, -1, 4, 9, 100])


def test_bucketize_onehot_and_index():
    b = fit_step(
        {"op": "bucketize", "quantiles": 3, "output": "onehot"}, "c", {"bucketize:c": [2.0, 5.0]}
    )
    dense, _ = apply_chain([b], pd.Series([1.0, 2.0, 3.0, 7.0, None]))
    np.testing.assert_array_equal(dense.argmax(axis=1)[:4], [0, 1, 1, 2])
    assert dense[4].sum() == 0  # null: no bucket
    bi = dict(b, output="index")
    _, idx = apply_chain([bi], pd.Series([1.0, 7.0, None]))
    np.testing.assert_array_equal(idx, [1, 3, 0])


def test_category_steps_with_frequency_cutoff():
    vc = {"values": ["a", "b", "c", None], "counts": [10, 3, 1, 4]}
    idx_step = fit_step({"op": "index", "min_frequency": 2}, "s", {"index:s": vc})
    assert idx_step["categories"] == ["a", "b"]
    _, idx = apply_chain([idx_step], pd.Series(["b", "c", None, "a"]))
    np.testing.assert_array_equal(idx, [2, 0, 0, 1])
    oh = fit_step({"op": "onehot", "max_categories": 1}, "s", {"onehot:s": vc})
    dense, _ = apply_chain([oh], pd.Series(["a", "b"]))
    np.testing.assert_array_equal(dense, [[1], [0]])


def test_hash_is_stable_across_processes():
    h = stable_hash(pd.Series(["alice", "bob", None]), 1000)
    # Fixed values: pandas' SipHash with rayline's key, independent of PYTHONHASHSEED.
    assert h.tolist() == stable_hash(pd.Series(["alice", "bob", None]), 1000).tolist()
    assert h.tolist() == [int(x) for x in h] and all(0 <= x < 1000 for x in h)
    import subprocess
    import sys

    code = (
        "import pandas as pd; from rayline.data.transforms import stable_hash;"
        "print(stable_hash(pd.Series(['alice','bob',None]), 1000).tolist())"
    )
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(other.stdout) == h.tolist()


def test_datetime_parts_plain_and_cyclic():
    ts = pd.Series(["2026-11-27T06:00:00Z", "2026-11-29T18:00:00Z", None])
    dense, _ = apply_chain([{"op": "datetime", "parts": ["dayofweek", "hour"]}], ts)
    np.testing.assert_array_equal(dense, [[4, 6], [6, 18], [0, 0]])
    cyc, _ = apply_chain([{"op": "datetime", "parts": ["hour"], "cyclic": True}], ts)
    np.testing.assert_allclose(cyc[0], [1.0, 0.0], atol=1e-12)  # 06:00 is a quarter turn
    np.testing.assert_allclose(cyc[1], [-1.0, 0.0], atol=1e-12)


def test_expressions():
    df = pd.DataFrame({"a": [1.0, 2.0, None], "b": [3.0, 0.0, 1.0]})
    np.testing.assert_allclose(
        eval_expression("a / (b + 1) + log1p(b)", df)[:2], [0.25 + np.log1p(3), 2.0]
    )
    assert np.isnan(eval_expression("a * 2", df)[2])
    assert np.isnan(eval_expression("a / b", df)[1])  # division by zero: missing, not inf
    assert parse_expression("max(a, b) ** 2 - -a")[1] == ["a", "b"]
    for bad in ("__import__('os')", "a.b", "a if b else 1", "open('x')", "a[0]", "'x'"):
        with pytest.raises(ValueError, match="not allowed|is not an expression"):
            parse_expression(bad)


def _cfg(features):
    return {
        "name": "t",
        "data": {"path": "d", "target": "y"},
        "schema": {
            "columns": {"x": {"type": "float"}, "s": {"type": "string"}, "y": {"type": "int"}}
        },
        "model": {"task": "classification"},
        "features": features,
    }


def test_config_errors_name_the_step():
    from rayline.errors import ConfigError

    with pytest.raises(ConfigError) as err:
        validate_config(
            _cfg(
                {
                    "transforms": {
                        "x": [{"op": "onehot"}],
                        "s": [{"op": "log1p"}],
                        "nope": [{"op": "log1p"}],
                        "y": [{"op": "standardize"}],
                    },
                    "derived": {"r": "x / s", "q": "os.system(1)"},
                    "user": ["not-a-path"],
                }
            )
        )
    text = str(err.value)
    assert "features.transforms.x[0]: 'onehot' needs a string column" in text
    assert "features.transforms.s[0]: 'log1p' needs a numeric column" in text
    assert "features.transforms.y: the target cannot be a feature" in text
    assert "features.derived.r: 's' is not a numeric input column" in text
    assert "features.derived.q:" in text and "not allowed" in text
    assert "features.user: 'not-a-path'" in text
    with pytest.raises(ConfigError, match="features.transforms.nope: not a schema column"):
        validate_config(_cfg({"transforms": {"nope": [{"op": "log1p"}]}}))
    with pytest.raises(ConfigError, match="must be the last step"):
        validate_config(
            _cfg({"transforms": {"x": [{"op": "bucketize", "edges": [1]}, {"op": "log1p"}]}})
        )


def test_preprocessor_with_chains_layout_and_json():
    prep = FittedPreprocessor(
        task="classification",
        target="y",
        classes=[0, 1],
        numeric=[{"name": "ratio", "mean": 0.0, "std": 1.0, "fill": 0.0}],
        categorical=[],
        chains={
            "x": [
                {"op": "impute", "strategy": "mean", "fill": 1.0, "indicator": True},
                {"op": "log1p"},
            ],
            "s": [{"op": "index", "categories": ["a", "b"]}],
        },
        derived={"ratio": "x * 2"},
        raw_inputs=["x", "s"],
    )
    assert prep.feature_names == ["ratio", "x#missing", "x", "s#index"]
    assert prep.embedding_layout() == (3, [3])
    out = prep.transform(pd.DataFrame({"x": [None, 3.0], "s": ["b", "zz"]}))
    np.testing.assert_allclose(
        out, [[np.nan_to_num(np.nan, nan=0.0), 1, np.log1p(1.0), 2], [6, 0, np.log1p(3.0), 0]]
    )
    again = FittedPreprocessor.from_json(prep.to_json())
    np.testing.assert_array_equal(
        again.transform(pd.DataFrame({"x": [2.0], "s": ["a"]})),
        prep.transform(pd.DataFrame({"x": [2.0], "s": ["a"]})),
    )
    assert prep.input_columns == ["x", "s"]


def test_version_1_documents_still_load():
    v1 = {
        "task": "regression",
        "target": "y",
        "classes": None,
        "numeric": [{"name": "x", "mean": 1.0, "std": 2.0, "fill": 1.0}],
        "categorical": [],
        "encoding": "onehot",
        "standardize": True,
        "input_types": {"x": "float"},
        "target_mean": 0.0,
        "target_std": 1.0,
        "format_version": 1,
    }
    prep = FittedPreprocessor.from_json(json.dumps(v1))
    np.testing.assert_allclose(prep.transform(pd.DataFrame({"x": [3.0, None]})), [[1.0], [0.0]])


# -- fitted statistics must be finite --------------------------------------------------------------
INF = float("inf")
NAN = float("nan")
TAIL = (
    " there (let through by schema.columns.income.allow_inf, or made by a user transform). "
    "Put a clip step with fixed lower and upper bounds before the {op} step, or remove "
    "allow_inf so that rows with inf are quarantined"
)


@pytest.mark.parametrize(
    ("step", "stats", "what", "shown", "holds"),
    [
        (
            {"op": "standardize"},
            {"standardize:C:mean": INF, "standardize:C:std": NAN, "standardize:C:hi": INF},
            "mean",
            "inf",
            "inf values",
        ),
        # inf and -inf cancel: Ray Data reports no mean at all, the bounds tell.
        (
            {"op": "standardize"},
            {"standardize:C:mean": None, "standardize:C:lo": -INF, "standardize:C:hi": INF},
            "mean",
            "undefined",
            "-inf and inf values",
        ),
        (
            {"op": "impute", "strategy": "mean"},
            {"impute:C": None, "impute:C:lo": -INF, "impute:C:hi": 3.0},
            "mean",
            "-inf",
            "-inf values",
        ),
        (
            {"op": "minmax"},
            {"minmax:C:min": 0.0, "minmax:C:max": INF},
            "max",
            "inf",
            "inf or -inf values (or values too large for float64 arithmetic)",
        ),
        (
            {"op": "robust"},
            {"robust:C": [1.0, 2.0, INF]},
            "0.75 quantile",
            "inf",
            "inf or -inf values (or values too large for float64 arithmetic)",
        ),
        (
            {"op": "clip", "upper_quantile": 0.99},
            {"clip:C": [0.0, INF]},
            "0.99 quantile",
            "inf",
            "inf or -inf values (or values too large for float64 arithmetic)",
        ),
        (
            {"op": "bucketize", "quantiles": 3},
            {"bucketize:C": [1.0, INF]},
            "quantile edge",
            "inf",
            "inf or -inf values (or values too large for float64 arithmetic)",
        ),
        (
            {"op": "impute", "strategy": "median"},
            {"impute:C": [INF]},
            "median",
            "inf",
            "inf or -inf values (or values too large for float64 arithmetic)",
        ),
        (
            {"op": "impute", "strategy": "mode"},
            {"impute:C": {"values": [INF, 1.0], "counts": [9, 2]}},
            "mode",
            "inf",
            "inf or -inf values (or values too large for float64 arithmetic)",
        ),
    ],
)
def test_a_fitted_statistic_that_is_not_finite_names_the_column_and_the_fix(
    step, stats, what, shown, holds
):
    column = "__chain:income"  # what fit_chains passes: the chain's temporary column
    stats = {k.replace(":C", f":{column}"): v for k, v in stats.items()}
    with pytest.raises(DataValidationError) as e:
        fit_step(step, column, stats)
    op = step["op"]
    assert str(e.value) == (
        f"features.transforms.income ({op} step): the train-split {what} of 'income' is not "
        f"finite ({shown}): the column holds {holds}" + TAIL.format(op=op)
    )


def test_finite_statistics_and_empty_columns_still_fit():
    finite = {
        "standardize:c:mean": 2.0,
        "standardize:c:std": 0.5,
        "standardize:c:lo": -1.0,
        "standardize:c:hi": 9.0,
    }
    assert fit_step({"op": "standardize"}, "c", finite) == {
        "op": "standardize",
        "mean": 2.0,
        "std": 0.5,
    }
    # An all-null column: no statistic at all -> the neutral defaults, as before.
    empty = {"standardize:c:mean": None, "standardize:c:std": None, "standardize:c:lo": None}
    assert fit_step({"op": "standardize"}, "c", empty) == {
        "op": "standardize",
        "mean": 0.0,
        "std": 1.0,
    }
    assert fit_step({"op": "robust"}, "c", {"robust:c": []})["iqr"] == 1.0
    assert fit_step({"op": "clip", "upper_quantile": 0.9}, "c", {"clip:c": []})["upper"] is None
    # A clip with fixed bounds is the fix: no statistic, inf is clipped when applied.
    clip = fit_step({"op": "clip", "lower": 0.0, "upper": 10.0}, "c", {})
    np.testing.assert_allclose(
        apply_chain([clip], pd.Series([INF, -INF, 3.0]))[0][:, 0], [10, 0, 3]
    )
