"""Scoring on the test split: the challenger and the champion in one pass, in the driver
for a small split and through one Ray Data actor for a large one, with the same numbers."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from rayline import evaluate
from rayline.config import validate_config
from rayline.data.features import fit_from_config
from rayline.data.ingest import fingerprint, resolve_sources
from rayline.data.stage import read_split, split_path, stage
from rayline.inference import Predictor
from rayline.metrics import compute_metrics
from rayline.train.loop import WEIGHTS_FILE
from rayline.train.models import build_model

from .conftest import base_config, make_table, write_parts

pytestmark = pytest.mark.integration


class _Champion:
    """A served model as MLflow's pyfunc presents one: ``predict(raw rows) -> frame``."""

    def __init__(self, predictor: Predictor, needs: str | None = None):
        self.predictor, self.needs = predictor, needs

    def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
        if self.needs is not None:
            frame[self.needs]  # a column this data does not have: KeyError
        return self.predictor.predict_frame(frame)


def _loader(spec):
    """``loader(uri)``, picklable for the Ray Data actor: the uri names the model."""
    prep_json, model_spec, state_path, needs = spec["models"][spec["uri_key"]]
    from rayline.data.features import FittedPreprocessor

    state = torch.load(state_path, map_location="cpu", weights_only=True)
    return _Champion(Predictor(FittedPreprocessor.from_json(prep_json), model_spec, state), needs)


class _Load:
    def __init__(self, models):
        self.models = models

    def __call__(self, uri: str):
        return _loader({"models": self.models, "uri_key": uri})


@pytest.fixture(scope="module")
def scored(ray_session, tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluate")
    data = write_parts(make_table(600, seed=11), root / "data", parts=2)
    cfg = validate_config(base_config(data, root / "runs"))
    sources = resolve_sources(cfg.data.path)
    report = stage(cfg, sources, fingerprint(sources), str(root / "stage"))
    prep = fit_from_config(cfg, read_split(report.staged_path, "train"))
    spec = cfg.model.model_dump()
    dirs = {}
    for seed in (0, 1):  # two different untrained networks: challenger and champion
        torch.manual_seed(seed)
        net = build_model(spec, prep.output_dim, prep.num_outputs, prep)
        d = root / f"model-{seed}"
        d.mkdir()
        torch.save(net.state_dict(), d / WEIGHTS_FILE)
        dirs[seed] = d
    models = {
        "models:/c/1": (prep.to_json(), spec, str(dirs[1] / WEIGHTS_FILE), None),
        "models:/c/2": (prep.to_json(), spec, str(dirs[1] / WEIGHTS_FILE), "no_such_column"),
    }
    return {"report": report, "prep": prep, "spec": spec, "dirs": dirs, "load": _Load(models)}


def _expected(st, seed: int) -> dict[str, float]:
    test = pd.read_parquet(split_path(st["report"].staged_path, "test")).drop(
        columns=["_rayline_reason", "_rayline_rules", "_rayline_source"], errors="ignore"
    )
    state = torch.load(st["dirs"][seed] / WEIGHTS_FILE, weights_only=True)
    out = Predictor(st["prep"], st["spec"], state).output(test)
    return compute_metrics("classification", st["prep"].true_values(test["churned"]), out)


@pytest.mark.parametrize("where", ["driver", "ray_data"])
def test_challenger_and_champion_are_scored_in_one_pass(scored, where):
    rows = scored["report"].splits["test"]
    got = evaluate.score(
        scored["report"].staged_path,
        scored["prep"],
        scored["spec"],
        str(scored["dirs"][0]),
        batch_size=32,
        champion=(scored["load"], "models:/c/1"),
        test_rows=rows,
        max_rows=0 if where == "ray_data" else evaluate.DRIVER_MAX_ROWS,
    )
    assert got.rows == rows and got.champion_error is None
    for name, value in _expected(scored, 0).items():
        assert got.metrics[name] == pytest.approx(value, abs=1e-6), name
    for name, value in _expected(scored, 1).items():
        assert got.champion_metrics[name] == pytest.approx(value, abs=1e-6), name
    assert got.metrics != got.champion_metrics


@pytest.mark.parametrize("where", ["driver", "ray_data"])
def test_an_unscorable_champion_is_reported_and_the_challenger_still_scored(scored, where):
    got = evaluate.score(
        scored["report"].staged_path,
        scored["prep"],
        scored["spec"],
        str(scored["dirs"][0]),
        batch_size=1000,
        champion=(scored["load"], "models:/c/2"),
        test_rows=scored["report"].splits["test"],
        max_rows=0 if where == "ray_data" else evaluate.DRIVER_MAX_ROWS,
    )
    assert got.champion_metrics is None
    assert got.champion_error.startswith("KeyError") and "no_such_column" in got.champion_error
    assert got.metrics["log_loss"] == pytest.approx(_expected(scored, 0)["log_loss"], abs=1e-6)


@pytest.mark.parametrize("where", ["driver", "ray_data"])
def test_several_challengers_champion_and_slice_columns_in_one_pass(scored, where):
    """k challengers (different weights) + the champion: one read, every model's output
    kept, row-aligned with the true values and the raw slice columns."""
    rows = scored["report"].splits["test"]
    other = evaluate.Candidate("trial-b", scored["spec"], str(scored["dirs"][1]))
    got = evaluate.score(
        scored["report"].staged_path,
        scored["prep"],
        scored["spec"],
        str(scored["dirs"][0]),
        batch_size=50,
        champion=(scored["load"], "models:/c/1"),
        test_rows=rows,
        max_rows=0 if where == "ray_data" else evaluate.DRIVER_MAX_ROWS,
        others=[other],
        columns=["plan", "age"],
    )
    assert set(got.outputs) == {"challenger", "trial-b", "champion"}
    assert all(len(o) == rows for o in got.outputs.values()) and len(got.y) == rows
    for name, value in _expected(scored, 1).items():
        assert got.others["trial-b"][name] == pytest.approx(value, abs=1e-6), name
    # trial-b has the champion's weights: identical predictions, row by row.
    assert got.outputs["trial-b"] == pytest.approx(got.outputs["champion"], abs=1e-6)
    assert set(got.columns["plan"]) <= {"basic", "plus", "pro"}
    # The slice columns are aligned with the labels: recompute one slice's accuracy.
    pro = got.columns["plan"] == "pro"
    acc = float((got.outputs["challenger"][pro].argmax(1) == got.y[pro]).mean())
    from rayline.analysis import slice_metrics

    (entry,) = [
        s
        for s in slice_metrics("classification", got.y, got.outputs, got.columns, [("plan", None)])
        if s["slice"] == "pro"
    ]
    assert entry["metrics"]["challenger"]["accuracy"] == pytest.approx(acc)
    with pytest.raises(ValueError, match="names must differ"):
        evaluate.score(
            scored["report"].staged_path, scored["prep"], scored["spec"],
            str(scored["dirs"][0]), batch_size=50,
            others=[evaluate.Candidate("challenger", scored["spec"], str(scored["dirs"][1]))],
        )  # fmt: skip
