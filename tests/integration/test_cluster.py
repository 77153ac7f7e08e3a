"""A real multi-node Ray cluster on loopback, token auth on, and `rayline submit` against it.

The cluster is `cluster/local_cluster.sh` (a head and one worker node, each a `ray start
--block` process with its own temp dir), on free ports, with the token in a file named by
RAY_AUTH_TOKEN_PATH (never ~/.ray/auth_token). The module stops exactly the processes the
script started (`local_cluster.sh stop`, by process group), never `ray stop`.

One pipeline job does the heavy checks together, since each costs minutes here: DDP ranks
placed on both nodes (SPREAD), every row accounted for, the worker node's raylet killed
mid-training and the elastic run (num_workers: [1, 2]) finishing from its last checkpoint
with the one worker left, a model registered, and no planted secret anywhere in what the
run wrote or logged.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.conftest import base_config, make_table, write_config, write_parts

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "cluster" / "local_cluster.sh"
RAYLINE = str(Path(sys.executable).with_name("rayline"))
#: Planted in the environment of the cluster's nodes and of the submitting shell.
SECRETS = {
    "AWS_SECRET_ACCESS_KEY": f"planted-aws-{uuid.uuid4().hex}",
    "MLFLOW_TRACKING_PASSWORD": f"planted-mlflow-{uuid.uuid4().hex}",
}


def _free_ports(n: int) -> int:
    """A port p such that p .. p+n-1 are all free on loopback now."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = s.getsockname()[1]
        if base + n > 65000:
            continue
        ok = True
        for p in range(base, base + n):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", p))
                except OSError:
                    ok = False
                    break
        if ok:
            return base
    raise RuntimeError("no free ports")


@dataclass
class Cluster:
    address: str
    token: str
    env: dict[str, str]  # the script's environment (stop / pids use it)
    root: Path

    def pids(self) -> dict[str, tuple[int, int]]:
        out = subprocess.run(
            ["bash", str(SCRIPT), "pids"], env=self.env, capture_output=True, text=True, timeout=60
        ).stdout
        return {
            name: (int(pid), int(raylet))
            for name, pid, raylet in (line.split() for line in out.splitlines() if line.strip())
            if raylet != "-"
        }


@pytest.fixture(scope="module")
def cluster():
    root = Path(tempfile.mkdtemp(prefix="rlc", dir="/tmp"))  # short: Ray's socket paths
    token_path = root / "token"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN_PATH=str(token_path),
        TEMP_DIR=str(root / "c"),
        NUM_WORKERS="1",
        # One training worker fits on the head: after the worker node is lost, only an
        # elastic run (num_workers: [1, 2]) can go on.
        HEAD_CPUS="1",
        WORKER_CPUS="2",
        OBJECT_STORE_BYTES=str(150 * 1024 * 1024),
        RAY_PORT=str(_free_ports(1)),
        DASHBOARD_PORT=str(_free_ports(1)),
        CLIENT_PORT=str(_free_ports(1)),
        AGENT_PORT_BASE=str(_free_ports(2)),
        RAY_BIN=str(Path(sys.executable).with_name("ray")),
        **SECRETS,
    )
    try:
        started = subprocess.run(
            ["bash", str(SCRIPT), "start"], env=env, capture_output=True, text=True, timeout=400
        )
        assert started.returncode == 0, started.stdout + started.stderr
        assert "2 registered" in started.stdout, started.stdout + started.stderr
        yield Cluster(
            address=f"http://127.0.0.1:{env['DASHBOARD_PORT']}",
            token=token_path.read_text().strip(),
            env=env,
            root=root,
        )
    finally:
        subprocess.run(["bash", str(SCRIPT), "stop"], env=env, capture_output=True, timeout=180)
        shutil.rmtree(root, ignore_errors=True)


