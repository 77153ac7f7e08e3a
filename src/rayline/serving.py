"""The registered model: an ``mlflow.pyfunc`` PythonModel logged with MLflow's models-from-code.

MLflow executes this file when the model is loaded (``mlflow.models.set_model`` at the
bottom), so nothing of ours is unpickled: the network is rebuilt from its JSON spec, its
weights come from a ``state_dict`` (``weights_only=True``), the preprocessor from JSON. The
model takes the raw input columns; preprocessing travels inside.
"""

from __future__ import annotations

import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel

from rayline.inference import Predictor


class RaylineModel(PythonModel):
    """Raw rows -> preprocessor -> network -> ``prediction`` (+ ``probability_<class>``)."""

    def load_context(self, context) -> None:
        """Load the preprocessor, model spec and weights from the model's artifacts."""
        a = context.artifacts
        self.predictor = Predictor.from_files(a["preprocessor"], a["model_spec"], a["weights"])

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        """Score raw rows; extra columns are ignored, missing ones raise ``ValueError``."""
        if not isinstance(model_input, pd.DataFrame):
            model_input = pd.DataFrame(model_input)
        return self.predictor.predict_frame(model_input)


mlflow.models.set_model(RaylineModel())
