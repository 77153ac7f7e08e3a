"""Behaviour of the data contract (rayline.data.validate): row rules and file schema checks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rayline.config import ColumnSpec
from rayline.data.ingest import resolve_sources
from rayline.data.readers import parse_csv
from rayline.data.validate import (
    REASON_COL,
    RULES_COL,
    check_file_schemas,
    validate_batch,
)
from rayline.errors import DataValidationError


def spec(type_: str, **kw) -> ColumnSpec:
    return ColumnSpec(type=type_, **kw)


def reasons(out: pd.DataFrame) -> list[str | None]:
    return [None if pd.isna(r) else r for r in out[REASON_COL]]


def rules(out: pd.DataFrame) -> list[str | None]:
    return [None if pd.isna(r) else r for r in out[RULES_COL]]


# -- type coercion ---------------------------------------------------------------------------------
def test_float_strings_are_parsed_and_bad_ones_quoted():
    out = validate_batch(pd.DataFrame({"x": ["1.5", "abc", "-2", "1e3"]}), {"x": spec("float")})
    assert out["x"].dtype == np.float64
    assert out["x"].iloc[0] == 1.5
    assert np.isnan(out["x"].iloc[1])
    assert out["x"].iloc[2] == -2.0
    assert out["x"].iloc[3] == 1000.0
    assert reasons(out) == [None, "x: not a float ('abc')", None, None]


def test_int_strings_are_parsed_and_bad_ones_quoted():
    out = validate_batch(pd.DataFrame({"n": ["7", "seven", "-3"]}), {"n": spec("int")})
    assert str(out["n"].dtype) == "Int64"
    assert out["n"].iloc[0] == 7 and out["n"].iloc[2] == -3
    assert out["n"].isna().tolist() == [False, True, False]
    assert reasons(out) == [None, "n: not a int ('seven')", None]


def test_int_column_rejects_fractional_values():
    out = validate_batch(pd.DataFrame({"n": ["1.5", "2", "2.0"]}), {"n": spec("int")})
    assert reasons(out) == ["n: not a int ('1.5')", None, None]
    assert out["n"].isna().tolist() == [True, False, False]
    assert out["n"].iloc[1] == 2 and out["n"].iloc[2] == 2


def test_int_column_rejects_native_fractional_float():
    out = validate_batch(pd.DataFrame({"n": [1.0, 1.5]}), {"n": spec("int")})
    assert reasons(out) == [None, "n: not a int (1.5)"]


def test_int_beyond_float_precision_is_kept_exactly():
    big = 2**53 + 1  # float64 would round this to 2**53
    # Alone, beside a bad value, beside a float literal, natively typed: always exact, so a
    # value (and the split hashed from it) never depends on the rest of its batch.
    for raw in ([str(big), "1"], [str(big), "x"], [str(big), "2.0"], [f"{big}.0", "1"], [big, 1]):
        out = validate_batch(pd.DataFrame({"n": raw}), {"n": spec("int", nullable=True)})
        assert int(out["n"].iloc[0]) == big, raw
        assert pd.isna(out[REASON_COL].iloc[0]), raw


def test_int64_limits_are_accepted():
    lo, hi = -(2**63), 2**63 - 1
    out = validate_batch(pd.DataFrame({"n": [str(lo), str(hi), "2.0"]}), {"n": spec("int")})
    assert [int(v) for v in out["n"]] == [lo, hi, 2]
    assert reasons(out) == [None, None, None]


def test_int_beyond_int64_is_a_bad_row_not_a_crash():
    out = validate_batch(
        pd.DataFrame({"n": ["99999999999999999999", "5", "inf", "9223372036854775808", "2.0"]}),
        {"n": spec("int")},
    )
    assert reasons(out) == [
        "n: not a int ('99999999999999999999')",
        None,
        "n: not a int ('inf')",
        "n: not a int ('9223372036854775808')",
        None,
    ]
    assert out["n"].iloc[1] == 5 and out["n"].iloc[4] == 2


def test_bool_strings_are_parsed_and_bad_ones_quoted():
    raw = ["true", "False", "YES", "n", " 1 ", "0", "maybe"]
    out = validate_batch(pd.DataFrame({"b": raw}), {"b": spec("bool")})
    assert str(out["b"].dtype) == "boolean"
    assert out["b"].iloc[:6].tolist() == [True, False, True, False, True, False]
    assert pd.isna(out["b"].iloc[6])
    assert reasons(out) == [None] * 6 + ["b: not a bool ('maybe')"]


def test_native_bools_pass_unchanged():
    out = validate_batch(pd.DataFrame({"b": [True, False]}), {"b": spec("bool")})
    assert out["b"].tolist() == [True, False]
    assert reasons(out) == [None, None]


def test_string_column_accepts_anything_as_text():
    out = validate_batch(pd.DataFrame({"s": ["a", 3, 1.5]}), {"s": spec("string")})
    assert out["s"].tolist() == ["a", "3", "1.5"]
    assert reasons(out) == [None, None, None]


# -- nulls -----------------------------------------------------------------------------------------
def test_null_in_non_nullable_column_is_bad():
    out = validate_batch(pd.DataFrame({"x": [1.0, None, np.nan]}), {"x": spec("float")})
    assert reasons(out) == [
        None,
        "x: null in a non-nullable column",
        "x: null in a non-nullable column",
    ]


def test_null_in_nullable_column_is_allowed():
    cols = {"x": spec("float", nullable=True), "s": spec("string", nullable=True)}
    out = validate_batch(pd.DataFrame({"x": [None, 1.0], "s": [None, "a"]}), cols)
    assert reasons(out) == [None, None]
    assert out["x"].isna().tolist() == [True, False]
    assert out["s"].isna().tolist() == [True, False]


def test_unparsable_value_is_not_also_reported_as_null():
    out = validate_batch(pd.DataFrame({"x": ["oops"]}), {"x": spec("float")})
    assert reasons(out) == ["x: not a float ('oops')"]


# -- range and allowed values ----------------------------------------------------------------------
def test_min_and_max():
    out = validate_batch(
        pd.DataFrame({"x": [-1.0, 0.0, 5.0, 10.0, 10.5]}), {"x": spec("float", min=0, max=10)}
    )
    assert reasons(out) == ["x: -1 < min 0", None, None, None, "x: 10.5 > max 10"]


def test_min_max_on_int_column_parsed_from_text():
    out = validate_batch(pd.DataFrame({"n": ["3", "11"]}), {"n": spec("int", min=1, max=10)})
    assert reasons(out) == [None, "n: 11 > max 10"]


def test_null_is_not_checked_against_bounds():
    out = validate_batch(
        pd.DataFrame({"x": [None]}), {"x": spec("float", nullable=True, min=0, max=1)}
    )
    assert reasons(out) == [None]


def test_allowed_values():
    out = validate_batch(
        pd.DataFrame({"s": ["a", "c", "b"]}), {"s": spec("string", allowed=["a", "b"])}
    )
    assert reasons(out) == [None, "s: 'c' not in allowed values", None]


def test_allowed_values_on_int_column():
    out = validate_batch(pd.DataFrame({"n": ["1", "2", "4"]}), {"n": spec("int", allowed=[1, 2])})
    assert reasons(out) == [None, None, "n: 4 not in allowed values"]


def test_null_is_not_checked_against_allowed_values():
    out = validate_batch(
        pd.DataFrame({"s": [None]}), {"s": spec("string", nullable=True, allowed=["a"])}
    )
    assert reasons(out) == [None]


# -- reasons and output shape ----------------------------------------------------------------------
def test_multiple_reasons_are_joined_in_column_order():
    cols = {
        "x": spec("float", max=1),
        "n": spec("int"),
        "s": spec("string", allowed=["a"]),
    }
    out = validate_batch(pd.DataFrame({"x": ["2"], "n": [None], "s": ["z"]}), cols)
    assert reasons(out) == [
        "x: 2 > max 1; n: null in a non-nullable column; s: 'z' not in allowed values"
    ]


def test_good_rows_have_null_reason():
    cols = {"x": spec("float"), "s": spec("string")}
    out = validate_batch(pd.DataFrame({"x": ["1", "bad", "3"], "s": ["a", "b", "c"]}), cols)
    assert out[REASON_COL].isna().tolist() == [True, False, True]


def test_output_keeps_only_declared_columns_plus_reason():
    df = pd.DataFrame({"extra": [1, 2], "x": [1.0, 2.0], "s": ["a", "b"]})
    out = validate_batch(df, {"s": spec("string"), "x": spec("float")})
    assert list(out.columns) == ["s", "x", REASON_COL, RULES_COL]
    assert len(out) == 2


def test_output_has_fresh_index_for_a_sliced_batch():
    df = pd.DataFrame({"x": [1.0, 2.0, 3.0, 4.0]}).iloc[2:]
    out = validate_batch(df, {"x": spec("float")})
    assert list(out.index) == [0, 1]
    assert out["x"].tolist() == [3.0, 4.0]
    assert reasons(out) == [None, None]


def test_missing_declared_column_makes_every_row_bad():
    cols = {"x": spec("float"), "y": spec("float")}
    out = validate_batch(pd.DataFrame({"x": [1.0, 2.0]}), cols)
    assert out["y"].isna().all()
    assert reasons(out) == ["y: null in a non-nullable column"] * 2


def test_empty_batch():
    out = validate_batch(pd.DataFrame({"x": pd.Series([], dtype=object)}), {"x": spec("float")})
    assert len(out) == 0
    assert list(out.columns) == ["x", REASON_COL, RULES_COL]


# -- file schema checks ------------------------------------------------------------------------------
def write_parquet(path, data: dict) -> str:
    pq.write_table(pa.table(data), path)
    return str(path)


def test_parquet_with_matching_schema_passes_and_returns_footer_row_counts(tmp_path):
    a = write_parquet(tmp_path / "a.parquet", {"x": [1.5], "n": [1], "b": [True], "s": ["a"]})
    b = write_parquet(
        tmp_path / "b.parquet",
        {"x": [0.5, 2.0, 3.5], "n": [2, 3, 4], "b": [False, True, False], "s": ["b", "c", "d"]},
    )
    cols = {"x": spec("float"), "n": spec("int"), "b": spec("bool"), "s": spec("string")}
    # One count per file, by the name the user gave, straight from the footers.
    assert check_file_schemas(resolve_sources(str(tmp_path)), cols) == {a: 1, b: 3}
    assert check_file_schemas(resolve_sources(a), cols) == {a: 1}


def test_parquet_missing_column_names_file_and_column(tmp_path):
    p = write_parquet(tmp_path / "a.parquet", {"x": [1.5]})
    with pytest.raises(DataValidationError) as exc:
        check_file_schemas(resolve_sources(p), {"x": spec("float"), "y": spec("float")})
    msg = str(exc.value)
    assert p in msg
    assert "missing column(s) y" in msg
    assert "file has: x" in msg


def test_parquet_string_where_float_declared(tmp_path):
    p = write_parquet(tmp_path / "a.parquet", {"x": ["1.5"]})
    with pytest.raises(DataValidationError) as exc:
        check_file_schemas(resolve_sources(p), {"x": spec("float")})
    msg = str(exc.value)
    assert p in msg
    assert "column 'x' has type string" in msg
    assert "declares float" in msg
    assert "schema.columns.x.type" in msg


def test_parquet_float_where_int_declared(tmp_path):
    p = write_parquet(tmp_path / "a.parquet", {"n": [1.0]})
    with pytest.raises(DataValidationError) as exc:
        check_file_schemas(resolve_sources(p), {"n": spec("int")})
    msg = str(exc.value)
    assert p in msg
    assert "column 'n' has type double" in msg
    assert "declares int" in msg
    assert "schema.columns.n.type" in msg


def test_parquet_int_accepted_for_float(tmp_path):
    p = write_parquet(tmp_path / "a.parquet", {"x": pa.array([1, 2], type=pa.int32())})
    cols = {"x": spec("float")}
    assert check_file_schemas(resolve_sources(p), cols) == {p: 2}
    # ... and its rows become good float rows, not quarantined ones.
    out = validate_batch(pq.read_table(p).to_pandas(), cols)
    assert out["x"].dtype == np.float64
    assert out["x"].tolist() == [1.0, 2.0]
    assert reasons(out) == [None, None]


@pytest.mark.parametrize("type_", ["int", "float", "bool", "string"])
def test_parquet_all_null_column_accepted_for_any_type(tmp_path, type_):
    p = write_parquet(tmp_path / "a.parquet", {"x": pa.array([None, None], type=pa.null())})
    assert check_file_schemas(resolve_sources(p), {"x": spec(type_)}) == {p: 2}
    # The file passes; whether its nulls are allowed is each row's business.
    table = pq.read_table(p).to_pandas()
    out = validate_batch(table, {"x": spec(type_, nullable=True)})
    assert out["x"].isna().all() and reasons(out) == [None, None]
    out = validate_batch(table, {"x": spec(type_)})
    assert reasons(out) == ["x: null in a non-nullable column"] * 2
    assert rules(out) == ["x.nullable"] * 2


def test_problems_in_every_file_are_listed(tmp_path):
    a = write_parquet(tmp_path / "a.parquet", {"x": ["s"]})
    b = write_parquet(tmp_path / "b.parquet", {"z": [1.0]})
    with pytest.raises(DataValidationError) as exc:
        check_file_schemas(resolve_sources(str(tmp_path)), {"x": spec("float")})
    lines = str(exc.value).splitlines()
    assert any(a in line and "column 'x'" in line for line in lines)
    assert any(b in line and "missing column(s) x" in line for line in lines)


def test_csv_missing_column_names_file_and_column(tmp_path):
    p = tmp_path / "a.csv"
    p.write_text("x,s\n1.5,a\n")
    with pytest.raises(DataValidationError) as exc:
        check_file_schemas(resolve_sources(str(p)), {"x": spec("float"), "n": spec("int")})
    assert str(p) in str(exc.value)
    assert "missing column(s) n" in str(exc.value)


def test_csv_types_are_left_to_row_validation(tmp_path):
    p = tmp_path / "a.csv"
    p.write_text("x,n\nabc,1.5\n2.5,3\n")
    cols = {"x": spec("float"), "n": spec("int")}
    # CSV values are text; bad values are quarantined row by row, not rejected per file,
    # and a text file records no row count.
    assert check_file_schemas(resolve_sources(str(p)), cols) is None
    with p.open("rb") as f:
        table = pa.concat_tables(parse_csv(f, str(p), list(cols)))
    out = validate_batch(table.to_pandas(), cols)
    assert reasons(out) == ["x: not a float ('abc'); n: not a int ('1.5')", None]
    assert rules(out) == ["x.type,n.type", None]
    assert out["x"].isna().tolist() == [True, False] and out["x"].iloc[1] == 2.5
    assert out["n"].isna().tolist() == [True, False] and out["n"].iloc[1] == 3


def test_corrupt_parquet_names_the_file(tmp_path):
    p = tmp_path / "broken.parquet"
    p.write_bytes(b"this is not parquet at all" * 10)
    with pytest.raises(DataValidationError) as exc:
        check_file_schemas(resolve_sources(str(p)), {"x": spec("float")})
    msg = str(exc.value)
    assert str(p) in msg
    assert "cannot read" in msg and "as parquet" in msg


def test_empty_csv_names_the_file(tmp_path):
    p = tmp_path / "empty.csv"
    p.write_bytes(b"")
    with pytest.raises(DataValidationError) as exc:
        check_file_schemas(resolve_sources(str(p)), {"x": spec("float")})
    assert str(p) in str(exc.value)


def test_each_broken_rule_is_named_by_id():
    cols = {
        "age": spec("int", min=0, max=120),
        "plan": spec("string", allowed=["free", "pro"]),
        "email": spec("string", nullable=True, regex=r"[^@\s]+@[^@\s]+\.[a-z]+"),
    }
    df = pd.DataFrame(
        {
            "age": ["30", "-1", "x", None, "200"],
            "plan": ["free", "gold", "pro", "pro", "free"],
            "email": ["a@b.io", "a@b.io", None, "no-at-sign", "A@B.IO"],
        }
    )
    out = validate_batch(df, cols)
    assert rules(out) == [
        None,
        "age.min,plan.allowed",
        "age.type",
        "age.nullable,email.regex",
        "age.max,email.regex",
    ]
    assert reasons(out)[3] == (
        "age: null in a non-nullable column; email: 'no-at-sign' does not match the regex "
        + cols["email"].regex
    )


def test_regex_must_match_in_full():
    out = validate_batch(
        pd.DataFrame({"code": ["AB-123456", "AB-1234567", "xAB-123456"]}),
        {"code": spec("string", regex=r"[A-Z]{2}-[0-9]{6}")},
    )
    assert rules(out) == [None, "code.regex", "code.regex"]


def test_duplicated_values_of_a_unique_column_are_all_flagged():
    out = validate_batch(
        pd.DataFrame({"id": ["1", "2", "3", "2"]}),
        {"id": spec("int", unique=True)},
        duplicates={"id": {2}},
    )
    assert rules(out) == [None, "id.unique", None, "id.unique"]
    assert reasons(out)[1] == "id: duplicate value 2"


def test_an_unreadable_row_keeps_its_reason_and_is_not_checked_again():
    df = pd.DataFrame(
        {
            "x": ["1.5", None],
            REASON_COL: [None, "unreadable row: f.csv line 3: expected 2 fields, got 3"],
        }
    )
    out = validate_batch(df, {"x": spec("float")})
    assert rules(out) == [None, "row.unreadable"]
    assert reasons(out) == [None, "unreadable row: f.csv line 3: expected 2 fields, got 3"]


def test_regex_on_a_numeric_column_is_a_config_error():
    with pytest.raises(ValueError, match="regex applies to string columns"):
        spec("float", regex="x")
    with pytest.raises(ValueError, match="does not compile"):
        spec("string", regex="(")


# -- non-finite numbers --------------------------------------------------------------------------
def test_inf_in_a_float_column_breaks_the_finite_rule():
    out = validate_batch(
        pd.DataFrame({"income": [1.0, np.inf, -np.inf, 2.5]}), {"income": spec("float")}
    )
    assert rules(out) == [None, "income.finite", "income.finite", None]
    assert reasons(out) == [None, "income: not finite (inf)", "income: not finite (-inf)", None]


def test_inf_as_text_breaks_the_finite_rule_not_the_type_rule():
    raw = ["inf", "-Infinity", "1e999", "3"]  # CSV / JSON Lines text; 1e999 overflows to inf
    out = validate_batch(pd.DataFrame({"x": raw}), {"x": spec("float", nullable=True)})
    assert rules(out) == ["x.finite", "x.finite", "x.finite", None]
    assert reasons(out)[:3] == [
        "x: not finite (inf)",
        "x: not finite (-inf)",
        "x: not finite (inf)",
    ]


def test_inf_is_not_also_reported_against_the_bounds():
    out = validate_batch(
        pd.DataFrame({"x": [np.inf, -np.inf, 11.0]}), {"x": spec("float", min=0, max=10)}
    )
    assert rules(out) == ["x.finite", "x.finite", "x.max"]


def test_allow_inf_keeps_infinite_values_but_not_past_the_bounds():
    out = validate_batch(
        pd.DataFrame({"x": [np.inf, -np.inf, 1.0]}), {"x": spec("float", allow_inf=True)}
    )
    assert rules(out) == [None, None, None]
    assert out["x"].tolist() == [np.inf, -np.inf, 1.0]
    out = validate_batch(
        pd.DataFrame({"x": [np.inf, -np.inf, 1.0]}),
        {"x": spec("float", allow_inf=True, min=0, max=10)},
    )
    assert reasons(out) == ["x: inf > max 10", "x: -inf < min 0", None]
    assert rules(out) == ["x.max", "x.min", None]


def test_inf_in_an_arrow_backed_batch_breaks_the_finite_rule():
    table = pa.table({"x": pa.array([np.inf, 1.0, None], type=pa.float64())})
    batch = table.to_pandas(types_mapper=pd.ArrowDtype)
    out = validate_batch(batch, {"x": spec("float", nullable=True)})
    assert rules(out) == ["x.finite", None, None]


def test_allow_inf_is_a_float_column_option():
    for type_ in ("int", "bool", "string"):
        with pytest.raises(
            ValueError, match=f"allow_inf applies to float columns, not to type '{type_}'"
        ):
            spec(type_, allow_inf=True)
    assert spec("int", allow_inf=False).allow_inf is False
    assert spec("float").allow_inf is False


# -- NaN is a null ---------------------------------------------------------------------------------
def _arrow_batch(values: list) -> pd.DataFrame:
    """A batch as Ray Data hands it to map_batches: Arrow-backed, NaN kept apart from null."""
    batch = pa.table({"x": pa.array(values, type=pa.float64())}).to_pandas(
        types_mapper=pd.ArrowDtype
    )
    assert batch["x"].isna().tolist() == [v is None for v in values]  # pandas: NaN is not NA
    return batch


NAN_BATCHES = {
    "numpy": lambda: pd.DataFrame({"x": [1.0, np.nan, None]}),
    "arrow": lambda: _arrow_batch([1.0, float("nan"), None]),
    "pandas nullable": lambda: pd.DataFrame({"x": pd.array([1.0, np.nan, None], dtype="Float64")}),
    "text": lambda: pd.DataFrame({"x": ["1", "nan", None]}),
    "object": lambda: pd.DataFrame({"x": pd.Series([1.0, float("nan"), None], dtype=object)}),
}


@pytest.mark.parametrize("source", list(NAN_BATCHES))
def test_nan_in_a_nullable_float_column_is_kept_as_null(source):
    out = validate_batch(NAN_BATCHES[source](), {"x": spec("float", nullable=True)})
    assert rules(out) == [None, None, None]
    assert out["x"].dtype == np.float64
    assert out["x"].isna().tolist() == [False, True, True]


@pytest.mark.parametrize("source", list(NAN_BATCHES))
def test_nan_in_a_non_nullable_float_column_breaks_the_nullable_rule(source):
    out = validate_batch(NAN_BATCHES[source](), {"x": spec("float")})
    assert rules(out) == [None, "x.nullable", "x.nullable"]
    assert reasons(out)[1] == "x: null in a non-nullable column"


def test_nan_spellings_in_text_are_null_and_other_text_is_still_a_type_error():
    raw = ["NaN", " nan ", "NAN", "-nan", "nanx", "n/a"]
    out = validate_batch(pd.DataFrame({"x": raw}), {"x": spec("float", nullable=True)})
    assert rules(out) == [None, None, None, None, "x.type", "x.type"]
    assert reasons(out)[4:] == ["x: not a float ('nanx')", "x: not a float ('n/a')"]


def test_nan_from_a_csv_file_is_a_null(tmp_path):
    import io

    data = b"x,y\nnan,1\nNaN,2\n,3\ninf,4\n"
    (table,) = list(parse_csv(io.BytesIO(data), "f.csv", ["x", "y"]))
    cols = {"x": spec("float", nullable=True), "y": spec("int")}
    out = validate_batch(table.to_pandas(), cols)
    assert rules(out) == [None, None, None, "x.finite"]
    assert out["x"].isna().tolist() == [True, True, True, False]


def test_nan_and_inf_from_a_parquet_file(tmp_path):
    p = tmp_path / "t.parquet"
    x = pa.array([1.0, float("nan"), None, float("inf")], type=pa.float64())
    pq.write_table(pa.table({"x": x, "y": x}), p)
    batch = pq.read_table(p).to_pandas(types_mapper=pd.ArrowDtype)
    cols = {"x": spec("float", nullable=True), "y": spec("float", allow_inf=True)}
    out = validate_batch(batch, cols)
    assert rules(out) == [None, "y.nullable", "y.nullable", "x.finite"]
    assert out["x"].isna().tolist() == [False, True, True, False]