def _client_env(cluster: Cluster | None, **extra: str) -> dict[str, str]:
    """The submitting shell: no Ray settings of the developer's, secrets planted, a HOME
    without ~/.ray/auth_token, the token file when ``cluster`` is given."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "MLFLOW_"))}
    env.update(SECRETS)
    home = Path(tempfile.mkdtemp(prefix="rlhome"))
    env["HOME"] = str(home)
    if cluster is not None:
        env["RAY_AUTH_TOKEN_PATH"] = cluster.env["RAY_AUTH_TOKEN_PATH"]
    env.update(extra)
    return env


def _rayline(args: list[str], cwd: Path, env: dict[str, str], timeout: float = 900):
    return subprocess.run(
        [RAYLINE, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def _submit_no_wait(cluster: Cluster, workdir: Path, env: dict[str, str], *overrides: str):
    """``rayline submit pipeline.yaml OVERRIDES --no-wait``: the job id and the output."""
    args = ["submit", "pipeline.yaml", *overrides, "--no-wait", "--address", cluster.address]
    out = _rayline(args, workdir, env)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().splitlines()[-1], out


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A project directory: config, data and a user model at relative paths."""
    wd = tmp_path_factory.mktemp("project")
    df = make_table(360, seed=4)
    write_parts(df, wd / "data", parts=2)
    shutil.copy(REPO / "tests" / "integration" / "slow_model.py", wd / "slow_model.py")
    cfg = base_config(
        Path("data"),
        Path("runs"),
        train={
            "epochs": 6,
            "batch_size": 16,
            "num_workers": [1, 2],
            "placement_strategy": "SPREAD",
            "max_failures": 2,
            # A restart that asks for a node that is gone fails in 30 s, not 120.
            "placement_timeout_s": 30,
            "cache_mb": 0,
        },
        model={"builder": "slow_model:build"},
        evaluate={"baseline": False},
    )
    write_config(wd / "pipeline.yaml", cfg)
    return wd


def test_submit_without_the_token_is_refused_and_a_wrong_one_named(cluster, workdir):
    out = _rayline(
        ["submit", "pipeline.yaml", "--address", cluster.address], workdir, _client_env(None)
    )
    assert out.returncode == 2, out.stderr
    assert "token authentication on and no token was found" in out.stderr
    assert cluster.address in out.stderr and "Traceback" not in out.stderr

    wrong = _client_env(None, RAY_AUTH_TOKEN="not-the-token")
    out = _rayline(["submit", "pipeline.yaml", "--address", cluster.address], workdir, wrong)
    assert out.returncode == 2
    assert "refused the token from $RAY_AUTH_TOKEN" in out.stderr


def test_a_failing_pipeline_exits_with_rayline_s_user_error_code(cluster, workdir):
    # The config is valid; the data path is not there: the job's driver exits 2, and so
    # does submit (ray job submit would say 1).
    out = _rayline(
        ["submit", "pipeline.yaml", "data.path=no-such-dir", "--address", cluster.address],
        workdir,
        _client_env(cluster),
    )
    assert out.returncode == 2, out.stdout + out.stderr
    assert "failed: exit 2 (user error)" in out.stderr
    assert "no-such-dir" in out.stdout  # the job's own error line, streamed


def test_a_stopped_job_exits_4(cluster, workdir):
    env = _client_env(cluster)
    job_id, _ = _submit_no_wait(
        cluster, workdir, env, "train.epochs=200", "runtime.storage_path=stopped-runs"
    )
    listed = _rayline(["jobs", "list", "--json", "--address", cluster.address], workdir, env)
    assert job_id in [r["job_id"] for r in json.loads(listed.stdout)]
    stopped = _rayline(["jobs", "stop", job_id, "--address", cluster.address], workdir, env)
    assert stopped.returncode == 0 and "STOPPED" in stopped.stdout, stopped.stdout + stopped.stderr
    status = _rayline(
        ["jobs", "status", job_id, "--json", "--address", cluster.address], workdir, env
    )
    doc = json.loads(status.stdout)
    assert doc["status"] == "STOPPED" and doc["exit_code"] == 4


