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
from pathlib import Path

import pytest
import yaml

from rayline.config import RuntimeConfig, TrainConfig, validate_config
from rayline.data.features import fit_from_config
from rayline.data.ingest import fingerprint, resolve_sources
from rayline.data.stage import read_split, stage
from rayline.errors import ClusterError
from rayline.runtime import init_ray, train_env
from rayline.train.placement import orphaned_placement_groups
from rayline.tune import run_tune

from .conftest import actor_table, base_config, make_table, write_parts

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
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
    raw["train"].update({"epochs": 1, "num_workers": 2, "batch_size": 64, **(train or {})})
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
    # As the pipeline starts it: Train's settings for the default config in the environment.
    return init_ray(
        RuntimeConfig(num_cpus=4, dashboard=dashboard), worker_env=train_env(TrainConfig())
    )


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


def _tune(root, cfg, name):
    """Stage the data for ``cfg`` and run its sweep under ``root / name``."""
    report, prep = _staged(root, cfg, f"stage-{name}")
    return run_tune(
        cfg, prep, report.staged_path, str(root / name), "tune", 4.0, report.splits["train"]
    )


def _sweep(root, name, **tune):
    cfg = _cfg(root, **tune)
    best, trials = _tune(root, cfg, name)
    return cfg, best, trials


def _actor_classes() -> dict[str, str]:
    return {k: name for k, (name, _) in actor_table().items()}


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


@pytest.fixture(scope="module")
def other_ray(tmp_path_factory):
    """Another local Ray instance on this machine, stopped by PID afterwards."""
    tmp_path = tmp_path_factory.mktemp("other-ray")
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


def test_five_trials_one_at_a_time_without_the_dashboard_beside_another_ray(workspace, other_ray):
    """Ray Train's own cleaner cannot work here (no State API): rayline's release must, and
    another Ray instance on the machine must not confuse it."""
    resources = _start_ray(dashboard=False)
    assert resources["CPU"] == 4
    _, best, trials = _sweep(workspace, "no-dashboard", max_concurrent_trials=1)
    _assert_complete(best, trials, 5)
    assert other_ray.poll() is None


def test_a_trial_whose_workers_cannot_be_placed_fails_alone_with_what_it_waited_for(workspace):
    """Something else holds 2 of the 4 CPUs: the first trial's 2 workers cannot be placed
    and it gives up after train.placement_timeout_s; once the CPUs are free again the next
    trial trains. The sweep goes on and picks the trial that trained."""

    import ray
    from ray.util.placement_group import placement_group, remove_placement_group

    _start_ray(dashboard=False)
    blocker = placement_group([{"CPU": 1}, {"CPU": 1}])
    ray.get(blocker.ready(), timeout=120)
    # 8 s: the blocker is removed when Tune sees the first trial's error (a callback in
    # this driver, before it starts the next trial), and the next trial's workers must find
    # the CPUs within this window on a loaded machine. (Waiting for the first trial's
    # error.txt in the storage path lost that race: Tune syncs it there later.)
    cfg = _cfg(workspace, {"placement_timeout_s": 8}, num_samples=2, max_concurrent_trials=1)
    report, prep = _staged(workspace, cfg, "stage-timeout")
    from ray.tune import Callback

    class UnblockAfterFirstFailure(Callback):
        removed = False

        def on_trial_error(self, iteration, trials, trial, **info):
            if not self.removed:
                remove_placement_group(blocker)
                self.removed = True

    best, trials = run_tune(
        cfg,
        prep,
        report.staged_path,
        str(workspace / "timeout"),
        "tune",
        4.0,
        report.splits["train"],
        callbacks=[UnblockAfterFirstFailure()],
    )
    errors = [t.error for t in trials if t.error]
    assert len(trials) == 2 and len(errors) == 1, [t.error for t in trials]
    assert best.trial_id == next(t.trial_id for t in trials if not t.error)
    msg = errors[0]
    assert "could not be placed within 8 s" in msg and "2 CPU in all" in msg, msg
    assert "train.placement_timeout_s" in msg and "Traceback" not in msg, msg
    assert orphaned_placement_groups() == []


