"""`rayline validate` on real files, as a user runs it: report on good data, clear error on bad."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from .conftest import base_config, make_table, write_config, write_parts

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def _validate(cfg_path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "rayline.cli", "validate", str(cfg_path), "runtime.num_cpus=4"],
        cwd=cfg_path.parent,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _infer(data: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "rayline.cli", "schema", "infer", str(data)],
        cwd=data.parent,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_validate_prints_the_data_report_for_csv(tmp_path):
    df = make_table(400, bad_rows=3)
    df["age"] = df["age"].astype(object)
    df.loc[7, "age"] = "forty"  # unparsable text in an int column -> quarantined, not a crash
    (tmp_path / "csv").mkdir()
    df.to_csv(tmp_path / "csv" / "table.csv", index=False)
    cfg = write_config(tmp_path / "cfg.yaml", base_config(tmp_path / "csv", tmp_path / "runs"))
    res = _validate(cfg)
    assert res.returncode == 0, res.stderr[-3000:]
    report = json.loads(res.stdout)
    assert report["rows_in"] == 400
    assert report["rows_quarantined"] == 4
    assert report["rows_ok"] == sum(report["splits"].values()) == 396
    reasons = " ".join(r["reason"] for r in report["top_reasons"])
    assert "age: not a int ('forty')" in reasons and "income" in reasons


def test_validate_names_the_bad_file_and_column(tmp_path):
    good = write_parts(make_table(100), tmp_path / "data", parts=1)
    make_table(50, seed=1).astype({"age": "float64"}).assign(age=1.5).to_parquet(
        good / "late.parquet"
    )
    cfg = write_config(tmp_path / "cfg.yaml", base_config(good, tmp_path / "runs"))
    res = _validate(cfg)
    assert res.returncode == 2
    assert "Traceback" not in res.stderr
    assert "late.parquet" in res.stderr and "'age'" in res.stderr and "declares int" in res.stderr


def test_schema_infer_bootstraps_a_contract_the_same_data_passes(tmp_path):
    df = make_table(300)
    (tmp_path / "csv").mkdir()
    df.to_csv(tmp_path / "csv" / "table.csv", index=False)
    res = _infer(tmp_path / "csv")
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.startswith("# Inferred by `rayline schema infer` from 300 rows")
    schema = yaml.safe_load(res.stdout)["schema"]
    cols = schema["columns"]
    assert cols["user_id"]["type"] == "int" and cols["age"]["type"] == "int"
    assert cols["income"]["type"] == "float" and cols["income"]["nullable"] is True
    assert cols["plan"]["allowed"] == ["basic", "plus", "pro"]
    assert cols["is_active"]["type"] == "bool"
    assert cols["churned"]["allowed"] == [0, 1]
    cfg = base_config(tmp_path / "csv", tmp_path / "runs")
    cfg["schema"] = schema
    res = _validate(write_config(tmp_path / "cfg.yaml", cfg))
    assert res.returncode == 0, res.stderr[-3000:]
    report = json.loads(res.stdout)
    assert report["rows_in"] == 300 and report["rows_quarantined"] == 0


def test_schema_infer_on_files_without_rows_is_an_error(tmp_path):
    """A header-only CSV or a JSON Lines file of non-objects has nothing to infer from; the
    answer was a schema of no columns, exit 0."""
    (tmp_path / "csv").mkdir()
    (tmp_path / "csv" / "header.csv").write_text("a,b\n")
    res = _infer(tmp_path / "csv")
    assert res.returncode == 2, res.stderr[-3000:]
    assert "internal error" not in res.stderr and "Traceback" not in res.stderr
    assert "holds no rows to infer a schema from" in res.stderr and "header.csv" in res.stderr
    assert res.stdout == ""
