"""The Serve application builder a RayService names (rayline.serve_app:app), and its
manifest's args: the same settings `rayline serve` takes, validated the same way."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from rayline import serve_app

MANIFEST = Path(__file__).resolve().parents[2] / "cluster" / "kuberay-rayservice.yaml"


def _app_args() -> dict:
    body = yaml.safe_load(MANIFEST.read_text())
    serve_cfg = yaml.safe_load(body["spec"]["serveConfigV2"])
    (application,) = serve_cfg["applications"]
    assert application["import_path"] == "rayline.serve_app:app"
    return dict(application["args"])


def test_the_manifests_args_build_an_application(monkeypatch):
    monkeypatch.setenv(serve_app.TOKEN_ENV, "t" * 24)
    built = serve_app.app(_app_args())
    assert type(built).__name__ == "Application"


def test_builder_refuses_missing_model_and_store_and_bad_settings(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with pytest.raises(ValueError, match="args.model is required"):
        serve_app.app({"tracking_uri": "http://x:5000"})
    with pytest.raises(ValueError, match="no tracking URI"):
        serve_app.app({"model": "m@champion"})
    with pytest.raises(ValueError, match="num_replicas"):
        serve_app.app({"model": "m", "tracking_uri": "http://x:5000", "num_replicas": 0})
    with pytest.raises(ValueError, match="not NAME or NAME@alias"):
        serve_app.app({"model": "m@", "tracking_uri": "http://x:5000"})
