"""Evaluate: score the challenger, today's champion and the baseline on the test split.

Never cached: the champion it is compared with can change between runs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import partial

from rayline.stages.base import Stage

log = logging.getLogger(__name__)


@dataclass
class Evaluation:
    """The evaluation report, and the champion it scored as ``(version, uri)``."""

    report: object
    champion: tuple[str, str] | None


class Evaluate(Stage):
    """Test-split metrics of the challenger, of the current champion and of a baseline."""

    name = "evaluate"
    reads = ("evaluate",)
    needs = ("validate+split", "features", "train")

    def compute(self, run, inputs, out) -> Evaluation:
        from rayline import evaluate as ev
        from rayline.registry import load_pyfunc

        cfg, registry = run.cfg, run.registry
        staged, prep, trained = (
            inputs["validate+split"].staged_path,
            inputs["features"],
            inputs["train"],
        )
        champion = registry.champion(cfg.model_name)
        loader = partial(load_pyfunc, tracking_uri=registry.tracking_uri)
        scores = ev.score(
            staged,
            prep,
            trained.best.params["model"],
            trained.best_dir,
            cfg.evaluate.batch_size,
            champion=(loader, champion[1]) if champion else None,
            test_rows=inputs["validate+split"].splits.get("test"),
            max_rows=cfg.runtime.in_process_max_rows,
        )
        metrics = scores.metrics
        report = ev.EvalReport(rows=scores.rows, metrics=metrics)
        if champion:
            report.champion_uri = champion[1]
            report.extra["champion_version"] = champion[0]
            report.champion_metrics = scores.champion_metrics
            if scores.champion_error:
                report.extra["champion_error"] = scores.champion_error
                log.warning("the champion could not be scored: %s", scores.champion_error)
        if cfg.evaluate.baseline:
            report.baseline = ev.baseline_metrics(
                staged, prep, inputs["validate+split"].splits, cfg.runtime.in_process_max_rows
            )
        registry.log_metrics(metrics, prefix="test.")
        if report.champion_metrics:
            registry.log_metrics(report.champion_metrics, prefix="champion.test.")
        if report.baseline:
            registry.log_metrics(report.baseline["metrics"], prefix="baseline.test.")
        registry.log_json(report.to_dict(), "reports/evaluation_report.json")
        run.result.evaluation = report.to_dict()
        return Evaluation(report, champion)

    def summary(self, run, result: Evaluation) -> str:
        r = result.report
        return f"{r.rows} test rows, " + ", ".join(f"{k}={v:.4f}" for k, v in r.metrics.items())
