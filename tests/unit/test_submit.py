"""`rayline submit`'s preparation and error paths that need no cluster (rayline.submit)."""

from __future__ import annotations

import http.server
import json
import shlex
import socket
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from rayline import submit as sub
from rayline.cli import app
from rayline.errors import ClusterError, ConfigError

EXAMPLE = Path(__file__).resolve().parents[2] / "jobs" / "configs" / "demo.yaml"


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A project directory holding the demo config, as the cwd."""
    (tmp_path / "conf").mkdir()
    cfg = yaml.safe_load(EXAMPLE.read_text())
    (tmp_path / "conf" / "p.yaml").write_text(yaml.safe_dump(cfg))
    monkeypatch.chdir(tmp_path)
    for var in ("RAY_ADDRESS", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path


def _args(s: sub.Submission) -> list[str]:
    return shlex.split(s.entrypoint)


def test_loopback_resolves_relative_paths_to_absolute_ones_here(project):
    s = sub.prepare("conf/p.yaml", ["train.epochs=2"], address="http://127.0.0.1:8265")
    args = _args(s)
    assert args[:5] == ["python", "-m", "rayline", "run", "conf/p.yaml"]
    assert "train.epochs=2" in args
    assert f'data.path="{project / "data/breast_cancer"}"' in args
    assert f'runtime.storage_path="{project / "rayline-runs"}"' in args
    assert s.runtime_env["working_dir"] == str(project)
    # The local data and run output are not uploaded with the code.
    assert {"/data", "/rayline-runs", "/.venv"} <= set(s.runtime_env["excludes"])
    assert s.metadata["rayline_config"] == "conf/p.yaml"


def test_a_remote_cluster_refuses_relative_paths_naming_each_key(project):
    with pytest.raises(ConfigError) as err:
        sub.prepare("conf/p.yaml", [], address="http://ray-head.internal:8265")
    text = str(err.value)
    assert "data.path" in text and "runtime.storage_path" in text
    assert "--shared-fs" in text and "s3://" in text
    # URIs and absolute paths go through unchanged, and nothing is added.
    s = sub.prepare(
        "conf/p.yaml",
        [
            "data.path=s3://bucket/bc",
            "runtime.storage_path=/mnt/nfs/runs",
            "registry.tracking_uri=http://mlflow:5000",
        ],
        address="http://ray-head.internal:8265",
    )
    assert s.resolved == []


def test_relative_sqlite_tracking_uri_and_data_lists_are_resolved(project):
    s = sub.prepare(
        "conf/p.yaml",
        ["registry.tracking_uri=sqlite:///db/mlflow.db", "data.path=[a.parquet, s3://b/c]"],
        address="http://localhost:8265",
    )
    assert f'registry.tracking_uri="sqlite:///{project}/db/mlflow.db"' in s.resolved
    (data,) = [r for r in s.resolved if r.startswith("data.path=")]
    assert json.loads(data.split("=", 1)[1]) == [str(project / "a.parquet"), "s3://b/c"]


def test_no_shared_fs_on_loopback_refuses_too(project):
    with pytest.raises(ConfigError, match="data.path"):
        sub.prepare("conf/p.yaml", [], address="http://127.0.0.1:8265", shared_fs=False)


def test_a_loopback_address_to_other_hosts_is_a_port_forward_not_a_shared_filesystem():
    here = socket.gethostname()
    assert sub.shares_filesystem("http://127.0.0.1:8265", [here, here])
    assert sub.shares_filesystem("http://localhost:8265", None)  # the cluster did not say
    # kubectl port-forward to a KubeRay head: loopback here, pods there.
    assert not sub.shares_filesystem("http://127.0.0.1:8265", ["raycluster-head-x7k2p"])
    assert not sub.shares_filesystem("http://127.0.0.1:8265", [here, "worker-2"])
    assert not sub.shares_filesystem("http://ray-head.internal:8265", [here])


def test_shared_fs_is_asked_only_when_the_config_has_relative_paths(project):
    asked: list[bool] = []

    def remote() -> bool:
        asked.append(True)
        return False

    with pytest.raises(ConfigError, match="--shared-fs"):
        sub.prepare("conf/p.yaml", [], address="http://127.0.0.1:8265", shared_fs=remote)
    assert asked == [True]
    absolute = [
        f"data.path={project / 'data'}",
        f"runtime.storage_path={project / 'runs'}",
        "registry.tracking_uri=http://mlflow:5000",
    ]
    s = sub.prepare("conf/p.yaml", absolute, address="http://127.0.0.1:8265", shared_fs=remote)
    assert asked == [True] and s.resolved == []  # nothing to resolve: the cluster not asked


def test_the_config_must_lie_inside_the_uploaded_working_directory(project, tmp_path_factory):
    other = tmp_path_factory.mktemp("elsewhere")
    with pytest.raises(ConfigError, match="outside the working directory"):
        sub.prepare("conf/p.yaml", [], address="http://127.0.0.1:8265", working_dir=str(other))


def test_a_bad_override_fails_before_anything_is_sent(project):
    with pytest.raises(ConfigError, match="train.epoch"):
        sub.prepare("conf/p.yaml", ["train.epoch=3"], address="http://127.0.0.1:8265")


@pytest.mark.parametrize(
    ("given", "want"),
    [
        ("127.0.0.1:8265", "http://127.0.0.1:8265"),
        ("http://head:8265/", "http://head:8265"),
        ("https://ray.example.com", "https://ray.example.com"),
    ],
)
def test_jobs_address_forms(given, want):
    assert sub.jobs_address(given) == want


@pytest.mark.parametrize(
    ("given", "fix"),
    [
        ("ray://head:10001", "dashboard port"),
        ("127.0.0.1:6379", "GCS"),
        ("auto", "Jobs API"),
        ("", "--address"),
    ],
)
def test_jobs_address_refuses_what_is_not_a_jobs_api(given, fix, monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    with pytest.raises(ClusterError, match=fix):
        sub.jobs_address(given)


def test_token_precedence_is_rays(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    monkeypatch.delenv("RAY_AUTH_TOKEN_PATH", raising=False)
    assert sub.find_token() == (None, "no token")
    (tmp_path / ".ray").mkdir()
    (tmp_path / ".ray" / "auth_token").write_text("home-token\n")
    assert sub.find_token()[0] == "home-token"
    (tmp_path / "t").write_text("path-token")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "t"))
    assert sub.find_token()[0] == "path-token"
    monkeypatch.setenv("RAY_AUTH_TOKEN", "env-token")
    assert sub.find_token() == ("env-token", "$RAY_AUTH_TOKEN")


@dataclass
class _Job:
    """The fields of Ray's JobDetails that exit_code reads."""

    status: str
    driver_exit_code: int | None = None
    message: str | None = None
    submission_id: str = "rayline-x"


