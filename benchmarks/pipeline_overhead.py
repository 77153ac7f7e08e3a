"""rayline's fixed overhead: the demo pipeline three ways in one run, and `rayline validate`.

Every row does the same work on the demo data (``rayline demo-data``, 569 rows in 2 Parquet
files) with the demo config (``jobs/configs/demo.yaml``), and runs as its own fresh Python
process whose wall time is measured from the outside (interpreter start, imports, Ray's start
and shutdown included). A warm-up process imports the libraries and starts and stops a local
Ray once first, so no row pays for a cold page cache alone. The work, per row:

* **rayline** -- ``rayline run jobs/configs/demo.yaml data.path=<tmp> runtime.storage_path=<tmp>``
  as shipped (cold stage cache: a fresh storage directory): ingest, validate+split, features,
  profile, a 2-trial ASHA sweep of 2-worker DDP runs, evaluation (+ the LogisticRegression
  baseline), the gate and registration in a fresh sqlite MLflow store. Per-stage wall times
  are parsed from its ``[rayline] <stage> <s>`` lines; the trials it ran (sampled ``train.lr``
  and ``model.hidden_sizes``, and how many epochs each ran before ASHA stopped it or it
  finished) are read from its ``pipeline_result.json`` and given to the other two rows, so
  that all three train the same trials for the same epochs.
* **limit** -- one Python process, no Ray, the same libraries: pyarrow reads the files (after
  ``check_file_schemas`` on their footers); rayline's pure ``validate_batch`` and
  ``assign_split`` validate and split the rows (bad-fraction check included); the
  preprocessor is fitted with pandas (train-split mean and population std, mean fill: what
  ``fit_preprocessor`` computes with Ray Data aggregations) into the same
  ``FittedPreprocessor``; a pandas profile of the train split (describe + deciles); each trial
  in turn trains ``build_model``'s network with AdamW (the config's lr/weight decay, batch
  size, seed, 1 torch thread), validates every epoch and keeps the best epoch's weights by
  ``val_log_loss``; the best trial's best weights are scored on the test split with
  ``rayline.inference.Predictor`` + ``rayline.metrics.compute_metrics``, beside a
  LogisticRegression baseline on the same features; the gate thresholds are checked; and the
  model is logged with ``mlflow.pyfunc.log_model`` (rayline's ``serving.py`` as models-from-code,
  the same artifacts, code path, signature, input example and pinned requirements that
  ``Registry.log_model`` passes), registered and aliased in a fresh sqlite store.
* **peer** -- plain Ray doing the same: ``ray.init(num_cpus=8)`` (the logical CPUs rayline's
  local Ray gets on this machine; with the 2 default ones a 2-worker trial under Tune cannot
  be placed), otherwise Ray's defaults (dashboard, progress bars, Train's 2 s poll);
  ``ray.data.read_parquet -> map_batches`` (the same validation and split functions) ->
  ``materialize``; ``ray.data.preprocessors.StandardScaler`` fitted on the train split; the same
  profile on the train split pulled to pandas; a ``ray.tune.Tuner`` with defaults (FIFO, no
  concurrency limit: both trials at once, as rayline runs them) over a function trainable that
  launches a 2-worker ``TorchTrainer`` with ``TuneReportCallback`` (Train V2), whose loop is
  the one from Ray's docs (``prepare_model``, ``iter_torch_batches``, a validation pass and a
  rank-0 checkpoint every epoch, ``ray.train.report``); the best epoch of the best trial by
  ``val_log_loss``; evaluation with ``map_batches`` (a ``Predictor`` per actor) and the
  baseline on batches pulled from Ray Data; the gate; and the same MLflow logging.

The fixed overhead of rayline and of the peer is their wall time minus the limit's.

Also timed: ``rayline validate`` on a 344-row Parquet file (the first 344 demo rows), as a
subprocess, Ray's start included.

Goals on 2 cores: rayline's fixed overhead <= 25 s and <= 0.5x the peer's; ``rayline
validate`` <= 8 s. ``--quick`` trains 2 epochs in every row (``train.epochs=2`` for rayline).
The last line printed is one JSON object, ``{"benchmark": "pipeline_overhead", ...}``.

    .venv/bin/python benchmarks/pipeline_overhead.py --quick    # a few minutes on 2 cores
    .venv/bin/python benchmarks/pipeline_overhead.py            # the demo's 10 epochs
"""

from __future__ import annotations

import time

