"""One pipeline run: the stages in order, each handing a small typed result to the next.

ingest -> validate + split (staged Parquet) -> features -> train or tune -> evaluate -> gate
-> register. One MLflow parent run spans the whole run (ending FAILED if a stage raises);
the run directory under ``runtime.storage_path/runs/<run_name>`` holds the staged data,
checkpoints and the JSON reports, and the same reports go to MLflow as artifacts.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Any

from rayline.config import PipelineConfig
from rayline.data import features, ingest, stage, validate
from rayline.errors import ConfigError, DataValidationError, Interrupted
from rayline.gate import GateDecision, decide
from rayline.lineage import git_info, package_versions
from rayline.runtime import check_training_fits, init_ray, resolve_storage

log = logging.getLogger(__name__)


@dataclass
class StageTiming:
    """Wall time and a one-line summary of one stage."""

    name: str
    seconds: float
    summary: str = ""


@dataclass
class PipelineResult:
    """What a run produced; :func:`format_summary` renders it for people."""

    run_name: str
    run_dir: str
    config_hash: str
    tracking_uri: str | None = None
    mlflow_run_id: str | None = None
    data_report: dict[str, Any] | None = None
    train: dict[str, Any] | None = None
    evaluation: dict[str, Any] | None = None
    gate: dict[str, Any] | None = None
    model_name: str | None = None
    model_version: str | None = None
    model_uri: str | None = None
    champion_uri: str | None = None
    promoted: bool = False
    stages: list[StageTiming] = field(default_factory=list)
    trials: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


class _Stages:
    """Times each stage and logs its start and end."""

    def __init__(self, result: PipelineResult, on_stage: Callable[[StageTiming], None] | None):
        self.result = result
        self.on_stage = on_stage

    @contextmanager
    def __call__(self, name: str) -> Iterator[StageTiming]:
        timing = StageTiming(name, 0.0)
        log.info("stage %s: started", name)
        start = time.perf_counter()
        yield timing
        timing.seconds = time.perf_counter() - start
        self.result.stages.append(timing)
        if self.on_stage:
            self.on_stage(timing)
        else:
            log.info("stage %s: done in %.1fs %s", name, timing.seconds, timing.summary)


def default_run_name(cfg: PipelineConfig) -> str:
    """``<name>-<UTC timestamp>`` unless the config names the run."""
    return cfg.runtime.run_name or f"{cfg.name}-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}"


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=str))


def ingest_and_validate(cfg: PipelineConfig, run_dir: str, stages: _Stages) -> stage.DataReport:
    """Resolve inputs, check file schemas, then validate + split every row into staged Parquet."""
    with stages("ingest") as t:
        sources = ingest.resolve_sources(cfg.data.path, cfg.data.format, cfg.data.endpoint_url)
        fingerprint = ingest.fingerprint(sources)
        footer_rows = validate.check_file_schemas(sources, cfg.schema_.columns)
        t.summary = f"{len(sources.files)} {sources.format} file(s), fingerprint {fingerprint[:12]}"
    with stages("validate+split") as t:
        report = stage.stage(cfg, sources, fingerprint, run_dir, footer_rows)
        t.summary = (
            f"rows_in={report.rows_in} ok={report.rows_ok} quarantined={report.rows_quarantined} "
            + " ".join(f"{k}={v}" for k, v in report.splits.items())
        )
    return report


def run_validation(
    cfg: PipelineConfig, on_stage: Callable[[StageTiming], None] | None = None
) -> stage.DataReport:
    """Ingest and validate only (``rayline validate``): the data report, nothing trained."""
    init_ray(cfg.runtime)
    run_name = default_run_name(cfg)
    run_dir = f"{resolve_storage(cfg.runtime.storage_path)}/validate/{run_name}"
    result = PipelineResult(run_name=run_name, run_dir=run_dir, config_hash=cfg.fingerprint())
    return ingest_and_validate(cfg, run_dir, _Stages(result, on_stage))


def run_pipeline(
    cfg: PipelineConfig, on_stage: Callable[[StageTiming], None] | None = None
) -> PipelineResult:
    """Run every stage; return what was produced. The champion moves only if the gate passes.

    Raises:
        RaylineError: a subclass naming what failed (config, data, cluster, training, MLflow).
    """
    from rayline import evaluate as evaluate_mod
    from rayline import tune as tune_mod
    from rayline.registry import Registry, flatten, load_pyfunc
    from rayline.train import trainer

    storage = resolve_storage(cfg.runtime.storage_path)
    run_name = default_run_name(cfg)
    run_dir = f"{storage}/runs/{run_name}"
    result = PipelineResult(run_name=run_name, run_dir=run_dir, config_hash=cfg.fingerprint())
    stages = _Stages(result, on_stage)
    # Reports are written next to the run; with remote storage a local scratch copy is kept
    # (the authoritative copies go to MLflow as artifacts).
    local_dir = (
        Path(run_dir)
        if "://" not in run_dir
        else Path(tempfile.mkdtemp(prefix=f"rayline-{run_name}-"))
    )

    with stages("setup") as t:
        _claim_run_dir(run_dir, result.config_hash, run_name)
        resources = init_ray(cfg.runtime)
        local_ray = not (cfg.runtime.address or os.environ.get("RAY_ADDRESS"))
        try:
            if cfg.tune.enabled:
                check_training_fits(
                    tune_mod.largest_trial(cfg), resources, trial_cpus=tune_mod.TRIAL_CPUS
                )
            else:
                check_training_fits(cfg.train, resources)
        except Exception:
            if local_ray:
                raise
            # A remote cluster may autoscale to fit; Ray will wait for the nodes.
            log.warning(
                "training does not fit the cluster's current nodes; waiting for autoscaling"
            )
        registry = Registry(cfg.registry, storage)
        registry.connect()
        result.tracking_uri = registry.tracking_uri
        t.summary = f"Ray {int(resources.get('CPU', 0))} CPUs/{int(resources.get('GPU', 0))} GPUs, MLflow {registry.tracking_uri}"

    lineage: dict[str, Any] = {
        "run_name": run_name,
        "config_hash": result.config_hash,
        "code": git_info(),
        "packages": package_versions(),
        "started_at": datetime.now(timezone.utc).isoformat(),
        "ray_job_id": _ray_job_id(),
    }
    tags = {
        "rayline.config_hash": result.config_hash,
        "rayline.pipeline": cfg.name,
        "rayline.git_commit": str(lineage["code"]["commit"]),
    }
    with registry.run(
        run_name, tags, resume_run_id=_read_marker(run_dir, "mlflow_run_id")
    ) as run_id:
        result.mlflow_run_id = run_id
        _write_marker(run_dir, "mlflow_run_id", run_id)
        registry.log_params(flatten(cfg.to_dict()))
        registry.log_json(cfg.to_dict(), "config/resolved_config.json")

        try:
            report = ingest_and_validate(cfg, run_dir, stages)
        except DataValidationError as exc:
            if getattr(exc, "report", None) is not None:
                registry.log_json(exc.report.to_dict(), "reports/data_report.json")
            raise
        result.data_report = report.to_dict()
        lineage["data_fingerprint"] = report.fingerprint
        lineage["data_files"] = report.files
        registry.log_json(report.to_dict(), "reports/data_report.json")
        registry.log_metrics(
            {
                "rows_in": report.rows_in,
                "rows_ok": report.rows_ok,
                "rows_quarantined": report.rows_quarantined,
                **{f"rows_{k}": v for k, v in report.splits.items()},
            },
            prefix="data.",
        )

        with stages("features") as t:
            train_ds = stage.read_split(report.staged_path, "train")
            prep = features.fit_from_config(cfg, train_ds, _all_ok(report.staged_path))
            local_dir.mkdir(parents=True, exist_ok=True)
            prep_path = local_dir / "preprocessor.json"
            prep.save(prep_path)
            registry.log_file(str(prep_path), "preprocessor")
            t.summary = f"{len(prep.input_columns)} input columns -> {prep.output_dim} features"

        drift_report = None
        if cfg.drift.enabled:
            with stages("profile") as t:
                drift_report = _profile_and_drift(cfg, report, registry, local_dir)
                if drift_report is not None:
                    result.data_report["drift"] = drift_report.to_dict()
                    registry.log_json(result.data_report, "reports/data_report.json")
                    t.summary = f"drift vs {drift_report.reference}: {drift_report.status}" + (
                        f" ({', '.join(drift_report.failed)})" if drift_report.failed else ""
                    )
                else:
                    t.summary = "train split profiled (no champion profile to compare with)"

        if cfg.tune.enabled:
            with stages("tune") as t:
                from rayline.sweep_progress import SweepProgress

                progress = SweepProgress(
                    tracking_uri=registry.tracking_uri,
                    experiment_id=registry.experiment_id,
                    parent_run_id=run_id,
                    metric=cfg.metric,
                    mode=cfg.metric_mode,
                    epochs=cfg.train.epochs,
                    total=tune_mod.num_trials(cfg),
                    decode=partial(tune_mod.decode_sampled, encoded=tune_mod.encoded_keys(cfg)),
                )
                try:
                    best, trials = tune_mod.run_tune(
                        cfg,
                        prep,
                        report.staged_path,
                        f"{run_dir}/tune",
                        "tune",
                        resources.get("CPU", 1),
                        report.splits["train"],
                        callbacks=[progress],
                        cluster_gpus=resources.get("GPU", 0),
                    )
                except Interrupted as exc:
                    raise Interrupted(
                        f"run '{run_name}': {exc} (runtime.run_name={run_name})"
                    ) from None
                registry.finish_trials(trials, run_id)
                result.trials = [tune_mod.trial_row(tr, cfg) for tr in trials]
                failed = sum(1 for tr in trials if tr.error)
                t.summary = (
                    f"{len(trials)} trials ({failed} failed), best {best.trial_id}: "
                    f"val_{cfg.metric}={best.metrics.get('val_metric', float('nan')):.4f}"
                )
        else:
            with stages("train") as t:
                best = trainer.fit(
                    cfg,
                    prep,
                    report.staged_path,
                    f"{run_dir}/train",
                    "train",
                    report.splits["train"],
                )
                t.summary = f"best epoch {best.metrics.get('epoch')}: val_{cfg.metric}={best.metrics.get('val_metric', float('nan')):.4f}"
        registry.log_history(best.history)
        registry.log_step_history(best.step_history)
        if cfg.tune.enabled:
            # The winning trial's sampled values, beside the config's starting point.
            chosen = flatten(best.params)
            registry.log_params({f"best.{k}": chosen[k] for k in cfg.tune.search_space})
        shutil.rmtree(local_dir / "best_checkpoint", ignore_errors=True)
        best_dir = trainer.fetch_checkpoint(
            best.checkpoint_path,
            f"{run_dir}/tune" if cfg.tune.enabled else f"{run_dir}/train",
            str(local_dir / "best_checkpoint"),
        )
        result.train = {
            "checkpoint_path": best.checkpoint_path,
            "metrics": best.metrics,
            "params": best.params,
            "trial_id": best.trial_id,
        }

        with stages("evaluate") as t:
            rows, metrics = evaluate_mod.score_checkpoint(
                report.staged_path, prep, best.params["model"], best_dir, cfg.evaluate.batch_size
            )
            eval_report = evaluate_mod.EvalReport(rows=rows, metrics=metrics)
            champion = registry.champion(cfg.model_name)
            if champion:
                eval_report.champion_uri = champion[1]
                loader = partial(load_pyfunc, tracking_uri=registry.tracking_uri)
                eval_report.extra["champion_version"] = champion[0]
                try:
                    eval_report.champion_metrics = evaluate_mod.score_model_uri(
                        report.staged_path, prep, loader, champion[1], cfg.evaluate.batch_size
                    )
                except Exception as exc:  # e.g. the champion reads columns this data lacks
                    eval_report.extra["champion_error"] = f"{type(exc).__name__}: {exc}"[:1000]
                    log.warning("the champion could not be scored: %s", exc)
            if cfg.evaluate.baseline:
                eval_report.baseline = evaluate_mod.baseline_metrics(report.staged_path, prep)
            registry.log_metrics(metrics, prefix="test.")
            if eval_report.champion_metrics:
                registry.log_metrics(eval_report.champion_metrics, prefix="champion.test.")
            if eval_report.baseline:
                registry.log_metrics(eval_report.baseline["metrics"], prefix="baseline.test.")
            registry.log_json(eval_report.to_dict(), "reports/evaluation_report.json")
            result.evaluation = eval_report.to_dict()
            t.summary = f"{rows} test rows, " + ", ".join(
                f"{k}={v:.4f}" for k, v in metrics.items()
            )

        with stages("gate") as t:
            decision: GateDecision = decide(
                metrics, eval_report.champion_metrics, cfg.gate, cfg.compare_metric
            )
            if "champion_error" in eval_report.extra:
                # Without a comparison on the same split the challenger has not proven itself.
                decision = dataclasses.replace(
                    decision,
                    passed=False,
                    reasons=[
                        *decision.reasons,
                        f"champion {champion[1]} could not be scored on this test split "
                        f"({eval_report.extra['champion_error'][:200]}): FAIL; promote by hand "
                        "if the change of inputs is intended",
                    ],
                )
            if drift_report is not None and drift_report.reasons():
                # Drift the config marks `fail` rejects the challenger; `warn` is recorded.
                decision = dataclasses.replace(
                    decision,
                    passed=decision.passed and not drift_report.failed,
                    reasons=[*decision.reasons, *drift_report.reasons()],
                )
            result.gate = decision.to_dict()
            registry.log_json(decision.to_dict(), "reports/gate_decision.json")
            mlflow_tags = {"rayline.gate": "passed" if decision.passed else "rejected"}
            t.summary = "PASSED" if decision.passed else "REJECTED"

        with stages("register") as t:
            lineage["stages"] = [asdict(s) for s in result.stages]
            lineage["finished_at"] = datetime.now(timezone.utc).isoformat()
            registry.log_json(lineage, "lineage.json")
            _write_json(local_dir / "lineage.json", lineage)
            example = _input_example(report.staged_path, prep)
            import torch

            from rayline.inference import Predictor

            state = torch.load(
                os.path.join(best_dir, "model.pt"), map_location="cpu", weights_only=True
            )
            predictor = Predictor(prep, best.params["model"], state)
            model_uri = registry.log_model(
                prep.to_json(),
                best.params["model"],
                os.path.join(best_dir, "model.pt"),
                example,
                predictor.predict_frame(example),
            )
            version_tags = {
                "rayline.run_name": run_name,
                "rayline.mlflow_run_id": run_id,
                "rayline.config_hash": result.config_hash,
                "rayline.data_fingerprint": report.fingerprint,
                "rayline.git_commit": str(lineage["code"]["commit"]),
                "rayline.git_dirty": str(lineage["code"]["dirty"]),
                "rayline.test_metrics": json.dumps(metrics),
                "rayline.profile": "profile/profile.json" if cfg.drift.enabled else "",
                **mlflow_tags,
            }
            version = registry.register(model_uri, cfg.model_name, version_tags)
            result.model_name, result.model_version = cfg.model_name, version
            result.model_uri = f"models:/{cfg.model_name}/{version}"
            if decision.passed:
                registry.promote(cfg.model_name, version)
                result.promoted = True
            current = registry.champion(cfg.model_name)
            result.champion_uri = current[1] if current else None
            t.summary = f"{cfg.model_name} v{version}" + (
                f" -> @{cfg.registry.alias}"
                if decision.passed
                else f" (@{cfg.registry.alias} unchanged)"
            )
        _write_json(local_dir / "pipeline_result.json", result.to_dict())
        registry.log_json(result.to_dict(), "reports/pipeline_result.json")
    return result


def _profile_and_drift(cfg: PipelineConfig, report: stage.DataReport, registry, local_dir: Path):
    """Profile the train split; compare with the champion's training profile if it has one.

    The profile and an HTML rendering go to the run's artifacts (``profile/``); the model
    version registered later points at them (tag ``rayline.profile``). Returns the drift
    report, or None when there is no champion profile to compare with.
    """
    from rayline.data import profile as prof

    types = {c: s.type for c, s in cfg.schema_.columns.items()}
    current = prof.compute_profile(stage.read_split(report.staged_path, "train"), types)
    local_dir.mkdir(parents=True, exist_ok=True)
    (local_dir / "profile.json").write_text(current.to_json())
    registry.log_file(str(local_dir / "profile.json"), "profile")
    drift = None
    champion = registry.champion(cfg.model_name)
    reference = None
    if champion:
        text = registry.version_artifact_text(cfg.model_name, champion[0], "profile/profile.json")
        if text:
            reference = prof.Profile.from_json(text)
            drift = prof.compare(current, reference, cfg.drift, f"{cfg.model_name} v{champion[0]}")
            registry.log_json(drift.to_dict(), "reports/drift.json")
            registry.log_metrics(
                {f"psi.{k}": v.psi for k, v in drift.columns.items() if v.psi is not None},
                prefix="drift.",
            )
    page = prof.render_html(current, reference, drift, f"{cfg.name}: train split profile")
    (local_dir / "data_profile.html").write_text(page)
    registry.log_file(str(local_dir / "data_profile.html"), "profile")
    return drift


def _read_marker(run_dir: str, name: str) -> str | None:
    """A small text file of the run directory (None when absent or remote-unreadable)."""
    import pyarrow.fs as pafs

    try:
        fs, root = pafs.FileSystem.from_uri(
            run_dir if "://" in run_dir else os.path.abspath(run_dir)
        )
        if fs.get_file_info(f"{root}/{name}").type != pafs.FileType.File:
            return None
        with fs.open_input_stream(f"{root}/{name}") as f:
            return f.read().decode().strip() or None
    except OSError:
        return None


def _write_marker(run_dir: str, name: str, value: str) -> None:
    import pyarrow.fs as pafs

    fs, root = pafs.FileSystem.from_uri(run_dir if "://" in run_dir else os.path.abspath(run_dir))
    fs.create_dir(root, recursive=True)
    with fs.open_output_stream(f"{root}/{name}") as f:
        f.write(value.encode())


def _claim_run_dir(run_dir: str, config_hash: str, run_name: str) -> None:
    """Mark the run directory with the config hash; refuse to resume a run under another config.

    Rerunning with the same ``runtime.run_name`` resumes: staged data is reused and Ray
    Train restores its latest checkpoint. That is only sound for the same config.
    """
    import pyarrow.fs as pafs

    fs, root = pafs.FileSystem.from_uri(run_dir if "://" in run_dir else os.path.abspath(run_dir))
    marker = f"{root}/config_hash"
    existing = None
    if fs.get_file_info(marker).type == pafs.FileType.File:
        with fs.open_input_stream(marker) as f:
            existing = f.read().decode().strip()
    if existing is not None and existing != config_hash:
        raise ConfigError(
            [
                f"runtime.run_name: run '{run_name}' already exists at {run_dir} with a "
                "different config, and a run resumes only under the config it started with; "
                "choose a new runtime.run_name (or leave it unset for a timestamped one)"
            ]
        )
    fs.create_dir(root, recursive=True)
    with fs.open_output_stream(marker) as f:
        f.write(config_hash.encode())


def _all_ok(staged_path: str):
    parts = [stage.read_split(staged_path, s) for s in ("train", "val", "test")]
    return parts[0].union(*parts[1:]) if len(parts) > 1 else parts[0]


def _input_example(staged_path: str, prep: features.FittedPreprocessor, rows: int = 5):
    """A few raw test rows (input columns only) for the model's signature and example."""
    batch = stage.read_split(staged_path, "test", columns=prep.input_columns).take_batch(
        rows, batch_format="pandas"
    )
    return batch.reset_index(drop=True)


