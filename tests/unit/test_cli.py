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
