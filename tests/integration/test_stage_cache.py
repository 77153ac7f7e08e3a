"""The stage cache and resume, end to end on a local Ray: what is reused, and what is not.

Each run goes as far as training (``run_pipeline(..., until="train")``): evaluation and
registration are never cached, so they add nothing to what these tests check. Training runs
in Ray Train's local mode to keep the module short.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from rayline.cache import MARKER, StageCache
from rayline.cli import app
from rayline.config import RuntimeConfig, validate_config
from rayline.pipeline import run_pipeline
from rayline.run import read_record
from rayline.runtime import init_ray

from .conftest import base_config, make_table, write_parts

REPO = Path(__file__).resolve().parents[2]
KEYED = ("validate+split", "features", "profile", "train")

FNS = '''"""A user transform package for the cache tests."""
import pandas as pd


def add_flag(batch: pd.DataFrame) -> pd.DataFrame:
    return batch.assign(is_pro=(batch["plan"] == "pro").astype("float64"))
'''


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    """Data, a user-code package importable by Ray's workers, and one Ray for the module."""
    import ray

    root = tmp_path_factory.mktemp("stage-cache")
    write_parts(make_table(240, seed=5), root / "data", parts=2)
    pkg = root / "user" / "cachefns"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "fns.py").write_text(FNS)
    (pkg / "helpers.py").write_text("SCALE = 1.0\n")
    # Workers inherit the environment of the Ray started here; the driver needs sys.path.
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(root / "user"), old) if p)
    sys.path.insert(0, str(root / "user"))
    init_ray(RuntimeConfig(num_cpus=8))
    yield root
    ray.shutdown()
    sys.path.remove(str(root / "user"))
    if old is None:
        os.environ.pop("PYTHONPATH", None)
    else:
        os.environ["PYTHONPATH"] = old


def _raw(ws: Path, name: str, data: Path | None = None, **sections):
    raw = base_config(data or ws / "data", ws / "store", **sections)
    raw["train"].update(epochs=1, local_mode=True)
    raw["evaluate"] = {"baseline": False}
    raw["runtime"]["run_name"] = name
    return raw


def _run(raw):
    return run_pipeline(validate_config(raw), until="train")


def _reused(result) -> set[str]:
    return {s.name for s in result.stages if s.reused}


def _ran(result) -> set[str]:
    return {s.name for s in result.stages if s.key and not s.reused}


@pytest.fixture(scope="module")
def base(ws):
    result = _run(_raw(ws, "base"))
    assert _ran(result) == set(KEYED) and not _reused(result)
    return result


def test_a_changed_learning_rate_reuses_data_and_features_and_retrains(ws, base):
    raw = _raw(ws, "new-lr")
    raw["train"]["lr"] = 0.02
    result = _run(raw)
    assert _reused(result) == {"validate+split", "features", "profile"}
    assert _ran(result) == {"train"}
    by_name = {s.name: s for s in result.stages}
    keys = {s.name: s.key for s in base.stages}
    for name in ("validate+split", "features", "profile"):
        assert by_name[name].from_run == "base" and by_name[name].key == keys[name]
        assert by_name[name].label.startswith(f"cached {keys[name][:12]} from run base")
    assert by_name["train"].key != keys["train"]
    # The run record and the MLflow run say the same.
    record = read_record(result.run_dir)
    assert record["stages"]["features"]["reused"] == "cache"
    assert record["stages"]["features"]["from_run"] == "base"
    assert record["stages"]["train"]["reused"] is None and record["status"] == "partial"
    from mlflow import MlflowClient

    tags = MlflowClient(result.tracking_uri).get_run(result.mlflow_run_id).data.tags
    assert tags["rayline.stage.features"] == f"cached {keys['features'][:12]} from base"
    assert tags["rayline.stage.train"].startswith("ran ")
    # The data report of a reused staging still accounts for every row.
    assert result.data_report["rows_in"] == 240 == base.data_report["rows_in"]


