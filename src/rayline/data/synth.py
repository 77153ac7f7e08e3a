"""Synthetic data for scale tests: ``rayline data synth --rows N --cols K --out DIR``.

Writes a sharded Parquet dataset with a key column, numeric and categorical features (some
with nulls) and a learnable binary target, plus the matching pipeline config, so scale
tests and benchmarks run on data of any size without downloads. Each shard is generated
from its own seed, one at a time, so memory stays bounded by one shard however many rows
are asked for, and the same arguments always write the same bytes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from rayline.paths import output_dir

TARGET = "label"
KEY = "row_id"


def column_names(cols: int) -> tuple[list[str], list[str]]:
    """(numeric, categorical) feature names for ``cols`` features: a quarter categorical."""
    n_cat = cols // 4
    numeric = [f"x{i}" for i in range(cols - n_cat)]
    categorical = [f"c{i}" for i in range(n_cat)]
    return numeric, categorical


def _levels(j: int) -> list[str]:
    return [f"v{k}" for k in range(4 + 3 * j % 20)]


def _shard(
    start: int, rows: int, cols: int, seed: int, shard: int, null_fraction: float
) -> pa.Table:
    numeric, categorical = column_names(cols)
    weights = np.random.default_rng(seed).normal(size=len(numeric)) / np.sqrt(max(len(numeric), 1))
    rng = np.random.default_rng([seed, shard])
    x = rng.normal(size=(rows, len(numeric))).astype(np.float32)
    logit = x @ weights
    data: dict[str, Any] = {KEY: np.arange(start, start + rows, dtype=np.int64)}
    for j, name in enumerate(numeric):
        col = x[:, j]
        if j % 3 == 1 and null_fraction > 0:  # every third numeric column has nulls
            mask = rng.random(rows) < null_fraction
            data[name] = pa.array(col, mask=mask)
        else:
            data[name] = col
    for j, name in enumerate(categorical):
        levels = _levels(j)
        codes = rng.integers(0, len(levels), size=rows)
        # Each level shifts the logit: the categorical columns carry signal too.
        effect = np.random.default_rng([seed, 10_000 + j]).normal(scale=0.5, size=len(levels))
        logit = logit + effect[codes]
        data[name] = pa.DictionaryArray.from_arrays(
            pa.array(codes, type=pa.int32()), pa.array(levels)
        ).cast(pa.string())
    noise = rng.logistic(size=rows) * 0.5
    data[TARGET] = (logit + noise > 0).astype(np.int64)
    return pa.table(data)


def write_synthetic(
    out: str | Path,
    rows: int,
    cols: int = 32,
    shards: int | None = None,
    seed: int = 0,
    null_fraction: float = 0.02,
) -> list[Path]:
    """Write ``rows`` rows as Parquet shards under ``out``; return the shard paths.

    ``shards`` defaults to one per million rows (at least one).
    """
    if rows < 1 or cols < 1:
        raise ValueError("rows and cols must be positive")
    out = output_dir(out, "--out")
    shards = shards or max(1, -(-rows // 1_000_000))
    bounds = np.linspace(0, rows, shards + 1).astype(np.int64)
    paths = []
    for i in range(shards):
        lo, hi = int(bounds[i]), int(bounds[i + 1])
        table = _shard(lo, hi - lo, cols, seed, i, null_fraction)
        path = out / f"part-{i:05d}.parquet"
        pq.write_table(table, path, row_group_size=128 * 1024)
        paths.append(path)
    return paths


def synthetic_config(data_path: str, cols: int, name: str = "synthetic") -> dict[str, Any]:
    """A pipeline config whose schema matches :func:`write_synthetic`'s output."""
    numeric, categorical = column_names(cols)
    columns: dict[str, Any] = {KEY: {"type": "int"}}
    for j, c in enumerate(numeric):
        columns[c] = {"type": "float", "nullable": j % 3 == 1}
    for j, c in enumerate(categorical):
        columns[c] = {"type": "string", "allowed": _levels(j)}
    columns[TARGET] = {"type": "int", "allowed": [0, 1]}
    return {
        "name": name,
        "data": {"path": data_path, "target": TARGET, "split": {"key": KEY}},
        "schema": {"columns": columns},
        "model": {"task": "classification", "hidden_sizes": [64, 32]},
        "train": {"epochs": 2, "batch_size": 4096, "num_workers": 2},
    }


def config_yaml(data_path: str, cols: int) -> str:
    """:func:`synthetic_config` as YAML."""
    return yaml.safe_dump(synthetic_config(data_path, cols), sort_keys=False)
