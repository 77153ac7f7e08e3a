"""The scaling benchmark without Ray: the worker list, the fit check, the efficiency and
data-bound math, FLOP counting, the table, the plot, and the loop's step clock."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
import torch
from torch import nn

from rayline.bench.scaling import (
    DATA_BOUND_FRACTION,
    Peak,
    ScalingResult,
    apply_efficiency,
    check_workers_fit,
    format_table,
    matmul_peak,
    model_flops,
    parse_workers,
    plot_scaling,
    scaling_efficiency,
    summarize_point,
)
from rayline.config import TrainConfig
from rayline.errors import ClusterError, ConfigError
from rayline.train.loop import StepClock, StepParts, _Ledger, train_epoch


def test_parse_workers_sorts_and_refuses_what_is_not_a_list_of_counts():
    assert parse_workers("1,2,4") == [1, 2, 4]
    assert parse_workers(" 8, 1 ,2") == [1, 2, 8]
    assert parse_workers("3") == [3]
    for bad, named in [
        ("", "one or more"),
        (" , ", "one or more"),
        ("1,,2", "empty entry"),
        ("0", "'0'"),
        ("-1", "'-1'"),
        ("two", "'two'"),
        ("1.5", "'1.5'"),
        ("2,4,2", "2 given more than once"),
    ]:
        with pytest.raises(ConfigError, match=named):
            parse_workers(bad)


def test_a_count_that_cannot_fit_is_refused_naming_it_and_the_cluster():
    train = TrainConfig(cpus_per_worker=2)
    check_workers_fit([1, 2, 4], train, {"CPU": 8.0})
    with pytest.raises(ClusterError) as err:
        check_workers_fit([1, 4, 8, 16], train, {"CPU": 8.0})
    text = str(err.value)
    assert "--workers 8: needs 8 x 2 CPU = 16 CPU" in text
    assert "--workers 16" in text and "--workers 4" not in text
    assert "the cluster has 8 CPU" in text
    with pytest.raises(ClusterError, match=r"--workers 2: needs 2 x 1 GPU = 2 GPU.*1 GPU"):
        check_workers_fit([1, 2], TrainConfig(use_gpu=True), {"CPU": 16.0, "GPU": 1.0})


def test_efficiency_is_against_one_worker_or_the_smallest_count_scaled():
    eff = scaling_efficiency({1: 100.0, 2: 180.0, 4: 300.0})
    assert eff == pytest.approx({1: 1.0, 2: 0.9, 4: 0.75})
    # Without 1: the smallest count's per-worker rate stands in for one worker's.
    assert scaling_efficiency({2: 200.0, 4: 360.0, 8: 400.0}) == pytest.approx(
        {2: 1.0, 4: 0.9, 8: 0.5}
    )
    assert scaling_efficiency({}) == {}


def _epoch(epoch, rows, loop_s, wait_s, compute_s, steps):
    return {
        "epoch": epoch,
        "train_rows": rows,
        "loop_s": loop_s,
        "data_wait_s": wait_s,
        "compute_s": compute_s,
        "steps": steps,
        "val_metric": 0.5,
    }


def test_a_point_leaves_out_the_warm_up_epoch_and_splits_the_step():
    history = [
        _epoch(2, 1000, 0.5, 0.05, 0.4, 10),
        _epoch(1, 1000, 5.0, 4.0, 0.9, 10),  # out of order, as files may come back
        _epoch(3, 1000, 0.5, 0.15, 0.3, 10),
    ]
    p = summarize_point(2, history, flops_per_sample=6e6, peak_tflops=0.001)
    assert p.epochs_timed == [2, 3]
    assert p.rows == 2000 and p.steps == 20
    assert p.samples_per_s == pytest.approx(2000 / 1.0)
    assert p.step_ms == pytest.approx(50.0)
    assert p.data_wait_ms == pytest.approx(10.0) and p.compute_ms == pytest.approx(35.0)
    assert p.data_wait_fraction == pytest.approx(0.2) and p.data_bound  # at the threshold
    assert p.tflops == pytest.approx(6e6 * 2000 / 1e12)
    assert p.peak_fraction == pytest.approx(p.tflops / (2 * 0.001))
    assert p.first_epoch_samples_per_s == pytest.approx(200.0)
    assert p.first_epoch_data_wait_fraction == pytest.approx(0.8)

    # Compute-bound, no FLOP count: no TFLOP/s; a single epoch is all there is to time.
    (only,) = [_epoch(1, 500, 1.0, 0.01, 0.9, 5)]
    q = summarize_point(1, [only])
    assert q.epochs_timed == [1] and q.samples_per_s == pytest.approx(500.0)
    assert not q.data_bound and q.data_wait_fraction < DATA_BOUND_FRACTION
    assert q.tflops is None and q.peak_fraction is None
    with pytest.raises(ValueError, match="no epoch timings"):
        summarize_point(1, [{"epoch": 1, "train_rows": 5}])


def test_dense_flops_are_six_per_linear_weight_and_other_layers_fall_back_to_params():
    mlp = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    flops, params, method = model_flops(mlp)
    assert params == 3 * 4 + 4 + 4 * 2 + 2
    assert flops == 6 * (3 * 4 + 4 * 2)
    assert method.startswith("6 x Linear weights")
    cnn = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(2, 1))
    flops, params, method = model_flops(cnn)
    assert flops == 6 * params and "Conv2d" in method


def _result(device="cpu", peak=None) -> ScalingResult:
    points = [
        summarize_point(n, [_epoch(1, 900, 2, 1, 1, 9), _epoch(2, 900, loop, wait, 0.2, 9)], flops_per_sample=1e5, peak_tflops=peak.tflops if peak else None)
        for n, loop, wait in [(1, 0.3, 0.01), (2, 0.25, 0.1)]
    ]  # fmt: skip
    apply_efficiency(points)
    return ScalingResult(
        pipeline="demo",
        config_hash="abc",
        run_name="r",
        run_dir="/tmp/r",
        workers=[1, 2],
        device=device,
        model="mlp 30->32->16->2",
        params=1602,
        flops_per_sample=1e5,
        flops_method="6 x Linear weights per row",
        precision="fp32",
        batch_size=32,
        epochs=2,
        train_rows=900,
        cluster={"CPU": 8.0, "GPU": 0.0, "nodes": 1, "address": "local"},
        peak=peak,
        points=points,
    )


def test_the_table_has_a_row_per_count_and_says_what_is_data_bound():
    peak = Peak(tflops=0.05, dtype="fp32", size=1024, device_name="EPYC", threads=1)
    res = _result(peak=peak)
    assert [p.efficiency for p in res.points] == pytest.approx([1.0, 0.6])
    text = format_table(res)
    lines = text.splitlines()
    assert lines[1].split() == [
        "workers", "samples/s", "efficiency", "step", "ms", "data", "wait", "%", "GFLOP/s", "%", "of", "peak",
    ]  # fmt: skip
    one, two = lines[2].split(), lines[3].split()
    assert one[:5] == ["1", "3,000", "1.00", "33.33", "3.3%"]
    assert two[:5] == ["2", "3,600", "0.60", "27.78", "40.0%"]
    assert one[5] == "0.3"  # 1e5 FLOPs x 3000 rows/s = 0.3 GFLOP/s
    assert "epoch 2 of 2 timed (warm-up epoch 1 left out)" in lines[0]
    assert "fp32 matmul 1024x1024 on one worker (EPYC, 1 thread): 50 GFLOP/s" in text
    assert text.endswith("of the loop): 2 workers")
    md = format_table(res, markdown=True).splitlines()
    assert md[1].startswith("| workers | samples/s |") and md[2].startswith("|---:|")
    assert md[3].startswith("| 1 | 3,000 | 1.00 |")
    gpu = format_table(_result(device="cuda"))
    assert "TFLOP/s" in gpu.splitlines()[1] and "peak: not measured" in gpu


def test_the_plot_is_a_png(tmp_path):
    path = plot_scaling(_result(), str(tmp_path / "scaling.png"))
    assert open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_matplotlib_is_imported_by_the_plot_only():
    code = (
        "import sys, rayline.bench.scaling, rayline.serving, rayline.train.loop; "
        "assert 'matplotlib' not in sys.modules, 'imported at module level'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_cpu_matmul_peak_is_measured():
    peak = Peak(**matmul_peak(False, size=64, seconds=0.05))
    assert peak.tflops > 0 and peak.dtype == "fp32" and peak.size == 64 and peak.iters >= 4


class _SlowBatches:
    """Four batches, each a ``delay`` away: the loop waits on its data."""

    def __init__(self, delay: float):
        self.delay = delay

    def __iter__(self):
        g = torch.Generator().manual_seed(0)
        for _ in range(4):
            time.sleep(self.delay)
            x = torch.randn(8, 3, generator=g)
            yield {"x": x, "y": (x[:, 0] > 0).long()}


def test_the_step_clock_splits_an_epoch_into_data_wait_and_compute(tmp_path):
    model = nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    parts = StepParts(
        model=model,
        optimizer=opt,
        scheduler=torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0),
        loss_fn=nn.CrossEntropyLoss(),
        regression=False,
        accum=3,  # 4 micro-batches: one full step and a leftover one
        clip=None,
        use_bf16=False,
        device_type="cpu",
    )
    clock = StepClock()
    started = time.perf_counter()
    _, step = train_epoch(
        parts, _SlowBatches(0.03), 0, 0, _Ledger(None, 0, 0), history_dir=None,
        log_every=None, world=1, clock=clock,
    )  # fmt: skip
    wall = time.perf_counter() - started
    assert step == 2
    assert clock.data_wait_s >= 4 * 0.03
    assert clock.compute_s > 0
    assert clock.data_wait_s + clock.compute_s <= wall