@pytest.mark.parametrize("change", ["schema", "split", "file"])
def test_a_changed_contract_split_or_input_file_redoes_everything(ws, base, change, tmp_path):
    data = None
    raw_kwargs = {}
    if change == "file":  # the same files, one of them with one value changed
        data = tmp_path / "data"
        data.mkdir()
        for part in (ws / "data").glob("*.parquet"):
            (data / part.name).write_bytes(part.read_bytes())
        df = pd.read_parquet(data / "part-1.parquet")
        df.loc[df.index[0], "age"] = int(df["age"].iloc[0]) + 1
        df.to_parquet(data / "part-1.parquet", index=False)
    raw = _raw(ws, f"changed-{change}", data=data, **raw_kwargs)
    if change == "schema":
        raw["schema"]["columns"]["age"]["max"] = 130
    elif change == "split":
        raw["data"]["split"]["seed"] = 7
    result = _run(raw)
    assert _ran(result) == set(KEYED) and not _reused(result)
    old = {s.name: s.key for s in base.stages}
    assert all({s.name: s.key for s in result.stages}[n] != old[n] for n in KEYED)


def test_editing_user_code_redoes_features_and_training_only(ws, base):
    raw = _raw(ws, "user-1", features={"user": ["cachefns.fns:add_flag"]})
    first = _run(raw)
    assert _reused(first) == {"validate+split", "profile"}  # features config changed
    again = _run({**raw, "runtime": {**raw["runtime"], "run_name": "user-2"}})
    assert _reused(again) == {"validate+split", "features", "profile", "train"}
    # An edit to another file of the user's package counts too: the package is hashed.
    helpers = ws / "user" / "cachefns" / "helpers.py"
    helpers.write_text("SCALE = 2.0\n")
    edited = _run({**raw, "runtime": {**raw["runtime"], "run_name": "user-3"}})
    assert _reused(edited) == {"validate+split", "profile"}
    assert _ran(edited) == {"features", "train"}


def test_cache_off_reuses_nothing(ws, base):
    raw = _raw(ws, "no-cache")
    raw["runtime"]["cache"] = False
    result = _run(raw)
    assert not _reused(result) and _ran(result) == set(KEYED)
    # Its results went to the run's own directory, not the shared cache.
    record = read_record(result.run_dir)
    assert record["stages"]["features"]["path"].startswith(result.run_dir)


def test_a_half_written_entry_is_never_served(ws, base):
    cache = StageCache(f"{ws}/store/cache")
    keys = {s.name: s.key for s in base.stages}
    entry = Path(cache.path("features", keys["features"]))
    (entry / MARKER).unlink()  # as if the writer died before its last write
    (entry / "preprocessor.json").write_text('{"truncated')
    raw = _raw(ws, "after-crash")
    result = _run(raw)
    assert _reused(result) == {"validate+split", "profile", "train"}
    assert _ran(result) == {"features"}
    # The entry was cleared and written again: complete, and readable.
    meta = json.loads((entry / MARKER).read_text())
    assert meta["key"] == keys["features"] and meta["run_name"] == "after-crash"
    json.loads((entry / "preprocessor.json").read_text())


