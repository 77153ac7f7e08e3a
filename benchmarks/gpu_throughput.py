"""One-GPU training throughput: a plain PyTorch loop against rayline's training loop, bf16.

Rows, all in one run, same MLP (``rayline.train.models.build_mlp`` when importable), batch,
AdamW and bf16 autocast, data already on the GPU:

* ``limit``            -- plain PyTorch: shuffled index gather from device tensors, forward,
  backward, AdamW step; no host sync inside the epoch. The ceiling.
* ``limit+item``       -- diagnostic: the limit plus one ``loss.item()`` per step (the host sync
  rayline's loop does to accumulate the loss), to show what that sync alone costs.
* ``rayline-loop``     -- rayline's per-step path WITHOUT Ray: its real ``ShardCache`` serving
  the shard from device memory, its ``_make_optimizer``, LambdaLR over ``lr_factor``, step
  ``_Ledger``, and the epoch ``train_loop_per_worker`` runs: ``rayline.train.loop.train_epoch``
  (``train_step``: autocast, backward, ``loss.item()`` accumulation; ``optimizer_step``). Only
  the Ray Train wrapper, validation and checkpointing are absent. ``rayline.train.loop``
  imports with torch and numpy alone (no pandas or Ray).
* ``rayline``          -- when Ray and rayline import: the real ``train_loop_per_worker`` under a
  one-GPU ``TorchTrainer`` from ``make_trainer(LoopConfig(...))``, fed by Ray Data (epoch 1
  streams, later epochs come from ShardCache on the GPU); steady-state samples/s from its
  history, and its fixed overhead (fit wall time minus in-loop time).

Achieved TFLOP/s counts 6 x params x samples (forward + backward of the dense layers) and is
set against the card's dense bf16 peak from a small table (unknown card: null).

    python benchmarks/gpu_throughput.py             # on a CUDA machine, < 5 minutes
    python benchmarks/gpu_throughput.py --no-ray    # skip the Ray Train row
    python benchmarks/gpu_throughput.py --dry-run   # CPU, tiny sizes, fp32, a few seconds

The last line printed is one JSON object, ``{"benchmark": "gpu_throughput", ...}``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))

import torch  # noqa: E402
from torch import nn  # noqa: E402

# Dense bf16 peak TFLOP/s (no sparsity), first match on the device name wins.
PEAK_BF16_TFLOPS: list[tuple[str, float]] = [
    ("GH200", 989.0),
    ("H200", 989.0),
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.0),  # SXM / HBM3
    ("H800", 989.0),
    ("A100", 312.0),
    ("A800", 312.0),
    ("L40S", 362.0),
    ("L4", 121.0),
    ("A10G", 70.0),
    ("B200", 2250.0),
]


def peak_tflops(name: str | None) -> float | None:
    if not name:
        return None
    return next((v for key, v in PEAK_BF16_TFLOPS if key.lower() in name.lower()), None)


# -- model ---------------------------------------------------------------------------------------
def make_model(in_dim: int, out_dim: int, width: int, depth: int) -> tuple[nn.Module, str]:
    try:
        from rayline.train.models import build_mlp

        return build_mlp(in_dim, out_dim, [width] * depth), "rayline.train.models.build_mlp"
    except Exception:  # rayline not importable: the same layers by hand
        layers: list[nn.Module] = []
        w = in_dim
        for _ in range(depth):
            layers += [nn.Linear(w, width), nn.ReLU()]
            w = width
        layers.append(nn.Linear(w, out_dim))
        return nn.Sequential(*layers), "replica of build_mlp"


def synth(
    n: int, in_dim: int, classes: int, device, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator(device="cpu").manual_seed(seed)
    x = torch.randn(n, in_dim, generator=g).to(device)
    w = torch.randn(in_dim, classes, generator=g).to(device)
    y = (x @ w).argmax(dim=1)
    return x, y


def _sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


# -- rows ----------------------------------------------------------------------------------------
def run_limit(x, y, args, device, use_bf16: bool, item_per_step: bool = False) -> list[float]:
    """Plain PyTorch; returns the seconds of each epoch."""
    torch.manual_seed(0)
    model, _ = make_model(x.shape[1], args.classes, args.width, args.depth)
    model = model.to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr)
    loss_fn = nn.CrossEntropyLoss()
    n, times = len(y), []
    for epoch in range(args.epochs):
        g = torch.Generator().manual_seed(epoch)
        _sync(device)
        started = time.perf_counter()
        order = torch.randperm(n, generator=g).to(device)
        loss_sum = torch.zeros((), device=device)
        for start in range(0, n, args.batch):
            idx = order[start : start + args.batch]
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_bf16):
                loss = loss_fn(model(x[idx]).float(), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if item_per_step:
                loss_sum += loss.item() * len(idx)
            else:
                loss_sum += loss.detach() * len(idx)
        _sync(device)
        times.append(time.perf_counter() - started)
    return times


def run_rayline_loop(x, y, args, device, use_bf16: bool, tmp: str) -> tuple[list[float], str]:
    """rayline's per-step path in this process (no Ray); returns epoch seconds and the label."""
    from rayline.train.loop import ShardCache, StepParts, _Ledger, _make_optimizer, train_epoch
    from rayline.train.schedules import lr_factor

    torch.manual_seed(0)
    model, _ = make_model(x.shape[1], args.classes, args.width, args.depth)
    model = model.to(device)
    optimizer = _make_optimizer("adamw", model.parameters(), args.lr, 0.0)
    n = len(y)
    accum = 1
    steps_per_epoch = max(1, math.ceil(math.ceil(n / args.batch) / accum))
    total_steps = args.epochs * steps_per_epoch
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, total_steps, "constant", 0.0)
    )
    parts = StepParts(
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        loss_fn=nn.CrossEntropyLoss(),
        regression=False,
        accum=accum,
        clip=None,
        use_bf16=use_bf16,
        device_type=device.type,
    )
    ledger = _Ledger(os.path.join(tmp, "ledger"), 0, 0)  # trainer.fit() records steps locally
    cache = ShardCache(None, args.batch, 0, device, 0, shuffle=True)
    cache.tensors = {"x": x, "y": y}  # what the first (streaming) epoch leaves behind
    global_step, times = 0, []
    for epoch in range(args.epochs):
        _sync(device)
        started = time.perf_counter()
        # The epoch of train_loop_per_worker, as it calls it (train.log_every_n_steps unset).
        _, global_step = train_epoch(
            parts,
            cache.epoch(epoch),
            epoch,
            global_step,
            ledger,
            history_dir=None,
            log_every=None,
            world=1,
        )
        _sync(device)
        times.append(time.perf_counter() - started)
    return times, "rayline-loop"