def _ray_job_id() -> str | None:
    try:
        import ray

        return ray.get_runtime_context().get_job_id()
    except Exception:  # not inside Ray: lineage records null
        return None


def format_summary(result: PipelineResult, alias: str = "champion") -> str:
    """The end-of-run summary a person reads: stages, metrics, gate, model URI, UI hint."""
    lines = [f"rayline run {result.run_name}", ""]
    lines.append("stages:")
    for s in result.stages:
        lines.append(f"  {s.name:<15} {s.seconds:7.1f}s  {s.summary}")
    total = sum(s.seconds for s in result.stages)
    lines.append(f"  {'total':<15} {total:7.1f}s")
    if result.data_report:
        d = result.data_report
        lines += [
            "",
            f"data: {d['rows_in']} rows in = {d['rows_ok']} ok + {d['rows_quarantined']} quarantined; "
            + ", ".join(f"{k} {v}" for k, v in d["splits"].items()),
        ]
        if d.get("quarantine_path"):
            lines.append(f"  quarantine: {d['quarantine_path']}")
    if result.evaluation:
        ev = result.evaluation
        lines += ["", f"test metrics ({ev['rows']} rows):"]
        names = list(ev["metrics"])
        header = f"  {'':<28}" + "".join(f"{n:>10}" for n in names)
        lines.append(header)
        lines.append(f"  {'model':<28}" + "".join(f"{ev['metrics'][n]:>10.4f}" for n in names))
        if ev.get("champion_metrics"):
            lines.append(
                f"  {'champion ' + str(ev.get('extra', {}).get('champion_version', '')):<28}"
                + "".join(f"{ev['champion_metrics'].get(n, float('nan')):>10.4f}" for n in names)
            )
        if ev.get("baseline"):
            b = ev["baseline"]
            lines.append(
                f"  {b['model'].rsplit('.', 1)[-1] + ' baseline':<28}"
                + "".join(f"{b['metrics'].get(n, float('nan')):>10.4f}" for n in names)
            )
    if result.gate:
        g = result.gate
        lines += ["", f"gate: {'PASSED' if g['passed'] else 'REJECTED'}"]
        lines += [f"  - {r}" for r in g["reasons"]]
    if result.model_version:
        lines += ["", f"registered: {result.model_uri}"]
        if result.promoted:
            lines.append(
                f"champion:   models:/{result.model_name}@{alias} (now version {result.model_version})"
            )
        elif result.champion_uri:
            lines.append(f"champion:   {result.champion_uri} (unchanged)")
        else:
            lines.append("champion:   none (no version has passed the gate yet)")
    if result.tracking_uri:
        lines += ["", "view runs and models in the MLflow UI:"]
        mlflow_bin = Path(sys.executable).parent / "mlflow"
        lines.append(
            f"  {mlflow_bin} ui --backend-store-uri {result.tracking_uri}"
            if not result.tracking_uri.startswith("http")
            else f"  open {result.tracking_uri}"
        )
    lines.append(f"run directory: {result.run_dir}")
    if result.trials:
        lines += ["", f"trials ({len(result.trials)}):"]
        keys = sorted({k for t in result.trials for k in t["params"]})
        head = f"  {'trial':<14}" + "".join(f"{k:>22}" for k in keys)
        lines.append(head + f"{'best val':>12}{'epochs':>8}  ended")
        for t in result.trials:
            vals = "".join(f"{_cell(t['params'].get(k)):>22}" for k in keys)
            best = f"{t['best']:.4f}" if isinstance(t["best"], float) else "-"
            mark = " *" if t["trial_id"] == (result.train or {}).get("trial_id") else ""
            lines.append(
                f"  {t['trial_id']:<14}{vals}{best:>12}{t['epochs']:>8}  {t['outcome']}{mark}"
            )
        lines.append("  (* the trial evaluated and registered)")
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    text = json.dumps(value) if not isinstance(value, str) else value
    return text if len(text) <= 20 else text[:19] + "~"
