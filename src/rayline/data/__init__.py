"""The data plane: ingest, validate, split and featurize with Ray Data."""
