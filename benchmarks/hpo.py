"""Hyperparameter search: random vs ASHA vs Optuna+ASHA at the same budget, on a task where
the learning rate and the width matter.

The task: points in 4 dimensions labelled by which side of a curved surface they lie on
(``sum(sin(2 x_i)) > 0``). A narrow MLP cannot bend enough and a bad learning rate either
crawls or diverges, so the search space ``train.lr`` (log-uniform) x ``model.hidden_sizes``
(``[4]`` .. ``[64, 64]``) has a real optimum. Every sweep has the same budget: ``--trials``
trials of ``--epochs`` epochs (27 x 9 by default: ASHA pays where good configurations are
a few among many), drawn with the same seed; trials run in-process
(``train.local_mode``), so an epoch, not a trial's start-up, is what a trial costs, and
ASHA's saved epochs show up as saved time.

Three searches, ``--seeds`` seeds each, in one run, all through ``rayline.tune.run_tune``:

* ``random``       -- seeded random search, every trial to the end (FIFO);
* ``asha``         -- the same draws, with ASHA stopping weak trials at its rungs;
* ``optuna_asha``  -- Optuna's TPE (seeded) with ASHA.

Reported per search (and as ratios to ``random``):

* time to target: wall time from the sweep's start until any trial's validation accuracy
  reaches ``--target`` (the sweep's whole wall time when none does, flagged);
* best validation accuracy at budget;
* Tune overhead: sweep wall time / (sum of trial wall times / concurrency), where a trial's
  wall time runs from its function's start to its last report, start-up included;
* per-trial start-up: from the trial function's start to its first epoch's start.

The last line is one JSON object ``{"benchmark": "hpo", "asha_time_to_target_ratio": ...,
"optuna_best_ratio": ..., "overhead_ratio": ..., "per_trial_startup_s": ...}``.

    .venv/bin/python benchmarks/hpo.py --quick     # one seed, fewer trials: a few minutes
    .venv/bin/python benchmarks/hpo.py             # 3 seeds
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

TARGET = "label"
KEY = "row_id"
SEARCHES = {
    "random": {"search": "random", "scheduler": "fifo"},
    "asha": {"search": "random", "scheduler": "asha"},
    "optuna_asha": {"search": "optuna", "scheduler": "asha"},
}


#: Input dimensions. In 4, the best configurations pass 90% validation accuracy in 3-4
#: epochs and weak ones never do (a plain-torch sweep of the grid measured it), so a
#: time to target exists within the budget; in 8, no configuration reached 0.9 in 9 epochs.
COLS = 4


def make_table(rows: int, cols: int = COLS, seed: int = 0) -> pd.DataFrame:
    """Points labelled by a curved boundary: width and learning rate both matter."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-2.0, 2.0, size=(rows, cols))
    y = (np.sin(2.0 * x).sum(axis=1) > 0).astype(np.int64)
    df = pd.DataFrame(x, columns=[f"f{i}" for i in range(cols)])
    df[KEY] = np.arange(rows, dtype=np.int64)
    df[TARGET] = y
    return df


#: Validation accuracies at which time to target is also reported (``--target`` is the
#: headline one). In this space about half of the trials reach 0.96, a third 0.97 and a
#: few 0.975 (seed 0, 27 trials of 9 epochs): the higher the target, the rarer the
#: configurations that reach it, which is where early stopping pays.
TARGETS = (0.9, 0.95, 0.96, 0.97, 0.975)


def _median_ratio(runs: list[dict[str, Any]], name: str, base: str, target: str) -> float | None:
    pairs = [
        (a["time_to_target_by_target_s"][target], b["time_to_target_by_target_s"][target])
        for a in runs
        if a["search"] == name
        for b in runs
        if b["search"] == base and b["seed"] == a["seed"]
    ]
    ratios = [x / y for x, y in pairs if x is not None and y]
    return round(statistics.median(ratios), 3) if ratios else None


def config(data_dir: Path, storage: Path, search: dict[str, str], seed: int, args) -> dict:
    cols = {f"f{i}": {"type": "float"} for i in range(COLS)}
    return {
        "name": "hpo-bench",
        "data": {"path": str(data_dir), "target": TARGET, "split": {"key": KEY}},
        "schema": {
            "columns": {**cols, KEY: {"type": "int"}, TARGET: {"type": "int", "allowed": [0, 1]}}
        },
        "features": {"numeric": list(cols), "categorical": []},
        "model": {"task": "classification", "hidden_sizes": [16]},
        "train": {
            "epochs": args.epochs,
            "batch_size": 256,
            "lr": 0.01,
            "seed": seed,
            "metric": "accuracy",
            "local_mode": True,
        },
        "tune": {
            "enabled": True,
            "num_samples": args.trials,
            "max_concurrent_trials": args.concurrency,
            "grace_period": 1,
            "reduction_factor": 3,
            **search,
            "search_space": {
                "train.lr": {"type": "loguniform", "low": 1e-4, "high": 0.3},
                "model.hidden_sizes": [[4], [16], [64], [64, 64]],
            },
        },
        "runtime": {"storage_path": str(storage)},
    }


