"""The command line as a user meets it: clear errors, no tracebacks, exit codes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from rayline.config import config_reference, load_config

REPO = Path(__file__).resolve().parents[2]
CONFIGS = sorted((REPO / "jobs" / "configs").glob("*.yaml"))


def rayline(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "rayline.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_every_shipped_config_validates(path):
    cfg = load_config(path)
    assert cfg.name
    assert cfg.data.target in cfg.schema_.columns


def test_shipped_configs_exist():
    assert {"demo.yaml", "template.yaml"} <= {p.name for p in CONFIGS}


def test_show_config_prints_resolved_config_with_overrides():
    res = rayline(
        "show-config", "jobs/configs/demo.yaml", "train.epochs=3", "model.hidden_sizes=[8]"
    )
    assert res.returncode == 0, res.stderr
    resolved = yaml.safe_load(res.stdout)
    assert resolved["train"]["epochs"] == 3
    assert resolved["model"]["hidden_sizes"] == [8]
    assert resolved["train"]["cpus_per_worker"] == 1  # defaults are filled in


def test_bad_config_is_one_clear_message_without_traceback(tmp_path):
    bad = tmp_path / "bad.yaml"
    raw = yaml.safe_load((REPO / "jobs/configs/demo.yaml").read_text())
    raw["train"]["epoch"] = 3
    raw["train"]["lr"] = "fast"
    bad.write_text(yaml.safe_dump(raw))
    res = rayline("run", str(bad))
    assert res.returncode == 2
    assert "Traceback" not in res.stderr
    assert "train.epoch: unknown key; did you mean 'epochs'?" in res.stderr
    assert "train.lr" in res.stderr


def test_missing_config_file(tmp_path):
    res = rayline("validate", str(tmp_path / "nope.yaml"))
    assert res.returncode == 2
    assert "does not exist" in res.stderr and "Traceback" not in res.stderr


def test_bad_override_is_reported():
    res = rayline("show-config", "jobs/configs/demo.yaml", "train.epochs")
    assert res.returncode == 2
    assert "expected dotted key=value" in res.stderr


def test_job_entry_point_reports_config_errors(tmp_path):
    res = subprocess.run(
        [
            sys.executable,
            "jobs/train_pipeline.py",
            "--config",
            "jobs/configs/demo.yaml",
            "train.num_workers=0",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 2
    assert "train.num_workers" in res.stderr and "Traceback" not in res.stderr


def test_readme_config_reference_matches_the_models():
    readme = (REPO / "README.md").read_text()
    start, end = "<!-- config-reference:start -->\n", "<!-- config-reference:end -->"
    assert start in readme and end in readme
    block = readme.split(start, 1)[1].split(end, 1)[0]
    assert block == config_reference(), "README config reference is stale: run `make docs`"


# -- output: --version, --verbose everywhere, --json, what reaches the console ----------------
def _commands(group, prefix=()):
    for name, cmd in group.commands.items():
        if getattr(cmd, "commands", None):
            yield from _commands(cmd, (*prefix, name))
        else:
            yield " ".join((*prefix, name)), cmd


def test_version_names_rayline_ray_torch_and_mlflow():
    from importlib.metadata import version

    res = rayline("--version")
    assert res.returncode == 0, res.stderr
    out = res.stdout.strip()
    assert out.startswith("rayline ") and len(out.splitlines()) == 1
    for dist in ("ray", "torch", "mlflow"):
        assert f"{dist} {version(dist)}" in out


def test_every_command_takes_verbose():
    import typer.main

    from rayline.cli import app

    commands = dict(_commands(typer.main.get_command(app)))
    assert {"run", "validate", "show-config", "schema infer", "runs list"} <= set(commands)
    for name, cmd in commands.items():
        opts = {o for p in cmd.params for o in p.opts}
        assert {"--verbose", "-v"} <= opts, f"`rayline {name}` has no --verbose/-v"
    res = rayline("show-config", "jobs/configs/demo.yaml", "-v")
    assert res.returncode == 0 and yaml.safe_load(res.stdout)["name"], res.stderr


def _as_in_a_fresh_process(monkeypatch, *names: str) -> None:
    """Undo what an earlier ``import ray`` / ``ray.init`` in this pytest process did to
    library loggers (own handlers on the streams of that time, ``propagate=False``): a CLI
    process captures its streams before Ray configures them."""
    import logging

    for name in names:
        lg = logging.getLogger(name)
        monkeypatch.setattr(lg, "handlers", [])
        monkeypatch.setattr(lg, "propagate", True)


def test_validate_json_is_the_only_thing_on_stdout(tmp_path, monkeypatch):
    """Library noise printed during the run goes to ray.log, stage lines to stderr, and
    stdout is exactly one JSON document."""
    import json
    import logging
    import types

    from typer.testing import CliRunner

    import rayline.pipeline
    from rayline.cli import app
    from rayline.data.stage import DataReport
    from rayline.run import StageTiming

    def fake_validation(cfg, on_stage=None, on_stage_start=None):
        run = types.SimpleNamespace(local_dir=tmp_path / "run")
        for name in ("ingest", "validate+split"):
            on_stage_start(name, run)
            print("(raylet) WARNING: 8 PYTHON worker processes have been started")
            sys.stderr.write("Downloading artifacts: 100%|##########| 1/1\r\n")
            logging.getLogger("ray.data").warning("Progress bars disabled")
            on_stage(StageTiming(name, 0.5, "ok"))
        return DataReport(["a.parquet"], "f", 10, 10, 0, {"train": 10}, 0.0, 0.05)

    monkeypatch.setattr(rayline.pipeline, "run_validation", fake_validation)
    _as_in_a_fresh_process(monkeypatch, "ray", "ray.data")
    res = CliRunner().invoke(app, ["validate", "jobs/configs/demo.yaml", "--json"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert report["rows_in"] == 10 and report["splits"] == {"train": 10}
    assert len(res.stdout.strip().splitlines()) == 1
    lines = res.stderr.splitlines()
    assert lines == [
        "[rayline] ingest          started",
        "[rayline] ingest             0.5s  ok",
        "[rayline] validate+split  started",
        "[rayline] validate+split     0.5s  ok",
    ], res.stderr
    logged = (tmp_path / "run" / "ray.log").read_text()
    assert "PYTHON worker processes" in logged and "Downloading artifacts" in logged
    assert "Progress bars disabled" in logged


def test_captured_errors_still_reach_the_console(tmp_path):
    import io

    from rayline.progress import Capture

    console = io.StringIO()
    cap = Capture(console, tee=False)
    cap.write("2026-01-01 INFO worker.py:1 -- Started a local Ray instance.\n")
    cap.write('(pid=1) Traceback (most recent call last):\n  File "x.py", line 1\n')
    cap.write("ValueError: boom\nafter\n")
    cap.write("2026-01-01\tERROR worker.py:2 -- a task failed\n")
    cap.attach(str(tmp_path / "ray.log"))
    cap.close_file()
    assert console.getvalue().splitlines() == [
        "(pid=1) Traceback (most recent call last):",
        '  File "x.py", line 1',
        "ValueError: boom",
        "2026-01-01\tERROR worker.py:2 -- a task failed",
    ]
    logged = (tmp_path / "ray.log").read_text()
    assert "Started a local Ray instance" in logged and "after" in logged


def test_console_shows_rayline_warnings_and_errors_but_not_library_chatter(tmp_path, monkeypatch):
    import io
    import logging

    from rayline.progress import console

    err, out = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    monkeypatch.setattr(sys, "stdout", out)
    _as_in_a_fresh_process(monkeypatch, "ray", "ray.tune", "mlflow")
    with console(False) as con:
        con.attach(tmp_path)
        logging.getLogger("rayline.pipeline").info("resolved config: ...")
        logging.getLogger("rayline.pipeline").warning("waiting for autoscaling")
        logging.getLogger("ray.tune").warning("a Tune warning")
        logging.getLogger("mlflow").error("MLflow is down")
        logging.getLogger("rayline.sweep").info("tune            trials 1/2 done")
        print("Successfully registered model 'churn'.")
    assert sys.stderr is err and sys.stdout is out  # restored
    shown = err.getvalue().splitlines()
    assert shown[0] == "[rayline] warning: waiting for autoscaling"
    assert shown[1].endswith("ERROR mlflow: MLflow is down")
    assert shown[2:] == ["[rayline] tune            trials 1/2 done"]
    assert out.getvalue() == ""
    logged = (tmp_path / "ray.log").read_text()
    for text in ("resolved config", "a Tune warning", "registered model", "MLflow is down"):
        assert text in logged


def test_console_filter_levels():
    import logging

    from rayline.progress import _ConsoleFilter

    def rec(name, level):
        return logging.LogRecord(name, level, __file__, 1, "m", None, None)

    quiet, loud = _ConsoleFilter(False), _ConsoleFilter(True)
    assert quiet.filter(rec("rayline.progress", logging.INFO))
    assert quiet.filter(rec("rayline.sweep", logging.INFO))
    assert quiet.filter(rec("rayline.pipeline", logging.WARNING))
    assert not quiet.filter(rec("rayline.pipeline", logging.INFO))
    assert not quiet.filter(rec("ray.tune", logging.WARNING))
    assert quiet.filter(rec("mlflow", logging.ERROR))
    assert loud.filter(rec("ray.tune", logging.INFO))


def test_epoch_watcher_prints_new_epochs_once(tmp_path, caplog):
    import json
    import logging

    from rayline.progress import EpochWatcher

    hist = tmp_path / "history"
    hist.mkdir()
    (hist / "epoch-00001.json").write_text(json.dumps({"epoch": 1, "val_metric": 0.9}))
    watcher = EpochWatcher(str(hist), epochs=3, metric="log_loss")  # epoch 1: from before
    caplog.set_level(logging.INFO, logger="rayline.progress")
    for epoch, score in ((2, 0.61234), (3, 0.5)):
        row = {"epoch": epoch, "val_log_loss": score, "val_metric": score, "train_loss": 0.7}
        (hist / f"epoch-{epoch:05d}.json").write_text(json.dumps(row))
    watcher.poll()
    watcher.poll()
    assert [r.getMessage() for r in caplog.records] == [
        "train           epoch 2/3  val_log_loss=0.6123  train_loss=0.7000",
        "train           epoch 3/3  val_log_loss=0.5000  train_loss=0.7000",
    ]


def test_sweep_progress_line_is_short():
    from rayline.sweep_progress import progress_line

    counts = {"done": 3, "running": 2, "stopped early": 0, "failed": 1}
    assert progress_line(counts, 8, "log_loss", (0.45561, "a_00002")) == (
        "tune            trials 3/8 done, 2 running, 1 failed; "
        "best val_log_loss=0.4556 (trial a_00002)"
    )
    counts = {"done": 0, "running": 1, "stopped early": 0, "failed": 0}
    assert (
        progress_line(counts, 8, "log_loss", None) == "tune            trials 0/8 done, 1 running"
    )


# -- bad input is a user error (exit 2, one message naming the fix), never an internal error --


def _user_error(res: subprocess.CompletedProcess) -> str:
    assert res.returncode == 2, (res.returncode, res.stderr[-2000:])
    assert "internal error" not in res.stderr and "Traceback" not in res.stderr, res.stderr
    return res.stderr


def _small_config(tmp_path: Path, data: Path, **runtime: str) -> Path:
    cfg = {
        "name": "small",
        "data": {"path": str(data), "target": "y"},
        "schema": {
            "columns": {
                "id": {"type": "int"},
                "x": {"type": "float"},
                "y": {"type": "string", "allowed": ["a", "b"]},
            }
        },
        "model": {"task": "classification"},
        "runtime": {"storage_path": str(tmp_path / "runs"), **runtime},
    }
    path = tmp_path / "small.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_config_that_is_not_a_text_file_or_is_a_directory(tmp_path):
    binary = tmp_path / "model.yaml"
    binary.write_bytes(b"\xff\xfe\x00PAR1\x80")
    assert "not a text file" in _user_error(rayline("show-config", str(binary)))
    assert "is a directory; give the path of a YAML file" in _user_error(
        rayline("validate", str(tmp_path))
    )


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("..=3", "the key '..' has an empty part"),
        ("train.=3", "the key 'train.' has an empty part"),
        ("runtime.run_name=../../elsewhere", "runtime.run_name: '../../elsewhere' is not a plain"),
        ("model.hidden_sizes=[8,0]", "every layer width must be >= 1"),
    ],
)
def test_bad_override_names_the_key_and_the_fix(override, expected):
    assert expected in _user_error(rayline("show-config", "jobs/configs/demo.yaml", override))


def test_storage_path_that_is_a_file(tmp_path, monkeypatch):
    # The default store under the storage path is used only without MLFLOW_TRACKING_URI
    # (an earlier test in the same pytest process may leave one set).
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    blocker = tmp_path / "storage"
    blocker.write_text("not a directory")
    err = _user_error(
        rayline("validate", "jobs/configs/demo.yaml", f"runtime.storage_path={blocker}/sub")
    )
    assert f"runtime.storage_path: '{blocker}' is a file" in err
    # runs prune opens the default MLflow store under the storage path
    err = _user_error(
        rayline("runs", "prune", "jobs/configs/demo.yaml", f"runtime.storage_path={blocker}")
    )
    assert "cannot use the MLflow tracking store" in err and "runtime.storage_path" in err


def test_unusable_tracking_uri(tmp_path):
    cfg = _small_config(tmp_path, tmp_path / "data")
    err = _user_error(
        rayline("runs", "prune", str(cfg), "registry.tracking_uri=nonsense://x", "--dry-run")
    )
    assert "cannot use the MLflow tracking store at 'nonsense://x'" in err
    assert "registry.tracking_uri" in err


def test_duplicate_column_names_and_binary_data_read_as_text(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    data = tmp_path / "data"
    data.mkdir()
    columns = [pa.array([1, 2]), pa.array([0.1, 0.2]), pa.array(["a", "b"]), pa.array([1.0, 2.0])]
    pq.write_table(pa.Table.from_arrays(columns, names=["id", "x", "y", "x"]), data / "a.parquet")
    cfg = _small_config(tmp_path, data)
    err = _user_error(rayline("validate", str(cfg)))
    assert "a.parquet' has more than one column named 'x'" in err
    err = _user_error(rayline("validate", str(cfg), "data.format=csv"))
    assert "as csv: it is a Parquet file, not UTF-8 text. Set data.format" in err
    csv = tmp_path / "csv"
    csv.mkdir()
    (csv / "a.csv").write_text("id,x,y,x\n1,0.1,a,0.2\n")
    err = _user_error(rayline("validate", str(cfg), f"data.path={csv}"))
    assert "a.csv' has more than one column named 'x'" in err


def test_bad_output_paths_and_options(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    err = _user_error(rayline("demo-data", "--out", str(blocker)))
    assert f"--out: '{blocker}' is a file, not a directory" in err
    out = tmp_path / "synth"
    err = _user_error(
        rayline("data", "synth", "--rows", "5", "--out", str(out), "--config", str(tmp_path))
    )
    assert "--config:" in err and "is a directory" in err
    assert not out.exists()  # checked before any data is written
    assert "--shards" in _user_error(
        rayline("data", "synth", "--rows", "5", "--out", str(out), "--shards", "0")
    )
    err = _user_error(rayline("schema", "infer", str(tmp_path), "--format", "xml"))
    assert "--format: 'xml' is not a format rayline reads" in err


def test_schema_infer_names_a_duplicate_column(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from rayline.data.infer import infer_schema
    from rayline.errors import DataValidationError

    table = pa.Table.from_arrays([pa.array([1]), pa.array([2])], names=["a", "a"])
    pq.write_table(table, tmp_path / "dup.parquet")
    with pytest.raises(DataValidationError, match="more than one column named 'a'"):
        infer_schema(str(tmp_path / "dup.parquet"))  # raised before any Ray read


def test_job_entry_point_exits_like_rayline_run_on_internal_errors_and_interrupts(
    monkeypatch, capsys
):
    """A bug of ours is one line and exit 1 (the traceback with --verbose); Ctrl-C is 130."""
    import importlib.util

    from rayline.errors import DataSourceError

    spec = importlib.util.spec_from_file_location("train_job", REPO / "jobs" / "train_pipeline.py")
    job = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(job)
    argv = ["--config", str(REPO / "jobs/configs/demo.yaml")]
    for raised, code, text in (
        (RuntimeError("boom\nmore"), 1, "internal error: RuntimeError: boom"),
        (KeyboardInterrupt(), 130, "interrupted:"),
        (DataSourceError("no such data"), 2, "error: no such data"),
    ):

        def run_pipeline(*args, _exc=raised, **kwargs):
            raise _exc

        monkeypatch.setattr(job, "run_pipeline", run_pipeline)
        assert job.main(argv) == code
        err = capsys.readouterr().err
        assert text in err and "Traceback" not in err and "more" not in err
    monkeypatch.setattr(job, "run_pipeline", lambda *a, **k: (_ for _ in ()).throw(KeyError("k")))
    with pytest.raises(KeyError):
        job.main([*argv, "--verbose"])


def test_a_process_that_started_ray_exits_with_the_commands_code_after_its_exit_handlers(tmp_path):
    # rayline's entry point skips the interpreter's slow teardown after Ray, never the
    # exit handlers (Ray's shutdown, MLflow's and logging's flushes) or the exit code.
    marker = tmp_path / "handler-ran"
    script = (
        "import atexit, sys, pathlib, ray\n"
        f"atexit.register(lambda: pathlib.Path({str(marker)!r}).write_text('yes'))\n"
        "from rayline.cli import main\n"
        "sys.argv = ['rayline', 'run', sys.argv[1]]\n"
        "print('before', flush=False)\n"
        "main()\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "missing.yaml")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert "before" in proc.stdout and "does not exist" in proc.stderr
    assert marker.read_text() == "yes"
