"""A rerun after a config change: how much of the first run's data work the second repeats.

The demo config (``jobs/configs/demo.yaml``, the breast cancer data that ``rayline
demo-data`` writes) runs twice through ``run_pipeline`` in one process, on one local Ray:

* **first**  -- a cold cache (a fresh storage directory): every stage computes;
* **second** -- the same config with ``train.epochs`` changed: staging, features and the
  profile have the same keys as the first run's, so they come from the cache, and
  training, evaluation, the gate and registration run again.

Printed: both runs' stage times, and the ratio of the second run's data stages
(``ingest`` + ``validate+split`` + ``features`` + ``profile``) to the first's -- the
first run is the baseline, measured in the same run. Goal: <= 0.05.

``--quick`` trains in Ray Train's local mode without the sweep (one in-process run, two
epochs), which changes nothing about the data stages and takes a minute instead of
several. The last line is one JSON object ``{"benchmark": "rerun", "ratio": ...}``.

    .venv/bin/python benchmarks/rerun.py --quick
    .venv/bin/python benchmarks/rerun.py            # the demo as shipped (2-trial sweep)
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA_STAGES = ("ingest", "validate+split", "features", "profile")


def main(argv: list[str] | None = None) -> int:
    """Run the demo twice and print the stage tables and the JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="local-mode training, no sweep")
    parser.add_argument("--epochs", type=int, default=None, help="first run's train.epochs")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    from rayline.config import load_config
    from rayline.demo import write_demo_dataset
    from rayline.pipeline import run_pipeline

    work = Path(tempfile.mkdtemp(prefix="rayline-rerun-"))
    write_demo_dataset(str(work / "data"))
    epochs = args.epochs or (2 if args.quick else 10)
    common = [
        f"data.path={work / 'data'}",
        f"runtime.storage_path={work / 'runs'}",
        "evaluate.baseline=false",
    ]
    if args.quick:
        common += ["tune.enabled=false", "train.local_mode=true"]
    config = str(REPO / "jobs" / "configs" / "demo.yaml")
    runs = {}
    for label, e in (("first", epochs), ("second", epochs + 1)):
        cfg = load_config(config, [*common, f"train.epochs={e}", f"runtime.run_name={label}"])
        result = run_pipeline(cfg)
        runs[label] = {s.name: s for s in result.stages}

    names = list(runs["first"])
    print(f"{'stage':<16}{'first s':>10}{'second s':>10}  second run")
    for name in names:
        a, b = runs["first"][name], runs["second"].get(name)
        print(
            f"{name:<16}{a.seconds:>10.2f}{(b.seconds if b else float('nan')):>10.2f}  "
            f"{('cached ' + b.key[:12]) if b and b.reused else 'ran'}"
        )
    first = sum(runs["first"][n].seconds for n in DATA_STAGES if n in runs["first"])
    second = sum(runs["second"][n].seconds for n in DATA_STAGES if n in runs["second"])
    total = {k: sum(s.seconds for s in v.values()) for k, v in runs.items()}
    print(f"data stages: first {first:.2f}s, second {second:.2f}s")
    print(f"whole run:   first {total['first']:.1f}s, second {total['second']:.1f}s")
    reused = sorted(n for n, s in runs["second"].items() if s.reused)
    print(
        json.dumps(
            {
                "benchmark": "rerun",
                "ratio": round(second / first, 4) if first else None,
                "data_first_s": round(first, 3),
                "data_second_s": round(second, 3),
                "total_ratio": round(total["second"] / total["first"], 3),
                "reused": reused,
                "quick": args.quick,
                "cores": os.cpu_count(),
                "loadavg_1m": round(os.getloadavg()[0], 2),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
