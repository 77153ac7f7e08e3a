"""``rayline serve`` over HTTP against calling the loaded pyfunc in-process, in one run.

A real registered model (a rayline network on ``rayline data synth`` columns, logged with
rayline's ``Registry.log_model`` to a sqlite store and made ``@champion``) is served by
rayline's Ray Serve application (:mod:`rayline.serve_app`, one replica, ``@serve.batch``)
on a free port of 127.0.0.1, and the same model is loaded in this process with
``mlflow.pyfunc.load_model``. Each row of the table is a bounded loop (a request count
and a time limit, whichever comes first, after a short warm-up) that stops by itself:

* ``inproc 1`` / ``inproc 100``: ``model.predict(pd.DataFrame.from_records(rows))`` for 1
  and 100 rows, back to back (what a caller holding the records pays, no network);
* ``http 1`` / ``http 100``: ``POST /predict {"records": rows}`` on one keep-alive
  connection, back to back (JSON both ways, Serve's proxy, the replica, the answer);
* ``http 1 x C``: C client threads sending one-row requests at once, which the replica
  batches (``serve.max_batch_size``).

Reported per row: requests/s, rows/s, p50 and p99 latency; and the ratios HTTP/in-process
(requests/s and p50) measured in this run. Every answer is checked 200 and equal to the
in-process prediction of the same rows.

The last line printed is one JSON object, ``{"benchmark": "serve", ...}``.

    .venv/bin/python benchmarks/serve.py --quick    # 4 s per row, ~1.5 minutes on 2 cores
    .venv/bin/python benchmarks/serve.py            # 30 s per row
"""

from __future__ import annotations

import argparse
import http.client
import json
import logging
import os
import socket
import tempfile
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

MODEL = "bench-serve"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _register(root: Path, cols: int, rows: int) -> tuple[str, pd.DataFrame]:
    """Synthesize, stage, fit, register a rayline model; return (tracking URI, raw rows)."""
    import mlflow
    import torch

    from rayline.config import RegistryConfig, validate_config
    from rayline.data.features import fit_from_config
    from rayline.data.ingest import fingerprint, resolve_sources
    from rayline.data.stage import read_split, stage
    from rayline.data.synth import synthetic_config, write_synthetic
    from rayline.inference import Predictor
    from rayline.registry import Registry
    from rayline.stages.register import input_example
    from rayline.train.models import build_model

    write_synthetic(root / "data", rows, cols, shards=1)
    cfg = validate_config(
        {**synthetic_config(str(root / "data"), cols), "runtime": {"storage_path": str(root)}}
    )
    sources = resolve_sources(cfg.data.path)
    report = stage(cfg, sources, fingerprint(sources), str(root / "run"))
    prep = fit_from_config(cfg, read_split(report.staged_path, "train"))
    spec = cfg.model.model_dump()
    torch.manual_seed(0)
    net = build_model(spec, prep.output_dim, prep.num_outputs, prep)
    weights = root / "model.pt"
    torch.save(net.state_dict(), weights)
    registry = Registry(RegistryConfig(experiment="bench-serve"), str(root))
    registry.connect()
    example = input_example(report.staged_path, prep)
    predictor = Predictor(prep, spec, net.state_dict())
    with mlflow.start_run(experiment_id=registry.experiment_id):
        uri = registry.log_model(
            prep.to_json(), spec, str(weights), example, predictor.predict_frame(example)
        )
    version = registry.register(uri, MODEL, {}, "The serving benchmark's model.")
    registry.promote(MODEL, version, "benchmark")
    test = read_split(report.staged_path, "test").to_pandas()
    return registry.tracking_uri, test[prep.input_columns].reset_index(drop=True)


def _records(df: pd.DataFrame) -> list[dict[str, Any]]:
    return json.loads(df.to_json(orient="records"))


