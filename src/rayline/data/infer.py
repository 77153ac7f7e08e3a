"""Bootstrap a data contract from data: ``rayline schema infer DATA > schema.yaml``.

One streaming pass over the files (the same readers the pipeline uses): each batch is
summarised per column (rows, nulls, which types every value parses as, min/max, the
distinct values while there are few), the summaries are merged on the driver, and the
result is written as the ``schema:`` section of a pipeline config. Types come from the
files where the format stores them (Parquet), otherwise from what every value parses as
(int, then float, then bool, else string). The output is a starting point: a person reads
it, tightens ranges and categories, and the pipeline enforces it from then on.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import yaml

from rayline.data.ingest import SourceFiles, hive_values, read_dataset, resolve_sources
from rayline.data.readers import REASON_COL
from rayline.data.validate import _FALSE, _TRUE, _file_schema
from rayline.errors import DataValidationError

#: Distinct values tracked per column before it counts as high-cardinality.
MAX_TRACKED = 1000


def _arrow_kind(t: pa.DataType) -> str | None:
    if pa.types.is_boolean(t):
        return "bool"
    if pa.types.is_integer(t):
        return "int"
    if pa.types.is_floating(t) or pa.types.is_decimal(t):
        return "float"
    if pa.types.is_null(t):
        return None
    return "string"


def summarize_batch(batch: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """One row per column: what this batch says about it (pure pandas, runs in Ray tasks)."""
    if REASON_COL in batch.columns:
        batch = batch[batch[REASON_COL].isna()]  # unreadable rows say nothing about types
    rows = []
    for col in columns:
        s = batch[col] if col in batch.columns else pd.Series([None] * len(batch), dtype=object)
        present = s[s.notna()]
        text = present.astype("string").str.strip()
        num = pd.to_numeric(present, errors="coerce").astype("float64")
        finite = num[np.isfinite(num.to_numpy())]
        lowered = text.str.lower()
        is_bool = pd.api.types.is_bool_dtype(present.dtype) or bool(
            lowered.isin(_TRUE | _FALSE).all()
        )
        counts = text.value_counts()
        rows.append(
            {
                "column": col,
                "rows": len(s),
                "nulls": int(s.isna().sum()),
                "numeric": int(num.notna().sum()),
                "integral": int((finite == np.round(finite)).sum()),
                "all_bool_words": bool(is_bool and len(present) > 0),
                "min": float(finite.min()) if len(finite) else None,
                "max": float(finite.max()) if len(finite) else None,
                "values": json.dumps(
                    {str(k): int(v) for k, v in counts.items()}
                    if len(counts) <= MAX_TRACKED
                    else None
                ),
            }
        )
    return pd.DataFrame(rows)


def merge_summaries(parts: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Combine per-batch summaries into one per column."""
    out: dict[str, dict[str, Any]] = {}
    for p in parts:
        m = out.setdefault(
            p["column"],
            {
                "rows": 0,
                "nulls": 0,
                "numeric": 0,
                "integral": 0,
                "bool_batches": 0,
                "batches_with_values": 0,
                "min": None,
                "max": None,
                "values": {},
            },
        )
        for k in ("rows", "nulls", "numeric", "integral"):
            m[k] += int(p[k])
        if int(p["rows"]) - int(p["nulls"]) > 0:
            m["batches_with_values"] += 1
            m["bool_batches"] += bool(p["all_bool_words"])
        for k, pick in (("min", min), ("max", max)):
            v = p[k]
            if v is not None and not (isinstance(v, float) and np.isnan(v)):
                m[k] = v if m[k] is None else pick(m[k], v)
        values = json.loads(p["values"])
        if values is None or m["values"] is None:
            m["values"] = None
        else:
            for k, v in values.items():
                m["values"][k] = m["values"].get(k, 0) + v
            if len(m["values"]) > MAX_TRACKED:
                m["values"] = None
    return out


