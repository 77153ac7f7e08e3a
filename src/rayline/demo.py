"""The demo dataset: scikit-learn's bundled Wisconsin breast cancer data, written as Parquet.

A real, shipped dataset (569 tumours, 30 numeric measurements, benign or malignant): no
download at run time. Columns are renamed to snake_case and each row gets a stable
``sample_id`` that the split hashes on.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from rayline.paths import output_dir


def demo_frame() -> pd.DataFrame:
    """The dataset as a DataFrame: ``sample_id``, 30 float features, ``diagnosis``."""
    from sklearn.datasets import load_breast_cancer

    bunch = load_breast_cancer(as_frame=True)
    df = bunch.data.copy()
    df.columns = [c.replace(" ", "_") for c in df.columns]
    df.insert(0, "sample_id", range(len(df)))
    df["diagnosis"] = pd.Categorical.from_codes(bunch.target, list(bunch.target_names)).astype(str)
    return df


def write_demo_dataset(out: str | Path, files: int = 2) -> list[Path]:
    """Write the demo data as ``files`` Parquet files under directory ``out``; return the paths."""
    out = output_dir(out, "--out")
    df = demo_frame()
    paths = []
    step = -(-len(df) // files)
    for i in range(files):
        path = out / f"part-{i:03d}.parquet"
        df.iloc[i * step : (i + 1) * step].to_parquet(path, index=False)
        paths.append(path)
    return paths


def parse_days(text: str, of: int) -> list[int]:
    """``--days 1-3`` or ``1,2,4`` -> day numbers, each between 1 and ``of``.

    Raises:
        ValueError: not a list or range of whole days within 1..of.
    """
    days: list[int] = []
    try:
        for part in text.split(","):
            lo, _, hi = part.strip().partition("-")
            days.extend(range(int(lo), int(hi or lo) + 1))
    except ValueError:
        days = []
    if not days or any(d < 1 or d > of for d in days):
        raise ValueError(
            f"'{text}' is not a list or range of days between 1 and {of} (--of); write e.g. "
            "1-3 or 4"
        )
    return sorted(set(days))


def write_demo_days(out: str | Path, days: list[int], of: int) -> list[Path]:
    """Write days of the demo data as a hive tree ``out/day=K/part-000.parquet``.

    The rows are dealt into ``of`` days by ``sample_id`` (day K holds the rows with
    ``sample_id % of == K - 1``), so writing day 4 later adds rows no earlier day has: new
    data arriving, for ``rayline retrain``.
    """
    out = output_dir(out, "--out")
    df = demo_frame()
    paths = []
    for day in days:
        target = out / f"day={day}"
        target.mkdir(parents=True, exist_ok=True)
        path = target / "part-000.parquet"
        df[df["sample_id"] % of == day - 1].to_parquet(path, index=False)
        paths.append(path)
    return paths
