"""Resource checks fail fast with a message that says what to change."""

from __future__ import annotations

import pytest

from rayline.config import TrainConfig
from rayline.errors import ClusterError
from rayline.runtime import check_training_fits, default_local_cpus


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


def test_local_default_leaves_cpus_for_ray_data():
    # Two 1-CPU workers must never take every logical CPU of the local default.
    assert default_local_cpus() >= 8
