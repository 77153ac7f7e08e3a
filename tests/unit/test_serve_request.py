"""The request parsing of ``rayline serve`` (:mod:`rayline.serve_request`) and its helpers."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from rayline.serve_request import BadRequest, InputSpec, frame_output, load_json, parse_rows

SPEC = InputSpec(
    ("age", "income", "active", "plan"),
    {"age": "int", "income": "float", "active": "bool", "plan": "string"},
)
ROW = {"age": 40, "income": 1.5, "active": True, "plan": "pro"}


def _bad(body, max_rows: int = 10) -> BadRequest:
    with pytest.raises(BadRequest) as info:
        parse_rows(body, SPEC, max_rows)
    return info.value


def test_records_columns_and_a_bare_list_give_the_same_frame():
    rows = [ROW, {"age": None, "income": None, "active": False, "plan": None}]
    by_records = parse_rows(json.dumps({"records": rows}).encode(), SPEC, 10)
    by_columns = parse_rows(
        json.dumps({"columns": {c: [r[c] for r in rows] for c in SPEC.columns}}), SPEC, 10
    )
    bare = parse_rows(json.dumps(rows), SPEC, 10)
    for df in (by_columns, bare):
        pd.testing.assert_frame_equal(df, by_records)
    assert list(by_records.columns) == list(SPEC.columns)
    assert by_records["age"].dtype == "float64" and np.isnan(by_records["age"][1])
    assert by_records["plan"].tolist() == ["pro", None]


def test_int_columns_stay_ints_without_nulls_and_key_order_does_not_matter():
    df = parse_rows([{"plan": "x", "active": True, "income": 2, "age": 3}], SPEC, 10)
    assert df["age"].dtype == "int64" and df["income"].dtype == "float64"
    assert df["active"].dtype == "bool"


@pytest.mark.parametrize(
    "body,status,code,words",
    [
        (b"{not json", 400, "not_json", ["not JSON"]),
        (b"   ", 400, "empty", ["empty"]),
        (b"\xff", 400, "not_json", ["UTF-8"]),
        (b'[{"age": Infinity}]', 400, "not_json", ["Infinity"]),
        (b"[" * 100_000, 400, "not_json", []),
        (b"3", 400, "wrong_shape", ["a number"]),
        (b"{}", 400, "wrong_shape", ["empty object"]),
        ({"rows": []}, 400, "wrong_shape", ["'rows'"]),
        ({"records": [ROW], "extra": 1}, 400, "wrong_shape", ["'extra'"]),
        ({"records": [ROW], "columns": {}}, 400, "wrong_shape", ["not both"]),
        ({"records": "x"}, 400, "wrong_shape", ["'records'"]),
        ({"columns": [1]}, 400, "wrong_shape", ["'columns'"]),
        ([ROW, "x"], 400, "wrong_shape", ["row 1"]),
        ([], 400, "empty", ["no rows"]),
        ({"columns": {c: [] for c in SPEC.columns}}, 400, "empty", ["no rows"]),
        ([ROW] * 11, 413, "too_many_rows", ["11 rows", "at most 10"]),
        ([{**ROW, "x": 1}], 400, "unknown_column", ["'x'", "age, income"]),
        ([ROW, {k: v for k, v in ROW.items() if k != "age"}], 400, "missing_column",
         ["row 1", "'age'"]),
        ([{**ROW, "age": "40"}], 400, "wrong_type", ["'age' (int)", '"40"', "a string"]),
        ([{**ROW, "age": True}], 400, "wrong_type", ["'age'", "a boolean"]),
        ([{**ROW, "income": {"a": 1}}], 400, "wrong_type", ["'income'", "an object"]),
        ([{**ROW, "active": 1}], 400, "wrong_type", ["'active' (bool)", "true or false"]),
        ([{**ROW, "plan": 7}], 400, "wrong_type", ["'plan' (string)", "a string"]),
        ([ROW, {**ROW, "income": 1e999}], 400, "wrong_type", ["row 1", "out of range"]),
        ({"columns": {"age": [1, 2], "income": [1], "active": [True], "plan": ["a"]}}, 400,
         "wrong_shape", ["differ in length"]),
        ({"columns": {"age": 1, "income": [1], "active": [True], "plan": ["a"]}}, 400,
         "wrong_shape", ["'age'"]),
        ({"columns": {"age": [1], "income": [1], "active": [True]}}, 400, "missing_column",
         ["'plan'"]),
        ({"columns": {"age": ["x"], "income": [1], "active": [True], "plan": ["a"]}}, 400,
         "wrong_type", ["'age'", "value 0"]),
    ],
)  # fmt: skip
def test_bad_bodies_name_the_problem(body, status, code, words):
    exc = _bad(body)
    assert (exc.status, exc.problem) == (status, code), exc.message
    for word in words:
        assert word in exc.message
    assert exc.body() == {"error": code, "message": exc.message}


def test_a_long_value_is_cut_in_the_message():
    exc = _bad([{**ROW, "plan": ["x" * 500]}])
    assert exc.problem == "wrong_type" and len(exc.message) < 300


def test_untyped_columns_take_any_scalar():
    spec = InputSpec(("a",), {"a": None})
    assert parse_rows([{"a": 1}, {"a": "x"}, {"a": None}], spec, 5)["a"].tolist() == [1, "x", None]
    with pytest.raises(BadRequest, match="'a'"):
        parse_rows([{"a": [1]}], spec, 5)


def test_load_json_refuses_non_json_numbers():
    assert load_json(b'{"a": 1.5}') == {"a": 1.5}
    with pytest.raises(BadRequest, match="NaN"):
        load_json("[NaN]")


def test_frame_output_keeps_the_class_types():
    frame = pd.DataFrame(
        {"prediction": [1, 0], "probability_0": [0.2, 0.9], "probability_1": [0.8, 0.1]}
    )
    out = frame_output(frame, [0, 1])
    assert out == {
        "predictions": [1, 0],
        "classes": [0, 1],
        "probabilities": [[0.2, 0.8], [0.9, 0.1]],
    }
    assert frame_output(frame, None)["classes"] == ["0", "1"]
    assert frame_output(pd.DataFrame({"prediction": [2.5]})) == {"predictions": [2.5]}


def test_the_spec_from_a_signature():
    from mlflow.types.schema import AnyType, ColSpec, DataType, Schema

    spec = InputSpec.from_signature(
        Schema([ColSpec(AnyType(), "x"), ColSpec(DataType.string, "s")])
    )
    assert spec.columns == ("x", "s") and spec.types == {"x": None, "s": "string"}
    assert spec.describe() == [{"name": "x", "type": "any"}, {"name": "s", "type": "string"}]


# -- the command's helpers (rayline.serve_app) ------------------------------------------------
def test_target_host_and_token_helpers(tmp_path, monkeypatch):
    from rayline.serve_app import (
        TOKEN_ENV,
        is_loopback,
        parse_target,
        public_uri,
        read_token,
        token_digest,
    )

    assert parse_target("m", None) == ("m", None)
    assert parse_target("m@staging", None) == ("m", "staging")
    assert parse_target("m", "x") == ("m", "x")
    assert parse_target("m@x", "x") == ("m", "x")
    for bad in ("@x", "m@", ""):
        with pytest.raises(ValueError, match="NAME or NAME@alias"):
            parse_target(bad, None)
    with pytest.raises(ValueError, match="--alias"):
        parse_target("m@a", "b")
    assert all(is_loopback(h) for h in ("127.0.0.1", "127.1.2.3", "::1", "localhost"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "10.0.0.1", "::", "example.com"))
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    assert read_token(None) is None
    monkeypatch.setenv(TOKEN_ENV, "t" * 20)
    assert read_token(None) == "t" * 20
    f = tmp_path / "tok"
    f.write_text("s" * 16 + "\nsecond line\n")
    assert read_token(str(f)) == "s" * 16  # the file wins over the environment
    f.write_text("short\n")
    with pytest.raises(ValueError, match="at least 16"):
        read_token(str(f))
    with pytest.raises(ValueError, match="cannot read"):
        read_token(str(tmp_path / "none"))
    assert token_digest(None) is None and len(token_digest("x" * 16)) == 64
    assert public_uri("http://u:p@host:5000/x") == "http://host:5000/x"
    assert public_uri("sqlite:////a/b.db") == "sqlite:////a/b.db"


def test_verify_webhook_against_mlflows_own_signature():
    from mlflow.webhooks.delivery import _generate_hmac_signature

    from rayline.serve_request import verify_webhook

    body = json.dumps({"entity": "model_version_alias", "action": "created", "data": {}})
    now = 1_800_000_000

    def headers(secret="s3cret", stamp=str(now), delivery="d-1"):
        return {
            "x-mlflow-signature": _generate_hmac_signature(secret, delivery, stamp, body),
            "x-mlflow-timestamp": stamp,
            "x-mlflow-delivery-id": delivery,
        }

    assert verify_webhook("s3cret", headers(), body.encode(), now)["action"] == "created"
    assert verify_webhook("s3cret", headers(stamp=str(now - 299)), body.encode(), now)
    cases = [
        ({}, "unsigned"),
        ({k: v for k, v in headers().items() if k != "x-mlflow-delivery-id"}, "unsigned"),
        (headers(secret="other"), "bad_signature"),
        ({**headers(), "x-mlflow-delivery-id": "d-2"}, "bad_signature"),  # replayed as another
        (headers(stamp=str(now - 301)), "stale"),
        (headers(stamp="soon"), "stale"),
    ]
    for hdrs, code in cases:
        with pytest.raises(BadRequest) as info:
            verify_webhook("s3cret", hdrs, body.encode(), now)
        assert (info.value.status, info.value.problem) == (401, code)
    with pytest.raises(BadRequest, match="signature"):  # signed, then tampered with
        verify_webhook("s3cret", headers(), body.encode() + b" ", now)
