"""Gate: the pure decision (:func:`rayline.gate.decide`) on what evaluate and profile found."""

from __future__ import annotations

from rayline.gate import GateDecision, decide
from rayline.stages.base import Stage


class Gate(Stage):
    """Thresholds, the champion comparison, an unscorable champion, drift marked ``fail``."""

    name = "gate"
    reads = ("gate",)
    needs = ("evaluate", "profile")

    def compute(self, run, inputs, out) -> GateDecision:
        report = inputs["evaluate"].report
        profiled = inputs.get("profile")
        decision = decide(
            report.metrics,
            report.champion_metrics,
            run.cfg.gate,
            run.cfg.compare_metric,
            champion_error=report.extra.get("champion_error"),
            champion_label=report.champion_uri or "the champion",
            drift=profiled.drift if profiled is not None else None,
        )
        run.result.gate = decision.to_dict()
        run.registry.log_json(decision.to_dict(), "reports/gate_decision.json")
        return decision

    def summary(self, run, result: GateDecision) -> str:
        return "PASSED" if result.passed else "REJECTED"