@pytest.mark.parametrize(
    ("job", "code"),
    [
        (_Job("SUCCEEDED", 0), 0),
        (_Job("FAILED", 2), 2),
        (_Job("FAILED", 3), 3),
        (_Job("FAILED", 1), 1),
        (_Job("STOPPED", None), 4),
        (_Job("FAILED", None, "Job supervisor actor died"), 5),
        (_Job("FAILED", 127, "exit code 127"), 5),
    ],
)
def test_exit_codes_follow_the_driver_then_the_job(job, code):
    assert sub.exit_code(job) == code
    assert sub.explain(job)
    assert code in sub.EXIT_CODES


def test_readme_has_one_exit_code_table_with_every_code():
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    for code in sub.EXIT_CODES:
        assert f"| `{code}` |" in readme, code


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_address_is_a_clear_error_through_the_cli(project):
    url = f"http://127.0.0.1:{_free_port()}"
    out = CliRunner().invoke(app, ["submit", "conf/p.yaml", "--address", url])
    assert out.exit_code == 2
    assert f"cannot reach the Ray Jobs API at {url}" in out.output
    assert "Traceback" not in out.output


def test_a_server_that_is_not_a_jobs_api_is_named(project):
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *a):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        out = CliRunner().invoke(app, ["jobs", "list", "--address", url])
        assert out.exit_code == 2, out.output
        assert url in out.output and "Ray Jobs API" in out.output
        assert "Traceback" not in out.output
    finally:
        server.shutdown()
        server.server_close()
