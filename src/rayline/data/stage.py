"""Staging: one streaming pass that validates every row and assigns its split.

Raw files are read, validated (:mod:`rayline.data.validate`) and split
(:mod:`rayline.data.split`) in a single Ray Data pipeline, written as Parquet partitioned by
split: ``train/``, ``val/``, ``test/`` and ``quarantine/`` (bad rows with their reason, the
ids of the rules they broke and their source file). The partition row counts come from
Parquet footers, so the report proves that every input row landed in exactly one place
without reading the data again; for Parquet input the input's own footer counts are checked
against them. Later stages read each split lazily from here; a retried run can reuse it.

A ``unique`` column costs one extra pass before staging (a distributed group-by that finds
the duplicated values); everything else is checked within the single pass.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from rayline.config import PipelineConfig
from rayline.data.ingest import SourceFiles, hive_values, read_dataset
from rayline.data.split import QUARANTINE, SPLIT_COL, SPLITS, assign_split
from rayline.data.validate import (
    REASON_COL,
    RULES_COL,
    SOURCE_COL,
    UNREADABLE_RULE,
    _coerce,
    validate_batch,
)
from rayline.errors import DataValidationError, find_user_error
from rayline.paths import filesystem

#: Bumped whenever the staged layout changes, so older staged data is not reused.
STAGE_FORMAT = 2
#: More duplicated values than this in a `unique` column is a broken key, not bad rows.
MAX_DUPLICATE_VALUES = 100_000

log = logging.getLogger(__name__)


@dataclass
class DataReport:
    """Row accounting for one run: ``rows_in == rows_ok + rows_quarantined`` and
    ``rows_ok == train + val + test``. ``rule_counts`` holds, per rule id
    (``"age.max"``, ``"row.unreadable"``), the quarantined rows that broke it (a row can break
    several). ``rows_by_source`` is the input's own row count per file where the format
    records one (Parquet footers); staging checks that it adds up to ``rows_in``."""

    files: list[str]
    fingerprint: str
    rows_in: int
    rows_ok: int
    rows_quarantined: int
    splits: dict[str, int]
    bad_fraction: float
    max_bad_fraction: float
    top_reasons: list[dict[str, Any]] = field(default_factory=list)
    rule_counts: dict[str, int] = field(default_factory=dict)
    rows_by_source: dict[str, int] | None = None
    staged_path: str = ""
    quarantine_path: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


class _StageBatch:
    """The ``map_batches`` callable of staging: validate, split, keep the source of bad rows."""

    def __init__(self, cfg: PipelineConfig, display: dict[str, str], duplicates: dict[str, set]):
        self.columns = cfg.schema_.columns
        self.split = cfg.data.split
        self.display = display
        self.duplicates = duplicates

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        if SOURCE_COL in batch.columns:
            source = batch[SOURCE_COL]
        elif "path" in batch.columns and "path" not in self.columns:
            source = batch["path"].map(lambda p: self.display.get(p, p))
        else:
            source = pd.Series([None] * len(batch), index=batch.index)
        out = validate_batch(batch, self.columns, self.duplicates)
        bad = out[REASON_COL].notna().to_numpy()
        # object dtype: a fixed-width numpy string array would cut "quarantine" to "quara".
        where = assign_split(
            out.drop(columns=[REASON_COL, RULES_COL]), self.split, list(self.columns)
        ).astype(object)
        where[bad] = QUARANTINE
        out[SOURCE_COL] = pd.Series(
            np.where(bad, source.to_numpy(dtype=object), None), dtype="string"
        )
        out[SPLIT_COL] = where
        return _typed_table(out, self.columns)


_ARROW_TYPES = {"float": "float64", "int": "int64", "bool": "bool_", "string": "large_string"}


def _typed_table(df: pd.DataFrame, columns: dict[str, Any]) -> pa.Table:
    """The staged batch as Arrow with fixed column types.

    A batch whose column is all null would otherwise be written with Arrow's ``null`` type,
    and readers of the staged directory (pandas, pyarrow.dataset) then fail to unify files.
    """
    table = pa.Table.from_pandas(df, preserve_index=False)
    wanted = {c: getattr(pa, _ARROW_TYPES[spec.type])() for c, spec in columns.items()}
    for meta in (REASON_COL, RULES_COL, SOURCE_COL):
        wanted[meta] = pa.large_string()
    for i, name in enumerate(table.column_names):
        target = wanted.get(name)
        if target is not None and table.schema.field(i).type != target:
            table = table.set_column(i, name, table.column(i).cast(target))
    return table


def _key_values(batch: pd.DataFrame, column: str, kind: str) -> pd.DataFrame:
    """One column coerced like the validator does; unparsable and null values dropped."""
    values, bad = _coerce(batch[column], kind)
    keep = ~bad & values.notna().to_numpy()
    if REASON_COL in batch.columns:
        keep &= batch[REASON_COL].isna().to_numpy()
    return pd.DataFrame({column: values[keep].reset_index(drop=True)})


#: Input bytes per hash partition of the ``unique`` check's group-by (a partition holds
#: only the key column's values, a fraction of the rows' bytes).
SHUFFLE_PARTITION_BYTES = 256 * 2**20


def shuffle_partitions(sources: SourceFiles) -> int:
    """Hash partitions for a group-by over ``sources``: one per
    :data:`SHUFFLE_PARTITION_BYTES` of input, at least 1, at most Ray Data's default.

    Ray Data's default (200 partitions, each an aggregator's share) made the check of a
    300-row file take 3-7 s on 2 cores; one partition does it in 0.1 s.
    """
    import ray.data

    most = ray.data.DataContext.get_current().default_hash_shuffle_parallelism
    size = _input_bytes(sources)
    if size is None:
        return most
    return max(1, min(most, math.ceil(size / SHUFFLE_PARTITION_BYTES)))


def _input_bytes(sources: SourceFiles) -> int | None:
    """The input files' total size; None when the filesystem does not tell."""
    try:
        infos = sources.filesystem.get_file_info(list(sources.files))
    except OSError:
        return None
    if any(info.size is None for info in infos):
        return None
    return sum(int(info.size) for info in infos)


