"""``rayline bench scaling`` on a local Ray: two worker counts, MLflow, the JSON and the plot."""

from __future__ import annotations

import json

import pytest

from rayline.bench.scaling import format_table, run_scaling
from rayline.config import validate_config
from rayline.errors import ClusterError

from .conftest import base_config, make_table, write_parts

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def bench_cfg(ray_session, tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    data = write_parts(make_table(600, seed=5), root / "data", parts=2)
    raw = base_config(data, root / "runs", train={"epochs": 2, "batch_size": 32})
    return validate_config(raw), root


def test_two_worker_counts_are_measured_logged_and_plotted(bench_cfg):
    import mlflow

    cfg, root = bench_cfg
    seen = []
    result = run_scaling(cfg, [2, 1], out_dir=str(root / "out"), on_point=seen.append)

    assert [p.workers for p in result.points] == [1, 2] == [p.workers for p in seen]
    one, two = result.points
    assert one.efficiency == 1.0
    assert two.efficiency == pytest.approx(two.samples_per_s / (2 * one.samples_per_s))
    for p in result.points:
        assert p.samples_per_s > 0 and p.epochs_timed == [2]  # epoch 1 is the warm-up
        assert p.steps > 0 and p.data_wait_s > 0 and p.compute_s > 0
        assert p.data_wait_s + p.compute_s <= p.loop_s
        assert p.tflops is not None and p.tflops > 0  # the MLP's FLOPs on CPU
    # Every train row is trained at each count (the padding rows weigh 0).
    assert one.rows == two.rows == result.train_rows > 0
    assert result.peak is not None and result.peak.dtype == "fp32" and result.peak.tflops > 0

    stored = json.loads((root / "out" / "scaling.json").read_text())
    assert [p["workers"] for p in stored["points"]] == [1, 2]
    assert stored["data_bound"] == result.data_bound
    png = root / "out" / "scaling.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    mlflow.set_tracking_uri(result.tracking_uri)
    runs = mlflow.search_runs(
        experiment_names=[cfg.registry.experiment],
        filter_string="tags.`rayline.bench` = 'scaling'",
        output_format="list",
    )
    (run,) = [r for r in runs if r.info.run_id == result.mlflow_run_id]
    assert run.info.status == "FINISHED"
    assert run.data.params["workers"] == "1,2" and run.data.params["device"] == "cpu"
    assert run.data.params["config_hash"] == cfg.fingerprint()
    client = mlflow.MlflowClient(result.tracking_uri)
    history = client.get_metric_history(run.info.run_id, "samples_per_s")
    assert sorted((m.step, m.value) for m in history) == [
        (1, pytest.approx(one.samples_per_s)),
        (2, pytest.approx(two.samples_per_s)),
    ]
    assert {m.step for m in client.get_metric_history(run.info.run_id, "efficiency")} == {1, 2}
    assert "data_wait_fraction" in run.data.metrics and "tflops" in run.data.metrics
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "bench")}
    assert artifacts == {"bench/scaling.json", "bench/scaling.png"}
    assert format_table(result).splitlines()[2].split()[0] == "1"


def test_a_count_larger_than_the_cluster_is_refused_before_training(bench_cfg):
    cfg, root = bench_cfg
    with pytest.raises(ClusterError, match=r"--workers 64: needs 64 x 1 CPU = 64 CPU.*8 CPU"):
        run_scaling(cfg, [1, 64], out_dir=str(root / "refused"))
    assert not (root / "refused").exists()
