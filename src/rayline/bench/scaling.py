"""The scaling throughput test: the training stage at several worker counts.

``rayline bench scaling CONFIG --workers 1,2,4,8`` stages and featurizes the config's data
with the pipeline's own stages (reused from the stage cache when an earlier run made them),
then trains once per worker count through the pipeline's training path
(:func:`rayline.train.trainer.fit`: the same ``TorchTrainer``, DDP, Ray Data shards and
loop), on whatever cluster Ray is connected to (a local Ray, or ``runtime.address``). It is
strong scaling: the train split is the same at every count, so each worker's share shrinks
as workers are added. Per count:

* **samples/s** -- train rows per second of the training loop (validation and checkpoints
  excluded), over the epochs after the first. The first epoch streams each shard from Ray
  Data into the worker's ``ShardCache`` and pays the warm-up; its figures are kept apart
  (``first_epoch_*``). Later epochs read the shard from memory when it fits in
  ``train.cache_mb``, as training does.
* **efficiency** -- ``samples_s(n) / (n / b * samples_s(b))`` against the smallest count
  ``b`` (1 when it is in the list: the usual ``samples_s(n) / (n * samples_s(1))``).
* **time per optimizer step**, split into **data wait** (blocked on the next batch) and
  **compute** (forward, backward with DDP's all-reduce, optimizer step), per rank and
  averaged over the ranks, from the loop's :class:`~rayline.train.loop.StepClock` (GPU
  timings synchronised in this mode only). A point whose wait is at least
  :data:`DATA_BOUND_FRACTION` of the loop is reported data-bound.
* **model FLOP/s** -- analytic FLOPs per row (:func:`model_flops`) x samples/s, against a
  matmul peak measured in the same run on one worker (:func:`matmul_peak`: bf16 8192² on a
  GPU, fp32 on a CPU).

The results go to one MLflow run (a metric per count, the count as its step) and to
``scaling.json`` and ``scaling.png`` in the output directory, both logged as artifacts.
The hyperparameters are the config's ``train`` section (a sweep's search space is not
used); early stopping is off so that every count trains the same epochs.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rayline.errors import ClusterError, ConfigError

if TYPE_CHECKING:
    from rayline.config import PipelineConfig, TrainConfig
    from rayline.run import StageTiming

log = logging.getLogger(__name__)

#: A point whose data wait is at least this fraction of the training loop is data-bound:
#: input that kept up would shorten its steps by a fifth or more.
DATA_BOUND_FRACTION = 0.2
#: Epochs left out of the steady-state figures (the first streams from Ray Data).
WARMUP_EPOCHS = 1
#: The peak matmul: n x n at this size, bf16 on a GPU, fp32 on a CPU (one worker's threads).
GPU_MATMUL_SIZE = 8192
CPU_MATMUL_SIZE = 1024
#: Seconds the peak matmul loop runs (the best of its rounds is the peak).
PEAK_SECONDS = 1.0
JSON_FILE = "scaling.json"
PLOT_FILE = "scaling.png"


# -- the worker list ---------------------------------------------------------------------------
def parse_workers(text: str) -> list[int]:
    """``"1,2,4"`` -> ``[1, 2, 4]``: the ``--workers`` option, sorted.

    Raises:
        ConfigError: the list is empty, or an entry is not a whole number >= 1, or repeats.
    """
    entries = [e.strip() for e in str(text).split(",")]
    if not any(entries):
        raise ConfigError(["--workers: give one or more worker counts, e.g. --workers 1,2,4,8"])
    problems, counts = [], []
    for e in entries:
        if not e:
            problems.append(f"--workers '{text}': an empty entry; separate counts by single commas")
        elif not e.isdigit() or int(e) < 1:
            problems.append(f"--workers: '{e}' is not a worker count (a whole number >= 1)")
        else:
            counts.append(int(e))
    if problems:
        raise ConfigError(problems)
    return check_workers(counts)


def check_workers(workers: Sequence[int]) -> list[int]:
    """The counts sorted, after checking each is an int >= 1 and none repeats.

    Raises:
        ConfigError: naming every bad entry.
    """
    problems = [
        f"--workers: {w!r} is not a worker count (a whole number >= 1)"
        for w in workers
        if isinstance(w, bool) or not isinstance(w, int) or w < 1
    ]
    if not workers:
        problems.append("--workers: give one or more worker counts, e.g. --workers 1,2,4,8")
    if problems:
        raise ConfigError(problems)
    repeated = sorted({w for w in workers if list(workers).count(w) > 1})
    if repeated:
        raise ConfigError(
            [f"--workers: {', '.join(map(str, repeated))} given more than once; list each once"]
        )
    return sorted(workers)


def check_workers_fit(workers: Sequence[int], train: TrainConfig, resources: dict[str, float]):
    """Refuse, before anything trains, every count the cluster can never hold at once.

    One training worker reserves ``train.cpus_per_worker`` CPUs, one GPU with
    ``train.use_gpu`` and ``train.resources_per_worker``; ``resources`` is the cluster's
    total (``ray.cluster_resources()``). An autoscaling cluster is judged by the nodes it
    has now: scale it up first.

    Raises:
        ClusterError: naming each count that does not fit, what it needs and what the
            cluster has.
    """
    per = {"CPU": float(train.cpus_per_worker), **train.resources_per_worker}
    if train.use_gpu:
        per["GPU"] = float(train.resources_per_worker.get("GPU", 1.0))
    problems = []
    for n in workers:
        short = [
            f"{n} x {amount:g} {name} = {n * amount:g} {name}"
            for name, amount in per.items()
            if n * amount > resources.get(name, 0)
        ]
        if short:
            problems.append(f"--workers {n}: needs {', '.join(short)}")
    if problems:
        have = ", ".join(f"{resources.get(k, 0):g} {k}" for k in sorted(per))
        raise ClusterError(
            "; ".join(problems) + f", but the cluster has {have} in all. Drop those counts, "
            "lower train.cpus_per_worker, add nodes, or raise runtime.num_cpus for a local Ray"
        )


# -- FLOPs and the matmul peak -----------------------------------------------------------------
def model_flops(model: Any) -> tuple[float, int, str]:
    """Training FLOPs per row of ``model`` (forward + backward), its parameters, and how.

    Dense layers (``nn.Linear``) are counted exactly: a weight costs 2 FLOPs per row
    forward and 4 backward (the input and the weight gradients), so 6 x the Linear weights;
    biases, activations and embedding lookups are left out. A model with other weighted
    layers (a convolution, a user module) gets 6 x all its parameters, which undercounts
    convolutions (their weights apply at every position).
    """
    from torch import nn

    params = sum(p.numel() for p in model.parameters())
    known = (nn.Linear, nn.Embedding, nn.LayerNorm, nn.BatchNorm1d)
    other = [
        m
        for m in model.modules()
        if not isinstance(m, known) and any(True for _ in m.parameters(recurse=False))
    ]
    if other:
        kinds = sorted({type(m).__name__ for m in other})
        return (
            6.0 * params,
            params,
            f"6 x parameters per row (approximate: {', '.join(kinds)} counted as dense)",
        )
    dense = sum(m.in_features * m.out_features for m in model.modules() if isinstance(m, nn.Linear))
    return (
        6.0 * dense,
        params,
        "6 x Linear weights per row (forward 2 + backward 4 FLOPs a weight; biases, "
        "activations and embedding lookups not counted)",
    )


def describe_model(model_cfg: dict[str, Any], in_dim: int, out_dim: int) -> str:
    """``mlp 30->32->16->2``: the builder and its layer widths."""
    builder = model_cfg.get("builder") or "mlp"
    if builder in ("mlp", "tabular"):
        widths = [in_dim, *model_cfg.get("hidden_sizes", []), out_dim]
        return f"{builder} {'->'.join(map(str, widths))}"
    return f"{builder} ({in_dim} in, {out_dim} out)"


@dataclass
class Peak:
    """A matmul peak measured on one worker of the cluster (:func:`matmul_peak`).

    Attributes:
        tflops: The best round's rate, 2 n³ FLOPs a matmul.
        dtype: ``bf16`` (GPU) or ``fp32`` (CPU).
        size: n of the n x n matmul.
        device_name: The GPU's name, or the CPU model.
        threads: torch's CPU threads (one worker's share of cores); None on a GPU.
    """

    tflops: float
    dtype: str
    size: int
    device_name: str
    threads: int | None = None
    iters: int = 0
    seconds: float = 0.0

    def describe(self) -> str:
        """``bf16 matmul 8192x8192 on one worker (NVIDIA H200): 745 TFLOP/s``."""
        threads = f", {self.threads} thread{'s' if self.threads != 1 else ''}"
        where = self.device_name + (threads if self.threads else "")
        return (
            f"{self.dtype} matmul {self.size}x{self.size} on one worker ({where}): "
            f"{_flops_text(self.tflops, self.threads is None)}"
        )


def matmul_peak(cuda: bool, size: int | None = None, seconds: float = PEAK_SECONDS) -> dict:
    """Time an n x n matmul loop on this process's device; the best round's TFLOP/s.

    On a GPU: bf16, ``torch.matmul(out=)`` in rounds of 20 timed with CUDA events. On a CPU:
    fp32 with as many torch threads as the worker's ``OMP_NUM_THREADS`` (what the training
    loop uses), rounds timed with ``perf_counter``. Runs as a Ray task placed like one
    training worker (:func:`measure_peak`); returns :class:`Peak`'s fields.
    """
    import torch

    if cuda:
        n, dtype, threads = size or GPU_MATMUL_SIZE, torch.bfloat16, None
        device_name = torch.cuda.get_device_name()
    else:
        threads = max(1, int(os.environ.get("OMP_NUM_THREADS", "1")))
        torch.set_num_threads(threads)
        n, dtype, device_name = size or CPU_MATMUL_SIZE, torch.float32, _cpu_name()
    device = "cuda" if cuda else "cpu"
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    out = torch.empty_like(a)
    for _ in range(3):  # warm-up: kernel selection, clocks, caches
        torch.matmul(a, b, out=out)
    best, iters, total = math.inf, 0, 0.0
    per_round = 20 if cuda else 2
    while total < seconds or iters < 2 * per_round:
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize()
            start.record()
            for _ in range(per_round):
                torch.matmul(a, b, out=out)
            end.record()
            end.synchronize()
            spent = start.elapsed_time(end) / 1000
        else:
            started = time.perf_counter()
            for _ in range(per_round):
                torch.matmul(a, b, out=out)
            spent = time.perf_counter() - started
        best = min(best, spent / per_round)
        iters += per_round
        total += spent
    return {
        "tflops": 2.0 * n**3 / best / 1e12,
        "dtype": "bf16" if cuda else "fp32",
        "size": n,
        "device_name": device_name,
        "threads": threads,
        "iters": iters,
        "seconds": total,
    }


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for row in f:
                if row.startswith("model name"):
                    return row.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or "cpu"


def measure_peak(train: TrainConfig, timeout_s: float | None = None) -> Peak:
    """:func:`matmul_peak` in a Ray task that reserves what one training worker does.

    Raises:
        ClusterError: the task could not be placed or did not finish in time.
    """
    import ray

    task = ray.remote(num_cpus=float(train.cpus_per_worker), num_gpus=1 if train.use_gpu else 0)(
        matmul_peak
    )
    timeout = timeout_s if timeout_s is not None else float(train.placement_timeout_s) + 120
    try:
        return Peak(**ray.get(task.remote(bool(train.use_gpu)), timeout=timeout))
    except ray.exceptions.GetTimeoutError:
        raise ClusterError(
            f"the matmul peak task (one worker's {train.cpus_per_worker:g} CPU"
            f"{' + 1 GPU' if train.use_gpu else ''}) did not finish within {timeout:g} s; is "
            "the cluster busy? (`ray status`)"
        ) from None


# -- one point, and the math -------------------------------------------------------------------
@dataclass
class ScalingPoint:
    """The training stage at one worker count.

    Attributes:
        workers: DDP ranks.
        epochs_timed: The epochs the steady-state figures cover.
        rows: Train rows trained in those epochs (all ranks).
        samples_per_s: ``rows`` / seconds of training loop (per rank, averaged).
        efficiency: Against the smallest count (see :func:`scaling_efficiency`).
        step_ms: Loop time per optimizer step (each rank takes the same steps).
        data_wait_ms: Of it, blocked on the next batch.
        compute_ms: Of it, forward, backward (with the all-reduce) and optimizer.
        data_wait_fraction: ``data wait / loop time``.
        data_bound: ``data_wait_fraction >= DATA_BOUND_FRACTION``.
        tflops: Achieved model TFLOP/s (all workers), None without a FLOP count.
        peak_fraction: ``tflops / (workers x the one-worker matmul peak)``.
        loop_s, data_wait_s, compute_s, steps: The sums the ms figures come from.
        first_epoch_samples_per_s, first_epoch_data_wait_fraction: The warm-up epoch.
        fit_s: Wall time of the whole fit (worker start-up, validation, checkpoints too).
    """

    workers: int
    epochs_timed: list[int]
    rows: int
    samples_per_s: float
    step_ms: float
    data_wait_ms: float
    compute_ms: float
    data_wait_fraction: float
    data_bound: bool
    loop_s: float
    data_wait_s: float
    compute_s: float
    steps: int
    efficiency: float = 1.0
    tflops: float | None = None
    peak_fraction: float | None = None
    first_epoch_samples_per_s: float | None = None
    first_epoch_data_wait_fraction: float | None = None
    fit_s: float | None = None

    def metrics(self) -> dict[str, float]:
        """The MLflow metrics of this point (logged with ``step=workers``)."""
        keys = (
            "samples_per_s",
            "efficiency",
            "step_ms",
            "data_wait_ms",
            "compute_ms",
            "data_wait_fraction",
            "tflops",
            "peak_fraction",
            "first_epoch_samples_per_s",
            "fit_s",
        )
        return {k: float(v) for k in keys if (v := getattr(self, k)) is not None}


def summarize_point(
    workers: int,
    history: list[dict[str, Any]],
    *,
    flops_per_sample: float | None = None,
    peak_tflops: float | None = None,
    warmup_epochs: int = WARMUP_EPOCHS,
) -> ScalingPoint:
    """A :class:`ScalingPoint` from the loop's per-epoch metrics (``TrainResult.history``).

    The first ``warmup_epochs`` epochs are left out of the steady-state figures when later
    ones exist (with a single epoch, that epoch is all there is).

    Raises:
        ValueError: no epoch carries the loop's timings.
    """
    rows = sorted(
        (r for r in history if "loop_s" in r and "data_wait_s" in r),
        key=lambda r: int(r["epoch"]),
    )
    if not rows:
        raise ValueError(f"workers={workers}: the training history has no epoch timings")
    timed = rows[warmup_epochs:] if len(rows) > warmup_epochs else rows
    trained = int(sum(r["train_rows"] for r in timed))
    loop = sum(float(r["loop_s"]) for r in timed)
    wait = sum(float(r["data_wait_s"]) for r in timed)
    compute = sum(float(r["compute_s"]) for r in timed)
    steps = int(sum(r["steps"] for r in timed))
    samples = trained / loop if loop > 0 else 0.0
    fraction = wait / loop if loop > 0 else 0.0
    tflops = flops_per_sample * samples / 1e12 if flops_per_sample else None
    first = rows[0]
    return ScalingPoint(
        workers=workers,
        epochs_timed=[int(r["epoch"]) for r in timed],
        rows=trained,
        samples_per_s=samples,
        step_ms=1000 * loop / max(steps, 1),
        data_wait_ms=1000 * wait / max(steps, 1),
        compute_ms=1000 * compute / max(steps, 1),
        data_wait_fraction=fraction,
        data_bound=fraction >= DATA_BOUND_FRACTION,
        loop_s=loop,
        data_wait_s=wait,
        compute_s=compute,
        steps=steps,
        tflops=tflops,
        peak_fraction=tflops / (workers * peak_tflops) if tflops and peak_tflops else None,
        first_epoch_samples_per_s=(
            float(first["train_rows"]) / float(first["loop_s"]) if first["loop_s"] else None
        ),
        first_epoch_data_wait_fraction=(
            float(first["data_wait_s"]) / float(first["loop_s"]) if first["loop_s"] else None
        ),
    )


def scaling_efficiency(samples_per_s: dict[int, float]) -> dict[int, float]:
    """Efficiency of each count against the smallest, ``b``: ``s(n) * b / (n * s(b))``.

    With 1 worker in the list this is ``s(n) / (n * s(1))``; without, the smallest count's
    throughput per worker stands in for one worker's (so it has efficiency 1.0).
    """
    if not samples_per_s:
        return {}
    base = min(samples_per_s)
    per_worker = samples_per_s[base] / base
    return {
        n: (s / (n * per_worker) if per_worker > 0 else float("nan"))
        for n, s in samples_per_s.items()
    }


def apply_efficiency(points: list[ScalingPoint]) -> None:
    """Set each point's :attr:`ScalingPoint.efficiency` (:func:`scaling_efficiency`)."""
    eff = scaling_efficiency({p.workers: p.samples_per_s for p in points})
    for p in points:
        p.efficiency = eff[p.workers]


