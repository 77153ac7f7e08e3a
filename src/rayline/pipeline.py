"""One pipeline run: the loop over the stage list (:data:`rayline.stages.PIPELINE`).

Each stage is a unit (:mod:`rayline.stages`) that declares what it reads; this module runs
them in order, hands each the results of the stages it needs, and decides per stage
whether to compute it or reuse a result:

- a cacheable stage whose key (:func:`rayline.cache.stage_key`) matches a complete entry
  in the shared cache (``<storage>/cache``) or in this run's own results is not run again;
  the summary marks it ``cached <key[:12]>``;
- a run that failed or was killed and is run again under the same ``runtime.run_name``
  starts at the stage that did not finish: earlier ones come from the cache or the run's
  results, and training restores its latest checkpoint;
- a run that finished is not run again: its result is returned as recorded.

One MLflow parent run spans the whole run (ending FAILED if a stage raises, KILLED on an
interrupt, resumed by id on a rerun); the run record ``<run_dir>/run.json`` holds each
stage's status, key and origin for ``rayline runs``.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterable
from typing import Any

from rayline.cache import code_hash, stage_key, user_code_hash
from rayline.config import PipelineConfig
from rayline.data.stage import DataReport
from rayline.errors import ConfigError, Interrupted
from rayline.run import (
    PipelineResult,
    Run,
    StageTiming,
    default_run_name,
    now,
    read_text,
    write_text,
)
from rayline.runtime import (
    check_training_fits,
    import_quietly,
    in_background,
    init_ray,
    train_env,
)
from rayline.stages import PIPELINE, VALIDATION, Stage

log = logging.getLogger(__name__)

__all__ = [
    "PipelineResult",
    "StageTiming",
    "default_run_name",
    "run_pipeline",
    "run_stages",
    "run_validation",
]

RESULT_FILE = "pipeline_result.json"
CONFIG_FILE = "config.yaml"


def run_validation(
    cfg: PipelineConfig,
    on_stage: Callable[[StageTiming], None] | None = None,
    on_stage_start: Callable[[str, Run], None] | None = None,
) -> DataReport:
    """Ingest and validate only (``rayline validate``): the data report, nothing trained."""
    run = Run(cfg, on_stage, kind="validate", on_stage_start=on_stage_start)
    # No Ray start here: a small Parquet input is staged in this process, and staging
    # starts (or joins) Ray itself when the input goes through Ray Data.
    run.claim(resume=False)
    write_text(f"{run.dir}/{CONFIG_FILE}", cfg.to_yaml())
    results = run_stages(run, VALIDATION)
    run.save(status="done", finished_at=now())
    return results["validate+split"]


def run_pipeline(
    cfg: PipelineConfig,
    on_stage: Callable[[StageTiming], None] | None = None,
    until: str | None = None,
    on_stage_start: Callable[[str, Run], None] | None = None,
) -> PipelineResult:
    """Run every stage; return what was produced. The champion moves only if the gate passes.

    Args:
        cfg: The resolved config.
        on_stage: Called with each finished stage's timing.
        until: Stop after this stage (``rayline run --until features``); the run is
            recorded as ``partial``, and running it again under the same name goes on
            from the next stage.
        on_stage_start: Called with a stage's name and the :class:`Run` as it starts.

    Raises:
        RaylineError: a subclass naming what failed (config, data, cluster, training, MLflow).
    """
    from rayline.stages.deploy import deploy_problems

    stages = _stages_until(cfg, until)
    problems = deploy_problems(cfg) if any(s.name == "deploy" for s in stages) else []
    if problems:
        raise ConfigError(problems)
    run = Run(cfg, on_stage, on_stage_start=on_stage_start)
    run.claim()
    # The resolved config beside the run (MLflow gets it as config/resolved_config.json).
    write_text(f"{run.dir}/{CONFIG_FILE}", cfg.to_yaml())
    if (run.previous or {}).get("status") == "done":
        stored = read_text(f"{run.dir}/{RESULT_FILE}")
        if stored:
            log.info("run %s already finished; returning its recorded result", run.name)
            result = PipelineResult.from_dict(json.loads(stored))
            result.already_complete = True
            run.save(status="done")
            return result
    _setup(run)
    from rayline.registry import flatten  # mlflow: imported while Ray started (_setup)

    tags = {
        "rayline.config_hash": run.config_hash,
        "rayline.pipeline": cfg.name,
        "rayline.git_commit": str(run.lineage["code"]["commit"]),
    }
    registry = run.registry
    with registry.run(run.name, tags, resume_run_id=run.read_marker("mlflow_run_id")) as run_id:
        run.result.mlflow_run_id = run_id
        run.write_marker("mlflow_run_id", run_id)
        run.lineage["ray_job_id"] = _ray_job_id()
        registry.log_params(flatten(cfg.to_dict()))
        registry.log_json(cfg.to_dict(), "config/resolved_config.json")
        run_stages(run, stages)
        registry.set_tags(_stage_tags(run.result.stages))
        run.write_json(RESULT_FILE, run.result.to_dict())
        registry.log_json(run.result.to_dict(), f"reports/{RESULT_FILE}")
    write_text(f"{run.dir}/{RESULT_FILE}", json.dumps(run.result.to_dict(), default=str))
    run.save(
        status="done" if until is None else "partial",
        finished_at=now(),
        model_version=run.result.model_version,
        gate="passed" if (run.result.gate or {}).get("passed") else "rejected",
    )
    return run.result


def _stages_until(cfg: PipelineConfig, until: str | None) -> list[Stage]:
    """The pipeline's enabled stages, up to and including ``until``."""
    stages = [s for s in PIPELINE if s.enabled(cfg)]
    if until is None:
        return stages
    names = [s.name for s in stages]
    if until not in names:
        raise ConfigError(
            [f"--until: no stage '{until}' in this pipeline; choose one of {', '.join(names)}"]
        )
    return stages[: names.index(until) + 1]


