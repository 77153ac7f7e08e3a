"""User feature transforms for the pipeline tests ('tests.integration.feature_fns:<name>')."""

from __future__ import annotations

import pandas as pd


def add_pro_flag(batch: pd.DataFrame) -> pd.DataFrame:
    """Stateless: a 0/1 column from a categorical one; returns a new frame."""
    return batch.assign(is_pro=(batch["plan"] == "pro").astype("float64"))
