"""Staging: one streaming pass that validates every row and assigns its split.

Raw files are read, validated (:mod:`rayline.data.validate`) and split
(:mod:`rayline.data.split`) in a single Ray Data pipeline, written as Parquet partitioned by
split: ``train/``, ``val/``, ``test/`` and ``quarantine/`` (bad rows with their reason). The
partition row counts come from Parquet footers, so the report proves that every input row
landed in exactly one place without reading the data again. Later stages read each split
lazily from here; a retried run can reuse it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass, field
from typing import Any

import pandas as pd
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from rayline.config import PipelineConfig
from rayline.data.ingest import SourceFiles, read_dataset
from rayline.data.split import QUARANTINE, SPLIT_COL, SPLITS, assign_split
from rayline.data.validate import REASON_COL, validate_batch
from rayline.errors import DataValidationError

log = logging.getLogger(__name__)


@dataclass
class DataReport:
    """Row accounting for one run: ``rows_in == rows_ok + rows_quarantined``."""

    files: list[str]
    fingerprint: str
    rows_in: int
    rows_ok: int
    rows_quarantined: int
    splits: dict[str, int]
    bad_fraction: float
    max_bad_fraction: float
    top_reasons: list[dict[str, Any]] = field(default_factory=list)
    staged_path: str = ""
    quarantine_path: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


class _StageBatch:
    def __init__(self, cfg: PipelineConfig):
        self.columns = cfg.schema_.columns
        self.split = cfg.data.split

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        out = validate_batch(batch, self.columns)
        bad = out[REASON_COL].notna().to_numpy()
        # object dtype: a fixed-width numpy string array would cut "quarantine" to "quara".
        where = assign_split(out.drop(columns=[REASON_COL]), self.split, list(self.columns)).astype(
            object
        )
        where[bad] = QUARANTINE
        out[SPLIT_COL] = where
        return out


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
            "schema": cfg.schema_.model_dump(mode="json"),
            "split": cfg.data.split.model_dump(mode="json"),
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
    }


def _top_reasons(staged: str, limit: int = 10) -> list[dict[str, Any]]:
    """The most frequent quarantine reasons with their row counts."""
    from ray.data.aggregate import ValueCounter

    qds = read_split(staged, QUARANTINE)
    vc = qds.aggregate(ValueCounter(REASON_COL, alias_name="r"))["r"]
    pairs = sorted(zip(vc["values"], vc["counts"], strict=True), key=lambda p: -p[1])
    return [{"reason": r, "rows": int(n)} for r, n in pairs[:limit]]


def split_path(staged_path: str, split: str) -> str:
    """Directory of one split inside the staged dataset."""
    return f"{staged_path}/{SPLIT_COL}={split}"


def read_split(staged_path: str, split: str, columns: list[str] | None = None):
    """A lazy Ray Dataset of one split's rows: the declared columns, or only ``columns``."""
    import ray.data

    path = split_path(staged_path, split)
    fs, inner = pafs.FileSystem.from_uri(path if "://" in path else os.path.abspath(path))
    info = fs.get_file_info(inner)
    if info.type == pafs.FileType.NotFound:
        raise DataValidationError(
            f"the {split} split is empty; add data or change data.split fractions"
        )
    if columns is not None:
        return ray.data.read_parquet(inner, filesystem=fs, partitioning=None, columns=columns)
    ds = ray.data.read_parquet(inner, filesystem=fs, partitioning=None)
    return ds.drop_columns([REASON_COL]) if split != QUARANTINE else ds


def stage(cfg: PipelineConfig, sources: SourceFiles, fingerprint: str, out_dir: str) -> DataReport:
    """Validate and split every input row in one streaming pass; write and count the result.

    Raises:
        DataValidationError: the fraction of quarantined rows exceeds
            ``schema.max_bad_fraction`` (the quarantine is still written, for inspection).
    """
    columns = cfg.schema_.columns
    staged = f"{out_dir}/staged"
    fs, inner = pafs.FileSystem.from_uri(staged if "://" in staged else os.path.abspath(staged))
    contract = _contract_hash(cfg)
    reused = _reusable_marker(fs, inner, fingerprint, contract)
    if reused is not None:
        log.info("reusing staged data at %s (same input fingerprint and contract)", staged)
        counts, top = reused["counts"], reused["top_reasons"]
    else:
        # Anything already there is a half-written or stale attempt: Ray Data appends, so
        # writing over it would count rows twice.
        if fs.get_file_info(inner).type != pafs.FileType.NotFound:
            fs.delete_dir(inner)
        fs.create_dir(inner, recursive=True)
        string_cols = list(columns) if sources.format == "csv" else None
        ds = read_dataset(sources, string_columns=string_cols, columns=list(columns))
        ds = ds.map_batches(_StageBatch(cfg), batch_format="pandas")
        ds.write_parquet(inner, filesystem=fs, partition_cols=[SPLIT_COL])
        counts = _partition_counts(fs, inner)
        top = _top_reasons(staged) if counts[QUARANTINE] else []
        marker = {
            "fingerprint": fingerprint,
            "contract": contract,
            "counts": counts,
            "top_reasons": top,
        }
        with fs.open_output_stream(f"{inner}/{MARKER}") as f:
            f.write(json.dumps(marker).encode())

    rows_q = counts[QUARANTINE]
    rows_ok = sum(counts[s] for s in SPLITS)
    rows_in = rows_ok + rows_q
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
    if bad_fraction > cfg.schema_.max_bad_fraction:
        reasons = "\n".join(f"  - {t['rows']} row(s): {t['reason']}" for t in top[:5])
        exc = DataValidationError(
            f"{rows_q} of {rows_in} rows ({100 * bad_fraction:.2f}%) break the schema, more than "
            f"schema.max_bad_fraction={cfg.schema_.max_bad_fraction:g}. Most common reasons:\n"
            f"{reasons}\nThe bad rows are in {report.quarantine_path}; fix the data or the "
            "schema, or raise schema.max_bad_fraction."
        )
        exc.report = report  # the caller logs what was found before failing
        raise exc
    return report