def test_cache_and_runs_commands(ws, base):
    cfg_path = ws / "cli.yaml"
    cfg_path.write_text(yaml.safe_dump(_raw(ws, "cli"), sort_keys=False))
    runner = CliRunner()
    listed = runner.invoke(app, ["cache", "list", str(cfg_path)])
    assert listed.exit_code == 0, listed.output
    key = {s.name: s.key for s in base.stages}["validate+split"]
    line = next(ln for ln in listed.output.splitlines() if key[:12] in ln)
    # Made by base, used since by the runs that changed only later stages.
    assert line.startswith("validate+split") and "base /" in line and "new-lr" in line
    runs = runner.invoke(app, ["runs", "list", str(cfg_path)])
    assert runs.exit_code == 0 and "new-lr" in runs.output and "features:cached" in runs.output
    shown = runner.invoke(app, ["runs", "show", "new-lr", str(cfg_path)])
    assert shown.exit_code == 0, shown.output
    assert "cached" in shown.output and "from base" in shown.output
    missing = runner.invoke(app, ["runs", "show", "nope", str(cfg_path)])
    assert missing.exit_code == 2 and "rayline runs list" in missing.output
    before = len(StageCache(f"{ws}/store/cache").entries())
    dry = runner.invoke(app, ["cache", "prune", str(cfg_path), "--older-than", "0s", "--dry-run"])
    assert dry.exit_code == 0 and f"would remove {before} cache entries" in dry.output
    assert len(StageCache(f"{ws}/store/cache").entries()) == before
    kept = runner.invoke(app, ["cache", "prune", str(cfg_path), "--older-than", "7d"])
    assert kept.exit_code == 0 and "removed 0 cache entries" in kept.output
    bad = runner.invoke(app, ["cache", "prune", str(cfg_path), "--older-than", "soon"])
    assert bad.exit_code == 2 and "7d" in bad.output


def test_a_killed_run_resumes_at_training_from_its_checkpoint(ws, base):
    """`rayline run` SIGKILLed after training checkpointed an epoch; the same command again
    starts at training (staging and features reused from the killed attempt) and training
    continues from the checkpoint instead of epoch 1. Both drivers join the module's Ray as
    a job on a cluster would (the kill takes the driver, not the cluster)."""
    import ray

    raw = _raw(ws, "killed")
    # ~10 batches of 16 rows at 0.25 s each: an epoch takes ~2.5 s, a window to kill in.
    raw["train"].update(epochs=3, batch_size=16)
    raw["model"]["builder"] = "tests.integration.slow_model:build"
    # The shared cache off: what the second attempt reuses is the killed attempt's own.
    raw["runtime"].update(cache=False)
    cfg_path = ws / "killed.yaml"
    cfg_path.write_text(yaml.safe_dump(raw, sort_keys=False))
    history = ws / "store" / "runs" / "killed" / "train" / "train" / "history"
    err = ws / "killed.err"

    def start():
        with err.open("a") as fe:
            return subprocess.Popen(
                [sys.executable, "-m", "rayline.cli", "run", str(cfg_path), "--until", "train"],
                cwd=ws,
                stdout=subprocess.PIPE,
                stderr=fe,
                text=True,
                start_new_session=True,
                env={
                    **os.environ,
                    "PYTHONPATH": str(REPO),  # the test's model module
                    "RAY_ADDRESS": ray.get_runtime_context().gcs_address,
                },
            )

    proc = start()
    deadline = time.time() + 400
    try:
        while not list(history.glob("epoch-*.json")):
            assert proc.poll() is None, err.read_text()[-3000:]
            assert time.time() < deadline, "training never finished an epoch"
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    record = read_record(str(ws / "store" / "runs" / "killed"))
    assert record["stages"]["train"]["status"] == "running"  # what the kill left
    assert record["stages"]["features"]["status"] == "done"
    done_before = {p.name for p in history.glob("epoch-*.json")}

    proc = start()
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, err.read_text()[-3000:]
    assert "resumed at stage train" in out
    record = read_record(str(ws / "store" / "runs" / "killed"))
    assert record["attempts"] == 2 and record["resumed_at"] == "train"
    for name in ("validate+split", "features"):
        assert record["stages"][name]["reused"] == "cache"
        assert record["stages"][name]["from_run"] == "killed"
        assert record["stages"][name]["path"].startswith(str(ws / "store" / "runs" / "killed"))
    rows = [json.loads(p.read_text()) for p in sorted(history.glob("epoch-*.json"))]
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    resumed = [r for r in rows if r.get("restored_from_epoch") is not None]
    assert resumed, f"training started over instead of restoring: {done_before}"
    assert all(r["epoch"] == r["restored_from_epoch"] + 1 for r in resumed)
