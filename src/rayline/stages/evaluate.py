"""Evaluate: score the challenger(s), today's champion and the baseline on the test split.

One scoring pass (:func:`rayline.evaluate.score`) gives every model's predictions on the
same raw test rows; the report's numbers (per-class and calibration detail, bootstrap
intervals, slices: :mod:`rayline.analysis`) are computed from those predictions. Never
cached: the champion it is compared with can change between runs.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from rayline.stages.base import Stage

log = logging.getLogger(__name__)


@dataclass
class Evaluation:
    """The evaluation report, and the champion it scored as ``(version, uri)``.

    Attributes:
        scores: The scoring pass, predictions included (for the gate's paired bootstrap
            and the report's figures).
        candidates: Every scored challenger by name (``"challenger"`` is the sweep's best or
            the one trained model; runners-up are ``"trial-<id>"``), best first.
        baseline: The baseline's test output (``{"y", "output"}``), or None.
    """

    report: object
    champion: tuple[str, str] | None
    scores: Any = None
    candidates: dict[str, Any] = field(default_factory=dict)
    baseline: dict[str, Any] | None = None


def metric_key(*parts: str) -> str:
    """An MLflow metric name from parts (slice values may hold any character)."""
    return ".".join(re.sub(r"[^A-Za-z0-9_\-/ ]", "_", str(p))[:80] for p in parts)[:250]


def slice_specs(cfg) -> list[tuple[str, list[float] | None]]:
    """``evaluate.slices`` as ``(column, bins or None)`` pairs, in config order."""
    return [(s, None) if isinstance(s, str) else (s.column, s.bins) for s in cfg.evaluate.slices]


def _runners_up(run, trained, k: int) -> list:
    """The sweep's next ``k - 1`` trials' best checkpoints, fetched to this machine.

    A runner-up whose checkpoint is gone (its run directory was pruned since the sweep
    was cached) is left out with a warning: the others are still compared.
    """
    from rayline.evaluate import Candidate
    from rayline.train import trainer

    out = []
    for entry in trained.ranked[1:k]:
        dest = str(run.local_dir / "challengers" / f"trial-{entry['trial_id']}")
        try:
            local = trainer.fetch_checkpoint(entry["checkpoint_path"], entry["storage"], dest)
        except Exception as exc:  # a pruned run directory, an unreachable bucket
            log.warning(
                "challenger trial %s left out: its checkpoint %s cannot be read (%s)",
                entry["trial_id"],
                entry["checkpoint_path"],
                exc,
            )
            continue
        out.append(Candidate(f"trial-{entry['trial_id']}", entry["model"], local))
    return out


class Evaluate(Stage):
    """Test-split metrics of the challenger(s), of the current champion and of a baseline."""

    name = "evaluate"
    reads = ("evaluate",)
    needs = ("validate+split", "features", "train")

    def compute(self, run, inputs, out) -> Evaluation:
        from rayline import analysis
        from rayline import evaluate as ev
        from rayline.registry import load_pyfunc

        cfg, registry = run.cfg, run.registry
        ecfg = cfg.evaluate
        staged, prep, trained = (
            inputs["validate+split"].staged_path,
            inputs["features"],
            inputs["train"],
        )
        champion = registry.champion(cfg.model_name)
        loader = partial(load_pyfunc, tracking_uri=registry.tracking_uri)
        first = ev.Candidate("challenger", trained.best.params["model"], trained.best_dir)
        others = _runners_up(run, trained, cfg.gate.challengers) if cfg.tune.enabled else []
        specs = slice_specs(cfg)
        scores = ev.score(
            staged,
            prep,
            first.model_spec,
            first.checkpoint_dir,
            ecfg.batch_size,
            champion=(loader, champion[1]) if champion else None,
            test_rows=inputs["validate+split"].splits.get("test"),
            max_rows=cfg.runtime.in_process_max_rows,
            others=others,
            columns=[c for c, _ in specs],
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
        baseline = None
        if ecfg.baseline:
            report.baseline = ev.baseline_metrics(
                staged, prep, inputs["validate+split"].splits, cfg.runtime.in_process_max_rows
            )
            baseline = {"y": report.baseline.pop("y"), "output": report.baseline.pop("output")}
        if scores.others:
            report.extra["challengers"] = {
                "challenger": {"trial_id": trained.best.trial_id, "metrics": metrics},
                **{
                    c.name: {
                        "trial_id": c.name.removeprefix("trial-"),
                        "metrics": scores.others[c.name],
                    }
                    for c in others
                },
            }
        if ecfg.bootstrap and scores.rows:
            report.extra["intervals"] = analysis.bootstrap_intervals(
                prep.task, scores.y, scores.outputs, ecfg.bootstrap, ecfg.seed,
                ecfg.confidence_level,
            )  # fmt: skip
            report.extra["bootstrap"] = {
                "resamples": ecfg.bootstrap,
                "seed": ecfg.seed,
                "level": ecfg.confidence_level,
            }
        if specs and scores.rows:
            report.extra["slices"] = analysis.slice_metrics(
                prep.task, scores.y, scores.outputs, scores.columns, specs
            )
        self._log(registry, report)
        run.result.evaluation = report.to_dict()
        return Evaluation(
            report,
            champion,
            scores=scores,
            candidates={c.name: c for c in [first, *others]},
            baseline=baseline,
        )

    @staticmethod
    def _log(registry, report) -> None:
        registry.log_metrics(report.metrics, prefix="test.")
        if report.champion_metrics:
            registry.log_metrics(report.champion_metrics, prefix="champion.test.")
        if report.baseline:
            registry.log_metrics(report.baseline["metrics"], prefix="baseline.test.")
        for name, entry in report.extra.get("challengers", {}).items():
            if name != "challenger":
                registry.log_metrics(entry["metrics"], prefix=f"{metric_key(name)}.test.")
        ci = {}
        for model, per in report.extra.get("intervals", {}).items():
            prefix = "test" if model == "challenger" else f"{model}.test"
            for m, (lo, hi) in per.items():
                ci[metric_key(prefix, m, "ci_low")] = lo
                ci[metric_key(prefix, m, "ci_high")] = hi
        registry.log_metrics({k: v for k, v in ci.items() if v is not None})
        sliced = {}
        for s in report.extra.get("slices", []):
            base = ("slice", s["column"], s["slice"])
            sliced[metric_key(*base, "rows")] = s["rows"]
            for m, v in s["metrics"].get("challenger", {}).items():
                sliced[metric_key(*base, m)] = v
        registry.log_metrics(sliced)
        registry.log_json(report.to_dict(), "reports/evaluation_report.json")

    def summary(self, run, result: Evaluation) -> str:
        r = result.report
        ci = r.extra.get("intervals", {}).get("challenger", {})

        def fmt(k: str, v: float) -> str:
            lo, hi = ci.get(k, (None, None))
            return f"{k}={v:.4f}" + (f" [{lo:.3f}, {hi:.3f}]" if lo is not None else "")

        line = f"{r.rows} test rows, " + ", ".join(fmt(k, v) for k, v in r.metrics.items())
        if len(result.candidates) > 1:
            line += f" ({len(result.candidates)} challengers scored in one pass)"
        return line
