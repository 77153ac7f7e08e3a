"""The data contract: file-level schema checks and row rules.

Two levels, as in TFX's ExampleValidator: a file that lacks a declared column, or stores it
with an incompatible type, is a broken input and stops the run (:class:`DataValidationError`
naming the file and column). A row that breaks a row rule (null where not allowed, out of
range, not an allowed value, a value that does not parse) is set aside in quarantine with a
reason; the run fails only if too many rows are bad.

Numbers: NaN in a float column is a null wherever it comes from (a numpy or Arrow-backed
batch, the text ``nan`` of a CSV or JSON file), so ``nullable`` decides about it. ``inf`` and
``-inf`` break the rule ``<column>.finite`` unless the column sets ``allow_inf: true``.

:func:`validate_batch` is pure pandas: it runs inside Ray Data's ``map_batches`` and in unit
tests alike.
"""

from __future__ import annotations

import io
import re
from decimal import Decimal

import numpy as np
import pandas as pd
import pyarrow as pa

from rayline.config import ColumnSpec
from rayline.data.ingest import SourceFiles, hive_values
from rayline.data.readers import REASON_COL, SOURCE_COL, jsonl_keys
from rayline.errors import DataValidationError

RULES_COL = "_rayline_rules"
UNREADABLE_RULE = "row.unreadable"

_TRUE = {"true", "t", "1", "yes", "y"}
_FALSE = {"false", "f", "0", "no", "n"}


def _compatible(arrow_type: pa.DataType, declared: str) -> bool:
    if declared == "string":
        return True  # numbers and booleans can be read as text
    if declared == "float":
        return (
            pa.types.is_floating(arrow_type)
            or pa.types.is_integer(arrow_type)
            or pa.types.is_decimal(arrow_type)
            or pa.types.is_null(arrow_type)
        )
    if declared == "int":
        return pa.types.is_integer(arrow_type) or pa.types.is_null(arrow_type)
    if declared == "bool":
        return pa.types.is_boolean(arrow_type) or pa.types.is_null(arrow_type)
    return False


def _file_schema(sources: SourceFiles, path: str) -> pa.Schema:
    return _file_footer(sources, path)[0]


def _file_footer(sources: SourceFiles, path: str) -> tuple[pa.Schema, int | None]:
    """A file's schema, and its row count where the format records one (Parquet).

    Raises:
        DataValidationError: the file cannot be read in its format, or names a column
            twice (which of the two a reader takes is arbitrary).
    """
    schema, rows = _read_footer(sources, path)
    dup = sorted({n for n in schema.names if schema.names.count(n) > 1})
    if dup:
        raise DataValidationError(
            f"'{sources.display(path)}' has more than one column named "
            f"{', '.join(repr(n) for n in dup)}; rename or drop the duplicates so that each "
            "column name appears once"
        )
    return schema, rows


def _read_footer(sources: SourceFiles, path: str) -> tuple[pa.Schema, int | None]:
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    try:
        if sources.format == "parquet":
            with sources.filesystem.open_input_file(path) as f:
                footer = pq.ParquetFile(f)
                return footer.schema_arrow, footer.metadata.num_rows
        with sources.filesystem.open_input_stream(path) as f:
            head = f.read(64 * 1024)
        if b"\0" in head:
            # Binary (or UTF-16) data: pyarrow's CSV parser would print a traceback per
            # undecodable row before failing, the JSON reader find no keys.
            what = "it is a Parquet file" if head.startswith(b"PAR1") else "it holds NUL bytes"
            raise DataValidationError(
                f"cannot read '{sources.display(path)}' as {sources.format}: {what}, not "
                "UTF-8 text. Set data.format to the file's format, or replace or remove it "
                "(save text as UTF-8)."
            )
        if sources.format == "json":
            with sources.filesystem.open_input_stream(path) as f:
                keys = jsonl_keys(io.TextIOWrapper(f, encoding="utf-8", errors="replace"))
            return pa.schema([(k, pa.string()) for k in keys]), None
        with sources.filesystem.open_input_stream(path) as f:
            # Only the header matters here; malformed rows are the reader's business.
            skip = pacsv.ParseOptions(invalid_row_handler=lambda row: "skip")
            return pacsv.open_csv(f, parse_options=skip).schema, None
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataValidationError(
            f"cannot read '{sources.display(path)}' as {sources.format}: {exc}. The file is "
            "corrupt, truncated or not in that format; replace or remove it."
        ) from None


