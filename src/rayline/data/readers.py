"""Row-accounting readers for text formats: CSV and JSON Lines.

Ray Data's stock CSV and JSON readers fail a whole file on one malformed row (or, told to
skip it, drop it silently). Either loses rows a user should see, so rayline reads text formats
through these Ray Data datasources instead: every physical row of a file comes out, either
parsed or as an *unreadable row* whose declared columns are null and whose
``_rayline_reason`` names the file, the line and what was wrong. Staging sends those rows to
quarantine like any other bad row, and they count against ``schema.max_bad_fraction``; with
``data.on_unreadable_row: fail`` the first one stops the run instead.

Values are read as text (declared types are checked and parsed row by row in
:mod:`rayline.data.validate`), so a stray value never fails a file. Every table carries
``_rayline_source`` (the file) so quarantined rows say where they came from.

:func:`parse_csv` and :func:`parse_jsonl` are plain pyarrow/Python: unit tests call them on
bytes, and the datasources call them on each file a Ray read task opens.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any

import pyarrow as pa

from rayline.errors import DataSourceError

REASON_COL = "_rayline_reason"
SOURCE_COL = "_rayline_source"
_TEXT_PREVIEW = 120


def _meta_table(columns: list[str], rows: list[dict[str, Any]]) -> pa.Table:
    """A table of the declared columns (as text) plus the reason and source columns."""
    names = [*columns, REASON_COL, SOURCE_COL]
    return pa.table(
        {n: pa.array([r.get(n) for r in rows], type=pa.string()) for n in names},
    )


def _with_meta(table: pa.Table, columns: list[str], source: str) -> pa.Table:
    """Project ``table`` to the declared columns as text and add empty reason + source."""
    n = table.num_rows
    arrays = []
    for c in columns:
        if c in table.column_names:
            col = table.column(c)
            arrays.append(col if col.type == pa.string() else col.cast(pa.string()))
        else:
            arrays.append(pa.nulls(n, type=pa.string()))
    arrays.append(pa.nulls(n, type=pa.string()))
    arrays.append(pa.array([source] * n, type=pa.string()))
    return pa.Table.from_arrays(arrays, names=[*columns, REASON_COL, SOURCE_COL])


def _unreadable(columns: list[str], source: str, reason: str) -> dict[str, Any]:
    return {REASON_COL: reason, SOURCE_COL: source, **dict.fromkeys(columns)}


def _preview(text: str | bytes) -> str:
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    text = text.rstrip("\r\n")
    return text if len(text) <= _TEXT_PREVIEW else text[:_TEXT_PREVIEW] + "..."


# -- CSV ---------------------------------------------------------------------------------------
def parse_csv(
    stream: Any,
    source: str,
    columns: list[str],
    *,
    on_unreadable: str = "quarantine",
    delimiter: str = ",",
) -> Iterator[pa.Table]:
    """Read one CSV file as text columns; yield tables of parsed and unreadable rows.

    A row with the wrong number of fields becomes an unreadable row (line number and text
    in the reason), or raises :class:`DataSourceError` when ``on_unreadable == "fail"``.

    Raises:
        DataSourceError: the file cannot be read as CSV at all (empty, no header, bad
            encoding), or a row is malformed and ``on_unreadable == "fail"``.
    """
    import pyarrow.csv as pacsv

    bad: list[dict[str, Any]] = []

    def handler(row: Any) -> str:
        where = f"line {row.number}" if row.number is not None else "a row"
        reason = (
            f"unreadable row: {source} {where}: expected {row.expected_columns} fields, got "
            f"{row.actual_columns}: {_preview(row.text)!r}"
        )
        bad.append(_unreadable(columns, source, reason))
        # Raising here would be swallowed by pyarrow's callback; "error" stops the read.
        return "error" if on_unreadable == "fail" else "skip"

    convert = pacsv.ConvertOptions(
        column_types=dict.fromkeys(columns, pa.string()),
        strings_can_be_null=True,
        include_columns=columns,
        include_missing_columns=True,
    )
    parse = pacsv.ParseOptions(delimiter=delimiter, invalid_row_handler=handler)
    try:
        reader = pacsv.open_csv(
            stream,
            read_options=pacsv.ReadOptions(use_threads=False),
            parse_options=parse,
            convert_options=convert,
        )
        for batch in reader:
            yield _with_meta(pa.Table.from_batches([batch]), columns, source)
            if bad:
                yield _meta_table(columns, bad)
                bad.clear()
    except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
        if bad and on_unreadable == "fail":
            raise DataSourceError(
                f"{bad[-1][REASON_COL]}. Fix the file, or set data.on_unreadable_row: "
                "quarantine to set such rows aside"
            ) from None
        raise DataSourceError(
            f"cannot read '{source}' as CSV: {exc}. The file is empty, truncated or not CSV; "
            "replace or remove it"
        ) from None
    if bad:
        yield _meta_table(columns, bad)


# -- JSON Lines --------------------------------------------------------------------------------
def _json_text(v: Any) -> str | None:
    """A JSON value as the text the validator parses (true/false, numbers as written)."""
    if v is None:
        return None
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return v
    return json.dumps(v)


def parse_jsonl(
    data: bytes, source: str, columns: list[str], *, on_unreadable: str = "quarantine"
) -> pa.Table:
    """Read one JSON Lines file (one object per line) as text columns.

    The fast path is pyarrow's JSON reader. When it refuses the file (a malformed line, a
    column whose type changes between lines), the file is read line by line: every line
    that parses becomes a row, every one that does not becomes an unreadable row.

    Raises:
        DataSourceError: a line is malformed and ``on_unreadable == "fail"``.
    """
    import pyarrow.json as pajson

    try:
        table = pajson.read_json(io.BytesIO(data))
        if not any(pa.types.is_nested(table.column(c).type) for c in table.column_names):
            return _with_meta(table, [c for c in columns], source)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    rows: list[dict[str, Any]] = []
    for number, line in enumerate(data.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
            if not isinstance(obj, dict):
                raise ValueError(f"expected an object, got {type(obj).__name__}")
        except ValueError as exc:
            reason = f"unreadable row: {source} line {number}: {exc}: {_preview(line)!r}"
            if on_unreadable == "fail":
                raise DataSourceError(
                    f"{reason}. Fix the file, or set data.on_unreadable_row: quarantine to "
                    "set such rows aside"
                ) from None
            rows.append(_unreadable(columns, source, reason))
            continue
        row = {c: _json_text(obj.get(c)) for c in columns}
        row[SOURCE_COL] = source
        rows.append(row)
    return _meta_table(columns, rows)


def jsonl_keys(stream: Any, max_lines: int = 1000) -> list[str]:
    """The keys seen in the first ``max_lines`` objects of a JSON Lines file."""
    keys: dict[str, None] = {}
    for i, line in enumerate(stream):
        if i >= max_lines:
            break
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if isinstance(obj, dict):
            keys.update(dict.fromkeys(obj))
    return list(keys)


def fill_partition_values(table: pa.Table, values: dict[str, str]) -> pa.Table:
    """Fill nulls of the columns named by hive partition ``values`` with those values
    (unreadable rows keep their nulls: they did not parse, whatever directory they are in)."""
    import pyarrow.compute as pc

    parsed = pc.is_null(table.column(REASON_COL))
    for key, value in values.items():
        if key in table.column_names:
            i = table.column_names.index(key)
            col = table.column(key)
            filled = pc.if_else(pc.and_(pc.is_null(col), parsed), pa.scalar(value), col)
            table = table.set_column(i, key, filled)
    return table


# -- Ray Data datasources ----------------------------------------------------------------------
def text_datasource(
    fmt: str,
    paths: list[str],
    filesystem: Any,
    columns: list[str],
    display: dict[str, str],
    on_unreadable: str = "quarantine",
    partitions: dict[str, dict[str, str]] | None = None,
):
    """A Ray Data datasource that reads ``paths`` (CSV or JSON Lines) with the parsers above.

    ``display`` maps a filesystem path to the name a user knows (the ``s3://`` URI), which is
    what the ``_rayline_source`` column and error messages show. ``partitions`` holds each
    file's hive ``key=value`` directory values; they fill the declared columns a file lacks.
    """
    partitions = partitions or {}
    from ray.data.datasource import FileBasedDatasource

    class _TextDatasource(FileBasedDatasource):
        def _read_stream(self, f: Any, path: str) -> Iterator[pa.Table]:
            source = display.get(path, path)
            fill = partitions.get(path, {})
            if fmt == "csv":
                tables = parse_csv(f, source, columns, on_unreadable=on_unreadable)
            else:
                tables = [parse_jsonl(f.read(), source, columns, on_unreadable=on_unreadable)]
            for table in tables:
                yield fill_partition_values(table, fill)

    return _TextDatasource(paths, filesystem=filesystem)
