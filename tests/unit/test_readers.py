"""The row-accounting CSV and JSON Lines readers: every physical row comes out."""

from __future__ import annotations

import io

import pyarrow as pa
import pytest

from rayline.data.readers import (
    REASON_COL,
    SOURCE_COL,
    fill_partition_values,
    parse_csv,
    parse_jsonl,
)
from rayline.errors import DataSourceError


def _rows(tables) -> list[dict]:
    return pa.concat_tables(list(tables)).to_pylist()


def test_csv_rows_read_as_text_with_their_source():
    rows = _rows(parse_csv(io.BytesIO(b"a,b,c\n1,x,2.5\n3,,4\n"), "s3://b/f.csv", ["a", "c"]))
    assert rows == [
        {"a": "1", "c": "2.5", REASON_COL: None, SOURCE_COL: "s3://b/f.csv"},
        {"a": "3", "c": "4", REASON_COL: None, SOURCE_COL: "s3://b/f.csv"},
    ]


def test_malformed_csv_rows_become_unreadable_rows_not_lost_ones():
    data = b"a,b\n1,2\n3\n4,5,6\n7,8\n"  # 4 data lines: 2 good, 2 with the wrong field count
    rows = _rows(parse_csv(io.BytesIO(data), "f.csv", ["a", "b"]))
    assert len(rows) == 4
    good = [r for r in rows if r[REASON_COL] is None]
    bad = [r for r in rows if r[REASON_COL] is not None]
    assert [(r["a"], r["b"]) for r in good] == [("1", "2"), ("7", "8")]
    assert [r[REASON_COL] for r in bad] == [
        "unreadable row: f.csv line 3: expected 2 fields, got 1: '3'",
        "unreadable row: f.csv line 4: expected 2 fields, got 3: '4,5,6'",
    ]
    assert all(r["a"] is None and r[SOURCE_COL] == "f.csv" for r in bad)


def test_truncated_last_csv_line_is_an_unreadable_row():
    rows = _rows(parse_csv(io.BytesIO(b"a,b,c\n1,2,3\n4,5"), "f.csv", ["a", "b", "c"]))
    assert [r[REASON_COL] is None for r in rows] == [True, False]


def test_csv_fail_mode_names_file_and_line():
    with pytest.raises(DataSourceError, match=r"f\.csv line 3: expected 2 fields, got 1"):
        _rows(parse_csv(io.BytesIO(b"a,b\n1,2\n3\n"), "f.csv", ["a"], on_unreadable="fail"))


def test_empty_csv_file_is_a_clear_error():
    with pytest.raises(DataSourceError, match="cannot read 'empty.csv' as CSV"):
        _rows(parse_csv(io.BytesIO(b""), "empty.csv", ["a"]))


def test_csv_missing_column_reads_as_nulls():
    rows = _rows(parse_csv(io.BytesIO(b"a\n1\n"), "f.csv", ["a", "year"]))
    assert rows[0]["year"] is None


def test_jsonl_fast_path_reads_values_as_text():
    data = b'{"x": 1.5, "n": 3, "flag": true, "s": "a"}\n{"x": null, "n": 4, "flag": false}\n'
    t = parse_jsonl(data, "f.jsonl", ["x", "n", "flag", "s"])
    assert t.to_pydict() == {
        "x": ["1.5", None],
        "n": ["3", "4"],
        "flag": ["true", "false"],
        "s": ["a", None],
        REASON_COL: [None, None],
        SOURCE_COL: ["f.jsonl", "f.jsonl"],
    }


def test_malformed_json_lines_are_kept_as_unreadable_rows():
    data = b'{"x": 1}\n{"x": "two"}\nnot json\n\n[1, 2]\n{"x": 3}\n'
    rows = parse_jsonl(data, "f.jsonl", ["x"]).to_pylist()
    # 5 non-blank lines in, 5 rows out: the type change and the bad lines do not lose rows.
    assert [r["x"] for r in rows] == ["1", "two", None, None, "3"]
    reasons = [r[REASON_COL] for r in rows]
    assert reasons[0] is None and reasons[1] is None and reasons[4] is None
    assert reasons[2].startswith("unreadable row: f.jsonl line 3: Expecting value")
    assert reasons[3] == "unreadable row: f.jsonl line 5: expected an object, got list: '[1, 2]'"


def test_jsonl_fail_mode():
    with pytest.raises(DataSourceError, match=r"f\.jsonl line 2"):
        parse_jsonl(b'{"x": 1}\n{oops\n', "f.jsonl", ["x"], on_unreadable="fail")


def test_hive_values_fill_a_column_the_file_lacks_but_not_unreadable_rows():
    t = pa.table(
        {
            "x": ["1", None],
            "year": pa.array([None, None], type=pa.string()),
            REASON_COL: [None, "unreadable row: ..."],
            SOURCE_COL: ["f", "f"],
        }
    )
    assert fill_partition_values(t, {"year": "2024"}).column("year").to_pylist() == ["2024", None]
