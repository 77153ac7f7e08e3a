"""The retrain decision as a pure function: reasons, max_age, windows, file diffs."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from rayline.cli import app
from rayline.config.sections import RetrainConfig, RetrainWindow
from rayline.data.drift import ColumnDrift, DriftReport
from rayline.errors import ConfigError
from rayline.retrain import (
    EXIT_NOTHING,
    FileRecord,
    Trained,
    age_text,
    changed,
    decide,
    diff_files,
    new_partitions,
    window_files,
)
from rayline.submit import EXIT_CODES, RAYLINE_CODES

DAY = 86400.0
NOW = 1_800_000_000.0


def rec(day: int, rows: int = 100, size: int = 1000, mtime: int = 1, sha: str | None = None):
    return FileRecord(
        uri=f"/data/day={day}/part-0.parquet",
        size=size,
        mtime_ns=mtime,
        sha256=sha,
        rows=rows,
        partition={"day": str(day)},
    )


def flat(name: str, rows: int = 100, size: int = 1000) -> FileRecord:
    return FileRecord(uri=f"/data/{name}.parquet", size=size, mtime_ns=1, rows=rows)


def champion(files, age_s: float = 3600.0, version: str = "1") -> Trained:
    return Trained(version, NOW - age_s, files, "passed")


def test_no_champion_retrains():
    d = decide([rec(1)], None, RetrainConfig(), at=NOW)
    assert d.retrain and "no champion" in d.reasons[0]


def test_nothing_new_is_nothing_to_do():
    files = [rec(1), rec(2), rec(3)]
    d = decide(files, champion(files), RetrainConfig(), at=NOW)
    assert not d.retrain and not d.reasons
    assert "no new or changed files" in d.notes[0]


def test_a_new_partition_retrains_whatever_its_size():
    then = [rec(1), rec(2), rec(3)]
    now = [*then, rec(4, rows=5)]
    d = decide(now, champion(then), RetrainConfig(min_new_rows=1000), at=NOW)
    assert d.retrain and d.new_partitions == ["day=4"]
    assert "new partition(s) day=4" in d.reasons[0] and "5 rows" in d.reasons[0]
    assert d.new_files == ["/data/day=4/part-0.parquet"] and d.new_rows == 5


def test_new_rows_below_min_new_rows_is_a_note_not_a_reason():
    then = [flat("a")]
    now = [*then, flat("b", rows=40)]
    d = decide(now, champion(then), RetrainConfig(min_new_rows=50), at=NOW)
    assert not d.retrain and "40 rows < min_new_rows 50" in d.notes[0]
    d = decide(now, champion(then), RetrainConfig(min_new_rows=40), at=NOW)
    assert d.retrain and "40 rows >= min_new_rows 40" in d.reasons[0]


def test_changed_file_counts_its_rows():
    then = [flat("a", rows=10, size=100)]
    now = [flat("a", rows=70, size=700)]
    d = decide(now, champion(then), RetrainConfig(min_new_rows=50), at=NOW)
    assert d.retrain and d.changed_files == ["/data/a.parquet"] and "1 changed file" in d.reasons[0]


def test_changed_uses_digest_then_size_then_mtime():
    a = FileRecord("u", size=10, mtime_ns=1, sha256="x")
    assert not changed(FileRecord("u", size=10, mtime_ns=2, sha256="x"), a)  # only touched
    assert changed(FileRecord("u", size=10, mtime_ns=1, sha256="y"), a)
    assert changed(FileRecord("u", size=11, mtime_ns=1), a)
    assert changed(FileRecord("u", size=10, mtime_ns=2), FileRecord("u", size=10, mtime_ns=1))
    # A URI-only record (an older rayline's lineage) cannot tell a change.
    assert not changed(FileRecord("u", size=10, mtime_ns=2), FileRecord("u"))


def test_diff_and_partitions():
    then = [rec(1), rec(2)]
    now = [rec(2, size=5), rec(3)]
    d = diff_files(now, then)
    assert [f.uri for f in d.new] == [rec(3).uri]
    assert [f.uri for f in d.changed] == [rec(2).uri]
    assert [f.uri for f in d.gone] == [rec(1).uri]
    assert new_partitions(now, then) == ["day=3"]


def test_max_age():
    files = [rec(1)]
    cfg = RetrainConfig(max_age="7d")
    d = decide(files, champion(files, age_s=8 * DAY), cfg, at=NOW)
    assert d.retrain and d.reasons == ["champion v1 is 8d old > max_age 7d"]
    d = decide(files, champion(files, age_s=6 * DAY), cfg, at=NOW)
    assert not d.retrain and "6d old <= max_age 7d" in d.notes[-1]


def test_a_rejected_attempt_on_the_same_data_is_not_repeated():
    then = [rec(1), rec(2)]
    now = [*then, rec(3)]
    attempt = Trained("2", NOW - 600, list(now), "rejected")
    d = decide(now, champion(then), RetrainConfig(), at=NOW, attempt=attempt)
    assert not d.retrain and "v2 (gate: rejected) was trained on exactly this data" in d.notes[-1]
    # More data after the attempt: retrain.
    d = decide([*now, rec(4)], champion(then), RetrainConfig(), at=NOW, attempt=attempt)
    assert d.retrain
    # No champion and the last attempt had this data: nothing to do either.
    d = decide(now, None, RetrainConfig(), at=NOW, attempt=attempt)
    assert not d.retrain
    # The champion is too old, but the attempt on this data is recent: wait.
    cfg = RetrainConfig(max_age="1d")
    d = decide(now, champion(then, age_s=3 * DAY), cfg, at=NOW, attempt=attempt)
    assert not d.retrain and "trained on this data" in d.notes[-1]
    old_attempt = Trained("2", NOW - 2 * DAY, list(now), "rejected")
    d = decide(now, champion(then, age_s=3 * DAY), cfg, at=NOW, attempt=old_attempt)
    assert d.retrain and "3d old > max_age 1d" in d.reasons[0]


def test_champion_without_per_file_lineage_retrains():
    d = decide([rec(1)], champion(None), RetrainConfig(), at=NOW)
    assert d.retrain and "no per-file lineage" in d.reasons[0]


def _drift(status: str) -> DriftReport:
    col = ColumnDrift(
        "income", "numeric", 0.9, None, status, f"drift: income PSI 0.900 > 0.25 ({status})"
    )
    return DriftReport({"income": col}, "m v1")


def test_drift_of_the_new_data_is_a_reason():
    then = [flat("a")]
    now = [*then, flat("b", rows=3)]
    cfg = RetrainConfig(min_new_rows=100)
    d = decide(now, champion(then), cfg, at=NOW, drift=_drift("warn"))
    assert d.retrain and "drifts against v1: drift: income PSI 0.900" in d.reasons[0]
    d = decide(now, champion(then), cfg, at=NOW, drift=_drift("fail"), drift_fail=True)
    assert d.retrain and any("the gate will reject" in n for n in d.notes)
    d = decide(now, champion(then), cfg, at=NOW, drift=_drift("ok"))
    assert not d.retrain and d.drift["status"] == "ok"


def test_windows():
    files = [f"/d/day={i}/part-{j}.parquet" for i in (1, 2, 10, 3) for j in (0, 1)]
    kept, values = window_files(files, RetrainWindow(partition="day", last=2))
    assert values == ["3", "10"]  # numeric order, not text order
    assert kept == [f for f in files if "day=10/" in f or "day=3/" in f]
    assert window_files(files, "all") == (files, [])
    dates = ["/d/day=2026-11-02/a.parquet", "/d/day=2026-10-30/a.parquet"]
    assert window_files(dates, RetrainWindow(partition="day", last=1))[1] == ["2026-11-02"]
    many = window_files(files, RetrainWindow(partition="day", last=99))
    assert many[0] == files
    with pytest.raises(
        ConfigError, match=r"retrain.window.partition: .* the hive keys there are day"
    ):
        window_files(files, RetrainWindow(partition="region", last=1))
    with pytest.raises(ConfigError, match="not a hive tree"):
        window_files(["/d/a.parquet"], RetrainWindow(partition="day", last=1))


def test_age_text_and_max_age_parsing():
    assert age_text(8 * DAY) == "8d" and age_text(5400) == "1.5h" and age_text(30) == "30s"
    assert RetrainConfig(max_age="12h").max_age == "12h"
    for bad in ("7x", "0", "-1d"):
        with pytest.raises(ValueError, match="max_age|age"):
            RetrainConfig(max_age=bad)


def test_exit_codes_are_distinct_and_in_the_shared_table():
    assert EXIT_NOTHING == 6 and 6 in EXIT_CODES and 6 in RAYLINE_CODES
    assert EXIT_CODES[6].startswith("nothing to do")


def test_bad_every_and_bad_window_are_clear_errors(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "name: t\ndata: {path: nowhere, target: y}\n"
        "schema: {columns: {x: {type: float}, y: {type: int}}}\n"
        "model: {task: classification}\n"
    )
    out = CliRunner().invoke(app, ["retrain", str(cfg), "--every", "soon"])
    assert out.exit_code == 2 and "--every" in out.output and "Traceback" not in out.output
    out = CliRunner().invoke(app, ["retrain", str(cfg), "retrain.window=last3"])
    assert out.exit_code == 2 and "retrain.window" in out.output
    out = CliRunner().invoke(app, ["retrain", str(cfg)])
    assert out.exit_code == 2 and "data path" in out.output and "Traceback" not in out.output


def test_the_loop_reports_a_failed_cycle_and_runs_the_next(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "name: t\ndata: {path: nowhere, target: y}\n"
        "schema: {columns: {x: {type: float}, y: {type: int}}}\n"
        "model: {task: classification}\n"
    )
    out = CliRunner().invoke(app, ["retrain", str(cfg), "--every", "1s", "--max-cycles", "2"])
    assert out.exit_code == 2, out.output
    assert out.output.count("does not exist") == 2  # each cycle's error, reported
    assert "cycle 1: failed (exit 2); the next cycle runs" in out.output
    assert "cycle 2:" in out.output and "Traceback" not in out.output


def test_ctrl_c_while_the_loop_waits_stops_it_cleanly(tmp_path):
    """A real process: SIGINT during the wait between cycles ends the loop with exit 0."""
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "name: t\ndata: {path: nowhere, target: y}\n"
        "schema: {columns: {x: {type: float}, y: {type: int}}}\n"
        "model: {task: classification}\n"
    )
    rayline = str(Path(sys.executable).with_name("rayline"))
    err = tmp_path / "err.txt"
    with open(err, "w") as fh:
        proc = subprocess.Popen(
            [rayline, "retrain", str(cfg), "--every", "1h"], stdout=fh, stderr=fh, text=True
        )
    try:
        deadline = time.monotonic() + 120
        while "next in" not in err.read_text():
            assert proc.poll() is None, err.read_text()
            assert time.monotonic() < deadline, err.read_text()
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0, err.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
    text = err.read_text()
    assert "cycle 1: failed (exit 2)" in text and "stopped after 1 cycle(s)" in text
    assert "Traceback" not in text