def _stats(lat: list[float], wall: float, rows_per_req: int) -> dict[str, float]:
    a = np.array(lat)
    return {
        "requests": len(a),
        "req_per_s": len(a) / wall,
        "rows_per_s": len(a) * rows_per_req / wall,
        "p50_ms": float(np.percentile(a, 50) * 1e3),
        "p99_ms": float(np.percentile(a, 99) * 1e3),
    }


def _bounded(fn, seconds: float, max_requests: int, warmup: int) -> tuple[list[float], float]:
    """Call ``fn(i)`` back to back: ``warmup`` untimed calls, then until the limits."""
    for i in range(warmup):
        fn(i)
    lat: list[float] = []
    start = time.perf_counter()
    deadline = start + seconds
    i = 0
    while i < max_requests and time.perf_counter() < deadline:
        t0 = time.perf_counter()
        fn(i)
        lat.append(time.perf_counter() - t0)
        i += 1
    return lat, time.perf_counter() - start


class _Http:
    def __init__(self, port: int):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    def predict(self, body: bytes) -> dict[str, Any]:
        self.conn.request(
            "POST", "/predict", body=body, headers={"Content-Type": "application/json"}
        )
        r = self.conn.getresponse()
        raw = r.read()
        if r.status != 200:
            raise RuntimeError(f"HTTP {r.status}: {raw[:300]!r}")
        return json.loads(raw)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="short loops (under 2 minutes)")
    parser.add_argument("--seconds", type=float, default=None, help="time limit per row")
    parser.add_argument("--max-requests", type=int, default=20_000, help="request limit per row")
    parser.add_argument("--cols", type=int, default=16, help="synthetic feature columns")
    parser.add_argument("--clients", type=int, default=8, help="threads of the concurrent row")
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument("--batch-wait-ms", type=float, default=5.0)
    parser.add_argument("--ray-cpus", type=int, default=4)
    args = parser.parse_args(argv)
    seconds = args.seconds or (4.0 if args.quick else 30.0)

    warnings.filterwarnings("ignore")
    for name in ("ray", "mlflow", "ray.serve", "alembic"):
        logging.getLogger(name).setLevel(logging.ERROR)
    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
    import mlflow

    from rayline import serve_app
    from rayline.config import RuntimeConfig, ServeConfig
    from rayline.registry import use_mlflow
    from rayline.runtime import init_ray

    t_start = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="rayline-serve-bench-"))
    init_ray(RuntimeConfig(num_cpus=args.ray_cpus, dashboard=False))
    from ray import serve

    tracking_uri, test = _register(tmp, args.cols, 5_000 if args.quick else 20_000)
    use_mlflow(tracking_uri)
    model = mlflow.pyfunc.load_model(f"models:/{MODEL}@champion")
    records = _records(test)
    pool = min(len(records), 1000)
    singles = [records[i : i + 1] for i in range(pool)]
    batches = [records[i : i + 100] for i in range(0, pool - 100, 10)]
    settings = ServeConfig(
        port=_free_port(),
        max_batch_size=args.max_batch_size,
        batch_wait_timeout_s=args.batch_wait_ms / 1000,
        poll_interval_s=600,
    )
    results: dict[str, dict[str, float]] = {}
    try:
        url = serve_app.start(MODEL, "champion", tracking_uri, settings)
        serve_app.wait_ready(url, timeout_s=180)

        def inproc(chunks):
            return lambda i: model.predict(pd.DataFrame.from_records(chunks[i % len(chunks)]))

        for label, chunks, n in (("inproc 1", singles, 1), ("inproc 100", batches, 100)):
            lat, wall = _bounded(inproc(chunks), seconds, args.max_requests, 20)
            results[label] = _stats(lat, wall, n)

        # The answers are the in-process predictions of the same rows.
        client = _Http(settings.port)
        for chunk in (singles[0], batches[0]):
            got = client.predict(json.dumps({"records": chunk}).encode())
            ref = model.predict(pd.DataFrame.from_records(chunk))
            assert got["predictions"] == ref["prediction"].tolist()
            cols = [f"probability_{c}" for c in got["classes"]]
            assert np.allclose(got["probabilities"], ref[cols].to_numpy(), atol=1e-6)

        bodies1 = [json.dumps({"records": c}).encode() for c in singles]
        bodies100 = [json.dumps({"records": c}).encode() for c in batches]
        for label, bodies, n in (("http 1", bodies1, 1), ("http 100", bodies100, 100)):
            lat, wall = _bounded(
                lambda i, b=bodies: client.predict(b[i % len(b)]), seconds, args.max_requests, 20
            )
            results[label] = _stats(lat, wall, n)
        client.conn.close()

        # C clients at once: the replica batches their one-row requests.
        lat_all: list[list[float]] = [[] for _ in range(args.clients)]
        errors: list[str] = []
        barrier = threading.Barrier(args.clients + 1)
        per_client = max(1, args.max_requests // args.clients)

        def worker(k: int) -> None:
            c = _Http(settings.port)
            try:
                for i in range(5):
                    c.predict(bodies1[(k + i) % len(bodies1)])
                barrier.wait()
                lat_all[k], _ = _bounded(
                    lambda i: c.predict(bodies1[(k * 97 + i) % len(bodies1)]),
                    seconds,
                    per_client,
                    0,
                )
            except Exception as exc:
                errors.append(repr(exc))
            finally:
                c.conn.close()

        threads = [threading.Thread(target=worker, args=(k,)) for k in range(args.clients)]
        for t in threads:
            t.start()
        barrier.wait()
        t0 = time.perf_counter()
        for t in threads:
            t.join(seconds + 120)
        wall = time.perf_counter() - t0
        assert not errors, errors[:3]
        results[f"http 1 x {args.clients}"] = _stats(sum(lat_all, []), wall, 1)
    finally:
        serve.shutdown()

    def ratio(a: str, b: str, key: str) -> float:
        return round(results[a][key] / results[b][key], 4)

    ratios = {
        "http_vs_inproc_req_per_s_1": ratio("http 1", "inproc 1", "req_per_s"),
        "http_vs_inproc_req_per_s_100": ratio("http 100", "inproc 100", "req_per_s"),
        "http_vs_inproc_p50_1": ratio("http 1", "inproc 1", "p50_ms"),
        "http_vs_inproc_p50_100": ratio("http 100", "inproc 100", "p50_ms"),
        f"http_x{args.clients}_vs_inproc_req_per_s_1": ratio(
            f"http 1 x {args.clients}", "inproc 1", "req_per_s"
        ),
    }
    load = os.getloadavg()[0]
    print(
        f"{len(test)} test rows x {args.cols} columns, {os.cpu_count()} cores, load {load:.1f}; "
        f"one replica, max_batch_size {args.max_batch_size}, wait {args.batch_wait_ms:g} ms"
    )
    print(f"{'row':<14} {'requests':>9} {'req/s':>9} {'rows/s':>10} {'p50 ms':>8} {'p99 ms':>8}")
    for label, r in results.items():
        print(
            f"{label:<14} {r['requests']:>9} {r['req_per_s']:>9.1f} {r['rows_per_s']:>10.0f} "
            f"{r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f}"
        )
    for key, value in ratios.items():
        print(f"{key}: {value:.3f}")
    summary = {
        "benchmark": "serve",
        "quick": args.quick,
        "seconds_per_row": seconds,
        "cols": args.cols,
        "clients": args.clients,
        "max_batch_size": args.max_batch_size,
        "batch_wait_ms": args.batch_wait_ms,
        "results": {k: {n: round(v, 3) for n, v in r.items()} for k, r in results.items()},
        "ratios": ratios,
        "loadavg_1m": round(load, 2),
        "wall_s": round(time.perf_counter() - t_start, 1),
    }
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