def test_optuna_with_the_median_rule_trains_list_valued_choices(workspace):
    """Optuna's TPE through Ray's OptunaSearch, two in-process trials at once; a list-valued
    choice (hidden layer sizes) reaches the model as a list and comes back in the summary."""
    _start_ray(dashboard=False)
    space = {
        "train.lr": {"type": "loguniform", "low": 0.005, "high": 0.05},
        "model.hidden_sizes": [[16], [8, 8]],
    }
    cfg = _cfg(
        workspace,
        {"local_mode": True, "epochs": 2},
        search="optuna",
        scheduler="median",
        num_samples=2,
        max_concurrent_trials=2,
        search_space=space,
    )
    best, trials = _tune(workspace, cfg, "optuna")
    assert len(trials) == 2 and [t.error for t in trials] == [None, None]
    for t in trials:
        assert t.params["model.hidden_sizes"] in ([16], [8, 8])
        assert 0.005 <= t.params["train.lr"] <= 0.05
        assert [h["epoch"] for h in t.history] == [1, 2]
    assert best.params["model"]["hidden_sizes"] in ([16], [8, 8])
    assert best.params["train"]["lr"] == next(
        t.params["train.lr"] for t in trials if t.trial_id == best.trial_id
    )
    # Local mode: the best checkpoint is one rayline kept under the winning trial's run.
    assert f"trial-{best.trial_id}/checkpoints/checkpoint_epoch-" in best.checkpoint_path
    assert os.path.exists(os.path.join(best.checkpoint_path, "model.pt"))


def test_grid_with_asha_runs_every_combination_once(workspace):
    """A 2 x 1 grid of in-process trials under ASHA: exactly its combinations, each once,
    whichever ASHA stops early (the grid's expansion is unit-tested at 2 x 3)."""
    _start_ray(dashboard=False)
    cfg = _cfg(
        workspace,
        {"local_mode": True, "epochs": 3},
        search="grid",
        scheduler="asha",
        num_samples=1,  # the grid once (num_samples set explicitly repeats it)
        max_concurrent_trials=3,
        search_space={"train.lr": [0.005, 0.05], "model.hidden_sizes": [[16, 16]]},
    )
    best, trials = _tune(workspace, cfg, "grid")
    drawn = sorted((t.params["train.lr"], str(t.params["model.hidden_sizes"])) for t in trials)
    assert drawn == [(0.005, "[16, 16]"), (0.05, "[16, 16]")]
    assert [t.error for t in trials] == [None] * 2
    assert all(1 <= len(t.history) <= 3 for t in trials)
    assert best.trial_id in {t.trial_id for t in trials}


def test_asha_stops_ddp_trials_whose_controller_runs_in_the_trial_and_frees_their_workers(
    workspace,
):
    """DDP trials one at a time under ASHA: the first (a useful learning rate) sets the bar
    at each rung, the next two (rates that barely move the weights) fall below it at the
    first rung and are stopped there. A stopped trial's workers end with the trial's
    process, which ran their controller: nothing keeps CPUs, and the next trial starts."""
    _start_ray(dashboard=False)
    cfg = _cfg(
        workspace,
        {"epochs": 4},
        search="grid",
        scheduler="asha",
        grace_period=1,
        num_samples=1,
        max_concurrent_trials=1,
        search_space={"train.lr": [0.05, 1e-6, 2e-6]},
    )
    before = set(_actor_classes())
    best, trials = _tune(workspace, cfg, "asha-ddp")
    assert [t.error for t in trials] == [None] * 3
    epochs = {t.params["train.lr"]: len(t.history) for t in trials}
    assert epochs[0.05] == 4
    assert epochs[1e-6] < 4 and epochs[2e-6] < 4, epochs
    assert best.trial_id == next(t.trial_id for t in trials if t.params["train.lr"] == 0.05)
    started = {k: v for k, v in actor_table().items() if k not in before}
    names = [name for name, _ in started.values()]
    assert names.count("ImplicitFunc") == 3 and names.count("RayTrainWorker") == 6
    assert "TrainController" not in names
    # On a Ray started here, whose workers inherit what Tune and Train would set in their
    # runtime_envs, the trials and every process they start have none.
    assert {env for _, env in started.values()} <= {"", "{}"}, started
    import ray

    assert orphaned_placement_groups() == []
    deadline = time.time() + 60
    while ray.available_resources().get("CPU", 0) < 4 and time.time() < deadline:
        time.sleep(0.5)
    assert ray.available_resources().get("CPU", 0) == 4