T0 = time.perf_counter()  # a child row's stages count from here (its imports included)

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "jobs" / "configs" / "demo.yaml"
BIN = Path(sys.executable).parent
RAYLINE = str(BIN / "rayline") if (BIN / "rayline").exists() else shutil.which("rayline")
VALIDATE_ROWS = 344
PEER_CPUS = 8
GOAL_FIXED_S = 25.0
GOAL_PEER_RATIO = 0.5
GOAL_VALIDATE_S = 8.0
SPLIT = "_split"
#: Canonical columns of the table; each row's stages are summed into them.
COLUMNS = ("start", "data", "features", "profile", "train", "evaluate", "register")
RAYLINE_COLUMNS = {
    "setup": "start",
    "ingest": "data",
    "validate+split": "data",
    "features": "features",
    "profile": "profile",
    "train": "train",
    "tune": "train",
    "evaluate": "evaluate",
    "gate": "register",
    "register": "register",
}
STAGE_LINE = re.compile(r"^\[rayline\]\s+(\S+)\s+([0-9.]+)s")


# -- shared by the limit and the peer ------------------------------------------------------------
class Clock:
    """Per-stage wall times from the process start (``T0``)."""

    def __init__(self) -> None:
        self.last = T0
        self.stages: dict[str, float] = {}

    def mark(self, name: str) -> None:
        now = time.perf_counter()
        self.stages[name] = self.stages.get(name, 0.0) + now - self.last
        self.last = now


def load_cfg(data_dir: str, epochs: int):
    from rayline.config import load_config

    return load_config(str(CONFIG), [f"data.path={data_dir}", f"train.epochs={epochs}"])


def validate_split(batch, cfg):
    """Rayline's pure validation and split of one pandas batch: typed columns + split name."""
    from rayline.data.split import assign_split
    from rayline.data.validate import REASON_COL, RULES_COL, validate_batch

    out = validate_batch(batch, cfg.schema_.columns)
    bad = out[REASON_COL].notna().to_numpy()
    where = assign_split(
        out.drop(columns=[REASON_COL, RULES_COL]), cfg.data.split, list(cfg.schema_.columns)
    ).astype(object)
    where[bad] = "quarantine"
    out[SPLIT] = where
    return out


def check_bad_fraction(rows: int, bad: int, cfg) -> None:
    if rows == 0 or bad / rows > cfg.schema_.max_bad_fraction:
        raise SystemExit(f"the data breaks the contract: {bad} of {rows} rows bad")


def prep_from_stats(cfg, means: dict[str, float], stds: dict[str, float]):
    """A ``FittedPreprocessor`` from train-split means and population stds (numeric only)."""
    from rayline.data.features import FittedPreprocessor

    if cfg.categorical_features() or cfg.features.transforms or cfg.features.derived:
        raise SystemExit("this benchmark's limit/peer fit numeric columns only (the demo's)")
    cols = cfg.schema_.columns
    numeric = []
    for c in cfg.numeric_features():
        mean = float(means[c])
        std = float(stds[c]) or 1.0
        fill = mean if cfg.features.impute == "mean" else 0.0
        numeric.append({"name": c, "mean": mean, "std": std, "fill": fill})
    return FittedPreprocessor(
        task=cfg.model.task,
        target=cfg.data.target,
        classes=sorted(cols[cfg.data.target].allowed, key=str),
        numeric=numeric,
        categorical=[],
        encoding=cfg.features.encoding,
        standardize=cfg.features.standardize,
        input_types={c: s.type for c, s in cols.items()},
    )


def profile_frame(df) -> dict[str, Any]:
    """Per-column statistics and decile bins of the train split, as rayline's profile keeps."""
    num = df.select_dtypes("number")
    stats = num.describe(percentiles=[i / 10 for i in range(1, 10)]).to_dict()
    return {"rows": len(df), "columns": stats, "nulls": df.isna().sum().to_dict()}


def model_spec(cfg, trial: dict[str, Any]) -> dict[str, Any]:
    spec = cfg.model.model_dump()
    spec["hidden_sizes"] = list(trial["hidden_sizes"])
    return spec


def baseline(x_train, y_train, x_test, y_test, prep) -> dict[str, float]:
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    from rayline.metrics import compute_metrics

    model = LogisticRegression(max_iter=2000).fit(x_train, y_train)
    proba = np.zeros((len(x_test), prep.num_outputs))
    proba[:, model.classes_] = model.predict_proba(x_test)
    return compute_metrics("classification", y_test, proba)