#: What the driver imports for the later stages, in a thread while Ray starts: a local Ray
#: start keeps one of 2 cores idle for ~5 s (its processes start one after another), and
#: these imports took ~3 s of the driver's time before it (benchmarks/RESULTS.md).
PRELOAD_MODULES = ("torch", "sklearn.linear_model")


def _setup(run: Run) -> None:
    """Start or join Ray, check that training fits, connect to MLflow.

    MLflow's store is opened (a new sqlite store creates its tables: ~1.5 s) and the
    modules later stages need are imported in a thread while Ray starts, which mostly
    waits on the processes it launches.
    """
    cfg = run.cfg

    def prepare():
        registry = _connect_registry(cfg, run.storage)
        import_quietly(PRELOAD_MODULES)
        return registry

    with run.timed("setup") as t, in_background(prepare, name="rayline-setup") as registry:
        resources = init_ray(cfg.runtime, worker_env=train_env(cfg.train))
        from rayline import tune as tune_mod

        run.resources = resources
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
        run.registry = registry.result()
        run.result.tracking_uri = run.registry.tracking_uri
        t.summary = (
            f"Ray {int(resources.get('CPU', 0))} CPUs/{int(resources.get('GPU', 0))} GPUs, "
            f"MLflow {run.registry.tracking_uri}"
        )


def _connect_registry(cfg, storage: str):
    from rayline.registry import Registry

    registry = Registry(cfg.registry, storage)
    registry.connect()
    return registry


