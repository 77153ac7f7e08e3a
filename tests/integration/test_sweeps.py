"""Sweeps with more trials than fit at once: every trial runs, nothing is left holding CPUs.

A local Ray with 4 logical CPUs holds one trial at a time (1 CPU for the trial's function +
2 DDP workers), so each trial can only start once the previous one's training placement
group is gone. Before rayline released them itself, the second trial waited forever.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from rayline.config import RuntimeConfig, validate_config
from rayline.data.features import fit_from_config
from rayline.data.ingest import fingerprint, resolve_sources
from rayline.data.stage import read_split, stage
from rayline.errors import ClusterError
from rayline.runtime import init_ray
from rayline.train.placement import orphaned_placement_groups
from rayline.tune import run_tune

from .conftest import base_config, make_table, write_parts

pytestmark = pytest.mark.integration

SPACE = {"train.lr": {"type": "loguniform", "low": 0.005, "high": 0.05}}


def _cfg(root, train=None, **tune):
    raw = base_config(
        root / "data",
        root / "runs",
        tune={
            "enabled": True,
            "num_samples": 5,
            "scheduler": "fifo",
            "search_space": SPACE,
            **tune,
        },
    )
    raw["train"].update(epochs=1, num_workers=2, batch_size=64, **(train or {}))
    return validate_config(raw)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweeps")
    write_parts(make_table(300, seed=4), root / "data", parts=1)
    return root


_SESSION: dict[str, bool] = {}


def _start_ray(dashboard: bool) -> dict[str, float]:
    """A local Ray with 4 CPUs, with or without the dashboard; reused while that matches."""
    import ray

    if ray.is_initialized() and _SESSION.get("dashboard") != dashboard:
        ray.shutdown()
    _SESSION["dashboard"] = dashboard
    return init_ray(RuntimeConfig(num_cpus=4, dashboard=dashboard))


@pytest.fixture(scope="module", autouse=True)
def _shutdown_at_end():
    yield
    import ray

    ray.shutdown()


def _staged(root, cfg, name):
    sources = resolve_sources(cfg.data.path)
    report = stage(cfg, sources, fingerprint(sources), str(root / name))
    prep = fit_from_config(cfg, read_split(report.staged_path, "train"))
    return report, prep


def _sweep(root, name, **tune):
    cfg = _cfg(root, **tune)
    report, prep = _staged(root, cfg, f"stage-{name}")
    best, trials = run_tune(
        cfg,
        prep,
        report.staged_path,
        str(root / name),
        "tune",
        4.0,
        report.splits["train"],
    )
    return cfg, best, trials


def _assert_complete(best, trials, n):
    import ray

    assert len(trials) == n
    assert [t.error for t in trials] == [None] * n
    assert all(t.best and t.best.get("epoch") == 1 for t in trials)
    assert best.trial_id in {t.trial_id for t in trials}
    # Nothing of the sweep is left reserving CPUs (Tune returns its last trial's own
    # reservation asynchronously, so give it a moment).
    assert orphaned_placement_groups() == []
    deadline = time.time() + 60
    while ray.available_resources().get("CPU", 0) < 4 and time.time() < deadline:
        time.sleep(0.5)
    assert ray.available_resources().get("CPU", 0) == 4


def test_five_trials_one_at_a_time_without_the_dashboard(workspace):
    """Ray Train's own cleaner cannot work here (no State API): rayline's release must."""
    resources = _start_ray(dashboard=False)
    assert resources["CPU"] == 4
    _, best, trials = _sweep(workspace, "no-dashboard", max_concurrent_trials=1)
    _assert_complete(best, trials, 5)


def test_a_trial_whose_workers_cannot_be_placed_fails_alone_with_what_it_waited_for(workspace):
    """Two trials at once on 4 CPUs: both trial functions (1 CPU each) start, but only one
    trial's 2 workers fit; the other gives up after train.placement_timeout_s."""
    _start_ray(dashboard=False)
    cfg = _cfg(workspace, {"placement_timeout_s": 3}, num_samples=2, max_concurrent_trials=2)
    report, prep = _staged(workspace, cfg, "stage-timeout")
    best, trials = run_tune(
        cfg,
        prep,
        report.staged_path,
        str(workspace / "timeout"),
        "tune",
        4.0,
        report.splits["train"],
    )
    errors = [t.error for t in trials if t.error]
    assert len(trials) == 2 and len(errors) == 1, [t.error for t in trials]
    assert best.trial_id == next(t.trial_id for t in trials if not t.error)
    msg = errors[0]
    assert "could not be placed within 3 s" in msg and "2 CPU in all" in msg, msg
    assert "train.placement_timeout_s" in msg and "Traceback" not in msg, msg
    assert orphaned_placement_groups() == []


@pytest.fixture
def other_ray(tmp_path):
    """Another local Ray instance on this machine, stopped by PID afterwards."""
    script = tmp_path / "other_ray.py"
    ready = tmp_path / "ready"
    script.write_text(
        textwrap.dedent(
            f"""
            import time, ray
            ray.init(address="local", num_cpus=1, include_dashboard=False)
            open({str(ready)!r}, "w").write("up")
            time.sleep(900)
            """
        )
    )
    proc = subprocess.Popen([sys.executable, str(script)], start_new_session=True)
    deadline = time.time() + 180
    while not ready.exists():
        assert proc.poll() is None, "the other Ray instance failed to start"
        assert time.time() < deadline, "the other Ray instance did not start in 180 s"
        time.sleep(0.5)
    yield proc
    proc.send_signal(signal.SIGTERM)  # its atexit shutdown stops the processes it started
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


def test_five_trials_one_at_a_time_beside_another_ray_instance(workspace, other_ray):
    """With the dashboard (rayline's default) while a second Ray runs on the machine: Ray
    Train's cleaner must query this instance's State API, not guess among the two."""
    _start_ray(dashboard=True)
    # Three trials: each after the first needs the one before it released.
    _, best, trials = _sweep(workspace, "beside-other", num_samples=3, max_concurrent_trials=1)
    _assert_complete(best, trials, 3)
    assert other_ray.poll() is None  # the other instance was left alone


def test_a_trial_that_can_never_be_placed_fails_before_any_trial_trains(workspace):
    from rayline.pipeline import run_pipeline

    raw = base_config(
        workspace / "data",
        workspace / "runs",
        tune={"enabled": True, "num_samples": 2, "search_space": SPACE},
        runtime={"num_cpus": 4, "run_name": "too-big", "dashboard": False},
    )
    raw["train"]["num_workers"] = 4  # 4 workers + the trial's own CPU > 4 CPUs
    raw["registry"]["tracking_uri"] = f"sqlite:///{workspace}/mlflow.db"
    cfg = validate_config(raw)
    _start_ray(dashboard=False)
    with pytest.raises(ClusterError) as err:
        run_pipeline(cfg)
    msg = str(err.value)
    assert "5 CPUs" in msg and "Tune trial" in msg and "4" in msg and "train.num_workers" in msg
    assert not (workspace / "runs" / "runs" / "too-big" / "tune").exists()