def test_bench_scaling_runs_as_a_job_on_the_cluster(cluster, workdir):
    env = _client_env(cluster)
    out = _rayline(
        [
            "bench",
            "scaling",
            "pipeline.yaml",
            "--workers",
            "1,2",
            "--epochs",
            "2",
            "--address",
            cluster.address,
        ],
        workdir,
        env,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr
    line = next(x for x in out.stdout.splitlines() if x.startswith("results: "))
    json_path, png_path = line.removeprefix("results: ").split(";")[0].split(", ")
    doc = json.loads(Path(json_path).read_text())
    assert [p["workers"] for p in doc["points"]] == [1, 2]
    assert all(p["samples_per_s"] > 0 for p in doc["points"])
    assert doc["points"][0]["efficiency"] == pytest.approx(1.0)
    assert Path(png_path).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    db = sqlite3.connect(workdir / "runs" / "mlflow.db")
    steps = db.execute(
        "select step from metrics where key = 'samples_per_s' and run_uuid = ?",
        (doc["mlflow_run_id"],),
    ).fetchall()
    assert sorted(s for (s,) in steps) == [1, 2]


# -- the deploy stage -----------------------------------------------------------------------
DEPLOY = [
    "registry.model_name=churn-deploy",
    "deploy.enabled=true",
    "serve.proxy_location=HeadOnly",  # both nodes are 127.0.0.1: one proxy, one port
    "serve.num_replicas=2",
    "serve.replica_cpus=0.1",
    "serve.poll_interval_s=3600",  # only the deploy stage can move the app in this test
    "model.builder=mlp",
    "train.local_mode=true",
    "train.num_workers=1",
    "gate.thresholds={}",
]


def _http(port: int, method: str, path: str, body=None) -> tuple[int, dict]:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        data = json.dumps(body).encode() if body is not None else None
        conn.request(method, path, body=data, headers={"Content-Type": "application/json"})
        r = conn.getresponse()
        return r.status, json.loads(r.read() or b"{}")
    finally:
        conn.close()


def _serve_shutdown(cluster: Cluster) -> None:
    """End Serve on the cluster (its replicas would take the head's one CPU later)."""
    code = (
        "import ray; from ray import serve; "
        f"ray.init(address='127.0.0.1:{cluster.env['RAY_PORT']}'); serve.shutdown()"
    )
    env = _client_env(cluster, RAY_AUTH_MODE="token")
    subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, timeout=180)


def test_deploy_starts_the_app_then_each_new_champion_serves_without_a_failed_request(
    cluster, workdir
):
    """Job 1 (rayline submit) trains v1 and its deploy stage starts the Serve application
    on the cluster; run 2 (a driver joined with runtime.address) promotes v2 and its
    deploy stage makes both replicas serve it while a client keeps sending requests; run 3
    is rejected by the gate and leaves the application alone."""
    from tests.integration.conftest import free_port

    port = free_port()
    common = [*DEPLOY, f"serve.port={port}"]
    env = _client_env(cluster)
    direct = _client_env(cluster, RAY_AUTH_MODE="token")
    gcs = f"runtime.address=127.0.0.1:{cluster.env['RAY_PORT']}"
    try:
        out = _rayline(
            ["submit", "pipeline.yaml", *common, "runtime.run_name=deploy-1", "train.epochs=1",
             "train.lr=1e-6", "--address", cluster.address],
            workdir,
            env,
        )  # fmt: skip
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr
        assert (
            f"deployed:   Serve application rayline-churn-deploy started at "
            f"http://127.0.0.1:{port}, v1 on 2 replicas" in out.stdout
        ), out.stdout[-3000:]
        status, health = _http(port, "GET", "/health")
        assert status == 200 and health["version"] == "1", health
        row = {"age": 40, "income": 50000.0, "is_active": True, "plan": "pro"}

        answers: list[tuple[int, str | None]] = []
        stop = threading.Event()

        def keep_asking():
            while not stop.is_set():
                try:
                    code, doc = _http(port, "POST", "/predict", [row])
                    answers.append((code, doc.get("version")))
                except OSError as exc:
                    answers.append((0, str(exc)))
                time.sleep(0.05)

        asker = threading.Thread(target=keep_asking, daemon=True)
        asker.start()
        out = _rayline(
            ["run", "pipeline.yaml", *common, gcs, "runtime.run_name=deploy-2",
             "train.epochs=2", "train.lr=0.02"],
            workdir,
            direct,
        )  # fmt: skip
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr
        assert "deployed:   Serve application rayline-churn-deploy updated, v2 on 2 replicas" in (
            out.stdout
        ), out.stdout[-3000:]
        # The stage returned once both replicas served v2: no poll (hourly) was waited for.
        for _ in range(20):
            status, doc = _http(port, "POST", "/predict", [row])
            assert status == 200 and doc["version"] == "2", doc
        stop.set()
        asker.join(timeout=60)
        assert answers and all(code == 200 for code, _ in answers), answers[:20]
        versions = [v for _, v in answers]
        assert versions[0] == "1" and versions[-1] == "2", versions
        assert versions == sorted(versions), "an answer from v1 came after one from v2"

        out = _rayline(
            ["run", "pipeline.yaml", *common, gcs, "runtime.run_name=deploy-3",
             "train.epochs=1", "train.lr=1e-6"],
            workdir,
            direct,
        )  # fmt: skip
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr
        assert "deployed:   no (v3 is not @champion: the gate rejected it)" in out.stdout
        status, health = _http(port, "GET", "/health")
        assert health["version"] == "2"
    finally:
        _serve_shutdown(cluster)