@pytest.mark.parametrize("local_mode", [True, False], ids=["in-process", "ddp"])
def test_pbt_trials_continue_from_the_donors_weights_with_perturbed_values(workspace, local_mode):
    """Synchronous PBT over two trials: at epoch 2 the weaker trial copies the stronger
    one's checkpoint (weights, optimizer) and goes on with a perturbed lr. The population
    trains at once: in-process trials hold a CPU each, the DDP trials' 2 workers a quarter
    CPU each here (1.5 CPUs a trial)."""
    _start_ray(dashboard=False)
    cfg = _cfg(
        workspace,
        {"local_mode": local_mode, "epochs": 3, "cpus_per_worker": 1 if local_mode else 0.25},
        scheduler="pbt",
        perturbation_interval=2,
        num_samples=2,
        max_concurrent_trials=2,
        search_space={"train.lr": {"type": "loguniform", "low": 0.001, "high": 0.1}},
    )
    before = set(_actor_classes())
    best, trials = _tune(workspace, cfg, f"pbt-{local_mode}")
    assert len(trials) == 2 and [t.error for t in trials] == [None, None]
    if not local_mode:
        # Each trial's Train controller ran in the trial's own process and reported to Tune
        # from there: no controller actor, no report queue actor.
        started = [name for actor_id, name in _actor_classes().items() if actor_id not in before]
        assert started.count("RayTrainWorker") == 2 * started.count("ImplicitFunc"), started
        assert "ImplicitFunc" in started
        assert not {"TrainController", "_QueueActor"} & set(started), started
    by_id = {t.trial_id: t for t in trials}
    copies = [
        (t, row)
        for t in trials
        for row in t.history
        if isinstance(row.get("restored_from_trial"), str)
        and row["restored_from_trial"] in by_id
        and row["restored_from_trial"] != t.trial_id
    ]
    assert copies, [t.history for t in trials]
    for trial, row in copies:
        donor = by_id[row["restored_from_trial"]]
        donor_row = next(r for r in donor.history if r["epoch"] == row["restored_from_epoch"])
        # The weights it loaded are the donor's at that epoch, not its own.
        assert row["restored_weights_sha256"] == donor_row["weights_sha256"]
        own = next(r for r in trial.history if r["epoch"] == row["restored_from_epoch"])
        assert own["weights_sha256"] != donor_row["weights_sha256"]
        # It continues the donor's count of epochs, with a perturbed learning rate.
        assert row["epoch"] == row["restored_from_epoch"] + 1
        assert row["lr"] != pytest.approx(donor_row["lr"])
    assert [r["epoch"] for r in by_id[best.trial_id].history] == [1, 2, 3]
    if not local_mode:
        # With a CPU per worker one trial fits: a population that cannot meet is refused
        # before any trial trains.
        apart = _cfg(workspace, {"epochs": 3}, scheduler="pbt", num_samples=2)
        with pytest.raises(ClusterError, match="population of 2 trials .* 1 run at once"):
            _tune(workspace, apart, "pbt-apart")
        assert not (workspace / "pbt-apart" / "tune").exists()


def test_ray_trains_own_cleaner_can_reach_this_instances_state_api(other_ray):
    """With the dashboard (rayline's default) and a second Ray on the machine, the State API
    query that Ray Train's PlacementGroupCleaner makes from its worker process answers for
    this instance (unconfigured, it fails: "Found multiple active Ray instances")."""
    import ray

    _start_ray(dashboard=True)

    @ray.remote(num_cpus=0)
    class Probe:
        def ping(self) -> str:
            return "ok"

    @ray.remote(num_cpus=0)
    def alive(actor_id: str) -> bool:
        from ray.train.v2._internal.state.util import is_actor_alive

        return bool(is_actor_alive(actor_id=actor_id, timeout=30))

    probe = Probe.remote()
    assert ray.get(probe.ping.remote()) == "ok"
    actor_id = probe._actor_id.hex()
    assert ray.get(alive.remote(actor_id)) is True
    ray.kill(probe)
    deadline = time.time() + 60
    while ray.get(alive.remote(actor_id)) and time.time() < deadline:
        time.sleep(0.5)
    assert ray.get(alive.remote(actor_id)) is False
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


