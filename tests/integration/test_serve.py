"""``rayline serve`` for real: Ray Serve on loopback in front of a sqlite MLflow store.

Two tiny pipeline runs (trained in-process, ``train.local_mode``, one epoch) register v1
(a poor model, the first champion) and v2 (a better one, promoted by its gate). One Serve
application (two replicas, batching on) serves ``NAME@champion`` for the module; a second
one, under ``/secure``, wants a bearer token. The tests:

- ``POST /predict`` by records, by columns and as a bare list answers what
  ``mlflow.pyfunc.load_model(...).predict`` answers, and names the version;
- ``GET /health``, ``GET /model`` (version, alias, lineage, the model card);
- a corpus of bad requests: each a 4xx whose JSON names the problem, no traceback;
- the token: 401 without it or with a wrong one, 200 with it;
- MLflow's webhooks on the token app (which polls the alias hourly): deliveries sent by
  MLflow's own delivery code (unsigned, wrongly signed, stale: 401 and nothing moves; a
  signed alias move switches it), and a live ``mlflow server`` over the same sqlite store
  whose own deliveries, one per alias move made through it, switch it to v1 and back;
- a client loop sending requests throughout ``rollback`` and ``promote``: every answer
  200, each names its version, and the new version answers after each move;
- ``rayline serve`` as a command in its own process: it answers, and stops on SIGTERM;
  its refusals (no model, no version at the alias, a public host without a token).
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from rayline.cli import app
from rayline.config import RegistryConfig, ServeConfig, validate_config
from rayline.pipeline import run_pipeline
from rayline.promote import promote, rollback
from rayline.registry import Registry, use_mlflow

from .conftest import (
    base_config,
    free_port,
    make_table,
    running_mlflow_server,
    write_config,
    write_parts,
)

pytestmark = pytest.mark.integration

MODEL = "churn-serve"
INPUTS = ["age", "income", "is_active", "plan"]  # the model's order: numbers first
DEADLINE_S = 120
TOKEN = secrets.token_urlsafe(24)
SECRET = secrets.token_urlsafe(24)  # the MLflow webhook's


# -- the models ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve")
    storage = root / "runs"
    return {
        "root": root,
        "data": write_parts(make_table(500, seed=3), root / "data"),
        "storage": storage,
        "uri": f"sqlite:///{storage}/mlflow.db",
    }


def _cfg(ws, run_name: str, train: dict):
    raw = base_config(
        ws["data"],
        ws["storage"],
        train={"local_mode": True, "num_workers": 1, "batch_size": 64, **train},
        evaluate={"baseline": False, "report": False},  # the card is written either way
        gate={"thresholds": {}},
        drift={"enabled": False},
        registry={
            "experiment": "serve-it",
            "model_name": MODEL,
            "tracking_uri": ws["uri"],
            "description": f"Churn model for the serve tests ({run_name}).",
        },
        runtime={"run_name": run_name, "dashboard": False},
    )
    return validate_config(raw)


@pytest.fixture(scope="module")
def models(ray_session, ws):
    """v1 (1 epoch at a tiny learning rate) then v2 (better): v2 ends as the champion."""
    old = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    poor = run_pipeline(_cfg(ws, "poor", {"epochs": 1, "lr": 1e-6}))
    good = run_pipeline(_cfg(ws, "good", {"epochs": 2, "lr": 0.02}))
    assert poor.promoted and good.promoted, (poor.gate, good.gate)
    registry = Registry(RegistryConfig(tracking_uri=ws["uri"]), str(ws["storage"]))
    assert registry.alias_version(MODEL) == good.model_version
    yield {"registry": registry, "v1": poor.model_version, "v2": good.model_version}
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)


@pytest.fixture(scope="module")
def rows(ws):
    """Raw input rows (nulls included) as a client would send them."""
    df = make_table(40, seed=11)[INPUTS].copy()
    df.loc[[3, 7], "income"] = np.nan  # the model imputes them
    return df


def _records(df: pd.DataFrame) -> list[dict]:
    return json.loads(df.to_json(orient="records"))


# -- the application ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def served(models, ws):
    """Serve on a free loopback port: the open app at /, the token app at /secure."""
    from ray import serve

    from rayline import serve_app

    settings = ServeConfig(
        port=free_port(),
        num_replicas=2,
        replica_cpus=0.5,
        max_batch_size=8,
        batch_wait_timeout_s=0.01,
        max_rows_per_request=100,
        poll_interval_s=0.5,
    )
    try:
        url = serve_app.start(MODEL, "champion", ws["uri"], settings)
        # The token app follows the alias only through webhooks (its poll: once an hour).
        secure = serve_app.build(
            MODEL,
            "champion",
            ws["uri"],
            settings.model_copy(update={"num_replicas": 1, "poll_interval_s": 3600}),
            TOKEN,
            SECRET,
        )
        serve.run(secure, name="secure", route_prefix="/secure")
        health = serve_app.wait_ready(url, timeout_s=DEADLINE_S)
        serve_app.wait_ready(f"{url}/secure", TOKEN, timeout_s=DEADLINE_S)
        assert health["version"] == models["v2"]
        yield {"url": url, "port": settings.port, "settings": settings}
    finally:
        serve.shutdown()


class Client:
    """One keep-alive HTTP connection to the server on loopback."""

    def __init__(self, port: int):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    def send(self, method: str, path: str, body=None, headers=None):
        if body is not None and not isinstance(body, bytes | str):
            body = json.dumps(body)
        hdrs = {"Content-Type": "application/json", **(headers or {})}
        try:
            self.conn.request(method, path, body=body, headers=hdrs)
            r = self.conn.getresponse()
            raw = r.read()
        except (http.client.HTTPException, OSError):
            self.conn.close()  # a dropped keep-alive connection: once more on a fresh one
            self.conn.request(method, path, body=body, headers=hdrs)
            r = self.conn.getresponse()
            raw = r.read()
        try:
            doc = json.loads(raw)
        except ValueError:
            doc = None
        return r.status, doc, raw.decode("utf-8", "replace")

    def close(self):
        self.conn.close()


@pytest.fixture()
def client(served):
    c = Client(served["port"])
    yield c
    c.close()


def _reference(models, ws, version: str, df: pd.DataFrame) -> pd.DataFrame:
    use_mlflow(ws["uri"])
    return mlflow.pyfunc.load_model(f"models:/{MODEL}/{version}").predict(df)


def _check_matches(doc: dict, ref: pd.DataFrame) -> None:
    assert doc["predictions"] == ref["prediction"].tolist()
    cols = [f"probability_{c}" for c in doc["classes"]]
    np.testing.assert_allclose(np.array(doc["probabilities"]), ref[cols].to_numpy(), rtol=1e-6)


# -- the tests ----------------------------------------------------------------------------------
def test_predict_by_records_columns_and_list_matches_the_pyfunc(served, models, ws, rows, client):
    ref = _reference(models, ws, models["v2"], rows)
    records = _records(rows)
    columns = {c: [r[c] for r in records] for c in INPUTS}
    assert any(r["income"] is None for r in records)  # nulls travel as JSON null
    for body in ({"records": records}, {"columns": columns}, records):
        status, doc, text = client.send("POST", "/predict", body)
        assert status == 200, text
        assert doc["version"] == models["v2"] and doc["model"] == MODEL
        assert doc["classes"] == [0, 1]
        _check_matches(doc, ref)
    status, doc, _ = client.send("POST", "/predict", {"records": records[:1]})
    assert status == 200 and len(doc["predictions"]) == 1


def test_concurrent_requests_are_batched_and_each_gets_its_own_rows(served, models, ws, rows):
    ref = _reference(models, ws, models["v2"], rows)
    records = _records(rows)
    answers: dict[int, tuple] = {}

    def one(i):
        c = Client(served["port"])
        try:
            answers[i] = c.send("POST", "/predict", {"records": records[i : i + 1]})
        finally:
            c.close()

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(records))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(DEADLINE_S)
    assert sorted(answers) == list(range(len(records)))
    for i, (status, doc, text) in answers.items():
        assert status == 200, text
        assert doc["predictions"] == [ref["prediction"].iloc[i]]
        np.testing.assert_allclose(
            doc["probabilities"][0], ref[["probability_0", "probability_1"]].iloc[i], rtol=1e-6
        )


def test_health_and_model_card(served, models, client):
    status, doc, _ = client.send("GET", "/health")
    assert status == 200
    assert doc["status"] == "ok" and doc["version"] == models["v2"] and doc["alias"] == "champion"
    status, doc, _ = client.send("GET", "/model")
    assert status == 200
    assert doc["name"] == MODEL and doc["version"] == models["v2"] and doc["alias"] == "champion"
    assert doc["lineage"]["rayline.run_name"] == "good"
    assert doc["lineage"]["rayline.gate"] == "passed"
    assert "rayline.config_hash" in doc["lineage"] and "rayline.data_fingerprint" in doc["lineage"]
    assert not any(k.startswith("rayline.alias_moved.") for k in doc["lineage"])
    assert doc["card"] and "serve tests (good)" in doc["card"]
    assert [c["name"] for c in doc["inputs"]] == INPUTS
    assert {c["name"]: c["type"] for c in doc["inputs"]}["plan"] == "string"


GOOD_ROW = {"age": 40, "income": 30.5, "plan": "pro", "is_active": True}
BAD_REQUESTS = [
    # (what, method, path, body, status, error code, words the message must contain)
    ("not JSON", "POST", "/predict", b"age=3&plan=pro", 400, "not_json", ["not JSON"]),
    ("empty body", "POST", "/predict", b"", 400, "empty", ["empty"]),
    ("bad UTF-8", "POST", "/predict", b"\xff\xfe{", 400, "not_json", ["UTF-8"]),
    ("NaN", "POST", "/predict", b'[{"age": NaN}]', 400, "not_json", ["NaN"]),
    ("a string", "POST", "/predict", b'"hello"', 400, "wrong_shape", ["a string"]),
    ("wrong key", "POST", "/predict", {"rows": [GOOD_ROW]}, 400, "wrong_shape", ["'rows'"]),
    ("both shapes", "POST", "/predict", {"records": [GOOD_ROW], "columns": {}}, 400,
     "wrong_shape", ["not both"]),
    ("records not a list", "POST", "/predict", {"records": GOOD_ROW}, 400, "wrong_shape",
     ["'records'"]),
    ("a row not an object", "POST", "/predict", {"records": [GOOD_ROW, 3]}, 400, "wrong_shape",
     ["row 1"]),
    ("no rows", "POST", "/predict", {"records": []}, 400, "empty", ["no rows"]),
    ("too many rows", "POST", "/predict", {"records": [GOOD_ROW] * 101}, 413, "too_many_rows",
     ["101 rows", "100"]),
    ("unknown column", "POST", "/predict", {"records": [{**GOOD_ROW, "colour": "red"}]}, 400,
     "unknown_column", ["'colour'", "age"]),
    ("missing column", "POST", "/predict",
     {"records": [{k: v for k, v in GOOD_ROW.items() if k != "income"}]}, 400, "missing_column",
     ["'income'"]),
    ("missing in a later row", "POST", "/predict",
     {"records": [GOOD_ROW, {k: v for k, v in GOOD_ROW.items() if k != "plan"}]}, 400,
     "missing_column", ["row 1", "'plan'"]),
    ("text for a number", "POST", "/predict", {"records": [{**GOOD_ROW, "age": "forty"}]}, 400,
     "wrong_type", ["'age'", "forty"]),
    ("number for a string", "POST", "/predict", {"records": [{**GOOD_ROW, "plan": 3}]}, 400,
     "wrong_type", ["'plan'", "string"]),
    ("text for a bool", "POST", "/predict", {"records": [{**GOOD_ROW, "is_active": "yes"}]},
     400, "wrong_type", ["'is_active'"]),
    ("a list as a value", "POST", "/predict", {"records": [{**GOOD_ROW, "income": [1, 2]}]},
     400, "wrong_type", ["'income'", "a list"]),
    ("too large a number", "POST", "/predict", b'[{"age": 1e999, "income": 1, "plan": "pro", '
     b'"is_active": true}]', 400, "wrong_type", ["'age'"]),
    ("columns of unequal length", "POST", "/predict",
     {"columns": {"age": [1, 2], "income": [1.0], "plan": ["pro"], "is_active": [True]}}, 400,
     "wrong_shape", ["differ in length"]),
    ("a column not a list", "POST", "/predict",
     {"columns": {"age": 1, "income": [1.0], "plan": ["pro"], "is_active": [True]}}, 400,
     "wrong_shape", ["'age'"]),
    ("unknown column by columns", "POST", "/predict",
     {"columns": {"age": [1], "income": [1.0], "plan": ["pro"], "is_active": [True],
                  "churned": [0]}}, 400, "unknown_column", ["'churned'"]),
    ("GET /predict", "GET", "/predict", None, 405, "method_not_allowed", ["POST"]),
    ("POST /health", "POST", "/health", {}, 405, "method_not_allowed", ["GET"]),
    ("no such endpoint", "GET", "/nope", None, 404, "not_found", ["/predict"]),
]  # fmt: skip


@pytest.mark.parametrize(
    "what,method,path,body,status,code,words", BAD_REQUESTS, ids=[b[0] for b in BAD_REQUESTS]
)
def test_bad_requests_get_a_4xx_naming_the_problem(
    served, client, what, method, path, body, status, code, words
):
    got, doc, text = client.send(method, path, body)
    assert got == status, text
    assert "Traceback" not in text and 'File "' not in text
    assert doc is not None, f"not JSON: {text!r}"
    assert doc["error"] == code, doc
    for word in words:
        assert word in doc["message"], (word, doc["message"])
    # The server is unharmed: a good request still answers.
    assert client.send("POST", "/predict", [GOOD_ROW])[0] == 200


def test_the_token_is_required_when_set(served, models):
    c = Client(served["port"])
    try:
        for headers in ({}, {"Authorization": "Bearer wrong-token-0123456789"},
                        {"Authorization": f"Basic {TOKEN}"}):  # fmt: skip
            for method, path in (("GET", "/secure/health"), ("GET", "/secure/model")):
                status, doc, text = c.send(method, path, headers=headers)
                assert status == 401 and doc["error"] == "unauthorized", text
            status, doc, _ = c.send("POST", "/secure/predict", [GOOD_ROW], headers=headers)
            assert status == 401
        ok = {"Authorization": f"Bearer {TOKEN}"}
        status, doc, text = c.send("POST", "/secure/predict", [GOOD_ROW], headers=ok)
        assert status == 200 and doc["version"] in (models["v1"], models["v2"]), text
        assert c.send("GET", "/secure/model", headers=ok)[0] == 200
        # The open application at / is not affected by the other's token.
        assert c.send("GET", "/health")[0] == 200
    finally:
        c.close()


class Loop:
    """A client sending one-row requests back to back on loopback until stopped."""

    def __init__(self, port: int):
        self.port = port
        self.answers: list[tuple[int, str | None, str]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        c = Client(self.port)
        try:
            while not self.stop.is_set():
                try:
                    status, doc, text = c.send("POST", "/predict", [GOOD_ROW])
                    version = doc.get("version") if isinstance(doc, dict) else None
                except Exception as exc:  # recorded: the test asserts there is none
                    status, version, text = -1, None, repr(exc)
                    c.close()
                    c = Client(self.port)
                self.answers.append((status, version, text[:300]))
        finally:
            c.close()

    def wait_for(self, version: str, in_a_row: int = 30) -> None:
        """Until the last ``in_a_row`` answers all came from ``version`` (every replica)."""
        deadline = time.monotonic() + DEADLINE_S
        while time.monotonic() < deadline:
            tail = self.answers[-in_a_row:]
            if len(tail) == in_a_row and all(v == version for _, v, _ in tail):
                return
            time.sleep(0.1)
        pytest.fail(f"v{version} did not answer within {DEADLINE_S} s: {self.answers[-5:]}")


def test_every_request_answers_through_a_rollback_and_a_promotion(served, models):
    registry, v1, v2 = models["registry"], models["v1"], models["v2"]
    loop = Loop(served["port"])
    loop.thread.start()
    try:
        loop.wait_for(v2)
        start = len(loop.answers)
        assert rollback(registry, MODEL, "serve test: back to v1").version == v1
        loop.wait_for(v1)
        moved_back = len(loop.answers)
        outcome = promote(registry, MODEL, v2, "serve test: v2 again (gated)")
        assert outcome.moved and outcome.decision.passed, outcome.decision.reasons
        loop.wait_for(v2)
    finally:
        loop.stop.set()
        loop.thread.join(60)
    failed = [a for a in loop.answers if a[0] != 200]
    assert not failed, failed[:5]
    versions = [v for _, v, _ in loop.answers]
    assert set(versions) == {v1, v2}
    assert v1 in versions[start:moved_back] and v2 in versions[moved_back:]
    # While the replicas switch one by one, answers alternate between the two versions
    # (each naming its own); once both switched, only the new one answers.
    assert all(v == v1 for v in versions[moved_back - 30 : moved_back])
    assert all(v == v2 for v in versions[-30:])
    status, doc, _ = Client(served["port"]).send("GET", "/model")
    assert doc["version"] == v2 and [s["to"] for s in doc["swaps"]][-2:] == [v1, v2]


def test_a_signed_mlflow_webhook_makes_the_app_read_the_alias_at_once(served, models, monkeypatch):
    """Deliveries sent by MLflow's own webhook code (``mlflow.webhooks.delivery``)."""
    from mlflow.entities.webhook import Webhook, WebhookAction, WebhookEntity, WebhookEvent
    from mlflow.webhooks.delivery import (
        _create_webhook_session,
        _generate_hmac_signature,
        _send_webhook_request,
    )

    # What an `mlflow server` needs to deliver to a plain-HTTP loopback endpoint.
    monkeypatch.setenv("MLFLOW_WEBHOOK_ALLOWED_SCHEMES", "http")
    monkeypatch.setenv("MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS", "true")
    registry, v1, v2 = models["registry"], models["v1"], models["v2"]
    ok = {"Authorization": f"Bearer {TOKEN}"}
    c = Client(served["port"])
    url = f"{served['url']}/secure/webhook"
    moved = WebhookEvent(WebhookEntity.MODEL_VERSION_ALIAS, WebhookAction.CREATED)
    payload = {"name": MODEL, "alias": "champion", "version": v1}
    session = _create_webhook_session()

    def hook(secret):
        return Webhook("wh-1", "rayline-serve", url, [moved], 0, 0, secret=secret)

    def serving() -> str:
        status, doc, text = c.send("GET", "/secure/health", headers=ok)
        assert status == 200, text
        return doc["version"]

    assert serving() == v2
    assert promote(registry, MODEL, v1, "webhook test", force=True).moved
    try:
        for secret, code in ((None, "unsigned"), ("not-the-secret-0123456789", "bad_signature")):
            r = _send_webhook_request(hook(secret), payload, moved, session)
            assert r.status_code == 401 and r.json()["error"] == code, r.text
        body, stamp = json.dumps({"entity": "model_version_alias", "action": "created",
                                  "data": payload}), str(int(time.time()) - 3600)  # fmt: skip
        old = {
            "Content-Type": "application/json",
            "X-MLflow-Delivery-Id": "d-1",
            "X-MLflow-Timestamp": stamp,
            "X-MLflow-Signature": _generate_hmac_signature(SECRET, "d-1", stamp, body),
        }
        r = session.post(url, data=body.encode(), headers=old, timeout=30)
        assert r.status_code == 401 and r.json()["error"] == "stale", r.text
        time.sleep(1.0)
        assert serving() == v2  # refused deliveries moved nothing; the poll is hourly
        deleted = WebhookEvent(WebhookEntity.MODEL_VERSION_ALIAS, WebhookAction.DELETED)
        r = _send_webhook_request(hook(SECRET), {"name": MODEL, "alias": "champion"}, deleted,
                                  session)  # fmt: skip
        assert r.status_code == 200 and r.json()["accepted"] is False, r.text
        r = _send_webhook_request(hook(SECRET), payload, moved, session)
        assert r.status_code == 200 and r.json() == {"accepted": True, "version": v1}, r.text
        deadline = time.monotonic() + DEADLINE_S
        while serving() != v1:
            assert time.monotonic() < deadline, "the webhook did not move the app"
            time.sleep(0.2)
        status, doc, _ = c.send("POST", "/secure/predict", [GOOD_ROW], headers=ok)
        assert status == 200 and doc["version"] == v1
        # The open app has no webhook secret: its /webhook is off.
        status, doc, _ = c.send("POST", "/webhook", {})
        assert status == 404 and "--webhook-secret-file" in doc["message"]
    finally:
        promote(registry, MODEL, v2, "webhook test done", force=True)
        c.close()