def gate(cfg, metrics: dict[str, float]) -> bool:
    return all(
        (t.min is None or metrics[name] >= t.min) and (t.max is None or metrics[name] <= t.max)
        for name, t in cfg.gate.thresholds.items()
    )


def log_and_register(
    work: Path, cfg, prep, spec: dict[str, Any], weights: str, example, params, metrics, passed
) -> str:
    """What rayline's register stage does in MLflow, with MLflow's own API."""
    import mlflow
    import torch
    from mlflow.models import infer_signature
    from mlflow.tracking import MlflowClient

    import rayline
    from rayline.inference import Predictor

    store = work / "mlflow"
    store.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{store / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    exp = mlflow.create_experiment(
        cfg.registry.experiment, artifact_location=(store / "mlartifacts").resolve().as_uri()
    )
    predictor = Predictor(prep, spec, torch.load(weights, map_location="cpu", weights_only=True))
    package = Path(rayline.__file__).parent
    with mlflow.start_run(experiment_id=exp), tempfile.TemporaryDirectory() as tmp:
        mlflow.log_params(params)
        mlflow.log_metrics(metrics)
        Path(tmp, "preprocessor.json").write_text(prep.to_json())
        Path(tmp, "model_spec.json").write_text(json.dumps(spec, indent=2))
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=str(package / "serving.py"),
            artifacts={
                "preprocessor": str(Path(tmp, "preprocessor.json")),
                "model_spec": str(Path(tmp, "model_spec.json")),
                "weights": weights,
            },
            code_paths=[str(package)],
            signature=infer_signature(example, predictor.predict_frame(example)),
            input_example=example,
            pip_requirements=[
                f"torch=={torch.__version__.split('+')[0]}",
                f"mlflow=={mlflow.__version__}",
            ],
        )
    version = mlflow.register_model(info.model_uri, cfg.registry.model_name).version
    if passed:
        MlflowClient(uri, uri).set_registered_model_alias(
            cfg.registry.model_name, cfg.registry.alias, version
        )
    return f"models:/{cfg.registry.model_name}/{version}"


