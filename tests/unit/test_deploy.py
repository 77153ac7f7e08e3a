"""The deploy stage's config rules, its place in the pipeline and its summary lines.

Deploying to a real Serve application on a `ray start` cluster is tested in
tests/integration/test_cluster.py.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from typer.testing import CliRunner

from rayline.cli import app
from rayline.config import load_config
from rayline.run import PipelineResult
from rayline.stages import PIPELINE
from rayline.stages.deploy import app_for, deploy_problems
from rayline.summary import format_summary

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "jobs" / "configs" / "demo.yaml"


def cfg(*overrides: str):
    return load_config(str(DEMO), list(overrides))


def test_off_by_default_and_last_in_the_pipeline():
    assert not cfg().deploy.enabled
    assert [s.name for s in PIPELINE][-2:] == ["register", "deploy"]
    deploy = PIPELINE[-1]
    assert not deploy.enabled(cfg()) and deploy.enabled(cfg("deploy.enabled=true"))


def test_deploy_settings_do_not_change_what_a_run_computes():
    assert cfg().fingerprint() == cfg("deploy.enabled=true", "deploy.app=x").fingerprint()


def test_app_name_defaults_to_rayline_serve_s():
    assert app_for(cfg()) == "rayline-breast-cancer-classifier"
    assert app_for(cfg("deploy.app=prod")) == "prod"


def test_a_local_ray_cannot_deploy_and_the_error_names_runtime_address():
    (problem,) = deploy_problems(cfg("deploy.enabled=true"), environ={})
    assert problem.startswith("deploy.enabled:") and "runtime.address" in problem
    assert "rayline submit" in problem
    assert deploy_problems(cfg("deploy.enabled=true"), environ={"RAY_ADDRESS": "x:1"}) == []
    assert deploy_problems(cfg("deploy.enabled=true", "runtime.address=auto"), environ={}) == []
    assert deploy_problems(cfg(), environ={}) == []
    # `local` starts a Ray of the run's own, which ends with it.
    assert deploy_problems(cfg("deploy.enabled=true", "runtime.address=local"), environ={})


def test_until_a_stage_before_deploy_needs_no_cluster(tmp_path, monkeypatch):
    """`--until ingest` runs no deploy stage, so the deploy rule does not stop it: the run
    gets as far as its setup (replaced here, so no Ray starts)."""
    import pytest

    from rayline import pipeline

    class Reached(Exception):
        pass

    def setup(run):
        raise Reached

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(pipeline, "_setup", setup)
    c = cfg("deploy.enabled=true", f"runtime.storage_path={tmp_path / 'runs'}")
    with pytest.raises(Reached):
        pipeline.run_pipeline(c, until="ingest")
    with pytest.raises(Exception, match="runtime.address"):
        pipeline.run_pipeline(c)


def test_rayline_run_refuses_before_anything_starts(tmp_path, monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    raw = yaml.safe_load(DEMO.read_text())
    raw["runtime"] = {**raw.get("runtime", {}), "storage_path": str(tmp_path / "runs")}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(raw))
    res = CliRunner().invoke(app, ["run", str(path), "deploy.enabled=true"])
    assert res.exit_code == 2, res.output
    assert "runtime.address" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "runs").exists()  # no run directory, no Ray, no MLflow store


def _result(deploy):
    return PipelineResult(
        run_name="r",
        run_dir="/tmp/r",
        config_hash="h",
        model_name="m",
        model_version="3",
        model_uri="models:/m/3",
        promoted=deploy["action"] != "skipped",
        deploy=deploy,
    )


def test_summary_says_what_was_deployed():
    text = format_summary(
        _result(
            {
                "action": "started",
                "app": "rayline-m",
                "version": "3",
                "replicas": ["a", "b"],
                "url": "http://127.0.0.1:8000",
                "reason": None,
            }
        )
    )
    assert (
        "deployed:   Serve application rayline-m started at http://127.0.0.1:8000, v3 on 2 "
        "replicas" in text
    )
    text = format_summary(
        _result(
            {
                "action": "skipped",
                "app": "rayline-m",
                "version": None,
                "replicas": [],
                "url": None,
                "reason": "v3 is not @champion: the gate rejected it",
            }
        )
    )
    assert "deployed:   no (v3 is not @champion: the gate rejected it)" in text


def test_summary_says_when_the_alias_moved_on_meanwhile():
    text = format_summary(
        _result(
            {
                "action": "superseded",
                "app": "rayline-m",
                "version": "4",
                "replicas": ["a"],
                "url": None,
                "reason": "@champion moved on to v4 meanwhile; the application serves it",
            }
        )
    )
    assert "deployed:   Serve application rayline-m: @champion moved on to v4" in text