# -- a live `mlflow server` -----------------------------------------------------------------------
@pytest.fixture()
def mlflow_server(ws, tmp_path):
    """``mlflow server`` on a free loopback port over the module's sqlite store, allowed to
    deliver webhooks to plain-HTTP loopback; stopped (its process group) at the end."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update(
        # Webhook URLs must be https and public unless these say otherwise (checked when
        # the webhook is created and again when it is sent).
        MLFLOW_WEBHOOK_ALLOWED_SCHEMES="http,https",
        MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS="true",
        # The webhook's secret is stored encrypted under this Fernet key (32 bytes, url-safe
        # base64); without it each server process draws its own, and another worker (or a
        # restart) cannot read the webhook back: it sends nothing, and the server logs an
        # empty error (Fernet's InvalidToken).
        MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY=base64.urlsafe_b64encode(os.urandom(32)).decode(),
        # No job runner and huey consumers (seven processes) beside the server on 2 cores.
        MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false",
    )
    log_path = tmp_path / "mlflow-server.log"
    args = [
        "--backend-store-uri",
        ws["uri"],
        "--artifacts-destination",
        str(tmp_path / "artifacts"),
    ]
    with running_mlflow_server(args, env, log_path, DEADLINE_S) as (url, _):
        yield {"url": url, "log": log_path}


def test_a_live_mlflow_server_delivers_its_webhook_and_the_app_follows(
    served, models, mlflow_server
):
    """The alias moved through ``mlflow server``: its own delivery moves the token app."""
    from mlflow import MlflowClient

    registry, v1, v2 = models["registry"], models["v1"], models["v2"]
    mlflow_client = MlflowClient(
        tracking_uri=mlflow_server["url"], registry_uri=mlflow_server["url"]
    )
    ok = {"Authorization": f"Bearer {TOKEN}"}
    c = Client(served["port"])

    def serving() -> str:
        status, doc, text = c.send("GET", "/secure/health", headers=ok)
        assert status == 200, text
        return doc["version"]

    def received() -> list[dict]:
        status, doc, text = c.send("GET", "/secure/model", headers=ok)
        assert status == 200, text
        return doc["webhooks"]

    def wait_for(version: str) -> None:
        deadline = time.monotonic() + DEADLINE_S
        while serving() != version:
            assert time.monotonic() < deadline, (
                f"v{version} not served {DEADLINE_S} s after the move; the app got "
                f"{received()}; mlflow server's log:\n{mlflow_server['log'].read_text()[-5000:]}"
            )
            time.sleep(0.2)

    # Created before the server's first alias move: it caches each event's webhooks for a
    # minute (MLFLOW_WEBHOOK_CACHE_TTL), and creating one does not clear that.
    hook = mlflow_client.create_webhook(
        name="rayline-serve-live",
        url=f"{served['url']}/secure/webhook",
        events=["model_version_alias.created"],
        secret=SECRET,
    )
    try:
        # The test before left the app on v1 while the alias is back on v2 (its poll is
        # hourly); alone, the app serves v2. Each move changes what it serves, and ends on v2.
        moves = [v1, v2] if serving() == v2 else [v2, v1, v2]
        before = len(received())
        for version in moves:
            mlflow_client.set_registered_model_alias(MODEL, "champion", version)
            wait_for(version)
        # One delivery per move arrived, each naming its version: only webhooks moved it.
        assert [w["version"] for w in received()[before:]] == moves
        status, doc, _ = c.send("POST", "/secure/predict", [GOOD_ROW], headers=ok)
        assert status == 200 and doc["version"] == v2
    finally:
        promote(registry, MODEL, v2, "live webhook test done", force=True)
        mlflow_client.delete_webhook(hook.webhook_id)
        c.close()


# -- the command --------------------------------------------------------------------------------
def _cli(*args):
    return CliRunner().invoke(app, list(args))


def test_serve_refuses_clearly(models, ws, monkeypatch, tmp_path):
    monkeypatch.delenv("RAYLINE_SERVE_TOKEN", raising=False)
    uri = ["--tracking-uri", ws["uri"]]
    short = tmp_path / "short"
    short.write_text("abc\n")
    cases = [
        (("serve", f"{MODEL}@champion", "--host", "0.0.0.0", *uri), "not loopback"),
        (("serve", "nope", *uri), "no registered model 'nope'"),
        (("serve", f"{MODEL}@nosuch", *uri), "points at no version"),
        (("serve", "@champion", *uri), "NAME or NAME@alias"),
        (("serve", f"{MODEL}@a", "--alias", "b", *uri), "--alias"),
        (("serve", MODEL, "--token-file", str(tmp_path / "none"), *uri), "cannot read"),
        (("serve", MODEL, "--token-file", str(short), *uri), "at least 16"),
        (("serve", MODEL, "--tracking-uri", f"sqlite:///{tmp_path}/none.db"), "no MLflow store"),
    ]
    for args, words in cases:
        result = _cli(*args)
        assert result.exit_code == 2, (args, result.output)
        assert words in result.output, (args, result.output)
        assert "Traceback" not in result.output


def test_rayline_serve_command_answers_and_stops_on_sigterm(served, models, ws, tmp_path):
    """The command in its own process (its own local Ray), on another free port."""
    port = free_port()
    cfg = _cfg(ws, "cli", {"epochs": 1}).to_dict()
    cfg["serve"] = {"port": port, "replica_cpus": 0.5, "poll_interval_s": 1}
    cfg["runtime"].update({"num_cpus": 2, "dashboard": False})
    path = write_config(tmp_path / "serve.yaml", cfg)
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "RAY_"))}
    log_path = tmp_path / "serve.out"
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "rayline"),
                "serve",
                f"{MODEL}@champion",
                "--config",
                str(path),
                "--token-file",
                str(token_file),
            ],  # fmt: skip
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    try:
        from rayline.serve_app import wait_ready

        deadline = time.monotonic() + DEADLINE_S
        while True:
            assert proc.poll() is None, log_path.read_text()
            try:
                health = wait_ready(f"http://127.0.0.1:{port}", TOKEN, timeout_s=2)
                break
            except TimeoutError:
                assert time.monotonic() < deadline, log_path.read_text()[-3000:]
        assert health["version"] == models["registry"].alias_version(MODEL)
        c = Client(port)
        status, doc, text = c.send(
            "POST", "/predict", [GOOD_ROW], {"Authorization": f"Bearer {TOKEN}"}
        )
        c.close()
        assert status == 200 and doc["version"] == health["version"], text
        # Serve answers as soon as the replicas are up; the command says so once serve.run
        # has seen the application RUNNING, which can come a little later.
        while f"serving {MODEL}@champion" not in log_path.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(DEADLINE_S) == 0, log_path.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    output = log_path.read_text()
    assert f"serving {MODEL}@champion" in output and f"stopping {MODEL}@champion" in output
    assert TOKEN not in output
