"""The registry's pure parts: the alias history's tags, rollback's target, which MLflow
failures are retried, the pause hook, and the retry loop's bounds (no server involved)."""

from __future__ import annotations

import json
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest
from mlflow.exceptions import MlflowException, RestException

from rayline.config import RegistryConfig
from rayline.errors import RegistryError
from rayline.registry import (
    HISTORY_PREFIX,
    PAUSE_ENV,
    PAUSE_TIMEOUT_ENV,
    Registry,
    auth_message,
    auth_problem,
    champion_stack,
    history_tag,
    is_transient,
    parse_history,
    pause_before_alias,
    rollback_target,
)

T0 = datetime(2026, 12, 1, 12, 0, 0, tzinfo=timezone.utc)


def move(to, frm, action="pipeline", minutes=0):
    return {
        "to": str(to),
        "from": frm,
        "action": action,
        "at": (T0 + timedelta(minutes=minutes)).isoformat(),
    }


def test_a_move_is_one_tag_whose_key_sorts_by_time():
    key, value = history_tag("champion", "3", "2", "better log loss", "promote", by="ana", at=T0)
    assert key == f"{HISTORY_PREFIX}champion.20261201T120000.000000Z"
    record = json.loads(value)
    assert record == {
        "alias": "champion",
        "from": "2",
        "to": "3",
        "by": "ana",
        "at": "2026-12-01T12:00:00.000000+00:00",
        "reason": "better log loss",
        "action": "promote",
    }
    later, _ = history_tag("champion", "3", "2", "", "promote", at=T0 + timedelta(microseconds=1))
    assert later > key
    # A long reason is cut, so the tag stays under MLflow's value limit.
    _, long = history_tag("champion", "3", None, "x" * 100_000, "promote", at=T0)
    assert len(long) < 5000


def test_history_is_read_from_every_versions_tags_in_time_order():
    k1, v1 = history_tag("champion", "1", None, "first", "pipeline", by="a", at=T0)
    k2, v2 = history_tag("champion", "2", "1", "better", "pipeline", by="b", at=T0 + timedelta(1))
    k3, v3 = history_tag("champion", "1", "2", "bad", "rollback", by="c", at=T0 + timedelta(2))
    kx, vx = history_tag("staging", "2", None, "other alias", "promote", at=T0)
    versions = [
        ("2", {k2: v2, kx: vx, "rayline.gate": "passed"}),
        ("1", {k3: v3, k1: v1, f"{HISTORY_PREFIX}champion.junk": "not json"}),
    ]
    history = parse_history(versions, "champion")
    assert [(m["from"], m["to"], m["by"], m["action"]) for m in history] == [
        (None, "1", "a", "pipeline"),
        ("1", "2", "b", "pipeline"),
        ("2", "1", "c", "rollback"),
    ]
    assert [m["key"] for m in history] == [k1, k2, k3]
    assert [m["to"] for m in parse_history(versions, "staging")] == ["2"]


def test_rollback_goes_back_one_champion_each_time():
    history = [move(1, None), move(2, "1", minutes=1), move(3, "2", minutes=2)]
    assert champion_stack(history) == ["1", "2", "3"]
    assert rollback_target(history, "3") == "2"
    history.append(move(2, "3", "rollback", minutes=3))
    assert champion_stack(history) == ["1", "2"]
    assert rollback_target(history, "2") == "1"  # a second rollback goes further back
    history.append(move(1, "2", "rollback", minutes=4))
    assert rollback_target(history, "1") is None  # nothing before the first champion
    assert rollback_target([], None) is None


def test_rollback_after_a_move_outside_rayline_returns_to_the_last_recorded_champion():
    history = [move(1, None), move(2, "1", minutes=1)]
    assert rollback_target(history, "5") == "2"  # someone set the alias in the MLflow UI