# -- the result --------------------------------------------------------------------------------
@dataclass
class ScalingResult:
    """Everything one ``rayline bench scaling`` run measured (``scaling.json``).

    Attributes:
        pipeline, config_hash: The config's name and :meth:`PipelineConfig.fingerprint`.
        run_name, run_dir: The bench run (``<storage>/bench/<run_name>``; its Ray Train
            runs are under ``train/workers-<n>``).
        workers: The counts, in the order trained (increasing).
        device: ``cuda`` or ``cpu`` (``train.use_gpu``).
        model: The network (:func:`describe_model`); ``params`` its parameters.
        flops_per_sample, flops_method: Training FLOPs per row and how they were counted
            (:func:`model_flops`).
        precision: ``bf16 autocast`` or ``fp32``, as the loop trained.
        batch_size: Rows per batch on each worker; ``epochs`` per count.
        train_rows: Rows of the train split (every count trains all of them each epoch).
        cluster: The cluster's CPUs, GPUs, live nodes and address.
        peak: The one-worker matmul peak (:class:`Peak`).
        points: One :class:`ScalingPoint` per count.
        mlflow_run_id, tracking_uri: Where the run was logged.
        json_path, plot_path: ``scaling.json`` and ``scaling.png`` (also MLflow artifacts,
            under ``bench/``).
    """

    pipeline: str
    config_hash: str
    run_name: str
    run_dir: str
    workers: list[int]
    device: str
    model: str
    params: int
    flops_per_sample: float
    flops_method: str
    precision: str
    batch_size: int
    epochs: int
    train_rows: int
    cluster: dict[str, Any]
    peak: Peak | None = None
    points: list[ScalingPoint] = field(default_factory=list)
    mlflow_run_id: str | None = None
    tracking_uri: str | None = None
    json_path: str | None = None
    plot_path: str | None = None

    @property
    def data_bound(self) -> list[int]:
        """The counts whose training waited on data for ``DATA_BOUND_FRACTION`` or more."""
        return [p.workers for p in self.points if p.data_bound]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (``scaling.json``)."""
        return {**asdict(self), "data_bound": self.data_bound}


def _flops_text(tflops: float | None, gpu: bool) -> str:
    if tflops is None:
        return "-"
    return f"{tflops:.1f} TFLOP/s" if gpu else f"{tflops * 1e3:.3g} GFLOP/s"


def format_table(result: ScalingResult, markdown: bool = False) -> str:
    """The result as a short table for the console (or Markdown): one row per count.

    Columns: workers | samples/s | efficiency | step ms | data wait % | TFLOP/s (GFLOP/s on
    a CPU) | % of peak; then the peak, how FLOPs were counted and the data-bound verdict.
    """
    gpu = result.device == "cuda"
    unit = "TFLOP/s" if gpu else "GFLOP/s"
    scale = 1.0 if gpu else 1e3
    header = ["workers", "samples/s", "efficiency", "step ms", "data wait %", unit, "% of peak"]
    rows = [
        [
            str(p.workers),
            f"{p.samples_per_s:,.0f}",
            f"{p.efficiency:.2f}",
            f"{p.step_ms:.2f}",
            f"{100 * p.data_wait_fraction:.1f}%",
            "-" if p.tflops is None else f"{p.tflops * scale:.3g}",
            "-" if p.peak_fraction is None else f"{100 * p.peak_fraction:.2g}%",
        ]
        for p in result.points
    ]
    timed = result.points[0].epochs_timed if result.points else [1]
    span = f"epoch {timed[0]}" if len(timed) == 1 else f"epochs {timed[0]}-{timed[-1]}"
    warm = "warm-up epoch 1 left out" if timed[0] > 1 else "no warm-up epoch left out"
    epochs = f"{span} of {result.epochs} timed ({warm})"
    title = (
        f"scaling  {result.pipeline}: {result.model} ({result.params:,} params, "
        f"{result.precision}), batch {result.batch_size} per worker, {result.device}, {epochs}"
    )
    if markdown:
        lines = [
            "| " + " | ".join(header) + " |",
            "|" + "|".join("---:" for _ in header) + "|",
            *("| " + " | ".join(r) + " |" for r in rows),
        ]
    else:
        widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
        lines = ["  ".join(h.rjust(w) for h, w in zip(header, widths, strict=True))]
        lines += ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    bound = result.data_bound
    notes = [
        f"peak: {result.peak.describe()}" if result.peak else "peak: not measured",
        f"model FLOPs: {result.flops_method}",
        f"data-bound (data wait >= {DATA_BOUND_FRACTION:.0%} of the loop): "
        + (", ".join(f"{n} workers" for n in bound) if bound else "none"),
    ]
    return "\n".join([title, *lines, *notes])


def plot_scaling(result: ScalingResult, path: str) -> str:
    """Throughput and efficiency against workers, as a PNG at ``path`` (matplotlib, Agg).

    matplotlib is imported here only: nothing that serves a model imports this module.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    points = result.points
    n = [p.workers for p in points]
    fig = Figure(figsize=(10, 4), dpi=100)
    FigureCanvasAgg(fig)
    left, right = fig.subplots(1, 2)
    left.plot(n, [p.samples_per_s for p in points], "o-", label="measured")
    if points:
        base = points[0]
        ideal = [base.samples_per_s * w / base.workers for w in n]
        left.plot(n, ideal, "--", color="grey", label=f"linear from {base.workers}")
    left.set(xlabel="workers", ylabel="samples/s", title="training throughput")
    left.legend()
    right.plot(n, [p.efficiency for p in points], "o-", label="efficiency")
    right.plot(n, [p.data_wait_fraction for p in points], "s:", label="data wait fraction")
    right.axhline(1.0, linestyle="--", color="grey")
    right.set(xlabel="workers", ylabel="fraction", title="scaling efficiency", ylim=(0, 1.1))
    right.legend()
    for ax in (left, right):
        ax.set_xticks(n)
        ax.grid(alpha=0.3)
    fig.suptitle(f"{result.pipeline}: {result.model}, {result.device}, batch {result.batch_size}")
    fig.tight_layout()
    fig.savefig(path, format="png")
    return path


