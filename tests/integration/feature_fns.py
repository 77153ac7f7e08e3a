"""User feature transforms for the pipeline tests ('tests.integration.feature_fns:<name>')."""

from __future__ import annotations

import pandas as pd


def add_pro_flag(batch: pd.DataFrame) -> pd.DataFrame:
    """Stateless: a 0/1 column from a categorical one; returns a new frame."""
    return batch.assign(is_pro=(batch["plan"] == "pro").astype("float64"))


class IncomeVsPlan:
    """Stateful: income minus its plan's mean income, the means fitted on the train split."""

    def fit(self, batches) -> dict:
        sums: dict[str, float] = {}
        counts: dict[str, int] = {}
        for b in batches:
            g = b.dropna(subset=["income"]).groupby("plan")["income"].agg(["sum", "count"])
            for plan, row in g.iterrows():
                sums[plan] = sums.get(plan, 0.0) + float(row["sum"])
                counts[plan] = counts.get(plan, 0) + int(row["count"])
        return {"means": {p: sums[p] / counts[p] for p in sums}}

    def transform(self, batch: pd.DataFrame, state: dict) -> pd.DataFrame:
        means = batch["plan"].map(state["means"]).astype("float64")
        return batch.assign(income_vs_plan=batch["income"].astype("float64") - means)