def _ledger(run_dir: Path) -> list[dict]:
    rows = []
    for path in run_dir.glob("train/**/ledger/rank-*.jsonl"):
        rank = int(path.stem.split("-")[1])
        rows += [{**json.loads(line), "rank": rank} for line in path.read_text().splitlines()]
    return rows


def test_pipeline_job_spreads_ranks_survives_a_lost_node_and_leaks_no_secret(cluster, workdir):
    env = _client_env(cluster)
    job_id, out = _submit_no_wait(cluster, workdir, env, "runtime.run_name=spread-elastic")
    # Relative paths were resolved on this machine (the nodes share its disk).
    assert f'runtime.storage_path="{workdir / "runs"}"' in out.stderr

    # Kill the worker node's raylet once both ranks have trained past epoch 1 (so a
    # checkpoint exists) and one of them runs on that node.
    worker_pid, raylet_pid = cluster.pids()["worker-1"]
    run_dir = workdir / "runs" / "runs" / "spread-elastic"
    killed = False
    deadline = time.time() + 600
    while time.time() < deadline and not killed:
        rows = _ledger(run_dir)
        if len({r["node"] for r in rows}) == 2 and any(r["epoch"] >= 2 for r in rows):
            os.kill(raylet_pid, signal.SIGKILL)
            killed = True
        time.sleep(0.2)
    assert killed, "training never reached epoch 3 on both nodes"

    status = None
    while time.time() < deadline:
        status = json.loads(
            _rayline(
                ["jobs", "status", job_id, "--json", "--address", cluster.address], workdir, env
            ).stdout
        )
        if status["exit_code"] is not None:
            break
        time.sleep(3)
    logs = _rayline(["jobs", "logs", job_id, "--address", cluster.address], workdir, env).stdout
    assert status and status["exit_code"] == 0, logs[-3000:]

    result = json.loads((run_dir / "pipeline_result.json").read_text())
    # A model was registered from the finished run.
    assert result["model_version"] and "registered: models:/churn/" in logs

    # DDP ranks on both nodes in the first attempt; the final attempt, elastic down to the
    # one worker the head can hold, restored a checkpoint and trained every later step
    # exactly once.
    rows = _ledger(run_dir)
    # (Each rank tags its rows with its own attempt id; restored_at 0 = the first attempt.)
    assert len({r["node"] for r in rows if r["restored_at"] == 0}) == 2
    final = [r for r in rows if r["restored_at"] > 0]
    assert final, "no attempt restored from a checkpoint"
    start = final[0]["restored_at"]
    steps = sorted(r["step"] for r in final if r["rank"] == 0)
    assert steps == list(range(start + 1, steps[-1] + 1))
    assert len({r["node"] for r in final}) == 1  # only the head is left
    assert {r["rank"] for r in final} == {0}  # with one worker

    # Every row accounted for: in = ok + quarantined, the splits add up, every epoch trained
    # the whole train split.
    report = result["data_report"]
    assert report["rows_in"] == 360 == report["rows_ok"] + report["rows_quarantined"]
    assert sum(report["splits"].values()) == report["rows_ok"]
    epochs = [
        json.loads(p.read_text()) for p in sorted(run_dir.glob("train/**/history/epoch-*.json"))
    ]
    assert [e["epoch"] for e in epochs] == list(range(1, 7))
    assert {e["train_rows"] for e in epochs} == {report["splits"]["train"]}

    # No secret in what the run wrote (MLflow's database: params, tags; artifacts; the
    # logged config; the run directory), in the job's logs, or in the job's record.
    needles = [cluster.token, *SECRETS.values()]
    haystacks = {"job logs": logs}
    info = _rayline(["jobs", "list", "--json", "--address", cluster.address], workdir, env).stdout
    haystacks["job record"] = info
    for path in (workdir / "runs").rglob("*"):
        if path.is_file():
            haystacks[str(path)] = path.read_bytes().decode("utf-8", "replace")
    db = sqlite3.connect(workdir / "runs" / "mlflow.db")
    for table in ("params", "tags", "model_version_tags", "registered_model_tags"):
        haystacks[f"mlflow {table}"] = json.dumps(db.execute(f"select * from {table}").fetchall())
    leaks = [(name, where) for where, text in haystacks.items() for name in needles if name in text]
    assert not leaks, leaks
    assert len(haystacks) > 20  # the search did look at the run's files