# -- the run -----------------------------------------------------------------------------------
def run_scaling(
    cfg: PipelineConfig,
    workers: Sequence[int],
    *,
    epochs: int | None = None,
    out_dir: str | None = None,
    on_point: Callable[[ScalingPoint], None] | None = None,
    on_stage: Callable[[StageTiming], None] | None = None,
    on_stage_start: Callable[[str, Any], None] | None = None,
) -> ScalingResult:
    """Train at each worker count on the connected cluster and report throughput and scaling.

    Args:
        cfg: The resolved config; its data is staged and featurized by the pipeline's
            stages (from the stage cache when an earlier run made them) and its ``train``
            section trains, with ``num_workers`` set per count.
        workers: Worker counts (see :func:`parse_workers`), trained in increasing order.
        epochs: Epochs per count (default ``train.epochs``); the first is a warm-up and
            left out of the figures, so 2 or more.
        out_dir: A local directory for ``scaling.json`` and ``scaling.png`` (default the
            bench run's directory, ``<storage>/bench/<run_name>``).
        on_point: Called with each finished point (its efficiency set).
        on_stage, on_stage_start: As for :func:`rayline.pipeline.run_pipeline` (the CLI's
            stage lines); the points are stages named ``train x<n>``.

    Raises:
        ConfigError: a bad worker list or epoch count.
        ClusterError: a count can never fit the cluster (before anything is trained).
        RaylineError: as the pipeline's stages and training raise them.
    """
    from rayline.pipeline import run_stages
    from rayline.registry import Registry
    from rayline.run import Run, now
    from rayline.runtime import init_ray, train_env
    from rayline.stages import Features, Ingest, ValidateSplit
    from rayline.train.models import build_model

    counts = check_workers(list(workers))
    epochs = cfg.train.epochs if epochs is None else epochs
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ConfigError([f"--epochs: {epochs!r} is not a number of epochs (>= 1; 2+ to time)"])
    run = Run(cfg, on_stage, kind="bench", on_stage_start=on_stage_start)
    with run.timed("setup") as timing:
        resources = init_ray(cfg.runtime, worker_env=train_env(cfg.train))
        check_workers_fit(counts, cfg.train, resources)
        run.resources = resources
        run.claim(resume=False)
        run.registry = registry = Registry(cfg.registry, run.storage)
        registry.connect()
        cluster = _cluster(resources)
        timing.summary = (
            f"Ray {cluster['nodes']} node(s), {cluster['CPU']:g} CPUs/{cluster['GPU']:g} GPUs, "
            f"MLflow {registry.tracking_uri}"
        )
    out = Path(out_dir) if out_dir else run.local_dir
    out.mkdir(parents=True, exist_ok=True)
    tags = {
        "rayline.bench": "scaling",
        "rayline.config_hash": run.config_hash,
        "rayline.pipeline": cfg.name,
        "rayline.git_commit": str(run.lineage["code"]["commit"]),
    }
    try:
        with registry.run(f"scaling-{run.name}", tags) as run_id:
            staged = run_stages(run, (Ingest(), ValidateSplit(), Features()))
            report, prep = staged["validate+split"], staged["features"]
            model = build_model(
                cfg.model.model_dump(), prep.output_dim, prep.num_outputs, prep=prep
            )
            flops, params, method = model_flops(model)
            with run.timed("peak") as timing:
                peak = measure_peak(cfg.train)
                timing.summary = peak.describe()
            use_bf16 = cfg.train.use_gpu and cfg.train.precision in ("auto", "bf16")
            result = ScalingResult(
                pipeline=cfg.name,
                config_hash=run.config_hash,
                run_name=run.name,
                run_dir=run.dir,
                workers=counts,
                device="cuda" if cfg.train.use_gpu else "cpu",
                model=describe_model(cfg.model.model_dump(), prep.output_dim, prep.num_outputs),
                params=params,
                flops_per_sample=flops,
                flops_method=method,
                precision="bf16 autocast" if use_bf16 else "fp32",
                batch_size=cfg.train.batch_size,
                epochs=epochs,
                train_rows=int(report.splits["train"]),
                cluster=cluster,
                peak=peak,
                mlflow_run_id=run_id,
                tracking_uri=registry.tracking_uri,
            )
            registry.log_params(_params(result, cfg))
            registry.log_json(cfg.to_dict(), "config/resolved_config.json")
            registry.log_metrics({"peak_tflops": peak.tflops})
            for n in counts:
                with run.timed(f"train x{n}") as timing:
                    point = _train_point(run, cfg, n, epochs, report, prep, flops, peak)
                    result.points.append(point)
                    apply_efficiency(result.points)
                    timing.summary = (
                        f"{point.samples_per_s:,.0f} samples/s, efficiency "
                        f"{point.efficiency:.2f}, data wait {100 * point.data_wait_fraction:.1f}%"
                    )
                registry.log_metrics(point.metrics(), step=n)
                if on_point:
                    on_point(point)
            result.json_path = str(out / JSON_FILE)
            result.plot_path = plot_scaling(result, str(out / PLOT_FILE))
            (out / JSON_FILE).write_text(json.dumps(result.to_dict(), indent=2, default=str))
            registry.log_file(result.json_path, "bench")
            registry.log_file(result.plot_path, "bench")
    except BaseException:
        run.save(status="failed", finished_at=now())
        raise
    run.save(status="done", finished_at=now())
    return result