def _duplicated_values(ds: Any, cfg: PipelineConfig, partitions: int | None = None):
    """For each ``unique`` column, the values that occur more than once in the input."""
    out: dict[str, set] = {}
    for col, spec in cfg.schema_.columns.items():
        if not spec.unique:
            continue
        counts = (
            ds.map_batches(
                _key_values, fn_kwargs={"column": col, "kind": spec.type}, batch_format="pandas"
            )
            .groupby(col, num_partitions=partitions)
            .count()
            .map_batches(_repeated, batch_format="pandas")
        )
        rows = counts.take(MAX_DUPLICATE_VALUES + 1)
        out[col] = _duplicate_set(col, [r[col] for r in rows])
    return out


def _duplicate_set(col: str, values: list) -> set:
    """The repeated values of a ``unique`` column, or an error when it is not a key."""
    if len(values) > MAX_DUPLICATE_VALUES:
        raise DataValidationError(
            f"column '{col}' is declared unique but more than {MAX_DUPLICATE_VALUES} of "
            "its values occur more than once; it is not a key. Fix the data or drop "
            f"schema.columns.{col}.unique"
        )
    out = {v.item() if isinstance(v, np.generic) else v for v in values}
    if out:
        log.warning("column %s: %d duplicated value(s)", col, len(out))
    return out


def _duplicated_in_frame(frame: pd.DataFrame, cfg: PipelineConfig) -> dict[str, set]:
    """:func:`_duplicated_values` of an in-memory frame (pandas, no Ray Data job)."""
    out: dict[str, set] = {}
    for col, spec in cfg.schema_.columns.items():
        if spec.unique:
            counts = _key_values(frame, col, spec.type)[col].value_counts()
            out[col] = _duplicate_set(col, list(counts[counts > 1].index))
    return out


