"""Behaviour of the shared inference path (rayline.inference), without Ray or MLflow."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from rayline.data.features import FittedPreprocessor
from rayline.inference import PROBA_PREFIX, Predictor, output_from_frame
from rayline.train.models import build_model

LINEAR = {"builder": "mlp", "hidden_sizes": []}
MLP = {"builder": "mlp", "hidden_sizes": [4], "activation": "tanh"}


def make_prep(
    task: str = "classification", classes=("cat", "dog", "eel"), **kw
) -> FittedPreprocessor:
    return FittedPreprocessor(
        task=task,
        target="label",
        classes=list(classes) if task == "classification" else None,
        numeric=[
            {"name": "a", "mean": 1.0, "std": 2.0, "fill": 1.0},
            {"name": "b", "mean": 0.0, "std": 1.0, "fill": 0.0},
        ],
        categorical=[{"name": "c", "categories": ["x", "y"]}],
        input_types={"a": "float", "b": "float", "c": "string"},
        **kw,
    )


def linear_state(
    prep: FittedPreprocessor,
) -> tuple[dict[str, torch.Tensor], np.ndarray, np.ndarray]:
    """A fixed linear model: logits = x @ W.T + bias."""
    out_dim, in_dim = prep.num_outputs, prep.output_dim
    w = (np.arange(out_dim * in_dim, dtype=np.float32).reshape(out_dim, in_dim) - 3) / 4
    bias = np.linspace(-0.5, 0.5, out_dim, dtype=np.float32)
    model = build_model(LINEAR, in_dim, out_dim)
    keys = list(model.state_dict())
    assert keys == ["0.weight", "0.bias"]
    return {"0.weight": torch.from_numpy(w), "0.bias": torch.from_numpy(bias)}, w, bias


def seeded_state(prep: FittedPreprocessor, spec: dict) -> dict[str, torch.Tensor]:
    torch.manual_seed(7)
    return build_model(spec, prep.output_dim, prep.num_outputs).state_dict()


ROWS = pd.DataFrame(
    {
        "a": [3.0, -1.0, np.nan, 1.0],
        "b": [0.5, 2.0, -1.0, 0.0],
        "c": ["x", "y", None, "zzz"],
    }
)


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


# -- classification ---------------------------------------------------------------------------------
def test_classification_matches_hand_computation():
    prep = make_prep()
    state, w, bias = linear_state(prep)
    frame = Predictor(prep, LINEAR, state).predict_frame(ROWS)

    x = np.array(
        [
            [1.0, 0.5, 1, 0],
            [-1.0, 2.0, 0, 1],
            [0.0, -1.0, 0, 0],
            [0.0, 0.0, 0, 0],
        ]
    )
    want = softmax(x @ w.T.astype(np.float64) + bias)
    assert list(frame.columns) == [
        "prediction",
        f"{PROBA_PREFIX}cat",
        f"{PROBA_PREFIX}dog",
        f"{PROBA_PREFIX}eel",
    ]
    probs = frame[[f"{PROBA_PREFIX}{c}" for c in prep.classes]].to_numpy()
    np.testing.assert_allclose(probs, want, rtol=1e-5)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-6)
    assert list(frame["prediction"]) == [prep.classes[i] for i in want.argmax(axis=1)]
    assert len(set(frame["prediction"])) > 1  # the fixture exercises more than one class


def test_int_labels_keep_their_type():
    prep = make_prep(classes=[0, 1, 2])
    state, w, bias = linear_state(prep)
    frame = Predictor(prep, LINEAR, state).predict_frame(ROWS)
    assert frame["prediction"].dtype == np.int64
    assert list(frame.columns[1:]) == ["probability_0", "probability_1", "probability_2"]
    probs = frame[list(frame.columns[1:])].to_numpy()
    np.testing.assert_array_equal(frame["prediction"].to_numpy(), probs.argmax(axis=1))


def test_string_labels_stay_strings():
    prep = make_prep()
    state, _, _ = linear_state(prep)
    frame = Predictor(prep, LINEAR, state).predict_frame(ROWS)
    assert all(isinstance(v, str) for v in frame["prediction"])
    assert set(frame["prediction"]) <= {"cat", "dog", "eel"}


def test_output_matches_model_on_transformed_rows():
    prep = make_prep()
    state = seeded_state(prep, MLP)
    pred = Predictor(prep, MLP, state)
    model = build_model(MLP, prep.output_dim, prep.num_outputs)
    model.load_state_dict(state)
    with torch.no_grad():
        logits = model(torch.from_numpy(prep.transform(ROWS))).numpy()
    np.testing.assert_allclose(pred.output(ROWS), softmax(logits.astype(np.float64)), rtol=1e-5)


def test_extra_columns_and_column_order_are_ignored():
    prep = make_prep()
    state, _, _ = linear_state(prep)
    pred = Predictor(prep, LINEAR, state)
    noisy = ROWS[["c", "b", "a"]].assign(label="cat", junk=[1, 2, 3, 4])
    pd.testing.assert_frame_equal(pred.predict_frame(noisy), pred.predict_frame(ROWS))


def test_missing_input_column_is_named():
    prep = make_prep()
    state, _, _ = linear_state(prep)
    pred = Predictor(prep, LINEAR, state)
    with pytest.raises(ValueError, match=r"missing column\(s\) b") as exc:
        pred.predict_frame(ROWS.drop(columns=["b"]))
    assert "the model reads a, b, c" in str(exc.value)
    with pytest.raises(ValueError, match=r"missing column\(s\) a, c"):
        pred.predict_frame(ROWS[["b"]])


def test_wrong_state_dict_is_rejected():
    prep = make_prep()
    with pytest.raises(RuntimeError):
        Predictor(prep, LINEAR, seeded_state(prep, MLP))


# -- regression -------------------------------------------------------------------------------------
def test_regression_returns_only_prediction_on_target_scale():
    prep = make_prep(task="regression", target_mean=50.0, target_std=10.0)
    state, w, bias = linear_state(prep)
    frame = Predictor(prep, LINEAR, state).predict_frame(ROWS)
    assert list(frame.columns) == ["prediction"]
    x = prep.transform(ROWS).astype(np.float64)
    want = (x @ w.T.astype(np.float64) + bias).reshape(-1) * 10.0 + 50.0
    np.testing.assert_allclose(frame["prediction"].to_numpy(), want, rtol=1e-5)
    np.testing.assert_allclose(output_from_frame(frame, prep), want, rtol=1e-5)


# -- output_from_frame ------------------------------------------------------------------------------
def test_output_from_frame_round_trips_own_predictions():
    prep = make_prep()
    state, _, _ = linear_state(prep)
    pred = Predictor(prep, LINEAR, state)
    np.testing.assert_allclose(output_from_frame(pred.predict_frame(ROWS), prep), pred.output(ROWS))


def test_output_from_frame_aligns_classes_by_name():
    prep = make_prep(classes=["cat", "dog", "eel"])
    champion = pd.DataFrame(
        {
            "prediction": ["eel", "dog"],
            "probability_eel": [0.7, 0.1],
            "probability_cat": [0.2, 0.3],
            "probability_dog": [0.1, 0.6],
        }
    )
    out = output_from_frame(champion, prep)
    np.testing.assert_allclose(out, [[0.2, 0.1, 0.7], [0.3, 0.6, 0.1]])


def test_output_from_frame_fills_absent_classes_with_zero():
    prep = make_prep(classes=[0, 1, 2])
    champion = pd.DataFrame(
        {"prediction": [1, 0], "probability_1": [0.9, 0.2], "probability_0": [0.1, 0.8]}
    )
    out = output_from_frame(champion, prep)
    assert out.shape == (2, 3)
    np.testing.assert_allclose(out, [[0.1, 0.9, 0.0], [0.8, 0.2, 0.0]])


# -- loading from files -----------------------------------------------------------------------------
@pytest.mark.parametrize("classes", [("cat", "dog", "eel"), (0, 1, 2)])
def test_from_files_round_trip(tmp_path, classes):
    prep = make_prep(classes=classes)
    state = seeded_state(prep, MLP)
    prep.save(tmp_path / "preprocessor.json")
    (tmp_path / "model.json").write_text(json.dumps(MLP))
    torch.save(state, tmp_path / "weights.pt")

    loaded = Predictor.from_files(
        tmp_path / "preprocessor.json", tmp_path / "model.json", tmp_path / "weights.pt"
    )
    assert loaded.prep == prep
    assert loaded.model_spec == MLP
    direct = Predictor(prep, MLP, state).predict_frame(ROWS)
    pd.testing.assert_frame_equal(loaded.predict_frame(ROWS), direct)


def test_from_files_refuses_pickled_code(tmp_path):
    prep = make_prep()
    prep.save(tmp_path / "preprocessor.json")
    (tmp_path / "model.json").write_text(json.dumps(LINEAR))
    torch.save(
        {"0.weight": torch.zeros(3, 4), "0.bias": torch.zeros(3), "x": object()}, tmp_path / "w.pt"
    )
    with pytest.raises(Exception, match="(?i)weights_only|unsupported|global"):
        Predictor.from_files(
            tmp_path / "preprocessor.json", tmp_path / "model.json", tmp_path / "w.pt"
        )
