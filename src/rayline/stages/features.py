"""Features: fit the preprocessor on the train split; its JSON state is the result.

Cached by the staging key + ``features`` + ``schema`` + the source of rayline's feature
code and of every user transform ``features.user`` names.
"""

from __future__ import annotations

from typing import Any

from rayline.data import features, stage
from rayline.data.features import FittedPreprocessor, LocalSplit
from rayline.run import read_text, write_text
from rayline.stages.base import Stage

FILE = "preprocessor.json"


def all_ok_rows(staged_path: str):
    """Every validated row (train, val and test): for vocabularies the schema does not fix."""
    parts = [stage.read_split(staged_path, s) for s in ("train", "val", "test")]
    return parts[0].union(*parts[1:])


def train_split(staged_path: str, max_rows: int) -> Any:
    """The train split for a one-pass statistic (the profile): a
    :class:`rayline.data.features.LocalSplit` when it holds at most ``max_rows`` rows, else
    a Ray Dataset."""
    rows = stage.split_rows(staged_path, "train") or 0
    if 0 < rows <= max_rows:
        return LocalSplit(stage.read_split_frame(staged_path, "train"))
    return stage.read_split(staged_path, "train")


def fit_inputs(staged_path: str, max_rows: int) -> tuple[Any, Any]:
    """The train split and every validated row, as the fit reads them: in this process
    (:class:`rayline.data.features.LocalSplit`) when the splits hold at most ``max_rows``
    rows together (``runtime.in_process_max_rows``), else as Ray Datasets."""
    rows = {s: stage.split_rows(staged_path, s) or 0 for s in ("train", "val", "test")}
    if not rows["train"] or sum(rows.values()) > max_rows:
        # (An empty train split gets the fit's own error, from the Ray Data path.)
        return stage.read_split(staged_path, "train"), all_ok_rows(staged_path)
    parts = {s: LocalSplit(stage.read_split_frame(staged_path, s)) for s in rows if rows[s]}
    train = parts.pop("train")
    return train, train.union(*parts.values())


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
        train, every = fit_inputs(staged, run.cfg.runtime.in_process_max_rows)
        prep = features.fit_from_config(run.cfg, train, every)
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
