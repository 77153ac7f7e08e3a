"""What `rayline run` prints, as a user runs it: stage lines, live epochs, the summary;
Ray's, Tune's and MLflow's own output in <run_dir>/ray.log and not on the console."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from .conftest import base_config, make_table, write_config, write_parts

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
STAGES = [
    "setup",
    "ingest",
    "validate+split",
    "features",
    "profile",
    "train",
    "evaluate",
    "gate",
    "report",
    "register",
]
#: What Ray, Tune, Ray Data and MLflow print on their own, and rayline's resolved config.
NOISE = [
    "WARNING",
    "worker.py",
    "Tip:",
    "TensorBoard",
    "tensorboard",
    "Downloading artifacts",
    "Registered model",
    "Successfully registered",
    "Created version",
    "View the dashboard",
    "deprecated",
    "Deprecat",
    "PYTHON worker processes",
    "Progress bars",
    "Reported metrics",
    "resolved config",
]


def _rayline(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "rayline.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=900,
    )


def test_default_output_is_stage_lines_epochs_and_the_summary(tmp_path):
    data = write_parts(make_table(600), tmp_path / "data")
    raw = base_config(
        data,
        tmp_path / "runs",
        tune={"enabled": False},
        train={"local_mode": True, "epochs": 2},
        evaluate={"baseline": False},
        runtime={"run_name": "quiet", "num_cpus": 4},
    )
    cfg_path = write_config(tmp_path / "quiet.yaml", raw)

    res = _rayline("run", str(cfg_path), cwd=tmp_path)
    everything = res.stdout + res.stderr
    print(everything)  # the test's log shows what a user sees
    assert res.returncode == 0, everything[-4000:]
    for noise in NOISE:
        assert noise not in everything, f"{noise!r} on the console:\n{everything}"
    assert len(everything.splitlines()) <= 80

    err = res.stderr.splitlines()
    for stage in STAGES:
        starts = [ln for ln in err if re.fullmatch(rf"\[rayline\] {re.escape(stage)} +started", ln)]
        ends = [ln for ln in err if re.match(rf"\[rayline\] {re.escape(stage)} +\d+\.\d+s  \S", ln)]
        assert len(starts) == 1 and len(ends) == 1, (stage, res.stderr)
    epochs = [i for i, ln in enumerate(err) if re.match(r"\[rayline\] train +epoch \d+/\d+", ln)]
    assert [re.search(r"epoch \d+/\d+", err[i]).group() for i in epochs] == [
        "epoch 1/2",
        "epoch 2/2",
    ], res.stderr
    assert all("val_log_loss=" in err[i] for i in epochs)
    # Live: inside the train stage, between its start and end lines.
    start = next(i for i, ln in enumerate(err) if re.fullmatch(r"\[rayline\] train +started", ln))
    end = next(i for i, ln in enumerate(err) if re.match(r"\[rayline\] train +\d+\.\d+s", ln))
    assert start < epochs[0] < epochs[-1] < end, res.stderr
    assert [ln for ln in err if not ln.startswith("[rayline] ")] == [], res.stderr

    out = res.stdout
    assert out.startswith("rayline run quiet\n")
    assert "gate: PASSED" in out and "registered: models:/churn/1" in out
    assert "[rayline]" not in out
    log_line = re.search(r"^ray logs: (.+)$", out, re.M)
    assert log_line, out
    ray_log = Path(log_line.group(1))
    run_dir = tmp_path / "runs" / "runs" / "quiet"
    assert ray_log == run_dir / "ray.log" and ray_log.stat().st_size > 0
    logged = ray_log.read_text()
    assert "Ray's session logs" in logged and "[rayline]" not in out
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["name"] == "churn-test"

    # --json: one document on stdout (the finished run's recorded result; no Ray needed).
    res = _rayline("run", str(cfg_path), "--json", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    doc = json.loads(res.stdout)
    assert doc["run_name"] == "quiet"
    assert [s["name"] for s in doc["stages"]] == STAGES