def check_file_schemas(
    sources: SourceFiles, columns: dict[str, ColumnSpec]
) -> dict[str, int] | None:
    """Check that every file has every declared column with a compatible type.

    Reads only file footers (Parquet), the header block (CSV) or the first lines (JSON
    Lines), never the data. Hive partition values in a file's path count as its columns.

    Returns:
        Rows per file (by display name) from the Parquet footers just read, for staging's
        row accounting; None for text formats, which record no count.

    Raises:
        DataValidationError: naming every offending file and column.
    """
    problems = []
    rows: dict[str, int] = {}
    for path in sources.files:
        schema, num_rows = _file_footer(sources, path)
        name = sources.display(path)
        if num_rows is not None:
            rows[name] = num_rows
        partition_keys = hive_values(path)
        missing = [c for c in columns if c not in schema.names and c not in partition_keys]
        if missing:
            problems.append(
                f"{name}: missing column(s) {', '.join(missing)} (file has: "
                f"{', '.join(schema.names) or 'no columns; is it empty?'})"
            )
        if sources.format != "parquet":
            continue  # CSV and JSON values are read as text and parsed row by row
        for col, spec in columns.items():
            if col in schema.names and not _compatible(schema.field(col).type, spec.type):
                problems.append(
                    f"{name}: column '{col}' has type {schema.field(col).type}, but the schema "
                    f"declares {spec.type}; fix the data or schema.columns.{col}.type"
                )
    if problems:
        raise DataValidationError(
            "input files break the schema:\n" + "\n".join(f"  - {p}" for p in problems)
        )
    return rows if sources.format == "parquet" else None


def _exact_int(v: object) -> int | None:
    """A whole number within int64, parsed without float rounding; None otherwise."""
    try:
        if isinstance(v, int | np.integer):
            d = Decimal(int(v))
        else:
            d = Decimal(str(v).strip() if isinstance(v, str) else float(v))
        n = int(d)
    except (ArithmeticError, TypeError, ValueError):
        return None
    return n if n == d and -(2**63) <= n < 2**63 else None


def _is_nan(v: object) -> bool:
    """Whether ``v`` is a float NaN: a float, a Decimal or text such as ``'nan'``/``'NaN'``."""
    if isinstance(v, float | np.floating):
        return bool(np.isnan(v))
    if isinstance(v, Decimal):
        return v.is_nan()
    if isinstance(v, str):
        try:
            return bool(np.isnan(float(v.strip())))
        except ValueError:
            return False
    return False


def _nan_values(values: pd.Series, num: pd.Series, was_null: np.ndarray) -> np.ndarray:
    """Which values pandas does not count as null but are a NaN all the same.

    An Arrow-backed batch (``double[pyarrow]``, what Ray Data hands ``map_batches``) keeps NaN
    apart from null, and text formats carry it as the string ``'nan'``; a numpy float batch
    already counts it as null.
    """
    candidates = num.isna().to_numpy() & ~was_null
    if not candidates.any():
        return candidates
    if pd.api.types.is_float_dtype(values.dtype):
        return candidates  # a float that is neither null nor a number is a NaN
    out = np.zeros(len(values), dtype=bool)
    idx = np.flatnonzero(candidates)
    out[idx] = [_is_nan(v) for v in values.iloc[idx]]
    return out


def _coerce(values: pd.Series, kind: str) -> tuple[pd.Series, np.ndarray]:
    """Cast ``values`` to the declared type; also return which non-null values failed to parse.

    A NaN in a float column is a null, not a value that failed to parse.
    """
    was_null = values.isna().to_numpy()
    if kind == "string":
        out = values.astype("string")
        return out, np.zeros(len(values), dtype=bool)
    if kind == "bool":
        if pd.api.types.is_bool_dtype(values.dtype):
            return values.astype("boolean"), np.zeros(len(values), dtype=bool)
        text = values.astype("string").str.strip().str.lower()
        out = pd.Series(pd.NA, index=values.index, dtype="boolean")
        out[text.isin(_TRUE).fillna(False).to_numpy(dtype=bool)] = True
        out[text.isin(_FALSE).fillna(False).to_numpy(dtype=bool)] = False
        return out, out.isna().to_numpy() & ~was_null
    num = pd.to_numeric(values, errors="coerce").astype("float64")
    if kind == "float":
        was_null = was_null | _nan_values(values, num, was_null)
    bad = num.isna().to_numpy() & ~was_null
    if kind == "int":
        arr = num.to_numpy()
        bad |= np.isfinite(arr) & (arr != np.round(arr))
        # Beyond int64 (or inf) is a bad value, not a failed cast of the whole batch.
        bad |= (np.abs(arr) > 2.0**63) & ~np.isnan(arr)
        # float64 rounds whole numbers beyond 2**53 (64-bit ids): keep them exact, and
        # independent of the rest of the batch.
        exact = pd.to_numeric(values.where(~bad), errors="coerce", dtype_backend="numpy_nullable")
        if pd.api.types.is_signed_integer_dtype(exact.dtype):
            return exact.astype("Int64"), bad
        big = np.flatnonzero(~bad & (np.abs(arr) >= 2.0**53))
        out = num.where(~bad & ~(np.abs(arr) >= 2.0**53)).astype("Int64")
        for i, v in zip(big, values.iloc[big], strict=True):
            v = _exact_int(v)
            if v is None:
                bad[i] = True
            else:
                out.iloc[i] = v
        return out, bad
    return num, bad