def column_spec(stats: dict[str, Any], native: str | None, max_categories: int) -> dict[str, Any]:
    """The contract entry for one column from its merged statistics."""
    present = stats["rows"] - stats["nulls"]
    if native is not None:
        kind = native
    elif present == 0:
        kind = "string"
    elif stats["numeric"] == present and stats["integral"] == present:
        kind = "int"
    elif stats["numeric"] == present:
        kind = "float"
    elif stats["bool_batches"] == stats["batches_with_values"]:
        kind = "bool"
    else:
        kind = "string"
    spec: dict[str, Any] = {"type": kind, "nullable": stats["nulls"] > 0}
    if kind in ("int", "float") and stats["min"] is not None:
        lo, hi = stats["min"], stats["max"]
        spec["min"] = int(lo) if kind == "int" else float(lo)
        spec["max"] = int(hi) if kind == "int" else float(hi)
    values = stats["values"]
    if values is not None and present:
        if kind == "string" and len(values) <= max_categories:
            spec["allowed"] = sorted(values)
        elif kind == "int" and len(values) <= 2:
            spec["allowed"] = sorted(int(float(v)) for v in values)  # a binary label
    return spec


def _columns_of(sources: SourceFiles) -> tuple[list[str], dict[str, str | None]]:
    """Every column seen in any file (first file's order first), and Parquet's native kinds."""
    names: dict[str, None] = {}
    native: dict[str, str | None] = {}
    for path in sources.files:
        schema = _file_schema(sources, path)
        for field in schema:
            names.setdefault(field.name)
            if sources.format == "parquet":
                native.setdefault(field.name, _arrow_kind(field.type))
        for key in hive_values(path):
            names.setdefault(key)
    return list(names), native


def infer_schema(
    paths: str | list[str],
    fmt: str = "auto",
    endpoint_url: str | None = None,
    max_categories: int = 20,
    runtime: Any = None,
) -> tuple[dict[str, Any], int]:
    """The ``schema`` config section inferred from the data, and the number of rows read.

    A small input (:func:`rayline.data.stage.small_input_frame`) is read in this process; a
    larger one by a Ray Data job, on the Ray that ``runtime`` (a ``RuntimeConfig``; the
    defaults when None) starts or joins.
    """
    sources = resolve_sources(paths, fmt, endpoint_url)
    columns, native = _columns_of(sources)
    from rayline.data.stage import small_input_frame

    frame = small_input_frame(sources, columns)
    if frame is not None:
        # A small input is summarised here, without starting Ray (as staging does).
        parts = summarize_batch(frame, columns).to_dict("records")
    else:
        from rayline.config import RuntimeConfig
        from rayline.runtime import init_ray

        init_ray(runtime or RuntimeConfig())
        ds = read_dataset(sources, columns)
        parts = ds.map_batches(
            summarize_batch, fn_kwargs={"columns": columns}, batch_format="pandas"
        ).take_all()
    merged = merge_summaries(parts)
    specs = {
        c: column_spec(merged[c], native.get(c), max_categories) for c in columns if c in merged
    }
    rows = merged[columns[0]]["rows"] if columns and columns[0] in merged else 0
    if rows == 0:
        raise DataValidationError(
            f"the input holds no rows to infer a schema from: {', '.join(sources.uris)}; "
            "point it at files with data (a CSV needs rows below its header, a JSON Lines "
            "file one JSON object per line)"
        )
    return {"max_bad_fraction": 0.01, "columns": specs}, rows


def schema_yaml(schema: dict[str, Any], source: str, rows: int) -> str:
    """The inferred section as YAML with a header saying where it came from."""
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    header = (
        f"# Inferred by `rayline schema infer` from {rows} rows of {source} ({when}).\n"
        "# Review it: tighten min/max and allowed values to what the data *should* hold,\n"
        "# mark key columns unique, add regex rules; then paste it into the pipeline config.\n"
    )
    return header + yaml.safe_dump({"schema": schema}, sort_keys=False)
