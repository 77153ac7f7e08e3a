"""Resource checks fail fast with a message that says what to change."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from rayline import runtime
from rayline.config import RuntimeConfig, TrainConfig, load_config
from rayline.errors import ClusterError
from rayline.runtime import check_training_fits, default_local_cpus, init_ray

REPO = Path(__file__).resolve().parents[2]


def test_gpus_that_do_not_exist_are_refused_with_the_fix():
    with pytest.raises(ClusterError) as err:
        check_training_fits(TrainConfig(num_workers=8, use_gpu=True), {"CPU": 16.0})
    msg = str(err.value)
    assert "8 workers" in msg and "0 GPUs" in msg and "train.use_gpu=false" in msg


def test_too_many_cpus_are_refused():
    with pytest.raises(ClusterError) as err:
        check_training_fits(TrainConfig(num_workers=4, cpus_per_worker=3), {"CPU": 8.0})
    assert "12 CPUs" in str(err.value) and "runtime.num_cpus" in str(err.value)


def test_custom_resources_are_checked():
    with pytest.raises(ClusterError) as err:
        check_training_fits(
            TrainConfig(num_workers=2, resources_per_worker={"accelerator_type:A100": 1}),
            {"CPU": 8.0},
        )
    assert "accelerator_type:A100" in str(err.value)


def test_a_fitting_request_passes():
    check_training_fits(TrainConfig(num_workers=2, use_gpu=True), {"CPU": 8.0, "GPU": 2.0})
    check_training_fits(TrainConfig(num_workers=2), {"CPU": float(default_local_cpus())})


# Logical CPUs of the local default per core count: twice the cores, at least 8 (None: unknown).
LOCAL_DEFAULT = [(1, 8), (2, 8), (4, 8), (16, 32), (None, 8)]
SHIPPED_TRAIN = {
    "default": TrainConfig(),
    "demo": load_config(REPO / "jobs" / "configs" / "demo.yaml").train,
}


@pytest.mark.parametrize(("cores", "expected"), LOCAL_DEFAULT)
def test_local_default_follows_the_core_count(monkeypatch, cores, expected):
    monkeypatch.setattr(runtime.os, "cpu_count", lambda: cores)
    assert default_local_cpus() == expected


@pytest.mark.parametrize("cores", [1, 2, 16])
@pytest.mark.parametrize("name", sorted(SHIPPED_TRAIN))
def test_local_default_leaves_cpus_for_ray_data(monkeypatch, cores, name):
    # The default and demo training workers fit a local Ray on any machine, with logical
    # CPUs to spare for Ray Data's read and transform tasks (none left: training starves).
    monkeypatch.setattr(runtime.os, "cpu_count", lambda: cores)
    train = SHIPPED_TRAIN[name]
    cpus = float(default_local_cpus())
    check_training_fits(train, {"CPU": cpus})
    assert cpus - train.num_workers * train.cpus_per_worker > 0
    assert cpus >= 2 * cores  # oversubscribed: at least twice the cores


class _FakeRay:
    """Stands in for ``ray`` in :func:`init_ray`: records ``ray.init``'s options."""

    def __init__(self):
        self.init_kwargs: dict = {}

    def is_initialized(self):
        return False

    def init(self, **kwargs):
        self.init_kwargs = kwargs

    def cluster_resources(self):
        return {"CPU": float(self.init_kwargs["num_cpus"])}


@pytest.fixture
def fake_ray(monkeypatch):
    fake = _FakeRay()
    monkeypatch.setitem(sys.modules, "ray", fake)
    monkeypatch.setattr(runtime, "_configure_ray_data", lambda: None)
    monkeypatch.setattr(runtime, "_started_here", False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "2")  # restored after the test
    # init_ray sets these in the environment; each is restored (or removed) after the test.
    for key in [*runtime.INHERITED_DEFAULTS, runtime.WORKER_GROUP_START_TIMEOUT_ENV]:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setattr(runtime, "_started_env", None)
    return fake


def test_a_local_ray_starts_with_the_local_default(monkeypatch, fake_ray):
    monkeypatch.setattr(runtime.os, "cpu_count", lambda: 2)
    resources = init_ray(RuntimeConfig(dashboard=False))
    assert fake_ray.init_kwargs["address"] == "local"
    assert fake_ray.init_kwargs["num_cpus"] == 8
    assert resources == {"CPU": 8.0}
    check_training_fits(SHIPPED_TRAIN["demo"], resources)


def test_runtime_num_cpus_overrides_the_local_default(monkeypatch, fake_ray):
    monkeypatch.setattr(runtime.os, "cpu_count", lambda: 16)
    assert init_ray(RuntimeConfig(dashboard=False, num_cpus=3)) == {"CPU": 3.0}
    assert fake_ray.init_kwargs["num_cpus"] == 3


def test_only_a_ray_this_process_started_counts_as_one_no_autoscaler_grows(monkeypatch, fake_ray):
    monkeypatch.setattr(fake_ray, "is_initialized", lambda: bool(fake_ray.init_kwargs))
    assert not runtime.ray_started_here()  # no Ray yet
    init_ray(RuntimeConfig(dashboard=False))
    assert runtime.ray_started_here()
    fake_ray.init_kwargs = {}  # shut down; then a cluster's address
    assert not runtime.ray_started_here()
    monkeypatch.setattr(fake_ray, "cluster_resources", lambda: {"CPU": 4.0})
    init_ray(RuntimeConfig(dashboard=False, address="10.0.0.1:6379"))
    assert fake_ray.init_kwargs["address"] == "10.0.0.1:6379"
    assert not runtime.ray_started_here()


