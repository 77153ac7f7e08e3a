"""Raw rows in, predictions out: the one code path that evaluation and serving share.

Pure torch + numpy + pandas (no Ray, no MLflow), so the registered model needs nothing more.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from rayline.data.features import FittedPreprocessor
from rayline.train.models import build_model

PROBA_PREFIX = "probability_"


class Predictor:
    """A trained network and its fitted preprocessor."""

    def __init__(
        self, prep: FittedPreprocessor, model_spec: dict[str, Any], state_dict: dict[str, Any]
    ):
        self.prep = prep
        self.model_spec = model_spec
        self.model = build_model(model_spec, prep.output_dim, prep.num_outputs, prep=prep)
        self.model.load_state_dict(state_dict)
        self.model.eval()

    @classmethod
    def from_files(
        cls, preprocessor: str | Path, model_spec: str | Path, weights: str | Path
    ) -> Predictor:
        """Load from the JSON preprocessor, the JSON model spec and a state_dict file.

        The weights are read with ``weights_only=True``: tensors only, no pickled code.
        """
        prep = FittedPreprocessor.load(preprocessor)
        spec = json.loads(Path(model_spec).read_text())
        state = torch.load(weights, map_location="cpu", weights_only=True)
        return cls(prep, spec, state)

    def check_columns(self, df: pd.DataFrame) -> None:
        """Raise ``ValueError`` naming any missing input column."""
        missing = [c for c in self.prep.input_columns if c not in df.columns]
        if missing:
            raise ValueError(
                f"input is missing column(s) {', '.join(missing)}; the model reads "
                f"{', '.join(self.prep.input_columns)}"
            )

    def check_values(self, df: pd.DataFrame) -> None:
        """Raise ``ValueError`` naming a numeric column with a value that is not a number."""
        raw = set(self.prep.input_columns)
        for c in self.prep.numeric:
            if c["name"] not in raw:
                continue  # made by a derived expression or a user transform, not a raw input
            col = df[c["name"]]
            if col.dtype == object or pd.api.types.is_string_dtype(col.dtype):
                parsed = pd.to_numeric(col, errors="coerce")
                bad = parsed.isna() & col.notna()
                if bad.any():
                    raise ValueError(
                        f"column '{c['name']}' must be numeric; got {col[bad].iloc[0]!r}"
                    )

    def output(self, df: pd.DataFrame) -> np.ndarray:
        """Class probabilities (rows, classes) or regression predictions (rows,)."""
        return self.output_from_features(self.features(df))

    def features(self, df: pd.DataFrame) -> np.ndarray:
        """Raw rows -> the network's input matrix (columns and values checked first).

        Models that share the fitted preprocessor (a sweep's challengers) share this step.
        """
        self.check_columns(df)
        self.check_values(df)
        return self.prep.transform(df)

    def output_from_features(self, x: np.ndarray) -> np.ndarray:
        """The network on transformed features -> probabilities or predictions."""
        with torch.no_grad():
            raw = self.model(torch.from_numpy(x)).float().numpy()
        return self.prep.decode_output(raw)

    def predict_frame(self, df: pd.DataFrame) -> pd.DataFrame:
        """The serving output: ``prediction`` plus ``probability_<class>`` for classifiers."""
        out = self.output(df)
        if self.prep.task == "regression":
            return pd.DataFrame({"prediction": out})
        frame = {"prediction": self.prep.decode_labels(out.argmax(axis=1))}
        for i, c in enumerate(self.prep.classes or []):
            frame[f"{PROBA_PREFIX}{c}"] = out[:, i]
        result = pd.DataFrame(frame)
        # Labels keep their type (ints stay ints) so that predictions compare with the data.
        if all(isinstance(c, int) for c in self.prep.classes or []):
            result["prediction"] = result["prediction"].astype("int64")
        return result


def output_from_frame(frame: pd.DataFrame, prep: FittedPreprocessor) -> np.ndarray:
    """Turn a served prediction frame back into the metric input for ``prep``'s task.

    Used to score another model (the champion) whose classes may be ordered differently:
    probabilities are aligned to ``prep.classes`` by column name; absent classes get 0.
    """
    if prep.task == "regression":
        return frame["prediction"].to_numpy(dtype=np.float64)
    cols = []
    for c in prep.classes or []:
        name = f"{PROBA_PREFIX}{c}"
        cols.append(
            frame[name].to_numpy(dtype=np.float64) if name in frame else np.zeros(len(frame))
        )
    return np.stack(cols, axis=1)