def test_connection_errors_and_server_errors_are_transient_the_rest_is_not():
    import requests

    assert is_transient(
        MlflowException(
            "API request to http://127.0.0.1:1/api/2.0/mlflow/model-versions/create failed with "
            "exception HTTPConnectionPool(host='127.0.0.1', port=1): Max retries exceeded"
        )
    )
    assert is_transient(MlflowException("API request to x failed with timeout exception boom."))
    assert is_transient(
        MlflowException("API request to endpoint /a failed with error code 503 != 200. Response")
    )
    assert is_transient(RestException({"error_code": "TEMPORARILY_UNAVAILABLE", "message": "x"}))
    assert is_transient(RestException({"error_code": "INTERNAL_ERROR", "message": "locked"}))
    assert is_transient(requests.exceptions.ConnectionError("reset"))
    assert not is_transient(
        RestException({"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "x"})
    )
    assert not is_transient(MlflowException("bad signature"))  # INTERNAL_ERROR, but local
    assert not is_transient(
        MlflowException("API request to endpoint /a failed with error code 401 != 200.")
    )
    assert not is_transient(ValueError("no"))


def test_login_problems_are_named_with_the_variables_never_their_values(monkeypatch):
    refused = MlflowException(
        "API request to endpoint /x failed with error code 401 != 200", error_code="UNAUTHENTICATED"
    )
    assert auth_problem(refused) == "login"
    assert auth_problem(RestException({"error_code": "PERMISSION_DENIED", "message": "no"})) == (
        "permission"
    )
    assert auth_problem(MlflowException("other")) is None
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
    text = auth_message("http://h:5000", "login")
    assert "http://h:5000" in text and "MLFLOW_TRACKING_USERNAME" in text
    assert "MLFLOW_TRACKING_PASSWORD" in text
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "bob")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "hunter2-secret")
    text = auth_message("http://h:5000", "login")
    assert "refused the login of user 'bob'" in text and "hunter2-secret" not in text


def test_retries_are_bounded_back_off_and_name_the_server(tmp_path, monkeypatch):
    monkeypatch.setenv("RAYLINE_REGISTRY_RETRIES", "3")
    monkeypatch.setenv("RAYLINE_REGISTRY_BACKOFF_S", "0.05")
    # Nothing is sent: the calls below are local functions that raise MLflow's errors.
    registry = Registry(RegistryConfig(tracking_uri="http://127.0.0.1:9"), str(tmp_path))
    calls: list[float] = []

    def down():
        calls.append(time.monotonic())
        raise MlflowException("API request to http://x failed with exception connection refused")

    with pytest.raises(RegistryError) as err:
        registry.call("registering model 'm'", down)
    assert len(calls) == 3
    gaps = [b - a for a, b in zip(calls, calls[1:], strict=False)]
    assert gaps[0] >= 0.05 and gaps[1] >= 0.1  # exponential backoff
    text = str(err.value)
    assert "registering model 'm'" in text and registry.tracking_uri in text
    assert "after 3 attempts" in text and "runtime.run_name" in text

    flaky = iter([MlflowException("API request to x failed with exception reset"), None])

    def once():
        exc = next(flaky)
        if exc:
            raise exc
        return "ok"

    assert registry.call("x", once) == "ok"

    def bad():
        calls.append(0.0)
        raise RestException({"error_code": "INVALID_PARAMETER_VALUE", "message": "bad"})

    calls.clear()
    with pytest.raises(RestException):
        registry.call("x", bad)
    assert len(calls) == 1  # not retried


def test_the_pause_hook_waits_for_its_file_and_is_bounded(tmp_path, monkeypatch):
    pause_before_alias("anything")  # unset: returns at once
    monkeypatch.setenv(PAUSE_ENV, str(tmp_path / "{run}.go"))
    done = threading.Event()
    thread = threading.Thread(target=lambda: (pause_before_alias("run-a"), done.set()))
    thread.start()
    deadline = time.monotonic() + 10
    while not (tmp_path / "run-a.go.waiting").exists():
        assert time.monotonic() < deadline
        time.sleep(0.01)
    time.sleep(0.2)
    assert not done.is_set()
    (tmp_path / "run-a.go").write_text("")
    thread.join(10)
    assert done.is_set()
    monkeypatch.setenv(PAUSE_TIMEOUT_ENV, "0.2")
    with pytest.raises(RegistryError, match="did not appear"):
        pause_before_alias("run-b")


def test_models_commands_without_a_store_say_where_they_looked(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from rayline.cli import app

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    for args in (
        ["models", "list", "m"],
        ["rollback", "m"],
        ["promote", "m", "1", "--reason", "x"],
    ):
        res = CliRunner().invoke(app, args)
        assert res.exit_code == 2, res.output
        assert f"no MLflow store at 'sqlite:///{tmp_path}/rayline-runs/mlflow.db'" in res.output
        assert "--tracking-uri" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "rayline-runs").exists()  # looking created nothing
