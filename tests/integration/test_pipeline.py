"""The whole pipeline on a local Ray: DDP training, a 2-trial sweep, MLflow registry, the gate."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from rayline.config import validate_config
from rayline.data.split import SPLIT_COL
from rayline.errors import ConfigError, DataValidationError
from rayline.metrics import compute_metrics
from rayline.pipeline import run_pipeline
from rayline.run import read_record

from .conftest import base_config, make_table, write_parts

pytestmark = pytest.mark.integration

N_ROWS = 1200
BAD_ROWS = 12


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline")
    data = write_parts(make_table(N_ROWS, bad_rows=BAD_ROWS), root / "data")
    return {
        "root": root,
        "data": data,
        "storage": root / "runs",
        "tracking": f"sqlite:///{root}/mlflow.db",
    }


def _cfg(ws, **sections):
    raw = base_config(ws["data"], ws["storage"], **sections)
    raw["registry"]["tracking_uri"] = ws["tracking"]
    return validate_config(raw)


@pytest.fixture(scope="module")
def first_run(ray_session, workspace):
    cfg = _cfg(
        workspace,
        tune={
            "enabled": True,
            "num_samples": 2,
            # FIFO: both trials finish, so both are challengers (an ASHA-stopped trial's
            # record can lack its score; see the report/card test).
            "scheduler": "fifo",
            "search_space": {
                "train.lr": {"type": "loguniform", "low": 0.005, "high": 0.05},
                "model.hidden_sizes": {"type": "choice", "values": [[16], [8, 8]]},
            },
        },
        # The evaluation at full depth on the sweep: both trials scored beside the champion in
        # one pass, seeded intervals, slices by value and by bins, a slice bound.
        evaluate={
            "bootstrap": 200,
            "slices": ["plan", {"column": "age", "bins": [0, 40, 60, 120]}],
        },
        gate={
            "challengers": 2,
            "slice_thresholds": {"accuracy": {"min": 0.3, "min_rows": 20}},
        },
        registry={"description": "Churn risk for retention offers; tested on synthetic users."},
        runtime={"run_name": "first"},
    )
    return cfg, run_pipeline(cfg)


def test_every_row_is_accounted_for(first_run):
    _, result = first_run
    d = result.data_report
    assert d["rows_in"] == N_ROWS
    assert d["rows_quarantined"] == BAD_ROWS
    assert d["rows_ok"] == N_ROWS - BAD_ROWS
    assert sum(d["splits"].values()) == d["rows_ok"]
    assert all(n > 0 for n in d["splits"].values())
    assert d["top_reasons"] and all(
        "income" in r["reason"] and "< min 0" in r["reason"] for r in d["top_reasons"]
    )
    quarantine = pd.read_parquet(d["quarantine_path"])
    assert len(quarantine) == BAD_ROWS
    assert quarantine["_rayline_reason"].notna().all()


def test_split_is_by_key_and_disjoint(first_run):
    _, result = first_run
    staged = result.data_report["staged_path"]
    ids = {
        split: set(pd.read_parquet(f"{staged}/{SPLIT_COL}={split}")["user_id"])
        for split in ("train", "val", "test")
    }
    assert (
        not (ids["train"] & ids["val"])
        and not (ids["train"] & ids["test"])
        and not (ids["val"] & ids["test"])
    )


def test_sweep_logs_a_nested_run_per_trial(first_run, workspace):
    _, result = first_run
    client = MlflowClient(workspace["tracking"])
    parent = client.get_run(result.mlflow_run_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.params["train.num_workers"] == "2"
    assert "test.accuracy" in parent.data.metrics
    best_lr = float(parent.data.params["best.train.lr"])
    assert 0.005 <= best_lr <= 0.05
    assert best_lr == pytest.approx(result.train["params"]["train"]["lr"])
    children = client.search_runs(
        [parent.info.experiment_id], f"tags.mlflow.parentRunId = '{result.mlflow_run_id}'"
    )
    assert len(children) == 2
    for child in children:
        assert "train.lr" in child.data.params
        history = client.get_metric_history(child.info.run_id, "val_log_loss")
        assert len(history) >= 1 and all(np.isfinite(m.value) for m in history)
    assert result.train["trial_id"] is not None


def test_lineage_artifact_and_version_tags(first_run, workspace):
    cfg, result = first_run
    lineage = mlflow.artifacts.load_dict(f"runs:/{result.mlflow_run_id}/lineage.json")
    assert lineage["config_hash"] == cfg.fingerprint()
    assert len(lineage["data_fingerprint"]) == 64
    assert {"ray", "torch", "mlflow"} <= set(lineage["packages"])
    assert "commit" in lineage["code"]
    mv = MlflowClient(workspace["tracking"]).get_model_version("churn", result.model_version)
    assert mv.tags["rayline.config_hash"] == cfg.fingerprint()
    assert mv.tags["rayline.data_fingerprint"] == lineage["data_fingerprint"]
    assert mv.tags["rayline.gate"] == "passed"


def test_champion_loads_with_plain_mlflow_and_matches_the_report(first_run, workspace):
    _, result = first_run
    assert result.gate["passed"] and result.promoted
    mlflow.set_tracking_uri(workspace["tracking"])
    model = mlflow.pyfunc.load_model("models:/churn@champion")
    staged = result.data_report["staged_path"]
    test_rows = pd.read_parquet(f"{staged}/{SPLIT_COL}=test").drop(columns=["_rayline_reason"])
    raw = test_rows.drop(columns=["churned"])  # raw input columns, as a caller has them
    out = model.predict(raw)
    assert list(out.columns) == ["prediction", "probability_0", "probability_1"]
    assert len(out) == len(raw) == result.evaluation["rows"]
    assert set(out["prediction"].unique()) <= {0, 1}
    proba = out[["probability_0", "probability_1"]].to_numpy()
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-5)
    metrics = compute_metrics("classification", test_rows["churned"].to_numpy(), proba)
    for name, value in result.evaluation["metrics"].items():
        assert metrics[name] == pytest.approx(value, abs=1e-5), name


def test_report_card_slices_and_challengers_of_the_sweep(first_run, workspace):
    cfg, first = first_run
    client = MlflowClient(workspace["tracking"])
    ev, gate = first.evaluation, first.gate
    # Both trials were scored in the one pass, and the chosen one is what was registered.
    scored = ev["extra"]["challengers"]
    assert len(scored) == 2
    assert gate["candidate"] in scored and len(gate["others"]) == 1
    tags = client.get_model_version("churn", first.model_version).tags
    assert json.loads(tags["rayline.test_metrics"]) == pytest.approx(
        scored[gate["candidate"]]["metrics"]
    )
    # Intervals bracket every point value.
    for name, (lo, hi) in ev["extra"]["intervals"]["challenger"].items():
        assert lo <= ev["metrics"][name] <= hi, name
    # Every test row is in exactly one slice of each sliced column.
    slices = ev["extra"]["slices"]
    for column in ("plan", "age"):
        assert sum(s["rows"] for s in slices if s["column"] == column) == ev["rows"]
    assert {s["slice"] for s in slices if s["column"] == "plan"} == {"basic", "plus", "pro"}
    assert any("slice(s) with enough rows" in r for r in gate["reasons"])
    run = client.get_run(first.mlflow_run_id)
    assert run.data.metrics["slice.plan.pro.rows"] > 0
    assert "test.accuracy.ci_low" in run.data.metrics
    # The report and its figures are run artifacts; the page embeds them (self-contained).
    assert first.report == "reports/evaluation_report.html"
    names = {a.path for a in client.list_artifacts(first.mlflow_run_id, "reports/figures")}
    assert names == {
        f"reports/figures/{n}.png"
        for n in ("roc", "precision_recall", "confusion_matrix", "reliability")
    }
    page = Path(first.report_path).read_text()
    assert page.count("data:image/png;base64,") == 4 and "src='http" not in page
    assert "Slices" in page and "Calibration" in page
    # The model card is the version's description, and an artifact.
    card = client.get_model_version("churn", first.model_version).description
    assert card.startswith("# churn")
    assert "Churn risk for retention offers" in card
    assert first.data_report["fingerprint"] in card and "| plan | pro |" in card
    assert "## Gate: passed" in card
    assert tags["rayline.report"] == first.report and tags["rayline.model_card"] == "model_card.md"
    assert "model_card.md" in {a.path for a in client.list_artifacts(first.mlflow_run_id)}


def test_worse_model_leaves_the_champion_where_it_was(first_run, workspace):
    cfg, first = first_run
    # The champion as one registered before model cards existed: no description, no card
    # or report tags. It is still scored on this test split and gated like any other.
    client = MlflowClient(workspace["tracking"])
    client.update_model_version("churn", first.model_version, description="")
    for tag in ("rayline.model_card", "rayline.report"):
        client.delete_model_version_tag("churn", first.model_version, tag)
    worse = _cfg(
        workspace,
        train={"epochs": 1, "lr": 1e-6, "local_mode": True, "metric": "log_loss"},
        evaluate={"baseline": False, "bootstrap": 100},
        gate={"confidence": 0.95},
        runtime={"run_name": "worse"},
    )
    result = run_pipeline(worse)
    assert result.evaluation["champion_metrics"] is not None
    assert not result.gate["passed"]
    assert any("champion" in r and "FAIL" in r for r in result.gate["reasons"])
    # gate.confidence: the comparison is on the paired interval of the improvement.
    (line,) = [r for r in result.gate["reasons"] if "interval" in r]
    assert (
        line.startswith("log_loss improvement over the champion -") and "paired resamples" in line
    )
    assert result.gate["comparison"]["high"] < 0
    client = MlflowClient(workspace["tracking"])
    assert (
        str(client.get_model_version_by_alias("churn", "champion").version) == first.model_version
    )
    assert result.model_version != first.model_version
    assert (
        client.get_model_version("churn", result.model_version).tags["rayline.gate"] == "rejected"
    )
    # Same data as the champion's: the drift check ran against its profile and found none.
    drift = result.data_report["drift"]
    assert drift["status"] == "ok" and drift["reference"] == f"churn v{first.model_version}"
    assert max(c["psi"] for c in drift["columns"].values()) < 0.05
    # The champion's score on this run's test split is the first run's evaluation: same split.
    assert result.evaluation["champion_metrics"]["log_loss"] == pytest.approx(
        first.evaluation["metrics"]["log_loss"], abs=1e-5
    )


def test_rerun_with_the_same_run_name_resumes_and_refuses_a_changed_config(
    workspace, ray_session, first_run
):
    cfg = _cfg(
        workspace,
        train={"epochs": 2, "local_mode": True, "metric": "log_loss"},
        evaluate={"baseline": False},
        runtime={"run_name": "resumable"},
    )
    first = run_pipeline(cfg)
    # The staged data of earlier runs on the same data and contract was reused (the run
    # record says so), and the data report still accounts for every row.
    record = read_record(first.run_dir)
    assert record["status"] == "done" and record["stages"]["validate+split"]["reused"] == "cache"
    assert (
        first.data_report["rows_in"]
        == first.data_report["rows_ok"] + first.data_report["rows_quarantined"]
    )
    # Same config, same run name, and the run had finished: nothing is run again, and
    # no second model version is registered.
    again = run_pipeline(cfg)
    assert again.already_complete and again.model_version == first.model_version
    assert again.data_report["splits"] == first.data_report["splits"]
    assert again.train["metrics"]["val_log_loss"] == pytest.approx(
        first.train["metrics"]["val_log_loss"]
    )
    client = MlflowClient(workspace["tracking"])
    made = [
        v
        for v in client.search_model_versions("name='churn'")
        if v.tags.get("rayline.run_name") == "resumable"
    ]
    assert len(made) == 1
    assert read_record(first.run_dir)["attempts"] == 2
    changed = cfg.model_copy(update={"train": cfg.train.model_copy(update={"lr": 0.5})})
    with pytest.raises(ConfigError) as err:
        run_pipeline(changed)
    msg = str(err.value)
    assert "run 'resumable' already exists" in msg and "runtime.run_name" in msg
    # Display-only keys are not part of the config: `-v` resumes a run started without it.
    verbose = cfg.model_copy(
        update={"runtime": cfg.runtime.model_copy(update={"log_to_driver": True})}
    )
    assert run_pipeline(verbose).already_complete


def test_missing_column_names_the_file_and_column(ray_session, workspace, tmp_path):
    data = write_parts(make_table(200).drop(columns=["plan"]), tmp_path / "bad", parts=1)
    cfg = _cfg(workspace, data={"path": str(data)}, runtime={"run_name": "bad-file"})
    with pytest.raises(DataValidationError) as err:
        run_pipeline(cfg)
    msg = str(err.value)
    assert "part-0.parquet" in msg and "plan" in msg


def test_too_many_bad_rows_fail_and_keep_the_quarantine(ray_session, workspace, tmp_path):
    data = write_parts(make_table(300, bad_rows=60), tmp_path / "dirty", parts=2)
    cfg = _cfg(workspace, data={"path": str(data)}, runtime={"run_name": "dirty"})
    with pytest.raises(DataValidationError) as err:
        run_pipeline(cfg)
    msg = str(err.value)
    assert "60 of 300 rows" in msg and "max_bad_fraction" in msg and "income" in msg
    qpath = msg.split("The bad rows are in ")[1].split(";")[0]
    assert len(pd.read_parquet(qpath)) == 60
    runs = MlflowClient(workspace["tracking"]).search_runs(
        [mlflow.get_experiment_by_name("it").experiment_id], "attributes.run_name = 'dirty'"
    )
    assert runs and runs[0].info.status == "FAILED"


def test_regression_pipeline(ray_session, workspace, tmp_path):
    df = make_table(600, seed=3)
    df["spend"] = (
        2.0 * df["age"]
        + np.where(df["plan"] == "pro", 30.0, 0.0)
        + np.random.default_rng(1).normal(size=len(df))
    )
    data = write_parts(df, tmp_path / "reg", parts=1)
    raw = base_config(data, workspace["storage"])
    raw["schema"]["columns"]["spend"] = {"type": "float"}
    raw["data"]["target"] = "spend"
    raw["model"] = {"task": "regression", "hidden_sizes": [16]}
    raw["train"] = {"epochs": 4, "lr": 0.01, "local_mode": True, "metric": "rmse"}
    raw["gate"] = {"thresholds": {"r2": {"min": 0.5}}}
    raw["registry"] = {
        "tracking_uri": workspace["tracking"],
        "experiment": "it",
        "model_name": "spend",
    }
    # Feature engineering end to end: a user transform, a derived column and per-column
    # chains, fitted on the train split and shipped inside the registered model.
    raw["features"] = {
        "numeric": ["is_active", "is_pro"],
        "categorical": ["plan"],
        "user": ["tests.integration.feature_fns:add_pro_flag"],
        "derived": {"income_per_year": "income / (age + 1)"},
        "transforms": {
            "age": [{"op": "clip", "lower": 0, "upper": 100}, {"op": "standardize"}],
            "income": [
                {"op": "impute", "strategy": "median", "indicator": True},
                {"op": "log1p"},
                {"op": "robust"},
            ],
            "income_per_year": [{"op": "bucketize", "quantiles": 4}],
        },
    }
    result = run_pipeline(validate_config(raw))
    assert result.evaluation["metrics"]["r2"] > 0.5
    assert result.promoted
    prep = json.loads((Path(result.run_dir) / "preprocessor.json").read_text())
    assert [s["op"] for s in prep["chains"]["income"]] == ["impute", "log1p", "robust"]
    assert len(prep["chains"]["income_per_year"][0]["edges"]) == 3
    # Training and serving share one code path: the registered model scores the raw test
    # rows exactly as evaluation (prep.transform inside Ray Data) did.
    staged = result.data_report["staged_path"]
    test_rows = pd.read_parquet(f"{staged}/{SPLIT_COL}=test")
    mlflow.set_tracking_uri(workspace["tracking"])
    served = mlflow.pyfunc.load_model("models:/spend@champion").predict(
        test_rows.drop(columns=["spend"])
    )
    rmse = float(np.sqrt(np.mean((served["prediction"].to_numpy() - test_rows["spend"]) ** 2)))
    assert rmse == pytest.approx(result.evaluation["metrics"]["rmse"], rel=1e-5)
    mlflow.set_tracking_uri(workspace["tracking"])
    out = mlflow.pyfunc.load_model("models:/spend@champion").predict(
        df.head(5).drop(columns=["spend"])
    )
    assert list(out.columns) == ["prediction"]
    assert np.all(np.abs(out["prediction"].to_numpy() - df["spend"].head(5).to_numpy()) < 40)
    figures = {
        a.path.rsplit("/", 1)[-1]
        for a in MlflowClient(workspace["tracking"]).list_artifacts(
            result.mlflow_run_id, "reports/figures"
        )
    }
    assert figures == {
        "residuals_vs_predicted.png",
        "residual_histogram.png",
        "predicted_vs_actual.png",
        "error_by_target_decile.png",
    }
    assert "Residuals" in Path(result.report_path).read_text()
    assert (
        json.loads(
            MlflowClient(workspace["tracking"])
            .get_model_version("spend", result.model_version)
            .tags["rayline.test_metrics"]
        )["r2"]
        > 0.5
    )


def test_drift_marked_fail_rejects_the_challenger(first_run, workspace, tmp_path):
    cfg, first = first_run
    shifted = make_table(N_ROWS, seed=3)
    shifted["income"] = shifted["income"] * 3 + 40  # a large shift of one column
    data = write_parts(shifted, tmp_path / "shifted")
    cfg = _cfg(
        workspace,
        data={"path": str(data)},
        train={"epochs": 1, "local_mode": True},
        evaluate={"baseline": False},
        drift={"columns": {"income": {"psi": 0.25, "action": "fail"}}},
        runtime={"run_name": "shifted"},
    )
    result = run_pipeline(cfg)
    drift = result.data_report["drift"]
    assert drift["failed"] == ["income"]
    assert drift["columns"]["income"]["psi"] > 1.0
    assert drift["columns"]["age"]["status"] == "ok"
    assert not result.gate["passed"] and not result.promoted
    assert any(r.startswith("drift: income PSI") and "(fail)" in r for r in result.gate["reasons"])
    client = MlflowClient(workspace["tracking"])
    run = client.get_run(result.mlflow_run_id)
    assert run.data.metrics["drift.psi.income"] > 1.0
    arts = {a.path for a in client.list_artifacts(result.mlflow_run_id, "profile")}
    assert arts == {"profile/profile.json", "profile/data_profile.html"}
    page = (Path(result.run_dir) / "data_profile.html").read_text()
    assert "income" in page and "<svg" in page and "champion" in page
    # Equal-width histograms, the champion's (the first run's profile) as an outline on each
    # float/int column (user_id, age, income, churned).
    assert page.count('<path class="ref"') >= 3 and "equal-width bins" in page
    assert "has no histogram" not in page
    # The Datasets panel: the three splits, the data fingerprint as digest, source, schema.
    fingerprint = result.data_report["fingerprint"]
    inputs = run.inputs.dataset_inputs
    contexts = {
        i.dataset.name: {t.key: t.value for t in i.tags}["mlflow.data.context"] for i in inputs
    }
    assert contexts == {
        "churn-test-train": "training",
        "churn-test-val": "validation",
        "churn-test-test": "testing",
    }
    for i in inputs:
        assert i.dataset.digest == fingerprint[:36]
        assert {t.key: t.value for t in i.tags}["rayline.data_fingerprint"] == fingerprint
        source = json.loads(i.dataset.source)
        assert i.dataset.source_type == "local" and source["uri"] == str(data)
        assert source["uris"] == result.data_report["files"]
        columns = {c["name"]: c["type"] for c in json.loads(i.dataset.schema)["mlflow_colspec"]}
        assert columns["income"] == "double" and columns["plan"] == "string"
        assert "_rayline_reason" not in columns


def test_runs_prune_keeps_every_run_a_model_version_names(first_run, workspace):
    """Runs last in the module: by now it holds registered runs and failed ones."""
    import yaml
    from typer.testing import CliRunner

    from rayline.cli import app

    raw = base_config(workspace["data"], workspace["storage"])
    raw["registry"]["tracking_uri"] = workspace["tracking"]
    path = workspace["root"] / "prune.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    runs_root = workspace["storage"] / "runs"
    before = {p.name for p in runs_root.iterdir()}
    client = MlflowClient(workspace["tracking"])
    registered = {  # every model's versions (the regression test registers another)
        v.tags["rayline.run_name"]
        for v in client.search_model_versions()
        if "rayline.run_name" in v.tags
    }
    assert "first" in registered and before - registered  # both kinds are there
    out = CliRunner().invoke(app, ["runs", "prune", str(path), "--older-than", "0s"])
    assert out.exit_code == 0, out.output
    after = {p.name for p in runs_root.iterdir()}
    assert after == before & registered
    for name in before & registered:
        assert f"kept {name}: a registered model version names it" in out.output
    # The champion still loads: nothing it points at was touched.
    mlflow.set_tracking_uri(workspace["tracking"])
    assert mlflow.pyfunc.load_model("models:/churn@champion") is not None