def test_workers_of_a_ray_started_here_inherit_its_environment_and_only_theirs(
    monkeypatch, fake_ray
):
    """What a local Ray's workers inherit is the environment it was started with: Tune's and
    Train's defaults and the worker_env asked for, not what is set after the start."""
    monkeypatch.setattr(fake_ray, "is_initialized", lambda: bool(fake_ray.init_kwargs))
    assert runtime.worker_environment(["PL_DISABLE_FORK"]) is None  # no Ray yet
    assert not runtime.inherited_by_workers({})
    timeout = runtime.train_env(TrainConfig(placement_timeout_s=30))
    init_ray(RuntimeConfig(dashboard=False), worker_env=timeout)
    assert os.environ[runtime.WORKER_GROUP_START_TIMEOUT_ENV] == "30.0"
    inherited = {**runtime.INHERITED_DEFAULTS, **timeout, "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "2"}
    assert runtime.inherited_by_workers(inherited)
    assert runtime.worker_environment(["PL_DISABLE_FORK", "NOT_SET"]) == {"PL_DISABLE_FORK": "1"}
    # A value set after the start, or another value, is not inherited.
    monkeypatch.setenv("RAYLINE_TEST_LATER", "1")
    assert not runtime.inherited_by_workers({"RAYLINE_TEST_LATER": "1"})
    assert not runtime.inherited_by_workers(runtime.train_env(TrainConfig(placement_timeout_s=5)))
    # Connected to a cluster: nothing is known of its workers' environment.
    fake_ray.init_kwargs = {}
    monkeypatch.setattr(fake_ray, "cluster_resources", lambda: {"CPU": 4.0})
    init_ray(RuntimeConfig(dashboard=False, address="10.0.0.1:6379"))
    assert runtime.worker_environment(["PL_DISABLE_FORK"]) is None
    assert not runtime.inherited_by_workers({})


def test_elastic_training_needs_only_its_fewest_workers_to_fit():
    elastic = TrainConfig(num_workers=[1, 4], cpus_per_worker=2)
    check_training_fits(elastic, {"CPU": 2.0})
    with pytest.raises(ClusterError, match="1 workers x 2 CPU"):
        check_training_fits(elastic, {"CPU": 1.0})


def test_a_local_rays_settings_reach_workers_through_the_environment_not_a_runtime_env(
    monkeypatch, fake_ray
):
    # A job runtime_env would start every worker through Ray's setup_worker.py and the
    # runtime-env agent; the raylet's inherited environment costs nothing per process.
    monkeypatch.delenv("RAY_API_SERVER_ADDRESS", raising=False)
    monkeypatch.delenv("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", raising=False)
    init_ray(RuntimeConfig(dashboard=True))
    assert "runtime_env" not in fake_ray.init_kwargs
    port = fake_ray.init_kwargs["dashboard_port"]
    assert runtime.os.environ["RAY_API_SERVER_ADDRESS"] == f"http://127.0.0.1:{port}"
    assert runtime.os.environ["RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"] == "0"
    # A later session of the same process without that dashboard does not inherit it...
    init_ray(RuntimeConfig(dashboard=False))
    assert "RAY_API_SERVER_ADDRESS" not in runtime.os.environ
    # ...and an address the user set is theirs.
    monkeypatch.setenv("RAY_API_SERVER_ADDRESS", "http://10.0.0.1:8265")
    init_ray(RuntimeConfig(dashboard=False))
    assert runtime.os.environ["RAY_API_SERVER_ADDRESS"] == "http://10.0.0.1:8265"


def test_background_imports_are_done_when_the_block_ends_and_a_failure_is_left_to_the_importer(
    tmp_path, monkeypatch
):
    (tmp_path / "rl_bg_ok.py").write_text("VALUE = 1\n")
    (tmp_path / "rl_bg_bad.py").write_text("raise RuntimeError('bad module')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with runtime.import_in_background(("rl_bg_bad", "rl_bg_ok")):
        pass
    assert sys.modules["rl_bg_ok"].VALUE == 1
    assert "rl_bg_bad" not in sys.modules
    with pytest.raises(RuntimeError, match="bad module"):
        import rl_bg_bad  # noqa: F401
    monkeypatch.delitem(sys.modules, "rl_bg_ok")


def test_work_in_background_gives_its_result_or_its_error_and_the_block_waits_for_it():
    import threading

    release = threading.Event()
    done = []

    def slow():
        release.wait(30)
        done.append(True)
        return 42

    with runtime.in_background(slow) as job:
        assert not done  # still running while the block runs
        release.set()
        assert job.result() == 42
    with pytest.raises(KeyError, match="no store"):
        with runtime.in_background(lambda: {}["no store"]) as failing:
            failing.result()
    # A block that raises first still waits for the work before it leaves.
    release.clear()
    done.clear()
    with pytest.raises(ValueError):
        with runtime.in_background(slow):
            threading.Timer(0.2, release.set).start()
            raise ValueError("the block failed")
    assert done == [True]
