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
