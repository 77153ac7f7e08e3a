"""Behaviour of the fitted preprocessor (rayline.data.features), without Ray."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from rayline.data.features import (
    FORMAT_VERSION,
    BatchTransform,
    FittedPreprocessor,
    numeric_state,
    target_state,
)
from rayline.errors import DataValidationError


def make_prep(**kw) -> FittedPreprocessor:
    base = dict(
        task="classification",
        target="label",
        classes=["no", "yes"],
        numeric=[
            {"name": "age", "mean": 40.0, "std": 10.0, "fill": 40.0},
            {"name": "const", "mean": 3.0, "std": 0.0, "fill": 3.0},
        ],
        categorical=[{"name": "city", "categories": ["paris", "oslo", "lima"]}],
        input_types={"age": "float", "const": "float", "city": "string", "label": "string"},
    )
    base.update(kw)
    return FittedPreprocessor(**base)


FRAME = pd.DataFrame(
    {
        "age": [50.0, np.nan, 20.0, 40.0],
        "const": [3.0, 5.0, np.nan, 1.0],
        "city": ["oslo", "tokyo", None, "paris"],
        "label": ["yes", "no", "no", "yes"],
    }
)


# -- shape -----------------------------------------------------------------------------------------
def test_feature_names_and_output_dim_onehot():
    prep = make_prep()
    assert prep.feature_names == ["age", "const", "city=paris", "city=oslo", "city=lima"]
    assert prep.output_dim == 5
    assert prep.input_columns == ["age", "const", "city"]
    assert prep.num_outputs == 2


def test_feature_names_and_output_dim_index():
    prep = make_prep(encoding="index")
    assert prep.feature_names == ["age", "const", "city#index"]
    assert prep.output_dim == 3


def test_regression_has_one_output():
    prep = make_prep(task="regression", classes=None)
    assert prep.num_outputs == 1


# -- transform ---------------------------------------------------------------------------------------
def test_transform_onehot_matches_hand_computation():
    x = make_prep().transform(FRAME)
    age = np.array([50.0, 40.0, 20.0, 40.0])  # NaN -> mean fill 40
    const = np.array([3.0, 5.0, 3.0, 1.0]) - 3.0  # std 0 -> divide by 1, NaN -> fill 3
    city = np.array(
        [
            [0, 1, 0],  # oslo
            [0, 0, 0],  # tokyo: unseen -> all zeros
            [0, 0, 0],  # null -> all zeros
            [1, 0, 0],  # paris
        ],
        dtype=np.float64,
    )
    want = np.column_stack([(age - 40.0) / 10.0, const, city])
    assert x.dtype == np.float32
    assert x.shape == (4, 5)
    np.testing.assert_allclose(x, want, rtol=1e-6)
    assert np.isfinite(x).all()


def test_transform_index_encoding_unknown_is_zero():
    x = make_prep(encoding="index").transform(FRAME)
    assert x.shape == (4, 3)
    # paris=1, oslo=2, lima=3; unseen and null -> 0
    np.testing.assert_array_equal(x[:, 2], np.array([2, 0, 0, 1], dtype=np.float32))


def test_transform_without_standardize_only_imputes():
    x = make_prep(standardize=False).transform(FRAME)
    np.testing.assert_allclose(x[:, 0], [50.0, 40.0, 20.0, 40.0])
    np.testing.assert_allclose(x[:, 1], [3.0, 5.0, 3.0, 1.0])


def test_zero_fill_imputation():
    prep = make_prep(numeric=[{"name": "age", "mean": 40.0, "std": 10.0, "fill": 0.0}])
    x = prep.transform(FRAME)
    np.testing.assert_allclose(x[:, 0], [1.0, -4.0, -2.0, 0.0], rtol=1e-6)


def test_numeric_text_and_nullable_types_are_accepted():
    prep = make_prep(categorical=[])
    df = pd.DataFrame(
        {
            "age": pd.Series(["50", None, "x"], dtype=object),
            "const": pd.array([3, None, 4], dtype="Int64"),
        }
    )
    x = prep.transform(df)
    np.testing.assert_allclose(x[:, 0], [1.0, 0.0, 0.0], rtol=1e-6)  # unparsable -> fill
    np.testing.assert_allclose(x[:, 1], [0.0, 0.0, 1.0], rtol=1e-6)


def test_bool_numeric_column():
    prep = make_prep(
        numeric=[{"name": "flag", "mean": 0.25, "std": 0.5, "fill": 0.25}], categorical=[]
    )
    x = prep.transform(pd.DataFrame({"flag": pd.array([True, False, None], dtype="boolean")}))
    np.testing.assert_allclose(x[:, 0], [1.5, -0.5, 0.0], rtol=1e-6)


def test_categorical_numbers_match_string_categories():
    prep = make_prep(numeric=[], categorical=[{"name": "zip", "categories": ["75", "10"]}])
    x = prep.transform(pd.DataFrame({"zip": pd.array([10, 75, 99, None], dtype="Int64")}))
    np.testing.assert_array_equal(x, [[0, 1], [1, 0], [0, 0], [0, 0]])


def test_transform_keeps_row_order_for_sliced_frames():
    prep = make_prep()
    x_all = prep.transform(FRAME)
    x_tail = prep.transform(FRAME.iloc[2:])
    np.testing.assert_array_equal(x_tail, x_all[2:])


def test_transform_with_no_features_and_empty_frame():
    prep = make_prep(numeric=[], categorical=[])
    assert prep.transform(FRAME).shape == (4, 0)
    assert make_prep().transform(FRAME.iloc[:0]).shape == (0, 5)


def test_transform_ignores_extra_columns():
    prep = make_prep()
    extra = FRAME.assign(unused=["a", "b", "c", "d"])
    np.testing.assert_array_equal(prep.transform(extra), prep.transform(FRAME))


# -- targets ----------------------------------------------------------------------------------------
def test_encode_and_decode_string_labels():
    prep = make_prep()
    y = prep.encode_target(FRAME["label"])
    assert y.dtype == np.int64
    np.testing.assert_array_equal(y, [1, 0, 0, 1])
    assert list(prep.decode_labels(y)) == ["yes", "no", "no", "yes"]


def test_encode_and_decode_int_labels():
    prep = make_prep(classes=[0, 1, 2])
    y = prep.encode_target(pd.Series([2, 0, 1, 2]))
    np.testing.assert_array_equal(y, [2, 0, 1, 2])
    # Floats of integer value and numpy ints find their class too.
    np.testing.assert_array_equal(prep.encode_target(pd.Series([2.0, 0.0])), [2, 0])
    np.testing.assert_array_equal(prep.encode_target(pd.array([1, 2], dtype="Int64")), [1, 2])
    labels = prep.decode_labels(np.array([2, 0]))
    assert list(labels) == [2, 0]
    assert all(isinstance(v, int) for v in labels)


def test_unknown_label_raises_naming_it():
    prep = make_prep()
    with pytest.raises(ValueError, match="maybe"):
        prep.encode_target(pd.Series(["yes", "maybe"]))
    with pytest.raises(ValueError, match="not among the known classes"):
        make_prep(classes=[0, 1]).encode_target(pd.Series([0, 7]))


def test_regression_target_round_trip():
    prep = make_prep(task="regression", classes=None, target_mean=100.0, target_std=20.0)
    values = pd.Series([80.0, 100.0, 150.0])
    y = prep.encode_target(values)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, [-1.0, 0.0, 2.5])
    back = prep.decode_output(y.reshape(-1, 1))
    assert back.shape == (3,)
    np.testing.assert_allclose(back, values.to_numpy())
    np.testing.assert_allclose(prep.true_values(values), values.to_numpy())


def test_true_values_for_classification_are_indices():
    prep = make_prep()
    np.testing.assert_array_equal(prep.true_values(pd.Series(["no", "yes"])), [0, 1])


def test_decode_output_softmax():
    prep = make_prep(classes=["a", "b", "c"])
    raw = np.array([[0.0, 0.0, 0.0], [1.0, 2.0, 3.0], [1000.0, 0.0, -1000.0]])
    p = prep.decode_output(raw)
    assert p.shape == (3, 3)
    np.testing.assert_allclose(p.sum(axis=1), 1.0)
    np.testing.assert_allclose(p[0], [1 / 3] * 3)
    e = np.exp([1.0, 2.0, 3.0])
    np.testing.assert_allclose(p[1], e / e.sum())
    assert np.isfinite(p).all()  # large logits do not overflow
    np.testing.assert_allclose(p[2], [1.0, 0.0, 0.0], atol=1e-12)


# -- persistence ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "prep",
    [
        make_prep(),
        make_prep(classes=[0, 1, 2], encoding="index", standardize=False),
        make_prep(task="regression", classes=None, target_mean=3.5, target_std=0.25),
    ],
)
def test_json_round_trip(prep):
    text = prep.to_json()
    assert json.loads(text)["format_version"] == FORMAT_VERSION
    back = FittedPreprocessor.from_json(text)
    assert back == prep
    np.testing.assert_array_equal(back.transform(FRAME), prep.transform(FRAME))


def test_save_and_load(tmp_path):
    prep = make_prep(classes=[0, 1])
    path = tmp_path / "prep.json"
    prep.save(path)
    loaded = FittedPreprocessor.load(path)
    assert loaded == prep
    assert loaded.classes == [0, 1] and all(isinstance(c, int) for c in loaded.classes)


@pytest.mark.parametrize("version", [FORMAT_VERSION + 1, 0, None])
def test_wrong_format_version_is_rejected(version):
    data = json.loads(make_prep().to_json())
    if version is None:
        del data["format_version"]
    else:
        data["format_version"] = version
    with pytest.raises(ValueError, match=f"preprocessor format {version} is not supported"):
        FittedPreprocessor.from_json(json.dumps(data))


# -- the map_batches callable -------------------------------------------------------------------------
def test_batch_transform_classification():
    out = BatchTransform(make_prep())(FRAME)
    assert set(out) == {"x", "y"}
    assert out["x"].dtype == np.float32 and out["x"].shape == (4, 5)
    assert out["y"].dtype == np.int64
    np.testing.assert_array_equal(out["y"], [1, 0, 0, 1])
    np.testing.assert_array_equal(out["x"], make_prep().transform(FRAME))


def test_batch_transform_without_target():
    out = BatchTransform(make_prep(), with_target=False)(FRAME.drop(columns=["label"]))
    assert set(out) == {"x"}
    assert out["x"].dtype == np.float32


def test_batch_transform_regression_target_is_float32():
    prep = make_prep(
        task="regression", classes=None, target="age", target_mean=40.0, target_std=10.0
    )
    prep.numeric = [prep.numeric[1]]
    out = BatchTransform(prep)(FRAME.fillna({"age": 40.0}))
    assert out["y"].dtype == np.float32
    np.testing.assert_allclose(out["y"], [1.0, 0.0, -2.0, 0.0])


# -- user transform references ------------------------------------------------------------------
@pytest.mark.parametrize(
    "ref, match",
    [
        ("tests.unit.no_such_module:fn", "cannot import module 'tests.unit.no_such_module'"),
        ("tests.unit.user_models:missing", r"has no attribute 'missing'; define missing\(df\)"),
        ("not-a-path", "is not an import path; write it as 'package.module:function'"),
    ],
)
def test_user_transform_that_cannot_load_is_an_import_error(ref, match):
    from rayline.data.features import _user_fn

    with pytest.raises(ImportError, match=match) as info:
        _user_fn(ref)
    assert f"user transform '{ref}'" in str(info.value)


def test_user_transform_is_loaded_once(monkeypatch):
    from rayline.data import features

    monkeypatch.setattr(features, "_USER_FNS", {})
    fn = features._user_fn("tests.unit.user_models:build")
    assert features._user_fn("tests.unit.user_models:build") is fn
    assert list(features._USER_FNS) == ["tests.unit.user_models:build"]


# -- fitted statistics must be finite ------------------------------------------------------------
INF = float("inf")


def test_numeric_state_from_finite_and_empty_columns():
    stats = {
        "mean:age": 40.0,
        "std:age": 10.0,
        "lo:age": 18.0,
        "hi:age": 80.0,
        "mean:empty": None,  # all null on the train split
        "std:empty": None,
        "mean:const": 3.0,
        "std:const": 0.0,
    }
    assert numeric_state(stats, ["age", "empty", "const"], "mean") == [
        {"name": "age", "mean": 40.0, "std": 10.0, "fill": 40.0},
        {"name": "empty", "mean": 0.0, "std": 1.0, "fill": 0.0},
        {"name": "const", "mean": 3.0, "std": 1.0, "fill": 3.0},
    ]


REMEDY = (
    " there (let through by schema.columns.income.allow_inf, or made by a user transform). "
    "Give 'income' a transform chain that clips them first (features.transforms.income: "
    "[{op: clip, lower: ..., upper: ...}, {op: standardize}]), or remove allow_inf so that "
    "rows with inf are quarantined"
)


@pytest.mark.parametrize(
    ("stats", "what", "shown", "holds"),
    [
        # What Ray Data reports for a column with inf in half its rows.
        (
            {"mean:income": INF, "std:income": float("nan"), "hi:income": INF},
            "mean",
            "inf",
            "inf values",
        ),
        # inf and -inf cancel: no mean at all, the bounds tell it from an empty column.
        (
            {"mean:income": None, "std:income": None, "lo:income": -INF, "hi:income": INF},
            "mean",
            "undefined",
            "-inf and inf values",
        ),
        # Finite values too large for float64 arithmetic.
        (
            {"mean:income": 1e300, "std:income": INF, "lo:income": 0.0, "hi:income": 1e308},
            "std",
            "inf",
            "inf or -inf values (or values too large for float64 arithmetic)",
        ),
    ],
)
def test_a_numeric_statistic_that_is_not_finite_is_a_data_error(stats, what, shown, holds):
    with pytest.raises(DataValidationError) as e:
        numeric_state(stats, ["income"], "mean")
    assert str(e.value) == (
        f"features: the train-split {what} of 'income' is not finite ({shown}): the column "
        f"holds {holds}" + REMEDY
    )


def test_a_regression_target_that_is_not_finite_is_a_data_error():
    assert target_state({"target_mean": 5.0, "target_std": 2.0}, "y") == (5.0, 2.0)
    assert target_state({"target_mean": None, "target_std": 0.0}, "y") == (0.0, 1.0)
    with pytest.raises(DataValidationError) as e:
        target_state({"target_mean": INF, "target_std": None, "hi:target": INF}, "y")
    assert str(e.value) == (
        "features: the train-split mean of 'y' is not finite (inf): the column holds inf values "
        "there (let through by schema.columns.y.allow_inf, or made by a user transform). A "
        "regression target must be finite: fix the data, or remove allow_inf so that rows with "
        "inf are quarantined"
    )