def _train_point(run, cfg, n: int, epochs: int, report, prep, flops: float, peak: Peak):
    """Fit at ``n`` workers (the pipeline's training path) and summarize its epochs."""
    from rayline.progress import watch_epochs
    from rayline.train import trainer

    train = cfg.train.model_copy(
        update={
            # A fixed count per point: an elastic range would let Train start with fewer.
            "num_workers": n,
            "min_workers": None,
            "local_mode": False,
            "epochs": epochs,
            "early_stopping_patience": None,
        }
    )
    point_cfg = cfg.model_copy(update={"train": train})
    storage, name = f"{run.dir}/train", f"workers-{n}"
    started = time.perf_counter()
    with watch_epochs(f"{storage}/{name}/history", epochs, cfg.metric, stage=f"train x{n}"):
        fitted = trainer.fit(
            point_cfg,
            prep,
            report.staged_path,
            storage,
            name,
            report.splits["train"],
            sync_timing=True,
        )
    point = summarize_point(
        n, fitted.history, flops_per_sample=flops, peak_tflops=peak.tflops if peak else None
    )
    point.fit_s = time.perf_counter() - started
    return point


def _cluster(resources: dict[str, float]) -> dict[str, Any]:
    """The cluster's totals and where it is (a local Ray or an address)."""
    import ray

    try:
        nodes = sum(1 for node in ray.nodes() if node.get("Alive"))
    except Exception:  # a client connection without the node table
        nodes = 0
    return {
        "CPU": float(resources.get("CPU", 0)),
        "GPU": float(resources.get("GPU", 0)),
        "nodes": nodes,
        "address": os.environ.get("RAY_ADDRESS") or "local",
    }


def _params(result: ScalingResult, cfg: PipelineConfig) -> dict[str, Any]:
    """The MLflow params of the bench run."""
    peak = result.peak
    return {
        "config_hash": result.config_hash,
        "pipeline": result.pipeline,
        "workers": ",".join(map(str, result.workers)),
        "device": result.device,
        "device_name": peak.device_name if peak else None,
        "model": result.model,
        "model_params": result.params,
        "flops_per_sample": result.flops_per_sample,
        "flops_method": result.flops_method,
        "precision": result.precision,
        "batch_size": result.batch_size,
        "epochs": result.epochs,
        "cpus_per_worker": cfg.train.cpus_per_worker,
        "placement_strategy": cfg.train.placement_strategy,
        "peak_dtype": peak.dtype if peak else None,
        "peak_matmul_size": peak.size if peak else None,
        "cluster_cpus": result.cluster["CPU"],
        "cluster_gpus": result.cluster["GPU"],
        "cluster_nodes": result.cluster["nodes"],
        "ray_address": cfg.runtime.address or result.cluster["address"],
    }