def run_stages(run: Run, stages: Iterable[Stage]) -> dict[str, Any]:
    """Run ``stages`` in order, each computed or reused; return their results by name.

    The run record is updated before and after every stage, so a run killed in stage k
    says so, and the next attempt under the same name starts there.
    """
    results: dict[str, Any] = {}
    before = (run.previous or {}).get("stages", {})
    for stage in stages:
        if not stage.enabled(run.cfg):
            continue
        if (
            run.previous
            and run.result.resumed_at is None
            and before.get(stage.name, {}).get("status") != "done"
        ):
            run.result.resumed_at = stage.name
            run.save(resumed_at=stage.name)
        inputs = {n: results[n] for n in stage.needs if n in results}
        run.set_stage(stage.name, status="running", started_at=now())
        start = time.perf_counter()
        try:
            with run.timed(stage.name) as timing:
                value = _run_one(run, stage, inputs, timing)
                timing.summary = stage.summary(run, value)
        except BaseException as exc:
            interrupted = isinstance(exc, KeyboardInterrupt | Interrupted)
            run.set_stage(
                stage.name,
                status="interrupted" if interrupted else "failed",
                error=f"{type(exc).__name__}: {exc}"[:2000],
                seconds=round(time.perf_counter() - start, 3),
            )
            run.save(status="interrupted" if interrupted else "failed")
            raise
        run.set_stage(
            stage.name,
            status="done",
            seconds=round(timing.seconds, 3),
            summary=timing.summary,
            key=timing.key,
            reused=timing.reused,
            from_run=timing.from_run,
            path=run.lineage["reused"].get(stage.name, {}).get("path")
            or (_store(run).path(stage.name, timing.key) if timing.key else None),
        )
        results[stage.result_name] = value
    return results


def _store(run: Run):
    """Where fresh results go: the shared cache, or the run's own results when it is off."""
    return run.cache if run.cache is not None else run.own


def key_of(run: Run, stage: Stage, inputs: dict[str, Any]) -> str:
    """The stage's cache key: config slice, upstream keys, code, user code, key inputs."""
    upstream = {n: run.keys[n] for n in stage.needs if n in run.keys}
    user_hash, _ = user_code_hash(stage.user_code(run.cfg))
    return stage_key(
        stage.name,
        stage.config_slice(run.cfg),
        upstream,
        code_hash(stage.code),
        user_hash,
        stage.key_inputs(run, inputs),
    )


def _run_one(run: Run, stage: Stage, inputs: dict[str, Any], timing: StageTiming) -> Any:
    if not stage.cacheable:
        return stage.finish(run, inputs, stage.compute(run, inputs, None))
    key = key_of(run, stage, inputs)
    timing.key = key
    run.keys[stage.result_name] = key
    value = _reuse(run, stage, key, timing)
    if value is None:
        store = _store(run)
        out = store.begin(stage.name, key)
        value = stage.compute(run, inputs, out)
        store.commit(
            stage.name,
            key,
            {"result": stage.save(value, out), "run_name": run.name, "created": time.time()},
        )
    return stage.finish(run, inputs, value)


def _reuse(run: Run, stage: Stage, key: str, timing: StageTiming) -> Any:
    """A complete earlier result of this key (shared cache first, then the run's own)."""
    for store in (run.cache, run.own):
        if store is None:
            continue
        meta = store.lookup(stage.name, key)
        if meta is None:
            continue
        path = store.path(stage.name, key)
        try:
            value = stage.load(run, meta.get("result", {}), path)
        except Exception as exc:  # an entry we cannot read is computed again, never served
            log.warning("cache: %s entry %s unreadable (%s); recomputing", stage.name, key, exc)
            continue
        store.touch(stage.name, key)
        timing.reused = "cache"
        timing.from_run = meta.get("run_name")
        run.lineage["reused"][stage.name] = {
            "key": key,
            "from_run": meta.get("run_name"),
            "path": path,
        }
        log.info("stage %s: reusing %s (from run %s)", stage.name, path, timing.from_run)
        return value
    return None


def _stage_tags(stages: list[StageTiming]) -> dict[str, str]:
    """One MLflow tag per keyed stage: ``cached <key> from <run>`` or ``ran <key>``."""
    tags = {}
    for s in stages:
        if s.key:
            tags[f"rayline.stage.{s.name}"] = (
                f"cached {s.key[:12]} from {s.from_run}" if s.reused else f"ran {s.key[:12]}"
            )
    return tags


def _ray_job_id() -> str | None:
    try:
        import ray

        return ray.get_runtime_context().get_job_id()
    except Exception:  # not inside Ray: lineage records null
        return None