def _read_parquet_frame(sources: SourceFiles, columns: list[str]) -> pd.DataFrame:
    """Every source file's declared ``columns`` as one pandas frame, read with pyarrow.

    What :func:`rayline.data.ingest.read_dataset` hands staging for Parquet, in one process:
    hive partition values as columns, and a ``path`` column naming each row's file.
    """
    frames = []
    for path in sources.files:
        with sources.filesystem.open_input_file(path) as f:
            pfile = pq.ParquetFile(f)
            present = [c for c in columns if c in pfile.schema_arrow.names]
            frame = pfile.read(columns=present).to_pandas()
        for key, value in hive_values(path).items():
            if key in columns and key not in frame.columns:
                frame[key] = value
        if "path" not in columns:
            frame["path"] = path
        frames.append(frame)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)


def _repeated(counts: pd.DataFrame) -> pd.DataFrame:
    return counts[counts["count()"] > 1]


def _source_row_counts(sources: SourceFiles) -> dict[str, int] | None:
    """Rows per input file from Parquet footers (metadata only); None for text formats."""
    if sources.format != "parquet":
        return None
    counts = {}
    for path in sources.files:
        with sources.filesystem.open_input_file(path) as f:
            counts[sources.display(path)] = pq.ParquetFile(f).metadata.num_rows
    return counts


def _partition_counts(fs: pafs.FileSystem, root: str) -> dict[str, int]:
    counts = {name: 0 for name in (*SPLITS, QUARANTINE)}
    infos = fs.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True))
    for info in infos:
        if info.type != pafs.FileType.File or not info.path.endswith(".parquet"):
            continue
        part = next(
            (p.split("=", 1)[1] for p in info.path.split("/") if p.startswith(f"{SPLIT_COL}=")),
            None,
        )
        if part not in counts:
            # Every row must land in a known place; anything else is a bug, not bad data.
            raise RuntimeError(f"unexpected partition '{part}' in staged data at {root}")
        with fs.open_input_file(info.path) as f:
            counts[part] += pq.ParquetFile(f).metadata.num_rows
    return counts


MARKER = "_rayline_stage.json"


