"""``rayline retrain`` end to end: a hive tree growing a day at a time, a real MLflow store.

The champion is trained on day=1..3 (no champion yet: retrain). The loop decides twice
with nothing new (exit 6); day=4 retrains and the gate decides; a rerun has nothing to do;
a drifted day=5 under a ``fail`` drift rule retrains, the gate rejects, the champion stays.
Every run trains in-process (``train.local_mode``) for one epoch on a few hundred rows.
"""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient
from typer.testing import CliRunner

from rayline.cli import app

from .conftest import base_config, make_table, write_config

pytestmark = pytest.mark.integration

ROWS_PER_DAY = 150


def _day(root: Path, day: int, income_scale: float = 1.0) -> Path:
    df = make_table(ROWS_PER_DAY, seed=day)
    df["user_id"] += day * 10_000  # one user per row across days
    df["income"] *= income_scale
    out = root / f"day={day}"
    out.mkdir(parents=True)
    df.to_parquet(out / "part-0.parquet", index=False)
    return out


@pytest.fixture(scope="module")
def ws(ray_session, tmp_path_factory):
    root = tmp_path_factory.mktemp("retrain")
    data = root / "events"
    for day in (1, 2, 3):
        _day(data, day)
    raw = base_config(
        data,
        root / "runs",
        train={"epochs": 1, "num_workers": 1, "local_mode": True, "lr": 0.05},
        evaluate={"baseline": False},
        gate={"thresholds": {"accuracy": {"min": 0.5}}},
        drift={"columns": {"income": {"psi": 0.25, "action": "fail"}}},
        registry={"tracking_uri": f"sqlite:///{root}/mlflow.db"},
        runtime={"dashboard": False},
    )
    raw["retrain"] = {"window": {"partition": "day", "last": 3}, "min_new_rows": 50}
    cfg = write_config(root / "retrain.yaml", raw)
    return {"root": root, "data": data, "cfg": str(cfg), "tracking": f"sqlite:///{root}/mlflow.db"}


def _retrain(ws, *args: str):
    out = CliRunner().invoke(app, ["retrain", ws["cfg"], *args])
    assert "Traceback" not in out.output, out.output
    return out


def _champion(ws) -> str:
    return str(MlflowClient(ws["tracking"]).get_model_version_by_alias("churn", "champion").version)


def _versions(ws) -> list[str]:
    found = MlflowClient(ws["tracking"]).search_model_versions("name = 'churn'")
    return sorted((str(v.version) for v in found), key=int)


@pytest.fixture(scope="module")
def first(ws):
    """No champion: the decision retrains, and the first model becomes the champion."""
    out = _retrain(ws)
    return out


def test_no_champion_retrains_and_promotes(first, ws):
    assert first.exit_code == 0, first.output
    assert "retrain: yes" in first.output and "no champion yet" in first.output
    assert "promoted to @champion" in first.output
    assert _champion(ws) == "1"


def test_lineage_records_every_file(first, ws):
    mv = MlflowClient(ws["tracking"]).get_model_version("churn", "1")
    assert mv.tags["rayline.lineage"] == "lineage.json"
    mlflow.set_tracking_uri(ws["tracking"])
    lineage = mlflow.artifacts.load_dict(f"runs:/{mv.tags['rayline.mlflow_run_id']}/lineage.json")
    files = lineage["data_inputs"]
    assert [f["partition"] for f in files] == [{"day": "1"}, {"day": "2"}, {"day": "3"}]
    for f in files:
        path = Path(f["uri"])
        assert f["size"] == path.stat().st_size and f["mtime_ns"] == path.stat().st_mtime_ns
        assert len(f["sha256"]) == 64 and f["rows"] == ROWS_PER_DAY and f["mtime"]
    assert json.loads(mv.tags["rayline.retrain"]) == ["no champion yet: nothing to compare with"]


def test_the_loop_decides_twice_with_nothing_new(first, ws):
    out = _retrain(ws, "--every", "1s", "--max-cycles", "2")
    assert out.exit_code == 6, out.output
    assert "cycle 1" in out.output and "cycle 2" in out.output
    assert out.output.count("retrain: nothing to do") == 2
    assert "no new or changed files since v1" in out.output
    assert _versions(ws) == ["1"]


def test_a_new_day_retrains_and_the_gate_decides(first, ws):
    _day(ws["data"], 4)
    dry = _retrain(ws, "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert "new partition(s) day=4" in dry.output and "would run now" in dry.output
    assert "window: the last 3 value(s) of day: 2, 3, 4" in dry.output
    assert _versions(ws) == ["1"]  # a dry run trains nothing

    out = _retrain(ws)
    assert out.exit_code in (0, 3), out.output
    assert _versions(ws) == ["1", "2"]
    promoted = _champion(ws) == "2"
    assert (out.exit_code == 0) == promoted
    assert ("promoted to @champion" if promoted else "not promoted") in out.output
    # Trained on the window: days 2..4, not day 1.
    mv = MlflowClient(ws["tracking"]).get_model_version("churn", "2")
    mlflow.set_tracking_uri(ws["tracking"])
    lineage = mlflow.artifacts.load_dict(f"runs:/{mv.tags['rayline.mlflow_run_id']}/lineage.json")
    assert [f["partition"]["day"] for f in lineage["data_inputs"]] == ["2", "3", "4"]

    again = _retrain(ws)
    assert again.exit_code == 6, again.output
    assert "retrain: nothing to do" in again.output
    assert _versions(ws) == ["1", "2"]


def test_drifted_new_day_is_retrained_and_rejected(first, ws):
    if len(_versions(ws)) < 2:
        pytest.skip("needs the day=4 retrain")
    before = _champion(ws)
    _day(ws["data"], 5, income_scale=25.0)
    out = _retrain(ws)
    assert out.exit_code == 3, out.output
    assert "new partition(s) day=5" in out.output
    assert "drifts against" in out.output and "income" in out.output
    assert "drift marked fail on income" in out.output
    assert _champion(ws) == before
    assert _versions(ws)[-1] == "3"
    mv = MlflowClient(ws["tracking"]).get_model_version("churn", "3")
    assert mv.tags["rayline.gate"] == "rejected"
