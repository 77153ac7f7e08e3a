"""MLflow's ``set_tracking_uri`` exports ``$MLFLOW_TRACKING_URI``; rayline must not let one
pipeline's default store become the next one's in the same process."""

from __future__ import annotations

import os

from rayline.config import RegistryConfig
from rayline.registry import Registry


def test_a_default_store_does_not_leak_into_the_next_pipeline(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
    first = Registry(RegistryConfig(), str(tmp_path / "a"))
    assert "MLFLOW_TRACKING_URI" not in os.environ
    assert "MLFLOW_REGISTRY_URI" not in os.environ
    second = Registry(RegistryConfig(), str(tmp_path / "b"))
    assert first.tracking_uri == f"sqlite:///{tmp_path}/a/mlflow.db"
    assert second.tracking_uri == f"sqlite:///{tmp_path}/b/mlflow.db"


def test_the_users_tracking_uri_is_kept(tmp_path, monkeypatch):
    users = f"sqlite:///{tmp_path}/user.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", users)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    own = Registry(RegistryConfig(tracking_uri=f"sqlite:///{tmp_path}/own.db"), str(tmp_path))
    assert own.tracking_uri.endswith("/own.db")
    assert os.environ["MLFLOW_TRACKING_URI"] == users
    assert Registry(RegistryConfig(), str(tmp_path)).tracking_uri == users