def _contract_hash(cfg: PipelineConfig) -> str:
    """Hash of what decides staged content besides the input: the schema and the split."""
    blob = json.dumps(
        {
            "format": STAGE_FORMAT,
            "schema": cfg.schema_.model_dump(mode="json"),
            "split": cfg.data.split.model_dump(mode="json"),
            "on_unreadable_row": cfg.data.on_unreadable_row,
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()


def _reusable_marker(
    fs: pafs.FileSystem, root: str, fingerprint: str, contract: str
) -> dict[str, Any] | None:
    """The marker of a complete earlier staging of the same data and contract, else None.

    The marker is written only after every partition was written and counted, so a run that
    died mid-write leaves no marker and is staged again.
    """
    try:
        with fs.open_input_stream(f"{root}/{MARKER}") as f:
            marker = json.loads(f.read())
    except (OSError, ValueError):
        return None
    if marker.get("fingerprint") != fingerprint or marker.get("contract") != contract:
        return None
    return {
        "counts": {k: int(v) for k, v in marker["counts"].items()},
        "top_reasons": marker.get("top_reasons", []),
        "rule_counts": marker.get("rule_counts", {}),
    }


def _quarantine_summary(
    staged: str, limit: int = 10
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """The most frequent quarantine reasons, and rows per broken rule, in one pass."""
    from ray.data.aggregate import ValueCounter

    qds = read_split(staged, QUARANTINE, columns=[REASON_COL, RULES_COL])
    stats = qds.aggregate(
        ValueCounter(REASON_COL, alias_name="r"), ValueCounter(RULES_COL, alias_name="k")
    )
    return _reason_counts(
        zip(stats["r"]["values"], stats["r"]["counts"], strict=True),
        zip(stats["k"]["values"], stats["k"]["counts"], strict=True),
        limit,
    )


def _reason_counts(reasons, rules, limit: int = 10) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """The top ``limit`` reasons and rows per rule from ``(value, count)`` pairs (or the
    struct array of Arrow's ``value_counts``)."""

    def pairs(counts) -> list[tuple[Any, int]]:
        if isinstance(counts, pa.Array):
            return [(d["values"], d["counts"]) for d in counts.to_pylist()]
        return [(v, int(n)) for v, n in counts]

    ranked = sorted(pairs(reasons), key=lambda p: -p[1])
    top = [{"reason": r, "rows": int(n)} for r, n in ranked[:limit]]
    # A row that breaks several rules is counted under each of them.
    rule_counts: dict[str, int] = {}
    for combo, n in pairs(rules):
        for rule in str(combo).split(","):
            rule_counts[rule] = rule_counts.get(rule, 0) + int(n)
    return top, dict(sorted(rule_counts.items(), key=lambda p: (-p[1], p[0])))


#: A CSV or JSON Lines input is small enough to stage in-process when it holds at most
#: this many bytes per row of ``runtime.in_process_max_rows`` (12.8 MB at the default).
TEXT_BYTES_PER_ROW = 64


def text_in_process_bytes(max_rows: int) -> int:
    """The largest CSV / JSON Lines input (bytes) read in this process for ``max_rows``
    (``runtime.in_process_max_rows``)."""
    return max_rows * TEXT_BYTES_PER_ROW


def _text_bytes(sources: SourceFiles) -> int | None:
    """The input's size for a text format (None for Parquet, or when sizes are unknown)."""
    return None if sources.format == "parquet" else _input_bytes(sources)


def _read_text_frame(sources: SourceFiles, columns: list[str], on_unreadable: str):
    """Every source file read as the Ray Data path reads it (``read_dataset``), in this
    process: text columns, each malformed row kept as an unreadable row, hive partition
    values filled in."""
    from rayline.data.readers import fill_partition_values, parse_csv, parse_jsonl

    tables = []
    for path in sources.files:
        source = sources.display(path)
        with sources.filesystem.open_input_stream(path) as f:
            if sources.format == "csv":
                parts = list(parse_csv(f, source, columns, on_unreadable=on_unreadable))
            else:
                parts = [parse_jsonl(f.read(), source, columns, on_unreadable=on_unreadable)]
        fill = hive_values(path)
        tables += [fill_partition_values(t, fill) for t in parts if t.num_rows]
    if not tables:
        return pd.DataFrame(columns=columns)
    return pa.concat_tables(tables, promote_options="default").to_pandas()


def _read_frame(sources: SourceFiles, columns: list[str], on_unreadable: str) -> pd.DataFrame:
    """A small input's ``columns`` read in this process, whatever its format."""
    if sources.format == "parquet":
        return _read_parquet_frame(sources, columns)
    return _read_text_frame(sources, columns, on_unreadable)


def small_input_frame(
    sources: SourceFiles,
    columns: list[str],
    on_unreadable: str = "quarantine",
    max_rows: int | None = None,
) -> pd.DataFrame | None:
    """``columns`` of every source file read in this process, when the input is small (at
    most ``max_rows`` Parquet rows, or :data:`TEXT_BYTES_PER_ROW` bytes a row of CSV or
    JSON Lines; :data:`IN_PROCESS_MAX_ROWS` by default); None for a larger input, which
    takes a Ray Data job."""
    max_rows = IN_PROCESS_MAX_ROWS if max_rows is None else max_rows
    if sources.format == "parquet":
        small = sum((_source_row_counts(sources) or {}).values()) <= max_rows
    else:
        size = _text_bytes(sources)
        small = size is not None and size <= text_in_process_bytes(max_rows)
    return _read_frame(sources, columns, on_unreadable) if small else None


def _stage_in_process(cfg: PipelineConfig, sources: SourceFiles) -> pa.Table:
    """Staging's pass over a small input in this process: the staged rows as Arrow."""
    frame = _read_frame(sources, list(cfg.schema_.columns), cfg.data.on_unreadable_row)
    duplicates = _duplicated_in_frame(frame, cfg)
    return _StageBatch(cfg, sources.display_names(), duplicates)(frame)


class _ValidRows:
    """``map_batches`` callable: staging's validation, keeping only the rows that pass."""

    def __init__(self, cfg: PipelineConfig, display: dict[str, str]):
        self.batch = _StageBatch(cfg, display, {})

    def __call__(self, batch: pd.DataFrame) -> pa.Table:
        table = self.batch(batch)
        return table.filter(pc.not_equal(table[SPLIT_COL], QUARANTINE))


def valid_rows(cfg: PipelineConfig, sources: SourceFiles):
    """A Ray Dataset of the rows of ``sources`` that pass the contract, typed as staged.

    What ``rayline retrain`` profiles to compare only the new files with the champion's
    training data: the same validation as staging (a ``unique`` rule sees only these
    files), nothing written. A small Parquet input is validated in this process.
    """
    import ray.data

    rows = _source_row_counts(sources)
    if rows is not None and sum(rows.values()) <= cfg.runtime.in_process_max_rows:
        table = _stage_in_process(cfg, sources)
        return ray.data.from_arrow(table.filter(pc.not_equal(table[SPLIT_COL], QUARANTINE)))
    ds = read_dataset(sources, list(cfg.schema_.columns), cfg.data.on_unreadable_row)
    return ds.map_batches(_ValidRows(cfg, sources.display_names()), batch_format="pandas")


def split_path(staged_path: str, split: str) -> str:
    """Directory of one split inside the staged dataset."""
    return f"{staged_path}/{SPLIT_COL}={split}"


def read_split(staged_path: str, split: str, columns: list[str] | None = None):
    """A lazy Ray Dataset of one split's rows: the declared columns, or only ``columns``."""
    import ray.data

    path = split_path(staged_path, split)
    fs, inner = filesystem(path)
    info = fs.get_file_info(inner)
    if info.type == pafs.FileType.NotFound:
        raise _empty_split(split)
    if columns is not None:
        return ray.data.read_parquet(inner, filesystem=fs, partitioning=None, columns=columns)
    ds = ray.data.read_parquet(inner, filesystem=fs, partitioning=None)
    return ds.drop_columns([REASON_COL, RULES_COL, SOURCE_COL]) if split != QUARANTINE else ds


#: A split of at most this many rows may be read into one process with pyarrow instead of
#: a Ray Data job (evaluation, the baseline, training's in-memory datasets): starting Ray
#: Data's task and actor workers (each a Python process importing torch) costs seconds to
#: tens of seconds on a small machine, while reading and transforming 100k tabular rows
#: takes well under a second.
IN_PROCESS_MAX_ROWS = 200_000


def _split_dataset(staged_path: str, split: str):
    """One split as a ``pyarrow.dataset`` (nothing read yet); None when it has no rows."""
    import pyarrow.dataset as pads

    fs, inner = filesystem(split_path(staged_path, split))
    if fs.get_file_info(inner).type == pafs.FileType.NotFound:
        return None
    return pads.dataset(inner, filesystem=fs, format="parquet", partitioning=None)


def _empty_split(split: str) -> DataValidationError:
    return DataValidationError(
        f"the {split} split is empty; add data or change data.split fractions"
    )


def split_rows(staged_path: str, split: str) -> int | None:
    """Rows of one split from its Parquet footers (no data read); None when it has none."""
    dataset = _split_dataset(staged_path, split)
    return None if dataset is None else dataset.count_rows()


def split_schema(staged_path: str, split: str) -> pa.Schema | None:
    """One split's Arrow schema (its declared columns) from a Parquet footer; None if empty."""
    dataset = _split_dataset(staged_path, split)
    if dataset is None:
        return None
    schema = dataset.schema
    for col in (REASON_COL, RULES_COL, SOURCE_COL):
        if col in schema.names:
            schema = schema.remove(schema.get_field_index(col))
    return schema


def read_split_frame(
    staged_path: str, split: str, columns: list[str] | None = None, rows: int | None = None
):
    """One split as one pandas frame, read with pyarrow in this process (no Ray Data job).

    The in-process counterpart of :func:`read_split` for splits of at most
    :data:`IN_PROCESS_MAX_ROWS` rows: the declared columns, or only ``columns``; with
    ``rows``, only the split's first that many rows (of any size of split: pyarrow reads
    no further than it needs).
    """
    dataset = _split_dataset(staged_path, split)
    if dataset is None:
        raise _empty_split(split)
    table = dataset.to_table(columns=columns) if rows is None else dataset.head(rows, columns)
    drop = [c for c in (REASON_COL, RULES_COL, SOURCE_COL) if c in table.column_names]
    return table.drop_columns(drop).to_pandas()


def stage(
    cfg: PipelineConfig,
    sources: SourceFiles,
    fingerprint: str,
    out_dir: str,
    source_rows: dict[str, int] | None = None,
) -> DataReport:
    """Validate and split every input row in one streaming pass; write and count the result.

    ``source_rows`` are the Parquet footer counts when the caller already read them
    (:func:`rayline.data.validate.check_file_schemas` returns them); else they are read here.

    Raises:
        DataValidationError: a rule with ``on_violation: fail`` was broken, a rule broke its
            ``max_bad_fraction_by_rule`` limit, or the fraction of quarantined rows exceeds
            ``schema.max_bad_fraction`` (the quarantine is still written, for inspection).
        DataSourceError: an input file could not be read.
    """
    columns = cfg.schema_.columns
    staged = f"{out_dir}/staged"
    fs, inner = filesystem(staged)
    contract = _contract_hash(cfg)
    reused = _reusable_marker(fs, inner, fingerprint, contract)
    if source_rows is None:
        source_rows = _source_row_counts(sources)
    if reused is not None:
        log.info("reusing staged data at %s (same input fingerprint and contract)", staged)
        counts, top, rule_counts = reused["counts"], reused["top_reasons"], reused["rule_counts"]
    else:
        # Anything already there is a half-written or stale attempt: Ray Data appends, so
        # writing over it would count rows twice.
        if fs.get_file_info(inner).type != pafs.FileType.NotFound:
            fs.delete_dir(inner)
        fs.create_dir(inner, recursive=True)
        total = sum(source_rows.values()) if source_rows is not None else None
        text_bytes = _text_bytes(sources) if source_rows is None else None
        max_rows = cfg.runtime.in_process_max_rows
        small_text = text_bytes is not None and text_bytes <= text_in_process_bytes(max_rows)
        if small_text or (total is not None and total <= max_rows):
            # A small input: the same validation and split in this process, with pyarrow
            # (and rayline's own CSV / JSON Lines parsers), instead of a Ray Data job whose
            # task workers take seconds to start.
            size = f"{text_bytes} bytes of {sources.format}" if small_text else f"{total} rows"
            log.info("staging %s in this process (runtime.in_process_max_rows=%d)", size, max_rows)
            table = _stage_in_process(cfg, sources)
            pq.write_to_dataset(table, inner, partition_cols=[SPLIT_COL], filesystem=fs)
            counts = _partition_counts(fs, inner)
            quarantined = table.filter(pc.equal(table[SPLIT_COL], QUARANTINE))
            top, rule_counts = _reason_counts(
                quarantined[REASON_COL].value_counts(), quarantined[RULES_COL].value_counts()
            )
        else:
            from rayline.runtime import init_ray

            init_ray(cfg.runtime)  # `rayline validate` starts Ray only for this path
            ds = read_dataset(sources, list(columns), cfg.data.on_unreadable_row)
            try:
                duplicates = _duplicated_values(ds, cfg, shuffle_partitions(sources))
                staged_ds = ds.map_batches(
                    _StageBatch(cfg, sources.display_names(), duplicates), batch_format="pandas"
                )
                staged_ds.write_parquet(inner, filesystem=fs, partition_cols=[SPLIT_COL])
            except Exception as exc:
                user_error = find_user_error(exc)
                if user_error is not None:
                    raise user_error from None
                raise
            counts = _partition_counts(fs, inner)
            top, rule_counts = _quarantine_summary(staged) if counts[QUARANTINE] else ([], {})
        marker = {
            "fingerprint": fingerprint,
            "contract": contract,
            "counts": counts,
            "top_reasons": top,
            "rule_counts": rule_counts,
        }
        with fs.open_output_stream(f"{inner}/{MARKER}") as f:
            f.write(json.dumps(marker).encode())

    rows_q = counts[QUARANTINE]
    rows_ok = sum(counts[s] for s in SPLITS)
    rows_in = rows_ok + rows_q
    if source_rows is not None and sum(source_rows.values()) != rows_in:
        # Every row must land in exactly one place; a mismatch is a bug, never bad data.
        raise RuntimeError(
            f"staging lost or duplicated rows: the input holds {sum(source_rows.values())}, "
            f"the staged splits {rows_in}"
        )
    bad_fraction = rows_q / rows_in if rows_in else 0.0
    report = DataReport(
        files=list(sources.uris),
        fingerprint=fingerprint,
        rows_in=rows_in,
        rows_ok=rows_ok,
        rows_quarantined=rows_q,
        splits={s: counts[s] for s in SPLITS},
        bad_fraction=bad_fraction,
        max_bad_fraction=cfg.schema_.max_bad_fraction,
        top_reasons=top,
        rule_counts=rule_counts,
        rows_by_source=source_rows,
        staged_path=staged,
        quarantine_path=split_path(staged, QUARANTINE) if rows_q else "",
    )
    log.info(
        "staged %d rows: %s, quarantined %d (%.2f%%)",
        rows_in,
        report.splits,
        rows_q,
        100 * bad_fraction,
    )
    if rows_in == 0:
        raise DataValidationError(f"the input files hold no rows: {', '.join(sources.uris)}")
    problems = contract_violations(cfg, report)
    if problems:
        reasons = "\n".join(f"  - {t['rows']} row(s): {t['reason']}" for t in top[:5])
        exc = DataValidationError(
            "the data breaks the contract:\n"
            + "\n".join(f"  * {p}" for p in problems)
            + f"\nMost common reasons:\n{reasons}\nThe bad rows are in "
            f"{report.quarantine_path}; each names its source file. Fix the data or the schema."
        )
        exc.report = report  # the caller logs what was found before failing
        raise exc
    return report


def contract_violations(cfg: PipelineConfig, report: DataReport) -> list[str]:
    """Why the staged data fails the contract (empty when it passes), one line per rule."""
    schema = cfg.schema_
    problems = []
    rows_in = max(report.rows_in, 1)
    for rule, n in report.rule_counts.items():
        column = rule.rpartition(".")[0]
        if rule != UNREADABLE_RULE and schema.on_violation_of(column) == "fail":
            problems.append(
                f"{n} row(s) break {rule} and schema says on_violation: fail for '{column}'"
            )
        limit = schema.max_bad_fraction_by_rule.get(rule)
        if limit is not None and n / rows_in > limit:
            problems.append(
                f"{n} of {report.rows_in} rows ({100 * n / rows_in:.2f}%) break {rule}, more "
                f"than schema.max_bad_fraction_by_rule.{rule}={limit:g}"
            )
    if report.bad_fraction > schema.max_bad_fraction:
        problems.append(
            f"{report.rows_quarantined} of {report.rows_in} rows "
            f"({100 * report.bad_fraction:.2f}%) break the schema, more than "
            f"schema.max_bad_fraction={schema.max_bad_fraction:g}; raise it only if that is "
            "expected"
        )
    return problems