def test_ctrl_c_during_a_sweep_registers_nothing_and_says_how_to_resume(workspace):
    """`rayline run` as a user runs it; Ctrl-C (SIGINT to its process group) once the first
    trial has reported. Tune catches the signal and returns what it has: rayline must not
    evaluate or register a model picked from the cut-short sweep."""
    from mlflow import MlflowClient

    raw = base_config(
        workspace / "data",
        workspace / "cli-runs",
        tune={"enabled": True, "num_samples": 3, "scheduler": "fifo", "search_space": SPACE},
        runtime={"num_cpus": 4, "run_name": "cut-short"},
    )
    # In-process trials of ~3 s epochs: the first reports early, the sweep is far from done.
    raw["train"].update(epochs=2, local_mode=True, batch_size=16)
    raw["model"]["builder"] = "tests.integration.slow_model:build"
    raw["tune"]["max_concurrent_trials"] = 1
    tracking = f"sqlite:///{workspace}/cli-mlflow.db"
    raw["registry"]["tracking_uri"] = tracking
    cfg_path = workspace / "cut-short.yaml"
    cfg_path.write_text(yaml.safe_dump(raw, sort_keys=False))
    out, err = workspace / "cut-short.out", workspace / "cut-short.err"
    with out.open("w") as fo, err.open("w") as fe:
        proc = subprocess.Popen(
            [sys.executable, "-m", "rayline.cli", "run", str(cfg_path)],
            cwd=workspace,
            stdout=fo,
            stderr=fe,
            start_new_session=True,
            env={**os.environ, "PYTHONPATH": str(REPO)},  # the test's model module
        )
    tune_dir = workspace / "cli-runs" / "runs" / "cut-short" / "tune" / "tune"
    try:
        deadline = time.time() + 400
        while not any(p.stat().st_size > 0 for p in tune_dir.glob("_trial_*/result.json")):
            assert proc.poll() is None, err.read_text()[-3000:]
            assert time.time() < deadline, "no trial reported within 400 s"
            time.sleep(0.5)
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal sends
        rc = proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=60)
    stderr = err.read_text()
    assert rc == 130, stderr[-3000:]
    assert "interrupted" in stderr and "runtime.run_name=cut-short" in stderr, stderr[-3000:]
    assert "nothing was evaluated or registered" in stderr
    assert "Traceback" not in stderr, stderr[-3000:]
    assert "[rayline] evaluate" not in stderr and "[rayline] register" not in stderr
    client = MlflowClient(tracking, registry_uri=tracking)  # not a registry set by another test
    assert client.search_model_versions("name='churn'") == []
    exp = client.get_experiment_by_name("it")
    runs = client.search_runs([exp.experiment_id], "attributes.run_name = 'cut-short'")
    assert runs and runs[0].info.status == "KILLED"


