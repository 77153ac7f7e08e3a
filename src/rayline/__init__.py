"""rayline: a Ray-native model training pipeline, from raw data to a gated MLflow champion."""

__version__ = "0.1.0"
