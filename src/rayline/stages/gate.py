"""Gate: the pure decision (:func:`rayline.gate.decide`) on what evaluate and profile found.

With ``gate.challengers > 1`` every scored challenger is decided on its own, against the
same champion, and :func:`rayline.gate.select` picks the one to register.
"""

from __future__ import annotations

import dataclasses

from rayline.gate import GateDecision, decide, select
from rayline.stages.base import Stage


def paired(run, evaluation, name: str):
    """The paired bootstrap of ``name``'s improvement over the champion, when asked for.

    None without ``gate.confidence`` or without the champion's predictions on these rows.
    """
    from rayline import analysis

    cfg, scores = run.cfg, evaluation.scores
    if cfg.gate.confidence is None or scores is None or "champion" not in scores.outputs:
        return None
    return analysis.paired_delta(
        cfg.model.task,
        cfg.compare_metric,
        scores.y,
        scores.outputs[name],
        scores.outputs["champion"],
        resamples=cfg.gate.bootstrap,
        seed=cfg.evaluate.seed,
        level=cfg.gate.confidence,
        min_delta=cfg.gate.min_delta,
    )


def decide_all(run, evaluation, drift) -> GateDecision:
    """Decide every scored challenger; return the chosen one's decision (with the others)."""
    report = evaluation.report
    names = list(evaluation.candidates) or ["challenger"]
    slices = report.extra.get("slices")
    decisions = {}
    for name in names:
        metrics = report.metrics if name == "challenger" else evaluation.scores.others[name]
        comparison = paired(run, evaluation, name)
        decisions[name] = decide(
            metrics,
            report.champion_metrics,
            run.cfg.gate,
            run.cfg.compare_metric,
            champion_error=report.extra.get("champion_error"),
            champion_label=report.champion_uri or "the champion",
            drift=drift,
            slices=slices,
            paired=comparison,
            model=name,
        )
        if comparison is not None:
            decisions[name] = dataclasses.replace(decisions[name], comparison=comparison.to_dict())
    chosen = select(decisions, run.cfg.compare_metric, names)
    others = {
        n: {"passed": d.passed, "metrics": d.to_dict()["challenger"], "reasons": d.reasons}
        for n, d in decisions.items()
        if n != chosen
    }
    return dataclasses.replace(decisions[chosen], candidate=chosen, others=others)


class Gate(Stage):
    """Thresholds, slice bounds, the champion comparison (point or interval), an unscorable
    champion, drift marked ``fail``; with several challengers, the one to register."""

    name = "gate"
    reads = ("gate",)
    needs = ("evaluate", "profile")

    def compute(self, run, inputs, out) -> GateDecision:
        profiled = inputs.get("profile")
        decision = decide_all(
            run, inputs["evaluate"], profiled.drift if profiled is not None else None
        )
        run.result.gate = decision.to_dict()
        run.registry.log_json(decision.to_dict(), "reports/gate_decision.json")
        return decision

    def summary(self, run, result: GateDecision) -> str:
        verdict = "PASSED" if result.passed else "REJECTED"
        if result.others:
            passed = sum(1 for o in result.others.values() if o["passed"]) + result.passed
            verdict += f" ({result.candidate} chosen; {passed} of {len(result.others) + 1} passed)"
        return verdict