def _synth_batch(batch: dict, in_dim: int, classes: int) -> dict:
    import numpy as np

    ids = batch["id"]
    rng = np.random.default_rng(int(ids[0]))
    x = rng.standard_normal((len(ids), in_dim), dtype=np.float32)
    return {"x": x, "y": rng.integers(0, classes, size=len(ids)).astype(np.int64)}


def run_ray_row(args, n: int, tmp: str) -> dict[str, Any]:
    """The real train_loop_per_worker on one GPU under Ray Train."""
    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
    import ray
    import ray.data

    from rayline.config import ModelConfig, RuntimeConfig, TrainConfig
    from rayline.data.features import FittedPreprocessor
    from rayline.runtime import init_ray
    from rayline.train.loop import read_history
    from rayline.train.spec import LoopConfig
    from rayline.train.trainer import make_trainer

    init_ray(RuntimeConfig())
    try:
        prep = FittedPreprocessor(
            task="classification",
            target="y",
            classes=list(range(args.classes)),
            numeric=[
                {"name": f"c{i}", "mean": 0.0, "std": 1.0, "fill": 0.0} for i in range(args.in_dim)
            ],
            categorical=[],
        )
        kw = {"in_dim": args.in_dim, "classes": args.classes}
        blocks = max(1, n // (4 * args.batch))
        datasets = {
            "train": ray.data.range(n, override_num_blocks=blocks).map_batches(
                _synth_batch, fn_kwargs=kw
            ),
            "val": ray.data.range(args.batch).map_batches(_synth_batch, fn_kwargs=kw),
        }
        shard_mb = n * (args.in_dim * 4 + 8) / 2**20
        train = TrainConfig(
            epochs=args.ray_epochs,
            batch_size=args.batch,
            lr=args.lr,
            num_workers=1,
            use_gpu=torch.cuda.is_available() and not args.dry_run,
            cpus_per_worker=1 if args.dry_run else 4,
            metric="accuracy",
            cache_mb=2 * shard_mb + 64,
        )
        model = ModelConfig(task="classification", hidden_sizes=[args.width] * args.depth)
        storage, history_dir = os.path.join(tmp, "ray"), os.path.join(tmp, "ray", "gpu", "history")
        lcfg = LoopConfig(
            model=model,
            train=train,
            prep_json=prep.to_json(),
            metric="accuracy",
            mode="max",
            train_rows=n,
            ledger_dir=os.path.join(storage, "gpu", "ledger"),
            history_dir=history_dir,
        )
        trainer = make_trainer(lcfg, datasets, storage_path=storage, name="gpu", mode="max")
        started = time.perf_counter()
        trainer.fit()
        wall = time.perf_counter() - started
        hist = read_history(history_dir)
    finally:
        ray.shutdown()
    loop_s = [h["train_rows"] / h["samples_per_s"] for h in hist]
    use = hist[1:] or hist
    rate = sum(h["train_rows"] for h in use) / sum(
        h["train_rows"] / h["samples_per_s"] for h in use
    )
    return {
        "rows_per_s": rate,
        "epoch_s": loop_s,
        "fit_wall_s": wall,
        "fixed_overhead_s": wall - sum(loop_s),
        "first_epoch_extra_s": loop_s[0] - (sum(loop_s[1:]) / max(1, len(loop_s) - 1)),
    }


def steady_rate(times: list[float], rows: int) -> float:
    use = times[1:] or times
    return rows * len(use) / sum(use)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--dry-run", action="store_true", help="CPU, tiny sizes, fp32: checks the script only"
    )
    ap.add_argument("--width", type=int, default=4096, help="hidden width")
    ap.add_argument("--depth", type=int, default=4, help="hidden layers")
    ap.add_argument("--in-dim", type=int, default=512, help="input features")
    ap.add_argument("--classes", type=int, default=16)
    ap.add_argument("--batch", type=int, default=8192)
    ap.add_argument("--steps", type=int, default=40, help="steps per epoch")
    ap.add_argument(
        "--epochs", type=int, default=6, help="epochs of the in-process rows (first is warm-up)"
    )
    ap.add_argument("--ray-epochs", type=int, default=4, help="epochs of the Ray Train row")
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--no-ray", action="store_true", help="skip the Ray Train row")
    ap.add_argument(
        "--ray", action="store_true", help="with --dry-run: also run the Ray Train row (on CPU)"
    )
    args = ap.parse_args(argv)
    if args.dry_run:
        args.width, args.depth, args.in_dim, args.classes = 32, 2, 16, 4
        args.batch, args.steps, args.epochs = 64, 4, 3
        args.ray_epochs = 3
        args.no_ray = not args.ray

    t_start = time.perf_counter()
    cuda = torch.cuda.is_available() and not args.dry_run
    if not cuda and not args.dry_run:
        print("no CUDA device: run on a GPU machine, or use --dry-run", file=sys.stderr)
        return 2
    device = torch.device("cuda" if cuda else "cpu")
    if not cuda:
        torch.set_num_threads(1)  # tiny CPU sizes: threads only add noise
    use_bf16 = cuda
    name = torch.cuda.get_device_name() if cuda else None
    peak = peak_tflops(name)

    n = args.batch * args.steps
    x, y = synth(n, args.in_dim, args.classes, device)
    model, model_src = make_model(args.in_dim, args.classes, args.width, args.depth)
    params = sum(p.numel() for p in model.parameters())
    del model

    rows: dict[str, float] = {}
    epoch_s: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="rayline-gpu-bench-") as tmp:
        epoch_s["limit_a"] = run_limit(x, y, args, device, use_bf16)
        epoch_s["loop"], loop_label = run_rayline_loop(x, y, args, device, use_bf16, tmp)
        epoch_s["limit+item"] = run_limit(x, y, args, device, use_bf16, item_per_step=True)
        epoch_s["limit_b"] = run_limit(x, y, args, device, use_bf16)
        rows["limit"] = max(steady_rate(epoch_s["limit_a"], n), steady_rate(epoch_s["limit_b"], n))
        rows["limit+item"] = steady_rate(epoch_s["limit+item"], n)
        rows[loop_label] = steady_rate(epoch_s["loop"], n)
        del x, y
        if cuda:
            torch.cuda.empty_cache()

        ray_info: dict[str, Any] = {"ran": False}
        ray_row = None
        if args.no_ray:
            ray_info["reason"] = (
                "--dry-run (add --ray to run it on CPU)" if args.dry_run else "--no-ray"
            )
        else:
            try:
                import ray  # noqa: F401

                import rayline.train.trainer  # noqa: F401
            except Exception as exc:
                ray_info["reason"] = f"not importable: {type(exc).__name__}: {exc}"
            else:
                try:
                    ray_row = run_ray_row(args, n, tmp)
                    rows["rayline"] = ray_row["rows_per_s"]
                    ray_info["ran"] = True
                except Exception as exc:  # report, keep the in-process rows
                    ray_info["reason"] = (
                        f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
                    )

    tflops = {k: 6 * params * v / 1e12 for k, v in rows.items()}
    main_row = "rayline" if "rayline" in rows else loop_label
    out = {
        "benchmark": "gpu_throughput",
        "dry_run": bool(args.dry_run),
        "device": str(device),
        "device_name": name,
        "bf16": use_bf16,
        "ratio": rows[main_row] / rows["limit"],
        "ratio_row": main_row,
        "loop_ratio": rows[loop_label] / rows["limit"],
        "item_sync_ratio": rows["limit+item"] / rows["limit"],
        "rows_per_s": rows,
        "tflops": tflops,
        "peak_bf16_tflops": peak,
        "mfu": {k: (v / peak if peak else None) for k, v in tflops.items()},
        "fixed_overhead_s": ray_row["fixed_overhead_s"] if ray_row else None,
        "ray": {
            **ray_info,
            **({k: v for k, v in ray_row.items() if k != "rows_per_s"} if ray_row else {}),
        },
        "params": params,
        "model": model_src,
        "width": args.width,
        "depth": args.depth,
        "in_dim": args.in_dim,
        "batch": args.batch,
        "steps_per_epoch": args.steps,
        "epochs": args.epochs,
        "torch": torch.__version__,
        "wall_s": time.perf_counter() - t_start,
    }
    print(
        f"gpu_throughput on {name or device} ({'bf16 autocast' if use_bf16 else 'fp32'}): MLP {args.in_dim}->"
        f"{args.depth}x{args.width}->{args.classes} ({params:,} params), batch {args.batch}, "
        f"{args.steps} steps/epoch{' [DRY RUN]' if args.dry_run else ''}"
    )
    print(f"{'row':<22}{'samples/s':>14}{'x limit':>9}{'TFLOP/s':>10}{'of peak':>9}")
    for k, v in rows.items():
        frac = f"{tflops[k] / peak:.1%}" if peak else "-"
        print(f"{k:<22}{v:>14,.0f}{v / rows['limit']:>9.3f}{tflops[k]:>10.1f}{frac:>9}")
    if ray_row:
        print(
            f"rayline under Ray Train: fit {ray_row['fit_wall_s']:.1f} s, fixed overhead {ray_row['fixed_overhead_s']:.1f} s"
        )
    else:
        print(f"Ray Train row not run: {ray_info.get('reason')}")
    sys.stdout.flush()
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