def run_search(name: str, seed: int, staged, prep, root: Path, args) -> dict[str, Any]:
    from rayline.config import validate_config
    from rayline.tune import run_tune

    cfg = validate_config(config(root / "data", root / "runs", SEARCHES[name], seed, args))
    started = time.time()
    _, trials = run_tune(
        cfg,
        prep,
        staged.staged_path,
        str(root / "sweeps" / f"{name}-{seed}"),
        "tune",
        float(args.ray_cpus),
        staged.splits["train"],
    )
    wall = time.time() - started
    rows = [r for t in trials for r in t.history]
    hits = [r["wall_time"] for r in rows if r.get("val_accuracy", 0) >= args.target]
    ttt = (min(hits) - started) if hits else wall
    by_target = {}
    for target in TARGETS:
        reached = [r["wall_time"] for r in rows if r.get("val_accuracy", 0) >= target]
        by_target[str(target)] = (min(reached) - started) if reached else None
    trial_walls, startups = [], []
    for t in trials:
        if not t.history:
            continue
        h = sorted(t.history, key=lambda r: r["epoch"])
        trial_walls.append(max(r["since_start_s"] for r in h))
        startups.append(h[0]["since_start_s"] - h[0]["epoch_s"])
    epochs = sum(len(t.history) for t in trials)
    return {
        "search": name,
        "seed": seed,
        "wall_s": wall,
        "time_to_target_s": ttt,
        "time_to_target_by_target_s": by_target,
        "reached_target": bool(hits),
        "best_val_accuracy": max((r.get("val_accuracy", 0.0) for r in rows), default=0.0),
        "epochs_trained": epochs,
        "overhead": wall / (sum(trial_walls) / args.concurrency) if trial_walls else float("nan"),
        "startup_s": statistics.median(startups) if startups else float("nan"),
        "failed": sum(1 for t in trials if t.error),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="one seed, 6 trials, 6 epochs")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--trials", type=int, default=27)
    parser.add_argument("--epochs", type=int, default=9)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--target", type=float, default=0.97, help="validation accuracy")
    parser.add_argument("--concurrency", type=int, default=3)
    parser.add_argument("--ray-cpus", type=int, default=8)
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.trials, args.epochs, args.rows = 1, 6, 6, 8000

    warnings.filterwarnings("ignore")
    logging.basicConfig(level=logging.WARNING)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from rayline.config import RuntimeConfig, validate_config
    from rayline.data.features import fit_from_config
    from rayline.data.ingest import fingerprint, resolve_sources
    from rayline.data.stage import read_split, stage
    from rayline.runtime import init_ray

    with tempfile.TemporaryDirectory(prefix="rayline-hpo-") as tmp:
        root = Path(tmp)
        (root / "data").mkdir()
        make_table(args.rows).to_parquet(root / "data" / "part-0.parquet", index=False)
        init_ray(RuntimeConfig(num_cpus=args.ray_cpus, dashboard=False))
        cfg = validate_config(config(root / "data", root / "runs", SEARCHES["random"], 0, args))
        sources = resolve_sources(cfg.data.path)
        staged = stage(cfg, sources, fingerprint(sources), str(root / "stage"))
        prep = fit_from_config(cfg, read_split(staged.staged_path, "train"))

        runs = []
        for seed in range(args.seeds):
            for name in SEARCHES:
                r = run_search(name, seed, staged, prep, root, args)
                runs.append(r)
                print(
                    f"{name:<12} seed {seed}: wall {r['wall_s']:6.1f}s  time to target "
                    f"{r['time_to_target_s']:6.1f}s{'' if r['reached_target'] else ' (not reached)'}"
                    f"  best {r['best_val_accuracy']:.4f}  epochs {r['epochs_trained']:3d}  "
                    f"overhead {r['overhead']:.2f}x  start-up {r['startup_s']:.2f}s",
                    flush=True,
                )

    def per_seed(name: str, key: str) -> list[float]:
        return [r[key] for r in runs if r["search"] == name]

    def vs_random(name: str, key: str) -> list[float]:
        """Per seed, ``name``'s figure over random search's."""
        return [a / b for a, b in zip(per_seed(name, key), per_seed("random", key), strict=True)]

    best_ratios = vs_random("optuna_asha", "best_val_accuracy")
    optuna_wins = sum(1 for x in best_ratios if x >= 1.0)
    summary = {
        "benchmark": "hpo",
        "seeds": args.seeds,
        "trials": args.trials,
        "epochs": args.epochs,
        "target_val_accuracy": args.target,
        "asha_time_to_target_ratio": round(
            statistics.median(vs_random("asha", "time_to_target_s")), 3
        ),
        "optuna_asha_time_to_target_ratio": round(
            statistics.median(vs_random("optuna_asha", "time_to_target_s")), 3
        ),
        "asha_best_ratio": round(statistics.median(vs_random("asha", "best_val_accuracy")), 4),
        "optuna_best_ratio": round(statistics.median(best_ratios), 4),
        "optuna_at_least_random_seeds": optuna_wins,
        "overhead_ratio": round(statistics.median(r["overhead"] for r in runs), 3),
        "per_trial_startup_s": round(statistics.median(r["startup_s"] for r in runs), 2),
        "epochs_trained": {n: sum(per_seed(n, "epochs_trained")) for n in SEARCHES},
        "targets_reached": {n: sum(per_seed(n, "reached_target")) for n in SEARCHES},
        # ASHA against random at other targets (median over the seeds where both reach it).
        "asha_time_to_target_ratio_by_target": {
            str(t): _median_ratio(runs, "asha", "random", str(t)) for t in TARGETS
        },
        "optuna_asha_time_to_target_ratio_by_target": {
            str(t): _median_ratio(runs, "optuna_asha", "random", str(t)) for t in TARGETS
        },
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
