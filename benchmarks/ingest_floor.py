"""Where rayline's streamed ingest spends its time: each hop of read -> transform -> object
store -> worker, measured on its own against the one-process limit, in one run.

``benchmarks/ingest.py`` measures the whole path; this splits it. On the same synthetic
table (``rayline data synth``), staged once by ``stage()`` (``runtime.in_process_max_rows=0``:
the Ray Data path, as for any input above the in-process threshold), at one batch size:

* ``limit``       -- one process, no Ray: pyarrow record batches -> the transform -> torch;
* ``read``        -- Ray Data: ``read_parquet`` of the staged train split, materialized;
* ``produce``     -- Ray Data: ``read_parquet -> map_batches(BatchTransform)``, materialized
  (the workers' share: read, Arrow -> pandas, transform, tensor block into the store);
* ``consume``     -- ``iter_torch_batches`` over the materialized ``produce`` output (the
  consumer's share: fetch blocks from the store, re-batch, numpy -> torch);
* ``stream``      -- the two together, streamed, as a training worker reads (rayline's path).

Each figure is rows/s and its ratio to the limit in the same run. The last line is one JSON
object ``{"benchmark": "ingest_floor", ...}``.

    .venv/bin/python benchmarks/ingest_floor.py                 # 2M rows x 32 columns
    .venv/bin/python benchmarks/ingest_floor.py --rows 500000   # quicker
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ingest import _drain, _fit, limit_batches  # noqa: E402


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--cols", type=int, default=32)
    ap.add_argument("--batch", type=int, default=65536)
    ap.add_argument("--ray-cpus", type=int, default=8)
    args = ap.parse_args(argv)

    warnings.filterwarnings("ignore")
    logging.getLogger("ray").setLevel(logging.ERROR)
    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")

    from rayline.config import RuntimeConfig, validate_config
    from rayline.data.features import BatchTransform
    from rayline.data.ingest import fingerprint, resolve_sources
    from rayline.data.stage import read_split, split_path, stage
    from rayline.data.synth import synthetic_config, write_synthetic
    from rayline.runtime import init_ray
    from rayline.train.trainer import TRANSFORM_BATCH_ROWS

    tmp = Path(tempfile.mkdtemp(prefix="rayline-ingest-floor-"))
    write_synthetic(tmp / "data", args.rows, args.cols, shards=max(4, args.rows // 500_000))
    raw = synthetic_config(str(tmp / "data"), args.cols)
    cfg = validate_config({**raw, "runtime": {"storage_path": str(tmp), "in_process_max_rows": 0}})
    init_ray(RuntimeConfig(num_cpus=args.ray_cpus))
    import ray.data

    ray.data.DataContext.get_current().enable_progress_bars = False
    sources = resolve_sources(cfg.data.path)
    report = stage(cfg, sources, fingerprint(sources), str(tmp / "run"))
    prep = _fit(cfg, report.staged_path)
    rows = report.splits["train"]
    columns = prep.input_columns + [prep.target]
    train_files = sorted(
        str(p) for p in Path(split_path(report.staged_path, "train")).rglob("*.parquet")
    )

    def lazy():
        return read_split(report.staged_path, "train", columns=columns).map_batches(
            BatchTransform(prep), batch_format="pandas", batch_size=TRANSFORM_BATCH_ROWS
        )

    def torch_batches(ds):
        for b in ds.iter_torch_batches(batch_size=args.batch, prefetch_batches=1):
            yield b["x"], b["y"]

    results: dict[str, float] = {}
    results["limit"] = _drain(limit_batches(train_files, prep, args.batch))["rows_per_s"]
    read_s = _timed(lambda: read_split(report.staged_path, "train", columns=columns).materialize())
    results["read"] = rows / read_s
    holder = {}
    produce_s = _timed(lambda: holder.setdefault("ds", lazy().materialize()))
    results["produce"] = rows / produce_s
    results["consume"] = _drain(torch_batches(holder.pop("ds")))["rows_per_s"]
    results["stream"] = _drain(torch_batches(lazy()))["rows_per_s"]
    again = _drain(limit_batches(train_files, prep, args.batch))["rows_per_s"]
    results["limit"] = max(results["limit"], again)

    lim = results["limit"]
    print(
        f"ingest_floor: {rows} train rows x {args.cols} columns -> {prep.output_dim} features, "
        f"batch {args.batch}, {os.cpu_count()} cores, {args.ray_cpus} logical CPUs"
    )
    for name, rate in results.items():
        print(f"  {name:<8} {rate:>12,.0f} rows/s  {rate / lim:5.2f}x limit")
    out = {
        "benchmark": "ingest_floor",
        "rows": rows,
        "features": prep.output_dim,
        "batch_size": args.batch,
        "rows_per_s": {k: round(v) for k, v in results.items()},
        "ratio": {k: round(v / lim, 3) for k, v in results.items()},
        "cores": os.cpu_count(),
        "loadavg_1m": round(os.getloadavg()[0], 2),
    }
    print(json.dumps(out))
    shutil.rmtree(tmp, ignore_errors=True)
    return out


if __name__ == "__main__":
    main()