def test_a_sweep_whose_driver_is_killed_resumes_without_retraining_finished_epochs(workspace):
    """`rayline run` SIGKILLed (with its whole process group, Ray included) once one trial has
    finished and the next has started; the same command again finishes the sweep. Finished
    trials are not rerun, the cut trial continues from its last checkpoint, every trial's
    final lineage has each epoch once, and MLflow keeps one parent run with one nested run
    per trial."""
    import json as _json

    from mlflow import MlflowClient

    raw = base_config(
        workspace / "data",
        workspace / "kill-runs",
        tune={
            "enabled": True,
            "num_samples": 3,
            "max_concurrent_trials": 1,
            "scheduler": "fifo",
            "search_space": SPACE,
        },
        runtime={"num_cpus": 4, "run_name": "killed", "dashboard": False},
    )
    # ~13 batches of 16 rows at 0.25 s each: an epoch takes ~3 s, a window to kill in.
    raw["train"].update(epochs=3, local_mode=True, batch_size=16)
    raw["model"]["builder"] = "tests.integration.slow_model:build"
    tracking = f"sqlite:///{workspace}/kill-mlflow.db"
    raw["registry"]["tracking_uri"] = tracking
    cfg_path = workspace / "killed.yaml"
    cfg_path.write_text(yaml.safe_dump(raw, sort_keys=False))
    trials_dir = workspace / "kill-runs" / "runs" / "killed" / "tune" / "trials"

    def epochs_done() -> dict[str, int]:
        return {
            d.name: len(list((d / "history").glob("epoch-*.json")))
            for d in trials_dir.glob("trial-*")
        }

    def run(kill_when=None):
        with (workspace / "killed.err").open("a") as fe:
            proc = subprocess.Popen(
                [sys.executable, "-m", "rayline.cli", "run", str(cfg_path)],
                cwd=workspace,
                stdout=subprocess.PIPE,
                stderr=fe,
                text=True,
                start_new_session=True,
                env={**os.environ, "PYTHONPATH": str(REPO)},  # the test's model module
            )
        if kill_when is None:
            out, _ = proc.communicate(timeout=600)
            return proc.returncode, out
        deadline = time.time() + 400
        try:
            while not kill_when(epochs_done()):
                assert proc.poll() is None, (workspace / "killed.err").read_text()[-3000:]
                assert time.time() < deadline, f"never reached the kill point: {epochs_done()}"
                time.sleep(0.05)
            os.killpg(proc.pid, signal.SIGKILL)
        finally:
            proc.wait(timeout=60)
        return proc.returncode, None

    rc, _ = run(lambda done: 3 in done.values() and any(0 < n < 3 for n in done.values()))
    assert rc == -signal.SIGKILL
    before = epochs_done()
    finished = {t for t, n in before.items() if n == 3}
    stamps = {
        t: {p.name: p.stat().st_mtime_ns for p in (trials_dir / t / "history").iterdir()}
        for t in finished
    }
    rc, out = run()
    assert rc == 0, (workspace / "killed.err").read_text()[-3000:]
    assert "trials (3):" in out
    # Ray's held-back worker lines go to ray.log, not after the summary.
    assert "pid=" not in out and "across cluster" not in out, out[-3000:]
    # The second attempt started at the sweep: staging and features were not redone.
    assert "resumed at stage tune" in out
    record = _json.loads((workspace / "kill-runs" / "runs" / "killed" / "run.json").read_text())
    assert record["attempts"] == 2 and record["resumed_at"] == "tune"
    for name in ("validate+split", "features"):
        assert record["stages"][name]["reused"] == "cache", record["stages"][name]
        assert record["stages"][name]["from_run"] == "killed"
    after = epochs_done()
    assert set(after) >= set(before) and len(after) == 3 and set(after.values()) == {3}
    for t in finished:  # not rerun: its epoch files were never written again
        now = {p.name: p.stat().st_mtime_ns for p in (trials_dir / t / "history").iterdir()}
        assert now == stamps[t]
    for t in after:
        rows = [
            _json.loads(p.read_text())
            for p in sorted((trials_dir / t / "history").glob("epoch-*.json"))
        ]
        assert [r["epoch"] for r in rows] == [1, 2, 3]
        resumed = [r for r in rows if r.get("restored_from_epoch") is not None]
        for r in resumed:  # a restart continued from the epoch before it, never went back
            assert r["epoch"] == r["restored_from_epoch"] + 1
    cut = [t for t, n in before.items() if 0 < n < 3]
    assert cut and any(
        _json.loads(p.read_text()).get("restored_from_epoch")
        for t in cut
        for p in (trials_dir / t / "history").glob("epoch-*.json")
    ), "the cut trial did not continue from a checkpoint"
    client = MlflowClient(tracking, registry_uri=tracking)  # not a registry set by another test
    exp = client.get_experiment_by_name("it")
    parents = client.search_runs([exp.experiment_id], "attributes.run_name = 'killed'")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    children = client.search_runs(
        [exp.experiment_id], f"tags.mlflow.parentRunId = '{parents[0].info.run_id}'"
    )
    assert sorted(c.data.tags["rayline.trial_id"] for c in children) == sorted(
        t.removeprefix("trial-") for t in after
    )

    # The same sweep uninterrupted (same seed, nothing reused) draws the same trials, each
    # ends on the same validation score, and the same trial wins.
    def result_of(run_name: str) -> dict:
        path = workspace / "kill-runs" / "runs" / run_name / "pipeline_result.json"
        return _json.loads(path.read_text())

    straight = subprocess.run(
        [sys.executable, "-m", "rayline.cli", "run", str(cfg_path), "--no-cache",
         "runtime.run_name=straight"],
        cwd=workspace, capture_output=True, text=True, timeout=600,
        env={**os.environ, "PYTHONPATH": str(REPO), "RAYLINE_TEST_SLOW_BATCH_S": "0"},
    )  # fmt: skip
    assert straight.returncode == 0, straight.stderr[-3000:]
    resumed_trials, straight_trials = result_of("killed")["trials"], result_of("straight")["trials"]

    def scores(trials) -> dict[str, float]:
        return {_json.dumps(t["params"], sort_keys=True): t["best"] for t in trials}

    assert scores(resumed_trials).keys() == scores(straight_trials).keys()
    for params, best in scores(resumed_trials).items():
        assert best == pytest.approx(scores(straight_trials)[params], rel=1e-6), params
    best_params = [
        min(trials, key=lambda t: t["best"])["params"]
        for trials in (resumed_trials, straight_trials)
    ]
    assert best_params[0] == best_params[1]
