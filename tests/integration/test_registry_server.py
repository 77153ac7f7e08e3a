"""The registry against a real ``mlflow server`` on loopback: basic-auth, sqlite backend,
artifacts served through the server (``--serve-artifacts``).

One server and two tiny pipeline runs (trained in-process, ``train.local_mode``) serve the
whole module; each test then works on registrations prepared from them with
``rayline run --until gate`` and resumed at the register stage:

- two registrations at once, interleaved by the pause hook: distinct versions, and the
  alias ends on the better model, which was gated again against the one that moved first;
- the server gone at a deterministic point (a loopback proxy in front of it that drops the
  connection): bounded retries, a ``RegistryError`` naming the server, no alias on an
  incomplete version, and no second version when the run is run again;
- authentication: works with ``MLFLOW_TRACKING_USERNAME``/``PASSWORD``, a clear error
  without; the password appears in no param, tag, artifact, file or log line;
- ``models:/NAME@champion`` loads in a fresh process with pickle deserialization off;
- ``rayline models list`` / ``history``, ``promote`` (gated and ``--force``), ``rollback``.
"""

from __future__ import annotations

import getpass
import http.client
import io
import json
import logging
import os
import secrets
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pandas as pd
import pytest
from mlflow import MlflowClient
from typer.testing import CliRunner

from rayline.cli import app
from rayline.config import RegistryConfig, validate_config
from rayline.data.split import SPLIT_COL
from rayline.errors import RegistryError
from rayline.pipeline import run_pipeline
from rayline.registry import PAUSE_ENV, Registry

from .conftest import base_config, make_table, running_mlflow_server, write_parts

pytestmark = pytest.mark.integration

USER = "admin"
PASSWORD = f"rl-pw-{secrets.token_hex(12)}"  # unique, so that a grep finds only a leak
RETRIES = 3
GOOD = {"epochs": 3, "lr": 0.01}
BAD = {"epochs": 1, "lr": 1e-6}


# -- the server ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """``mlflow server --app-name basic-auth`` on a free loopback port, stopped at the end."""
    root = tmp_path_factory.mktemp("mlflow-server")
    ini = root / "auth.ini"
    ini.write_text(
        "[mlflow]\n"
        "default_permission = READ\n"
        f"database_uri = sqlite:///{root}/auth.db\n"
        f"admin_username = {USER}\n"
        f"admin_password = {PASSWORD}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        # Without the cache every request pays a PBKDF2 check of the password (a model is
        # ~70 artifact files): registration took 4x as long on 2 cores.
        "auth_cache_ttl_seconds = 600\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update(
        MLFLOW_AUTH_CONFIG_PATH=str(ini), MLFLOW_FLASK_SERVER_SECRET_KEY=secrets.token_hex(16)
    )
    args = [
        "--app-name", "basic-auth",
        "--backend-store-uri", f"sqlite:///{root}/mlflow.db",
        "--serve-artifacts", "--artifacts-destination", str(root / "artifacts"),
    ]  # fmt: skip
    with running_mlflow_server(args, env, root / "server.log") as (uri, proc):
        yield {"uri": uri, "root": root, "pid": proc.pid}


@pytest.fixture(scope="module")
def env(server):
    """The client's environment: the login, fast failures, no leftover pause hook."""
    mp = pytest.MonkeyPatch()
    mp.setenv("MLFLOW_TRACKING_USERNAME", USER)
    mp.setenv("MLFLOW_TRACKING_PASSWORD", PASSWORD)
    mp.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    mp.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "0")
    mp.setenv("RAYLINE_REGISTRY_RETRIES", str(RETRIES))
    mp.setenv("RAYLINE_REGISTRY_BACKOFF_S", "0.05")
    mp.delenv(PAUSE_ENV, raising=False)
    for key in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_RUN_ID"):
        mp.delenv(key, raising=False)
    yield
    mp.undo()
    for key in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):  # set by threads' use_mlflow
        os.environ.pop(key, None)


