"""Features: fit the preprocessor on the train split; its JSON state is the result.

Cached by the staging key + ``features`` + ``schema`` + the source of rayline's feature
code and of every user transform ``features.user`` names.
"""

from __future__ import annotations

from typing import Any

from rayline.data import features, stage
from rayline.data.features import FittedPreprocessor
from rayline.run import read_text, write_text
from rayline.stages.base import Stage

FILE = "preprocessor.json"


def all_ok_rows(staged_path: str):
    """Every validated row (train, val and test): for vocabularies the schema does not fix."""
    parts = [stage.read_split(staged_path, s) for s in ("train", "val", "test")]
    return parts[0].union(*parts[1:])


class Features(Stage):
    """Fit imputation, scaling, encodings and user transforms on the train split."""

    name = "features"
    reads = ("features", "schema")
    needs = ("validate+split",)
    cacheable = True
    code = ("rayline.data.features", "rayline.data.transforms")

    def user_code(self, cfg) -> list[str]:
        return list(cfg.features.user)

    def compute(self, run, inputs, out) -> FittedPreprocessor:
        staged = inputs["validate+split"].staged_path
        prep = features.fit_from_config(
            run.cfg, stage.read_split(staged, "train"), all_ok_rows(staged)
        )
        write_text(f"{out}/{FILE}", prep.to_json())
        return prep

    def load(self, run, meta: dict[str, Any], out: str) -> FittedPreprocessor:
        return FittedPreprocessor.from_json(read_text(f"{out}/{FILE}") or "")

    def finish(self, run, inputs, result: FittedPreprocessor) -> FittedPreprocessor:
        path = run.local_dir / FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        result.save(path)
        run.registry.log_file(str(path), "preprocessor")
        return result

    def summary(self, run, result: FittedPreprocessor) -> str:
        return f"{len(result.input_columns)} input columns -> {result.output_dim} features"