def validate_batch(
    batch: pd.DataFrame,
    columns: dict[str, ColumnSpec],
    duplicates: dict[str, set] | None = None,
) -> pd.DataFrame:
    """Coerce the declared columns to their types and record why each row is bad.

    Returns the declared columns (other columns are dropped) plus ``_rayline_reason``: null
    for a good row, else every rule the row breaks as ``"column: rule"``, joined by ``"; "``,
    and ``_rayline_rules``: the broken rules' ids (``"age.max,plan.allowed"``) that the data
    report counts. In a float column NaN is a null, and ``inf``/``-inf`` break
    ``<column>.finite`` unless the column sets ``allow_inf``. Values that fail to parse
    become null in the output and are quoted in the reason, so the quarantine keeps what was
    wrong. A row that arrives with a reason already
    (an unreadable CSV/JSON row from :mod:`rayline.data.readers`) keeps it as
    ``row.unreadable`` and is not checked further. ``duplicates`` maps each ``unique`` column
    to the values that occur more than once in the whole input.
    """
    n = len(batch)
    out = {}
    reasons = np.full(n, "", dtype=object)
    rules = np.full(n, "", dtype=object)
    unreadable = np.zeros(n, dtype=bool)
    if REASON_COL in batch.columns:
        pre = batch[REASON_COL].to_numpy(dtype=object)
        unreadable = ~pd.isna(pre)
        reasons[unreadable] = pre[unreadable]
        rules[unreadable] = UNREADABLE_RULE
    duplicates = duplicates or {}

    def add(mask: np.ndarray, text, rule: str) -> None:
        mask = mask & ~unreadable
        if not mask.any():
            return
        idx = np.flatnonzero(mask)
        texts = text(idx) if callable(text) else [text] * len(idx)
        for i, t in zip(idx, texts, strict=True):
            reasons[i] = f"{reasons[i]}; {t}" if reasons[i] else t
            rules[i] = f"{rules[i]},{rule}" if rules[i] else rule

    for col, spec in columns.items():
        raw = batch[col] if col in batch.columns else pd.Series([None] * n, index=batch.index)
        values, unparsable = _coerce(raw, spec.type)
        raw_np = raw.to_numpy(dtype=object)
        add(
            unparsable,
            lambda idx, c=col, s=spec, r=raw_np: [f"{c}: not a {s.type} ({r[i]!r})" for i in idx],
            f"{col}.type",
        )
        null = values.isna().to_numpy() & ~unparsable
        if not spec.nullable:
            add(null, f"{col}: null in a non-nullable column", f"{col}.nullable")
        infinite = np.zeros(n, dtype=bool)
        if spec.type == "float" and not spec.allow_inf:
            arr = values.to_numpy(dtype="float64", na_value=np.nan)
            infinite = np.isinf(arr)
            add(
                infinite,
                lambda idx, c=col, a=arr: [f"{c}: not finite ({a[i]:g})" for i in idx],
                f"{col}.finite",
            )
        if spec.min is not None or spec.max is not None:
            arr = values.astype("float64").to_numpy(na_value=np.nan)
            # An inf already broke `.finite`; one reason is enough.
            arr = np.where(infinite, np.nan, arr)
            if spec.min is not None:
                add(
                    arr < spec.min,
                    lambda idx, c=col, s=spec, a=arr: [
                        f"{c}: {a[i]:g} < min {s.min:g}" for i in idx
                    ],
                    f"{col}.min",
                )
            if spec.max is not None:
                add(
                    arr > spec.max,
                    lambda idx, c=col, s=spec, a=arr: [
                        f"{c}: {a[i]:g} > max {s.max:g}" for i in idx
                    ],
                    f"{col}.max",
                )
        present = ~values.isna().to_numpy()
        vals = values.to_numpy(dtype=object)
        if spec.allowed is not None:
            allowed = values.isin(spec.allowed).fillna(False).to_numpy(dtype=bool)
            add(
                present & ~allowed,
                lambda idx, c=col, v=vals: [f"{c}: {v[i]!r} not in allowed values" for i in idx],
                f"{col}.allowed",
            )
        if spec.regex is not None:
            matched = values.str.fullmatch(_compiled(spec.regex)).fillna(False)
            add(
                present & ~matched.to_numpy(dtype=bool),
                lambda idx, c=col, s=spec, v=vals: [
                    f"{c}: {v[i]!r} does not match the regex {s.regex}" for i in idx
                ],
                f"{col}.regex",
            )
        if spec.unique and duplicates.get(col):
            dup = values.isin(list(duplicates[col])).fillna(False).to_numpy(dtype=bool)
            add(
                present & dup,
                lambda idx, c=col, v=vals: [f"{c}: duplicate value {v[i]!r}" for i in idx],
                f"{col}.unique",
            )
        out[col] = values.reset_index(drop=True)
    result = pd.DataFrame(out)
    result[REASON_COL] = pd.Series([r if r else None for r in reasons], dtype="string")
    result[RULES_COL] = pd.Series([r if r else None for r in rules], dtype="string")
    return result


_REGEX_CACHE: dict[str, re.Pattern] = {}


def _compiled(pattern: str) -> re.Pattern:
    if pattern not in _REGEX_CACHE:
        _REGEX_CACHE[pattern] = re.compile(pattern)
    return _REGEX_CACHE[pattern]


__all__ = [
    "REASON_COL",
    "RULES_COL",
    "SOURCE_COL",
    "UNREADABLE_RULE",
    "check_file_schemas",
    "validate_batch",
]