@pytest.fixture(scope="module")
def logs():
    """Every log line of the module (rayline at DEBUG, the rest at INFO), for the leak grep."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setLevel(logging.DEBUG)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root, ours = logging.getLogger(), logging.getLogger("rayline")
    saved = root.level, ours.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    ours.setLevel(logging.DEBUG)
    yield stream
    root.removeHandler(handler)
    root.setLevel(saved[0])
    ours.setLevel(saved[1])


def client(server) -> MlflowClient:
    return MlflowClient(server["uri"], server["uri"])


# -- the runs -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    root = tmp_path_factory.mktemp("registry")
    return {
        "root": root,
        "data": write_parts(make_table(600), root / "data"),
        "storage": root / "runs",
    }


def cfg_for(ws, uri: str, run_name: str, model: str, train: dict):
    raw = base_config(
        ws["data"],
        ws["storage"],
        train={**train, "local_mode": True, "batch_size": 64},
        evaluate={"baseline": False},
        gate={"thresholds": {}},
        registry={"experiment": "registry-it", "model_name": model, "tracking_uri": uri},
        runtime={"run_name": run_name, "dashboard": False},
    )
    return validate_config(raw)


@pytest.fixture(scope="module")
def race(ray_session, server, env, logs, ws):
    """Two runs up to the gate (a good and a bad model of 'race'), not registered yet."""
    cfgs = {
        "good": cfg_for(ws, server["uri"], "good", "race", GOOD),
        "bad": cfg_for(ws, server["uri"], "bad", "race", BAD),
    }
    for cfg in cfgs.values():
        partial = run_pipeline(cfg, until="gate")
        assert partial.gate["passed"] and partial.model_version is None
    return cfgs


def _wait_for(path: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.05)


def test_two_registrations_at_once_end_on_the_better_model(race, server, tmp_path, monkeypatch):
    monkeypatch.setenv(PAUSE_ENV, str(tmp_path / "{run}.go"))
    results, errors = {}, {}

    def register(name):
        try:
            results[name] = run_pipeline(race[name])
        except BaseException as exc:  # reported below, in the test's thread
            errors[name] = exc

    threads = {n: threading.Thread(target=register, args=(n,)) for n in race}
    for t in threads.values():
        t.start()
    try:
        # Both gated against the same state (no champion), registered, and now wait
        # between the gate and the alias move.
        for name in race:
            _wait_for(tmp_path / f"{name}.go.waiting")
        assert not errors
        versions = client(server).search_model_versions("name = 'race'")
        by_run = {v.tags["rayline.run_name"]: str(v.version) for v in versions}
        assert sorted(by_run) == ["bad", "good"] and len(set(by_run.values())) == 2
        # The worse model moves the alias first...
        (tmp_path / "bad.go").write_text("")
        threads["bad"].join(120)
        assert not errors, errors
        assert (
            client(server).get_model_version_by_alias("race", "champion").version == by_run["bad"]
        )
    finally:
        for name in race:
            (tmp_path / f"{name}.go").write_text("")
        for t in threads.values():
            t.join(180)
    assert not errors, errors
    # ...then the better one finds the alias moved, is gated again against it, and wins.
    good, bad = results["good"], results["bad"]
    assert bad.promoted and good.promoted
    assert (good.model_version, bad.model_version) == (by_run["good"], by_run["bad"])
    champion = client(server).get_model_version_by_alias("race", "champion")
    assert str(champion.version) == good.model_version
    # The gate's reasons are those of the second decision: against the bad model's score.
    against_bad = f"vs champion {bad.evaluation['metrics']['log_loss']:.6g}"
    assert any(against_bad in line and line.endswith("ok") for line in good.gate["reasons"]), (
        good.gate["reasons"]
    )
    tags = client(server).get_model_version("race", good.model_version).tags
    assert json.loads(tags["rayline.gated_against"]) == [bad.model_version]
    assert tags["rayline.gate"] == "passed"
    history = Registry(RegistryConfig(tracking_uri=server["uri"]), str(tmp_path)).alias_history(
        "race"
    )
    assert [(m["from"], m["to"], m["action"]) for m in history] == [
        (None, bad.model_version, "pipeline"),
        (bad.model_version, good.model_version, "pipeline"),
    ]
    assert all(m["by"] == getpass.getuser() and "T" in m["at"] for m in history)
    assert "good" in history[1]["reason"]


# -- the server goes away ------------------------------------------------------------------------
class FaultProxy:
    """A loopback HTTP proxy in front of the server that can play dead at a chosen request.

    ``fail_on(predicate, forward)``: the first request matching ``predicate(method, path)``
    is dropped (``forward=True``: passed on, and its answer dropped), and from then on every
    connection is closed without an answer, as if the server were gone, until ``heal()``.
    """

    HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "content-length"}

    def __init__(self, upstream: str):
        self.upstream = urlsplit(upstream)
        self.predicate = None
        self.forward = False
        self.down = False
        self.dropped: list[str] = []
        self.lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def relay(self):
                proxy.relay(self)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = relay

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.uri = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def fail_on(self, predicate, forward: bool = False) -> None:
        with self.lock:
            self.predicate, self.forward, self.down = predicate, forward, False

    def heal(self) -> None:
        with self.lock:
            self.predicate, self.down = None, False

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def relay(self, h: BaseHTTPRequestHandler) -> None:
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length else None
        with self.lock:
            down = self.down
            hit = not down and self.predicate is not None and self.predicate(h.command, h.path)
            if hit and not self.forward:
                self.down = True
        if down or (hit and not self.forward):
            self.dropped.append(f"{h.command} {h.path}")
            h.close_connection = True  # no answer: the client sees the server vanish
            return
        conn = http.client.HTTPConnection(self.upstream.hostname, self.upstream.port, timeout=60)
        headers = {k: v for k, v in h.headers.items() if k.lower() not in self.HOP | {"host"}}
        conn.request(h.command, h.path, body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        conn.close()
        if hit:  # done upstream; the answer is lost on the way back
            with self.lock:
                self.down = True
            self.dropped.append(f"{h.command} {h.path} (answer)")
            h.close_connection = True
            return
        h.send_response(resp.status, resp.reason)
        for k, v in resp.getheaders():
            if k.lower() not in self.HOP:
                h.send_header(k, v)
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        if h.command != "HEAD":
            h.wfile.write(data)


def test_server_gone_during_registration_retries_fails_clearly_and_resumes_once(race, server, ws):
    proxy = FaultProxy(server["uri"])
    try:
        cfg = cfg_for(ws, proxy.uri, "faulty", "fault", GOOD)
        assert run_pipeline(cfg, until="gate").gate["passed"]  # training from the cache
        direct = client(server)

        # 1. The server goes away while the model's weights are uploaded.
        proxy.fail_on(lambda method, path: method == "PUT" and path.endswith("/model.pt"))
        start = time.monotonic()
        with pytest.raises(RegistryError) as err:
            run_pipeline(cfg)
        assert time.monotonic() - start < 60
        text = str(err.value)
        assert proxy.uri in text and f"after {RETRIES} attempts" in text, text
        assert "logging the model" in text and "runtime.run_name" in text
        assert any(d.endswith("/model.pt") for d in proxy.dropped)
        broken = next(d for d in proxy.dropped if d.endswith("/model.pt"))
        broken_model = broken.split("/models/", 1)[1].split("/", 1)[0]
        # Nothing was registered from the incomplete model, and no alias exists.
        assert direct.search_model_versions("name = 'fault'") == []

        # 2. The server is back, and goes away right after creating the version: the
        # answer is lost on the way back.
        proxy.fail_on(
            lambda method, path: method == "POST" and path.endswith("/model-versions/create"),
            forward=True,
        )
        with pytest.raises(RegistryError, match=f"after {RETRIES} attempts") as err:
            run_pipeline(cfg)
        assert "registering model 'fault'" in str(err.value) or "fault" in str(err.value)
        created = direct.search_model_versions("name = 'fault'")
        assert len(created) == 1 and created[0].status == "READY"
        version = str(created[0].version)
        assert direct.get_registered_model("fault").aliases == {}  # the alias did not move

        # 3. Back for good: the same run again reuses that version and moves the alias.
        proxy.heal()
        result = run_pipeline(cfg)
        assert result.model_version == version and result.promoted
        again = direct.search_model_versions("name = 'fault'")
        assert [str(v.version) for v in again] == [version]  # no second version
        assert str(direct.get_model_version_by_alias("fault", "champion").version) == version
        source = again[0].source.removeprefix("models:/")
        assert source != broken_model
        assert str(direct.get_logged_model(source).status).endswith("READY")
        assert again[0].tags["rayline.mlflow_run_id"] == result.mlflow_run_id

        # The alias never moves to a version whose logged model is incomplete, even when
        # someone registers one by hand.
        assert not str(direct.get_logged_model(broken_model).status).endswith("READY")
        direct.create_registered_model("fault-broken")
        direct.create_model_version(
            "fault-broken", f"models:/{broken_model}", model_id=broken_model
        )
        registry = Registry(RegistryConfig(tracking_uri=server["uri"]), str(ws["root"]))
        with pytest.raises(RegistryError, match="incomplete"):
            registry.move_alias("fault-broken", "1", None, "test")
        assert registry.alias_version("fault-broken") is None
    finally:
        proxy.close()


# -- authentication --------------------------------------------------------------------------------
def test_without_credentials_the_error_names_the_server_and_the_variables(
    server, env, tmp_path, monkeypatch
):
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME")
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD")
    registry = Registry(RegistryConfig(tracking_uri=server["uri"]), str(tmp_path))
    with pytest.raises(RegistryError) as err:
        registry.connect()
    text = str(err.value)
    assert server["uri"] in text and "requires a login" in text
    assert "MLFLOW_TRACKING_USERNAME" in text and "MLFLOW_TRACKING_PASSWORD" in text
    res = CliRunner().invoke(app, ["models", "list", "race", "--tracking-uri", server["uri"]])
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert "MLFLOW_TRACKING_USERNAME" in res.output and server["uri"] in res.output

    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", USER)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "not-the-password")
    with pytest.raises(RegistryError, match=f"refused the login of user '{USER}'"):
        registry.connect()


# -- the CLI -----------------------------------------------------------------------------------------
def _cli(*args: str):
    res = CliRunner().invoke(app, list(args))
    assert "Traceback" not in res.output, res.output
    return res


def test_models_list_promote_and_rollback(race, server):
    uri = ["--tracking-uri", server["uri"]]
    versions = {
        v.tags["rayline.run_name"]: str(v.version)
        for v in client(server).search_model_versions("name = 'race'")
    }
    good, bad = versions["good"], versions["bad"]

    def champion() -> str:
        return str(client(server).get_model_version_by_alias("race", "champion").version)

    assert champion() == good  # where the race left it
    listed = _cli("models", "list", "race", *uri)
    assert listed.exit_code == 0, listed.output
    lines = listed.output.splitlines()
    assert lines[0].split()[:3] == ["version", "aliases", "gate"] and "log_loss" in lines[0]
    rows = {ln.split()[0]: ln for ln in lines[1:] if ln and ln.split()[0].isdigit()}
    assert set(rows) == {good, bad}
    assert "@champion" in rows[good] and "@champion" not in rows[bad]
    assert "passed" in rows[good] and "good" in rows[good] and "bad" in rows[bad]
    as_json = json.loads(_cli("models", "list", "race", *uri, "--json").output)
    assert [r["version"] for r in as_json] == sorted([good, bad], key=int, reverse=True)
    assert set(as_json[0]["test_metrics"]) >= {"accuracy", "log_loss"}

    # Gated: the worse version loses against the champion on its own run's test split.
    rejected = _cli("promote", "race", bad, "--reason", "try the old one", *uri)
    assert rejected.exit_code == 3, rejected.output
    assert "REJECTED" in rejected.output and "log_loss" in rejected.output
    assert champion() == good

    forced = _cli("promote", "race", bad, "--reason", "ops override", "--force", *uri)
    assert forced.exit_code == 0, forced.output
    assert f"v{good} -> v{bad}" in forced.output and champion() == bad

    back = _cli("rollback", "race", "--reason", "the override was wrong", *uri)
    assert back.exit_code == 0, back.output
    assert f"v{bad} -> v{good}" in back.output and champion() == good

    _cli("promote", "race", bad, "--reason", "again", "--force", *uri)
    gated = _cli("promote", "race", good, "--reason", "better log loss", *uri)
    assert gated.exit_code == 0, gated.output
    assert f"v{bad} -> v{good}" in gated.output and "ok" in gated.output and champion() == good
    same = _cli("promote", "race", good, "--reason", "noop", *uri)
    assert same.exit_code == 0 and "already points at" in same.output

    history = _cli("models", "history", "race", *uri, "--json")
    moves = json.loads(history.output)
    assert [(m["from"], m["to"], m["action"]) for m in moves][2:] == [
        (good, bad, "promote --force"),
        (bad, good, "rollback"),
        (good, bad, "promote --force"),
        (bad, good, "promote"),
    ]
    assert moves[3]["reason"] == "the override was wrong"
    assert all(m["by"] == getpass.getuser() for m in moves)
    table = _cli("models", "history", "race", *uri)
    assert table.exit_code == 0 and "ops override" in table.output

    # Bad input: one clear line, exit 2.
    for args, message in [
        (("models", "list", "nope"), "no registered model 'nope'"),
        (("promote", "race", "99", "--reason", "x"), "has no version '99'"),
        (("promote", "nope", "1", "--reason", "x"), "no registered model 'nope'"),
        (("promote", "race", good, "--reason", " "), "--reason"),
        (("rollback", "nope"), "no registered model 'nope'"),
    ]:
        res = _cli(*args, *uri)
        assert res.exit_code == 2 and message in res.output, (args, res.output)
    rollback_fault = _cli("rollback", "fault", *uri)  # one champion only: nothing before it
    assert rollback_fault.exit_code == 2 and "no champion before" in rollback_fault.output


# -- loading without pickles -----------------------------------------------------------------------
def test_champion_loads_without_pickle_in_a_fresh_process(race, server, ws, tmp_path):
    staged = Path(ws["storage"]) / "runs"
    result = json.loads((staged / "good/pipeline_result.json").read_text())
    test_rows = pd.read_parquet(f"{result['data_report']['staged_path']}/{SPLIT_COL}=test")
    raw = test_rows[["user_id", "age", "income", "plan", "is_active"]]
    raw.to_parquet(tmp_path / "raw.parquet", index=False)
    script = (
        "import json, sys, mlflow, pandas as pd\n"
        "model = mlflow.pyfunc.load_model('models:/race@champion')\n"
        "out = model.predict(pd.read_parquet(sys.argv[1]))\n"
        "print(json.dumps({'columns': list(out.columns), 'rows': len(out),"
        " 'predictions': sorted(set(int(p) for p in out['prediction']))}))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "RAYLINE_"))}
    env.update(
        MLFLOW_ALLOW_PICKLE_DESERIALIZATION="false",
        MLFLOW_TRACKING_URI=server["uri"],
        MLFLOW_TRACKING_USERNAME=USER,
        MLFLOW_TRACKING_PASSWORD=PASSWORD,
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "raw.parquet")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["columns"] == ["prediction", "probability_0", "probability_1"]
    assert out["rows"] == len(raw) and set(out["predictions"]) <= {0, 1}


# -- no credential anywhere (last: after everything above logged and wrote) -------------------------
def test_the_password_is_in_no_param_tag_artifact_file_or_log(race, server, ws, logs, tmp_path):
    needle = PASSWORD.encode()
    direct = client(server)
    texts: list[str] = []
    for exp in direct.search_experiments():
        for run in direct.search_runs([exp.experiment_id], max_results=1000):
            texts += [json.dumps(run.data.params), json.dumps(run.data.tags), run.info.run_name]
    for model in ("race", "fault"):
        for v in direct.search_model_versions(f"name = '{model}'"):
            texts += [json.dumps(v.tags), v.description or "", v.source or ""]
    assert len(texts) > 10
    assert not [t for t in texts if PASSWORD in t]
    # Every artifact the server stores, every file the runs wrote, the tracking database.
    checked = 0
    for root in (server["root"] / "artifacts", Path(ws["storage"])):
        for path in root.rglob("*"):
            if path.is_file():
                checked += 1
                assert needle not in path.read_bytes(), path
    assert checked > 20
    assert needle not in (server["root"] / "mlflow.db").read_bytes()
    text = logs.getvalue()
    assert "race" in text  # the capture worked
    assert PASSWORD not in text
