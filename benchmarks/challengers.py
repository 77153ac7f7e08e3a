"""Scoring k challengers and the champion: one pass over the test split vs k + 1 passes.

The same synthetic test split (``rayline data synth``, staged by rayline's own
validate+split) is scored by k challenger networks (rayline's ``Predictor``, as a sweep's
top-k trials) and one champion served through MLflow (a real pyfunc model logged to a
sqlite store, loaded with ``mlflow.pyfunc.load_model``), two ways, in one run:

* ``separate`` -- the baseline: one :func:`rayline.evaluate.score` pass per challenger,
  plus one pass for the champion alone, each reading and transforming the split again
  (what evaluating k + 1 models costs without the shared pass).
* ``one pass`` -- :func:`rayline.evaluate.score` with ``others=`` and ``champion=``: one
  read, one feature transform per batch, k + 1 models in one Ray Data actor.

Both stream through Ray Data (``max_rows=0``, the path of a test split too big for the
driver). The predictions of the two ways are checked to be identical. The ratio printed
is one-pass time / separate time (goal: <= 0.5 at k = 4).

The last line printed is one JSON object, ``{"benchmark": "challengers", ...}``.

    .venv/bin/python benchmarks/challengers.py --quick     # 100k rows, k = 4, < 2 minutes
    .venv/bin/python benchmarks/challengers.py             # 1M rows, k = 2, 4, 8
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
import time
import warnings
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np


class _ChampionOnly:
    """One Ray Data actor scoring the champion alone (the separate way's last pass)."""

    def __init__(self, tracking_uri: str, uri: str, prep_json: str):
        from rayline.data.features import FittedPreprocessor
        from rayline.registry import load_pyfunc

        self.prep = FittedPreprocessor.from_json(prep_json)
        self.model = load_pyfunc(uri, tracking_uri)

    def __call__(self, batch):
        from rayline.inference import output_from_frame

        frame = self.model.predict(batch[[c for c in batch.columns if c != self.prep.target]])
        return {"champion": output_from_frame(frame, self.prep)}


def _champion_pass(staged: str, prep, tracking_uri: str, uri: str, batch: int) -> np.ndarray:
    from ray.data import ActorPoolStrategy

    from rayline.data.stage import read_split

    ds = read_split(staged, "test").map_batches(
        _ChampionOnly,
        fn_constructor_kwargs={
            "tracking_uri": tracking_uri,
            "uri": uri,
            "prep_json": prep.to_json(),
        },
        batch_format="pandas",
        batch_size=batch,
        compute=ActorPoolStrategy(size=1),
    )
    return np.concatenate(
        [b["champion"] for b in ds.iter_batches(batch_format="numpy", batch_size=None)]
    )


def _networks(root: Path, prep, spec: dict[str, Any], k: int) -> list[str]:
    import torch

    from rayline.train.loop import WEIGHTS_FILE
    from rayline.train.models import build_model

    dirs = []
    for seed in range(k + 1):
        torch.manual_seed(seed)
        net = build_model(spec, prep.output_dim, prep.num_outputs, prep)
        d = root / f"model-{seed}"
        d.mkdir(parents=True, exist_ok=True)
        torch.save(net.state_dict(), d / WEIGHTS_FILE)
        dirs.append(str(d))
    return dirs


def _log_champion(
    root: Path, staged: str, prep, spec: dict[str, Any], weights_dir: str
) -> tuple[str, str]:
    """Register the champion network as a real MLflow model; return (tracking_uri, uri)."""
    import mlflow

    from rayline.config import RegistryConfig
    from rayline.inference import Predictor
    from rayline.registry import Registry
    from rayline.stages.register import input_example

    registry = Registry(RegistryConfig(experiment="bench-challengers"), str(root))
    registry.connect()
    example = input_example(staged, prep)
    import torch

    state = torch.load(Path(weights_dir, "model.pt"), map_location="cpu", weights_only=True)
    with mlflow.start_run(experiment_id=registry.experiment_id):
        uri = registry.log_model(
            prep.to_json(), spec, str(Path(weights_dir, "model.pt")), example,
            Predictor(prep, spec, state).predict_frame(example),
        )  # fmt: skip
    version = registry.register(uri, "bench-champion", {})
    registry.promote("bench-champion", version)
    return registry.tracking_uri, "models:/bench-champion@champion"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="100k test rows, k = 4")
    parser.add_argument("--rows", type=int, default=None, help="rows in all (test is 15%%)")
    parser.add_argument("--cols", type=int, default=16)
    parser.add_argument("--k", default=None, help="comma-separated challenger counts")
    parser.add_argument("--batch-size", type=int, default=16384)
    parser.add_argument("--ray-cpus", type=int, default=4)
    args = parser.parse_args(argv)
    rows = args.rows or (700_000 if args.quick else 7_000_000)
    ks = [int(k) for k in (args.k or ("4" if args.quick else "2,4,8")).split(",")]

    warnings.filterwarnings("ignore")
    logging.getLogger("ray").setLevel(logging.ERROR)
    logging.getLogger("mlflow").setLevel(logging.ERROR)
    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")

    from rayline import evaluate as ev
    from rayline.config import RuntimeConfig, validate_config
    from rayline.data.features import fit_from_config
    from rayline.data.ingest import fingerprint, resolve_sources
    from rayline.data.stage import read_split, stage
    from rayline.data.synth import synthetic_config, write_synthetic
    from rayline.registry import load_pyfunc
    from rayline.runtime import init_ray

    tmp = Path(tempfile.mkdtemp(prefix="rayline-challengers-"))
    write_synthetic(tmp / "data", rows, args.cols, shards=4)
    cfg = validate_config(
        {**synthetic_config(str(tmp / "data"), args.cols), "runtime": {"storage_path": str(tmp)}}
    )
    init_ray(RuntimeConfig(num_cpus=args.ray_cpus))
    import ray.data

    ray.data.DataContext.get_current().enable_progress_bars = False
    sources = resolve_sources(cfg.data.path)
    report = stage(cfg, sources, fingerprint(sources), str(tmp / "run"))
    staged, test_rows = report.staged_path, report.splits["test"]
    prep = fit_from_config(cfg, read_split(staged, "train"))
    spec = cfg.model.model_dump()
    dirs = _networks(tmp / "models", prep, spec, max(ks))
    tracking_uri, champion_uri = _log_champion(tmp, staged, prep, spec, dirs[-1])
    champion = (partial(load_pyfunc, tracking_uri=tracking_uri), champion_uri)

    def candidates(k: int) -> list:
        return [ev.Candidate(f"c{i}", spec, dirs[i]) for i in range(1, k)]

    # Warm-up: Ray Data's first job pays worker start-up and imports; neither way should.
    ev.score(staged, prep, spec, dirs[0], args.batch_size, max_rows=0)

    results: dict[int, dict[str, float]] = {}
    for k in ks:
        t0 = time.perf_counter()
        separate = [
            ev.score(staged, prep, spec, dirs[i], args.batch_size, max_rows=0) for i in range(k)
        ]
        champ = _champion_pass(staged, prep, tracking_uri, champion_uri, args.batch_size)
        separate_s = time.perf_counter() - t0

        t0 = time.perf_counter()
        one = ev.score(
            staged, prep, spec, dirs[0], args.batch_size, champion=champion,
            max_rows=0, others=candidates(k),
        )  # fmt: skip
        one_s = time.perf_counter() - t0

        # Same models, same rows: the same predictions (order-independent check: sorted).
        for i, s in enumerate(separate):
            name = "challenger" if i == 0 else f"c{i}"
            assert np.allclose(
                np.sort(s.outputs["challenger"], axis=0),
                np.sort(one.outputs[name], axis=0),
                atol=1e-6,
            )
        assert np.allclose(
            np.sort(champ, axis=0), np.sort(one.outputs["champion"], axis=0), atol=1e-6
        )
        results[k] = {"separate_s": separate_s, "one_pass_s": one_s, "ratio": one_s / separate_s}

    print(f"{test_rows} test rows x {args.cols} columns, {os.cpu_count()} cores, Ray Data path")
    print(f"{'k':>3} {'models':>7} {'separate (k+1 passes)':>22} {'one pass':>10} {'ratio':>7}")
    for k, r in results.items():
        print(
            f"{k:>3} {k + 1:>7} {r['separate_s']:>21.1f}s {r['one_pass_s']:>9.1f}s {r['ratio']:>7.2f}"
        )
    summary = {
        "benchmark": "challengers",
        "test_rows": test_rows,
        "cols": args.cols,
        "results": {str(k): {n: round(v, 3) for n, v in r.items()} for k, r in results.items()},
        "ratio_k4": round(results[4]["ratio"], 3) if 4 in results else None,
    }
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
