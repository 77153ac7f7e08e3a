"""Shared fixtures: one local Ray session per test module, generated data, configs."""

from __future__ import annotations

import socket
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def ray_session():
    """A local Ray for the whole module (start-up costs ~10 s, so it is shared)."""
    import ray

    from rayline.config import RuntimeConfig, TrainConfig
    from rayline.runtime import init_ray, train_env

    # As the pipeline starts it: Train's settings for the default config in the environment.
    init_ray(RuntimeConfig(num_cpus=8), worker_env=train_env(TrainConfig()))
    yield
    ray.shutdown()


def actor_table() -> dict[str, tuple[str, str]]:
    """Every actor this Ray has had, alive or dead, by its ID: its class's name and the
    runtime_env it started with, as Ray serialized it (from the GCS, which needs no
    dashboard; a class defined in a function, as Tune's trainable is, is recorded with its
    qualified name, 'wrap_function.<locals>.ImplicitFunc': the last part is kept)."""
    import ray._private.state
    from ray.core.generated import gcs_pb2

    accessor = ray._private.state.state._connect_and_get_accessor()
    rows = [gcs_pb2.ActorTableData.FromString(raw) for raw in accessor.get_actor_table(None, None)]
    return {
        r.actor_id.hex(): (r.class_name.rpartition(".")[2], r.serialized_runtime_env) for r in rows
    }


def make_table(n: int, seed: int = 0, bad_rows: int = 0) -> pd.DataFrame:
    """A learnable classification table: numeric, categorical, bool, nulls, a key column.

    ``bad_rows`` rows get a negative ``income`` (the schema says min 0) so they must be
    quarantined.
    """
    rng = np.random.default_rng(seed)
    df = pd.DataFrame(
        {
            "user_id": np.arange(n, dtype=np.int64),
            "age": rng.integers(18, 80, size=n).astype(np.int64),
            "income": rng.gamma(2.0, 20.0, size=n),
            "plan": rng.choice(["basic", "plus", "pro"], size=n),
            "is_active": rng.random(n) < 0.6,
        }
    )
    logit = (
        0.04 * (df["age"] - 45)
        + 0.03 * (df["income"] - 40)
        + np.where(df["plan"] == "pro", 1.5, 0.0)
    )
    df["churned"] = (logit + rng.normal(scale=0.5, size=n) > 0).astype(np.int64)
    # Nulls where the schema allows them: income is nullable and gets imputed.
    df.loc[rng.choice(n, size=n // 50, replace=False), "income"] = np.nan
    if bad_rows:
        idx = rng.choice(np.flatnonzero(df["income"].notna()), size=bad_rows, replace=False)
        df.loc[idx, "income"] = -1.0
    return df


def write_parts(df: pd.DataFrame, out: Path, parts: int = 2) -> Path:
    """Write ``df`` as ``parts`` Parquet files under ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    for i, chunk in enumerate(np.array_split(np.arange(len(df)), parts)):
        df.iloc[chunk].to_parquet(out / f"part-{i}.parquet", index=False)
    return out


def base_config(data_dir: Path, storage: Path, **sections: Any) -> dict[str, Any]:
    """A small but complete pipeline config as plain data."""
    cfg: dict[str, Any] = {
        "name": "churn-test",
        "data": {"path": str(data_dir), "target": "churned", "split": {"key": "user_id"}},
        "schema": {
            "max_bad_fraction": 0.05,
            "columns": {
                "user_id": {"type": "int"},
                "age": {"type": "int", "min": 0, "max": 120},
                "income": {"type": "float", "nullable": True, "min": 0},
                "plan": {"type": "string", "allowed": ["basic", "plus", "pro"]},
                "is_active": {"type": "bool"},
                "churned": {"type": "int", "allowed": [0, 1]},
            },
        },
        "model": {"task": "classification", "hidden_sizes": [16]},
        "train": {
            "epochs": 3,
            "batch_size": 64,
            "lr": 0.01,
            "num_workers": 2,
            "metric": "log_loss",
        },
        "evaluate": {"baseline": True},
        "gate": {"thresholds": {"accuracy": {"min": 0.6}}, "compare_metric": "log_loss"},
        "registry": {"experiment": "it", "model_name": "churn"},
        "runtime": {"storage_path": str(storage)},
    }
    for key, value in sections.items():
        cfg[key] = {**cfg.get(key, {}), **value}
    return cfg


def write_config(path: Path, cfg: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def free_port() -> int:
    """A TCP port free on loopback now (for a server a test starts)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- a real `mlflow server` -------------------------------------------------------------------
@contextmanager
def running_mlflow_server(
    args: list[str], env: dict[str, str], log_path: Path, timeout_s: float = 120
):
    """``mlflow server ARGS --host 127.0.0.1 --port <free>`` in its own process group; yields
    ``(url, proc)`` once ``/health`` answers, and stops that group (only) at the end."""
    import subprocess
    import sys
    import time
    import urllib.request

    port = free_port()
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1",
             "--port", str(port), "--workers", "1", *args],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # its own process group: its workers stop with it
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if proc.poll() is not None:
                pytest.fail(f"mlflow server exited ({proc.returncode}):\n{log_path.read_text()}")
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(
                    f"mlflow server not ready in {timeout_s:g} s:\n{log_path.read_text()[-3000:]}"
                )
            time.sleep(0.5)
        yield url, proc
    finally:
        stop_group(proc)


def stop_group(proc) -> None:
    """Stop a process we started and its group (pgid = its pid): TERM, then KILL whatever is
    left (uvicorn's graceful stop waits for keep-alive connections this process holds)."""
    import os
    import signal
    import subprocess

    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(5)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(10)
