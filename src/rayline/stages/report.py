"""Report: the evaluation report (PNG figures, one HTML page) and the model card.

Built from the one scoring pass's predictions (:class:`rayline.evaluate.Scores`) and the
gate's decision, after the gate so that the page and the card carry its reasons. The files
go to the run's MLflow artifacts under ``reports/`` (the card as ``model_card.md``); the
register stage sets the card as the version's description and links the report. Never
cached, like the evaluation it reads.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rayline.stages.base import Stage

log = logging.getLogger(__name__)

REPORT_ARTIFACT = "reports/evaluation_report.html"
CARD_ARTIFACT = "model_card.md"


@dataclass
class Reported:
    """The model card's Markdown and where the report went."""

    card: str
    report_artifact: str | None = None
    report_path: str | None = None
    figures: list[str] = field(default_factory=list)


def model_outputs(evaluation, chosen: str) -> dict[str, tuple[Any, Any]]:
    """model label -> ``(y, output)``: the chosen challenger, the champion, the baseline,
    then the other challengers."""
    scores = evaluation.scores
    out: dict[str, tuple[Any, Any]] = {}
    if scores is None or scores.y is None:
        return out
    out[_label(chosen)] = (scores.y, scores.outputs[chosen])
    if "champion" in scores.outputs:
        out["champion"] = (scores.y, scores.outputs["champion"])
    if evaluation.baseline is not None:
        out["baseline"] = (evaluation.baseline["y"], evaluation.baseline["output"])
    for name in evaluation.candidates:
        if name != chosen:
            out[_label(name)] = (scores.y, scores.outputs[name])
    return out


def _label(name: str) -> str:
    return "challenger" if name == "challenger" else f"challenger {name}"


def report_document(run, inputs) -> dict[str, Any]:
    """The report's data: facts, per-model metrics/intervals/detail, slices, gate."""
    from rayline import analysis
    from rayline.metrics import metric_names

    cfg, evaluation, decision = run.cfg, inputs["evaluate"], inputs["gate"]
    report, prep = evaluation.report, inputs["features"]
    chosen = decision.candidate
    intervals = report.extra.get("intervals", {})
    per_model = {
        "challenger": report.metrics,
        **{n: m for n, m in (evaluation.scores.others if evaluation.scores else {}).items()},
    }
    models: dict[str, Any] = {}
    for label, (y, output) in model_outputs(evaluation, chosen).items():
        name = {"champion": "champion", "baseline": "baseline"}.get(
            label, label.removeprefix("challenger ") if label != "challenger" else "challenger"
        )
        if name == "champion":
            metrics = report.champion_metrics or {}
        elif name == "baseline":
            metrics = (report.baseline or {}).get("metrics", {})
        else:
            metrics = per_model.get(name, {})
        detail = (
            analysis.classification_detail(y, output, prep.classes)
            if prep.task == "classification"
            else analysis.regression_detail(y, output)
        )
        models[label] = {"metrics": metrics, "intervals": intervals.get(name), "detail": detail}
    data = inputs["validate+split"]
    boot = report.extra.get("bootstrap") or {}
    facts = {
        "run": run.name,
        "model": cfg.model_name,
        "task": f"{prep.task} on '{cfg.data.target}'",
        "test rows": str(report.rows),
        "data fingerprint": data.fingerprint,
        "champion": (
            f"{report.champion_uri} (version {report.extra.get('champion_version')})"
            if report.champion_uri
            else "none yet"
        ),
        "compare metric": cfg.compare_metric,
    }
    if chosen != "challenger":
        facts["registered challenger"] = chosen
    if report.extra.get("champion_error"):
        facts["champion not scorable"] = report.extra["champion_error"]
    slices = report.extra.get("slices") or []
    # Slices by report label, so the table's columns read like the metric table's.
    relabelled = [
        {
            **s,
            "metrics": {
                _label(k) if k not in ("champion",) else k: v for k, v in s["metrics"].items()
            },
        }  # fmt: skip
        for s in slices
    ]
    return {
        "title": f"Evaluation report: {cfg.model_name}, run {run.name}",
        "task": prep.task,
        "facts": facts,
        "models": models,
        "metric_names": metric_names(prep.task),
        "slices": relabelled,
        "gate": decision.to_dict(),
        "level": boot.get("level"),
        "resamples": boot.get("resamples"),
        "seed": boot.get("seed"),
    }


class Report(Stage):
    """PNG figures and a self-contained HTML page per run; the model card."""

    name = "report"
    reads = ("evaluate", "registry")
    needs = ("validate+split", "features", "train", "evaluate", "gate")

    def compute(self, run, inputs, out) -> Reported:
        from rayline import card as card_mod

        cfg, registry = run.cfg, run.registry
        evaluation, decision = inputs["evaluate"], inputs["gate"]
        doc = report_document(run, inputs)
        result = Reported(card="")
        if cfg.evaluate.report and doc["models"]:
            from rayline import report_html

            local = Path(run.local_dir, "reports")
            shutil.rmtree(local, ignore_errors=True)
            figures = report_html.figures(
                doc["task"],
                model_outputs(evaluation, decision.candidate),
                inputs["features"].classes,
                local / "figures",
            )
            page = local / "evaluation_report.html"
            page.write_text(report_html.render_html(doc, figures))
            for path in figures.values():
                registry.log_file(path, "reports/figures")
            registry.log_file(str(page), "reports")
            result.report_artifact = REPORT_ARTIFACT
            result.report_path = str(page)
            result.figures = [f"reports/figures/{Path(p).name}" for p in figures.values()]
        chosen = decision.candidate
        data = inputs["validate+split"]
        metrics = {k: v["metrics"] for k, v in doc["models"].items()}
        intervals = {k: v["intervals"] for k, v in doc["models"].items() if v["intervals"]}
        trained = inputs["train"]
        trial = trained.best.trial_id if chosen == "challenger" else chosen.removeprefix("trial-")
        result.card = card_mod.render(
            {
                "model_name": cfg.model_name,
                "run_name": run.name,
                "mlflow_run_id": run.result.mlflow_run_id,
                "description": cfg.registry.description,
                "task": cfg.model.task,
                "target": cfg.data.target,
                "data": data.to_dict(),
                "code": run.lineage.get("code"),
                "config_hash": run.result.config_hash,
                "packages": run.lineage.get("packages"),
                "metrics": metrics,
                "intervals": intervals,
                "level": doc["level"],
                # The registered model's slices (the card's "challenger").
                "slices": [
                    {**s, "metrics": {"challenger": s["metrics"].get(chosen, {})}}
                    for s in evaluation.report.extra.get("slices") or []
                ],
                "gate": decision.to_dict(),
                "baseline": (evaluation.report.baseline or {}).get("model"),
                "report": result.report_artifact,
                "trial": trial if cfg.tune.enabled else None,
            }
        )
        registry.log_text(result.card, CARD_ARTIFACT)
        run.result.report = result.report_artifact
        run.result.report_path = result.report_path
        return result

    def summary(self, run, result: Reported) -> str:
        if not result.report_artifact:
            return "model card (report off: evaluate.report is false)"
        return f"{len(result.figures)} figures, {result.report_artifact}, {CARD_ARTIFACT}"