# -- limit: one process, no Ray ------------------------------------------------------------------
def run_limit(work: Path, plan: list[dict[str, Any]], epochs: int) -> dict[str, Any]:
    import numpy as np
    import pandas as pd
    import pyarrow.parquet as pq
    import torch
    from torch import nn

    from rayline.data.ingest import resolve_sources
    from rayline.data.validate import REASON_COL, RULES_COL, check_file_schemas
    from rayline.inference import Predictor
    from rayline.metrics import compute_metrics
    from rayline.train.models import build_model

    clock = Clock()
    clock.mark("start")
    cfg = load_cfg(str(work / "data"), epochs)
    sources = resolve_sources(cfg.data.path)
    check_file_schemas(sources, cfg.schema_.columns)
    frames = [
        pq.read_table(
            p, columns=list(cfg.schema_.columns), filesystem=sources.filesystem
        ).to_pandas()
        for p in sources.files
    ]
    staged = validate_split(pd.concat(frames, ignore_index=True), cfg)
    check_bad_fraction(len(staged), int((staged[SPLIT] == "quarantine").sum()), cfg)
    staged = staged.drop(columns=[REASON_COL, RULES_COL])
    splits = {
        s: staged[staged[SPLIT] == s].reset_index(drop=True) for s in ("train", "val", "test")
    }
    clock.mark("data")

    num = cfg.numeric_features()
    train_df = splits["train"]
    prep = prep_from_stats(cfg, train_df[num].mean().to_dict(), train_df[num].std(ddof=0).to_dict())
    tensors = {
        s: (
            torch.from_numpy(prep.transform(df)),
            torch.from_numpy(prep.encode_target(df[prep.target])),
        )
        for s, df in splits.items()
    }
    clock.mark("features")
    (work / "profile.json").write_text(json.dumps(profile_frame(train_df), default=str))
    clock.mark("profile")

    torch.set_num_threads(1)
    tcfg = cfg.train
    best: dict[str, Any] = {"score": float("inf")}
    x, y = tensors["train"]
    xv, yv = tensors["val"]
    for i, trial in enumerate(plan):
        torch.manual_seed(tcfg.seed)
        np.random.seed(tcfg.seed)
        spec = model_spec(cfg, trial)
        model = build_model(spec, prep.output_dim, prep.num_outputs, prep=prep)
        opt = torch.optim.AdamW(model.parameters(), lr=trial["lr"], weight_decay=tcfg.weight_decay)
        loss_fn = nn.CrossEntropyLoss()
        gen = torch.Generator().manual_seed(tcfg.seed)
        for epoch in range(trial["epochs"]):
            model.train()
            order = torch.randperm(len(y), generator=gen)
            for start in range(0, len(y), tcfg.batch_size):
                idx = order[start : start + tcfg.batch_size]
                loss = loss_fn(model(x[idx]), y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            model.eval()
            with torch.no_grad():
                proba = prep.decode_output(model(xv).numpy())
            score = compute_metrics(prep.task, yv.numpy(), proba)[tcfg.metric]
            if score < best["score"]:
                state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                best = {
                    "score": score,
                    "trial": i,
                    "epoch": epoch + 1,
                    "spec": spec,
                    "state": state,
                }
    weights = str(work / "model.pt")
    torch.save(best["state"], weights)
    clock.mark("train")

    test = splits["test"]
    predictor = Predictor(prep, best["spec"], best["state"])
    metrics = compute_metrics(
        prep.task, prep.true_values(test[prep.target]), predictor.output(test)
    )
    base = baseline(*tensors["train"], *tensors["test"], prep)
    clock.mark("evaluate")

    passed = gate(cfg, metrics)
    example = test[prep.input_columns].head(5).reset_index(drop=True)
    params = {"lr": plan[best["trial"]]["lr"], "hidden_sizes": str(best["spec"]["hidden_sizes"])}
    uri = log_and_register(work, cfg, prep, best["spec"], weights, example, params, metrics, passed)
    clock.mark("register")
    return {
        "stages": clock.stages,
        "metrics": metrics,
        "baseline": base,
        "best": {"trial": best["trial"], "epoch": best["epoch"], "val_log_loss": best["score"]},
        "gate_passed": passed,
        "model_uri": uri,
        "rows": {s: len(df) for s, df in splits.items()},
    }


# -- peer: plain Ray -----------------------------------------------------------------------------
def peer_worker(config: dict[str, Any]) -> None:
    """The per-worker loop from Ray Train's docs, plus a validation pass each epoch."""
    import ray.train
    import ray.train.torch
    import torch
    from torch import nn

    from rayline.data.features import FittedPreprocessor
    from rayline.metrics import compute_metrics
    from rayline.train.models import build_model

    prep = FittedPreprocessor.from_json(config["prep"])
    torch.manual_seed(config["seed"])
    model = build_model(config["model"], prep.output_dim, prep.num_outputs, prep=prep)
    model = ray.train.torch.prepare_model(model)
    opt = torch.optim.AdamW(model.parameters(), lr=config["lr"], weight_decay=config["wd"])
    loss_fn = nn.CrossEntropyLoss()
    train_shard = ray.train.get_dataset_shard("train")
    val_shard = ray.train.get_dataset_shard("val")
    rank = ray.train.get_context().get_world_rank()
    for epoch in range(config["epochs"]):
        model.train()
        for batch in train_shard.iter_torch_batches(batch_size=config["batch_size"]):
            loss = loss_fn(model(batch["x"]), batch["y"])
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
        outs, ys = [], []
        with torch.no_grad():
            for batch in val_shard.iter_torch_batches(batch_size=config["batch_size"]):
                outs.append(model(batch["x"]).numpy())
                ys.append(batch["y"].numpy())
        import numpy as np

        val = compute_metrics(
            prep.task, np.concatenate(ys), prep.decode_output(np.concatenate(outs))
        )
        metrics = {"epoch": epoch + 1, **{f"val_{k}": v for k, v in val.items()}}
        with tempfile.TemporaryDirectory() as tmp:
            checkpoint = None
            if rank == 0:
                torch.save(
                    getattr(model, "module", model).state_dict(), os.path.join(tmp, "model.pt")
                )
                checkpoint = ray.train.Checkpoint.from_directory(tmp)
            ray.train.report(metrics, checkpoint=checkpoint)


def peer_trial(config: dict[str, Any], datasets: dict, base: dict[str, Any], storage: str) -> None:
    """Tune's function trainable (Train V2): one 2-worker TorchTrainer per trial."""
    import ray.train
    import ray.tune
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    trial = config["trial"]
    trainer = TorchTrainer(
        peer_worker,
        train_loop_config={
            **base,
            "lr": trial["lr"],
            "epochs": trial["epochs"],
            "model": trial["model"],
        },
        scaling_config=ray.train.ScalingConfig(num_workers=base["num_workers"]),
        datasets=datasets,
        # Every rank validates on the whole val split (rayline does the same).
        dataset_config=ray.train.DataConfig(datasets_to_split=["train"]),
        run_config=ray.train.RunConfig(
            name=f"train-{ray.tune.get_context().get_trial_id()}",
            storage_path=storage,
            callbacks=[TuneReportCallback()],
        ),
    )
    trainer.fit()


class PeerScorer:
    """``map_batches`` class for evaluation: a ``Predictor`` per actor."""

    def __init__(self, prep_json: str, spec: dict[str, Any], weights: str):
        import torch

        from rayline.data.features import FittedPreprocessor
        from rayline.inference import Predictor

        prep = FittedPreprocessor.from_json(prep_json)
        state = torch.load(weights, map_location="cpu", weights_only=True)
        self.predictor = Predictor(prep, spec, state)

    def __call__(self, batch):
        prep = self.predictor.prep
        return {"y": prep.true_values(batch[prep.target]), "proba": self.predictor.output(batch)}


def run_peer(work: Path, plan: list[dict[str, Any]], epochs: int) -> dict[str, Any]:
    import numpy as np
    import ray
    from ray import tune
    from ray.data.preprocessors import StandardScaler

    from rayline.data.features import BatchTransform
    from rayline.metrics import compute_metrics

    clock = Clock()
    ray.init(address="local", num_cpus=PEER_CPUS)
    clock.mark("start")
    cfg = load_cfg(str(work / "data"), epochs)
    staged = (
        ray.data.read_parquet(str(work / "data"), columns=list(cfg.schema_.columns))
        .map_batches(validate_split, fn_kwargs={"cfg": cfg}, batch_format="pandas")
        .materialize()
    )
    counts = staged.select_columns([SPLIT]).to_pandas()[SPLIT].value_counts().to_dict()
    rows = sum(counts.values())
    check_bad_fraction(rows, counts.get("quarantine", 0), cfg)

    def part(name: str):
        return staged.map_batches(lambda df: df[df[SPLIT] == name], batch_format="pandas")

    splits = {s: part(s) for s in ("train", "val", "test")}
    counts = {s: int(counts.get(s, 0)) for s in splits}
    clock.mark("data")

    num = cfg.numeric_features()
    scaler = StandardScaler(columns=num).fit(splits["train"])
    prep = prep_from_stats(
        cfg,
        {c: scaler.stats_[f"mean({c})"] for c in num},
        {c: scaler.stats_[f"std({c})"] for c in num},
    )
    features = {
        s: ds.map_batches(BatchTransform(prep), batch_format="pandas") for s, ds in splits.items()
    }
    clock.mark("features")
    train_df = splits["train"].to_pandas()
    (work / "profile.json").write_text(json.dumps(profile_frame(train_df), default=str))
    clock.mark("profile")

    tcfg = cfg.train
    base = {
        "prep": prep.to_json(),
        "seed": tcfg.seed,
        "wd": tcfg.weight_decay,
        "batch_size": tcfg.batch_size,
        "num_workers": tcfg.num_workers,
    }
    space = [{**t, "model": model_spec(cfg, t)} for t in plan]
    storage = str((work / "ray").resolve())
    tuner = tune.Tuner(
        tune.with_parameters(
            peer_trial,
            datasets={"train": features["train"], "val": features["val"]},
            base=base,
            storage=storage,
        ),
        param_space={"trial": tune.grid_search(space)},
        tune_config=tune.TuneConfig(metric=f"val_{tcfg.metric}", mode="min"),
        run_config=tune.RunConfig(name="peer", storage_path=storage),
    )
    grid = tuner.fit()
    best = grid.get_best_result(metric=f"val_{tcfg.metric}", mode="min", scope="all")
    df = best.metrics_dataframe
    row = df.loc[df[f"val_{tcfg.metric}"].idxmin()]
    weights = os.path.join(row["checkpoint_path"], "model.pt")
    spec = best.config["trial"]["model"]
    clock.mark("train")

    scored = splits["test"].map_batches(
        PeerScorer,
        fn_constructor_kwargs={"prep_json": prep.to_json(), "spec": spec, "weights": weights},
        concurrency=1,
        batch_format="pandas",
    )
    parts = list(scored.iter_batches(batch_format="numpy", batch_size=None))
    y = np.concatenate([p["y"] for p in parts])
    metrics = compute_metrics(prep.task, y, np.concatenate([p["proba"] for p in parts]))

    def arrays(name: str):
        got = list(features[name].iter_batches(batch_format="numpy", batch_size=None))
        return np.concatenate([b["x"] for b in got]), np.concatenate([b["y"] for b in got])

    base_metrics = baseline(*arrays("train"), *arrays("test"), prep)
    clock.mark("evaluate")

    passed = gate(cfg, metrics)
    example = splits["test"].select_columns(prep.input_columns).take_batch(5, batch_format="pandas")
    params = {"lr": best.config["trial"]["lr"], "hidden_sizes": str(spec["hidden_sizes"])}
    uri = log_and_register(
        work, cfg, prep, spec, weights, example.reset_index(drop=True), params, metrics, passed
    )
    clock.mark("register")
    ray.shutdown()
    clock.mark("teardown")
    return {
        "stages": clock.stages,
        "metrics": metrics,
        "baseline": base_metrics,
        "best": {
            "epoch": int(row["epoch"]),
            f"val_{tcfg.metric}": float(row[f"val_{tcfg.metric}"]),
        },
        "gate_passed": passed,
        "model_uri": uri,
        "rows": counts,
    }


# -- the parent: rows as subprocesses ------------------------------------------------------------
def timed(cmd: list[str], log: Path, timeout: float, env: dict | None = None) -> tuple[float, int]:
    """Run ``cmd`` with its output in ``log``; return (wall seconds, exit code)."""
    started = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.run(
            cmd, stdout=out, stderr=subprocess.STDOUT, timeout=timeout, cwd=REPO, env=env
        )
    return time.perf_counter() - started, proc.returncode


def stage_lines(text: str) -> list[tuple[str, float]]:
    found = []
    for line in text.splitlines():
        m = STAGE_LINE.match(line.strip())
        if m:
            found.append((m.group(1), float(m.group(2))))
    return found


def seeded_plan(cfg, epochs: int, seed: int = 0) -> list[dict[str, Any]]:
    """The demo search space drawn with a fixed seed (used when rayline's trials are unknown)."""
    import math

    rng = random.Random(seed)
    space = cfg.tune.search_space
    lr, hidden = space["train.lr"], space["model.hidden_sizes"]
    return [
        {
            "lr": math.exp(rng.uniform(math.log(lr.low), math.log(lr.high))),
            "hidden_sizes": rng.choice(hidden.values),
            "epochs": epochs,
        }
        for _ in range(cfg.tune.num_samples)
    ]


def rayline_plan(storage: Path) -> list[dict[str, Any]] | None:
    """The trials rayline ran: their sampled lr and hidden sizes and the epochs each ran."""
    found = sorted(storage.rglob("pipeline_result.json"))
    if not found:
        return None
    result = json.loads(found[-1].read_text())
    plan = [
        {
            "lr": float(t["params"]["train.lr"]),
            "hidden_sizes": _as_list(t["params"]["model.hidden_sizes"]),
            "epochs": int(t["epochs"]),
        }
        for t in result.get("trials") or []
        if t.get("epochs")
    ]
    return plan or None


def _as_list(v: Any) -> list[int]:
    return [int(h) for h in (json.loads(v) if isinstance(v, str) else v)]


def child(args: argparse.Namespace) -> int:
    work = Path(args.work)
    plan = json.loads(Path(args.plan).read_text())
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    logging.basicConfig(level=logging.WARNING)
    fn = run_limit if args.row == "limit" else run_peer
    out = fn(work, plan, args.epochs)
    Path(args.result).write_text(json.dumps(out, default=float))
    return 0


def _cell(v: float | None, spec: str = ".1f") -> str:
    return "-" if v is None else format(v, spec)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="2 epochs in every row")
    ap.add_argument("--epochs", type=int, help="train.epochs of every row (default: the demo's)")
    ap.add_argument("--no-peer", action="store_true", help="skip the plain-Ray row")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds per row")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    ap.add_argument("--row", choices=["limit", "peer"], help=argparse.SUPPRESS)
    ap.add_argument("--work", help=argparse.SUPPRESS)
    ap.add_argument("--plan", help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.row:
        return child(args)

    import pyarrow.parquet as pq

    from rayline.config import load_config
    from rayline.demo import demo_frame, write_demo_dataset

    demo = load_config(str(CONFIG), [])
    epochs = args.epochs or (2 if args.quick else demo.train.epochs)
    work = Path(tempfile.mkdtemp(prefix="rayline-overhead-"))
    write_demo_dataset(str(work / "data"))
    (work / "small").mkdir()
    pq.write_table(
        __import__("pyarrow").Table.from_pandas(
            demo_frame().head(VALIDATE_ROWS), preserve_index=False
        ),
        work / "small" / "part-000.parquet",
    )
    load: dict[str, float] = {"start": os.getloadavg()[0]}
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}

    # Warm-up: the libraries' files into the page cache once, for every row alike, and a
    # local Ray started and stopped (its GCS and raylet binaries, its dashboard's modules):
    # otherwise rayline, the first row to start Ray, pays for that cold cache alone (its
    # setup took 11.9 s against 6-8 s warm after a warm-up import of 9.6 s).
    warm_s, _ = timed(
        [
            sys.executable,
            "-c",
            "import ray.train.torch, ray.tune, ray.data, mlflow, sklearn, rayline.pipeline; "
            "ray.init(address='local', num_cpus=2, log_to_driver=False); ray.shutdown()",
        ],
        work / "warmup.log",
        args.timeout,
        env,
    )

    rows: dict[str, dict[str, Any]] = {}
    # rayline first: its sweep decides the trials (and ASHA their epochs) the others train.
    overrides = [f"data.path={work / 'data'}", f"runtime.storage_path={work / 'rayline'}"]
    overrides += ["runtime.run_name=bench"]
    if epochs != demo.train.epochs:
        overrides.append(f"train.epochs={epochs}")
    wall, rc = timed(
        [RAYLINE, "run", str(CONFIG), *overrides], work / "rayline.log", args.timeout, env
    )
    load["rayline"] = os.getloadavg()[0]
    lines = stage_lines((work / "rayline.log").read_text())
    rows["rayline"] = {"wall_s": wall, "rc": rc, "stages": dict(lines)}
    plan = rayline_plan(work / "rayline")
    plan_from = "rayline's trials"
    if rc != 0 or plan is None:
        plan, plan_from = seeded_plan(demo, epochs), "seeded draws (rayline's trials unknown)"
    (work / "plan.json").write_text(json.dumps(plan))

    for name in ("limit", *(() if args.no_peer else ("peer",))):
        # Each row works under work/<name> (its own MLflow store and outputs), on the same data.
        result, row_dir = work / f"{name}.json", work / name
        row_dir.mkdir()
        (row_dir / "data").symlink_to(work / "data")
        cmd = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--row",
            name,
            "--epochs",
            str(epochs),
        ]
        cmd += ["--work", str(row_dir), "--plan", str(work / "plan.json"), "--result", str(result)]
        wall, rc = timed(cmd, work / f"{name}.log", args.timeout, env)
        load[name] = os.getloadavg()[0]
        rows[name] = {
            "wall_s": wall,
            "rc": rc,
            **(json.loads(result.read_text()) if result.exists() else {}),
        }

    validate_s, validate_rc = timed(
        [
            RAYLINE,
            "validate",
            str(CONFIG),
            f"data.path={work / 'small'}",
            f"runtime.storage_path={work / 'validate'}",
        ],
        work / "validate.log",
        args.timeout,
        env,
    )
    validate_stages = dict(stage_lines((work / "validate.log").read_text()))
    load["end"] = os.getloadavg()[0]

    # -- the table -------------------------------------------------------------------------------
    def columns(name: str) -> dict[str, float]:
        row = rows.get(name) or {}
        cols = dict.fromkeys(COLUMNS, 0.0)
        for stage, secs in (row.get("stages") or {}).items():
            key = RAYLINE_COLUMNS.get(stage, stage) if name == "rayline" else stage
            if key in cols:
                cols[key] += secs
        cols["other"] = row.get("wall_s", 0.0) - sum(cols.values())
        return cols

    names = [n for n in ("limit", "peer", "rayline") if n in rows]
    limit_s = rows["limit"]["wall_s"] if rows.get("limit", {}).get("rc") == 0 else None
    fixed = {
        n: rows[n]["wall_s"] - limit_s if limit_s is not None and rows[n]["rc"] == 0 else None
        for n in names
    }
    print()
    print(
        f"pipeline_overhead: demo data ({sum((rows.get('limit') or {}).get('rows', {}).values()) or 569} rows), "
        f"{len(plan)} trials x {[t['epochs'] for t in plan]} epochs ({plan_from}), "
        f"2-worker DDP in peer/rayline, {os.cpu_count()} cores"
    )
    head = "".join(f"{c:>10}" for c in (*COLUMNS, "other", "wall s", "fixed s"))
    print(f"{'row':<9}{head}  rc")
    for n in names:
        cols = columns(n)
        cells = "".join(f"{cols[c]:>10.1f}" for c in (*COLUMNS, "other"))
        print(f"{n:<9}{cells}{rows[n]['wall_s']:>10.1f}{_cell(fixed[n]):>10}  {rows[n]['rc']}")
    print(
        "  (start: imports + Ray start (rayline: its setup stage, Ray + MLflow); other: the rest of "
        "the process wall -- interpreter start and imports for rayline, MLflow run bookkeeping, "
        "shutdown; register includes the gate)"
    )
    print(
        f"rayline stages: {', '.join(f'{k} {v:.1f}s' for k, v in rows['rayline']['stages'].items())}"
    )
    for n in ("limit", "peer"):
        if n in rows and rows[n].get("metrics"):
            m = rows[n]["metrics"]
            print(
                f"{n} test: accuracy {m['accuracy']:.3f} roc_auc {m['roc_auc']:.3f} "
                f"log_loss {m['log_loss']:.3f} (best {rows[n]['best']}); gate "
                f"{'passed' if rows[n]['gate_passed'] else 'rejected'}"
            )
    print(
        f"rayline validate ({VALIDATE_ROWS} rows, Ray's start included): {validate_s:.1f} s, rc {validate_rc} "
        f"({', '.join(f'{k} {v:.1f}s' for k, v in validate_stages.items())})"
    )
    peer_fixed = fixed.get("peer")
    rl_fixed = fixed.get("rayline")
    ratio = rl_fixed / peer_fixed if rl_fixed is not None and peer_fixed else None
    goals = {
        "fixed_overhead_le_25s": rl_fixed is not None and rl_fixed <= GOAL_FIXED_S,
        "fixed_overhead_le_half_peer": ratio is not None and ratio <= GOAL_PEER_RATIO,
        "validate_le_8s": validate_rc == 0 and validate_s <= GOAL_VALIDATE_S,
    }
    print(
        f"goals (2 cores): rayline fixed overhead {_cell(rl_fixed)} s (goal <= {GOAL_FIXED_S:.0f} s: "
        f"{'met' if goals['fixed_overhead_le_25s'] else 'NOT met'}); x peer's {_cell(peer_fixed)} s = "
        f"{_cell(ratio, '.2f')} (goal <= {GOAL_PEER_RATIO}: {'met' if goals['fixed_overhead_le_half_peer'] else 'NOT met'}); "
        f"validate {validate_s:.1f} s (goal <= {GOAL_VALIDATE_S:.0f} s: {'met' if goals['validate_le_8s'] else 'NOT met'})"
    )
    print(
        f"1-min load average: {load['start']:.1f} at start, "
        + ", ".join(f"{load[k]:.1f} after {k}" for k in ("rayline", "limit", "peer") if k in load)
        + f", {load['end']:.1f} at end ({os.cpu_count()} cores); warm-up (imports, a Ray start) {warm_s:.1f} s; "
        f"logs in {work}" + ("" if args.keep else " (removed)")
    )
    out = {
        "benchmark": "pipeline_overhead",
        "rayline_s": round(rows["rayline"]["wall_s"], 2),
        "peer_s": round(rows["peer"]["wall_s"], 2) if "peer" in rows else None,
        "limit_s": round(limit_s, 2) if limit_s is not None else None,
        "fixed_overhead_s": round(rl_fixed, 2) if rl_fixed is not None else None,
        "peer_fixed_overhead_s": round(peer_fixed, 2) if peer_fixed is not None else None,
        "fixed_overhead_ratio": round(ratio, 3) if ratio is not None else None,
        "validate_s": round(validate_s, 2),
        "loadavg_1m": round(max(load.values()), 2),
        "loadavg_1m_by_row": {k: round(v, 2) for k, v in load.items()},
        "stages_s": {n: {k: round(v, 2) for k, v in columns(n).items()} for n in names},
        "rayline_stages_s": rows["rayline"]["stages"],
        "validate_stages_s": validate_stages,
        "rc": {**{n: rows[n]["rc"] for n in names}, "validate": validate_rc},
        "goals": goals,
        "trials": plan,
        "plan_from": plan_from,
        "epochs": epochs,
        "quick": bool(args.quick),
        "cores": os.cpu_count(),
    }
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    sys.stdout.flush()
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
