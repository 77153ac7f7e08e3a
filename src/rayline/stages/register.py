"""Register: log the model to MLflow, register a version, move the alias if the gate passed.

The version carries the run's lineage as tags (config hash, data fingerprint, code
commit, which stage results were reused from which run), and ``lineage.json`` goes to the
run's artifacts. The champion alias moves only here, and only on a passed gate; the move is
recorded on the version (who, when, from, to, why: ``Registry.alias_history``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from dataclasses import asdict

from rayline.run import now
from rayline.stages.base import Stage

log = logging.getLogger(__name__)


def input_example(staged_path: str, prep, rows: int = 5):
    """A few raw test rows (input columns only) for the model's signature and example, read
    with pyarrow (a Ray Data job for 5 rows cost this stage 1-2 s of task and actor
    start-up on 2 cores)."""
    from rayline.data import stage

    frame = stage.read_split_frame(staged_path, "test", columns=prep.input_columns, rows=rows)
    return frame.reset_index(drop=True)


class Register(Stage):
    """A new model version with lineage tags; ``@alias`` moves to it only if the gate passed.

    Safe to run again for the same MLflow run (a rerun after a failure): the version that
    run registered already is reused, not registered twice. The alias moves only if it
    still points at the champion the gate compared with; if another registration moved it
    meanwhile, the model is scored again against the new champion and moves only if it
    still passes (:func:`rayline.promote.move_gated`).
    """

    name = "register"
    reads = ("registry",)
    needs = ("validate+split", "features", "train", "evaluate", "gate", "report", "profile")

    def compute(self, run, inputs, out) -> str:
        from rayline.card import description as card_description
        from rayline.promote import Candidate, gate_against, move_gated
        from rayline.stages.report import CARD_ARTIFACT

        cfg, registry, result = run.cfg, run.registry, run.result
        report, prep, trained = inputs["validate+split"], inputs["features"], inputs["train"]
        evaluation, decision = inputs["evaluate"], inputs["gate"]
        # With several challengers scored (gate.challengers), the gate chose one to register.
        chosen = getattr(decision, "candidate", "challenger")
        picked = (getattr(evaluation, "candidates", None) or {}).get(chosen)
        model_spec = picked.model_spec if picked else trained.best.params["model"]
        weights_dir = picked.checkpoint_dir if picked else trained.best_dir
        metrics = decision.challenger or evaluation.report.metrics
        name = cfg.model_name
        reported = inputs.get("report")
        # The model card is the version's description, so the MLflow UI shows it.
        description = card_description(reported.card) if reported is not None else None
        run.lineage["stages"] = [asdict(s) for s in result.stages]
        run.lineage["finished_at"] = now()
        registry.call("logging lineage.json", registry.log_json, run.lineage, "lineage.json")
        run.write_json("lineage.json", run.lineage)
        code = run.lineage["code"]
        tags = {
            "rayline.run_name": run.name,
            "rayline.mlflow_run_id": result.mlflow_run_id,
            "rayline.config_hash": result.config_hash,
            "rayline.data_fingerprint": report.fingerprint,
            "rayline.git_commit": str(code["commit"]),
            "rayline.git_dirty": str(code["dirty"]),
            "rayline.test_metrics": json.dumps(metrics),
            "rayline.profile": "profile/profile.json" if "profile" in inputs else "",
            # The run's artifact with the per-file record of the data (`rayline retrain`).
            "rayline.lineage": "lineage.json",
            "rayline.reused": json.dumps(run.lineage["reused"]),
            "rayline.gate": "passed" if decision.passed else "rejected",
        }
        if chosen != "challenger":
            tags["rayline.challenger"] = chosen
        if reported is not None:
            tags["rayline.model_card"] = CARD_ARTIFACT
            if reported.report_artifact:
                tags["rayline.report"] = reported.report_artifact
        # A rerun of this MLflow run (the first attempt failed after registering) reuses
        # its version; otherwise the model is logged completely before a version exists.
        version = registry.find_version(name, result.mlflow_run_id)
        if version is None:
            model_uri = self._log_model(registry, report, prep, model_spec, weights_dir)
            version = registry.register(model_uri, name, tags, description)
        else:
            log.info("%s v%s was registered by this run already; reusing it", name, version)
            registry.set_version_tags(name, version, tags)
            if description is not None:
                registry.describe(name, version, description)
        result.model_name, result.model_version = name, version
        result.model_uri = f"models:/{name}/{version}"
        profiled = inputs.get("profile")
        cand = Candidate(
            name=name,
            staged_path=report.staged_path,
            test_rows=report.splits.get("test"),
            prep=prep,
            model_spec=model_spec,
            weights_dir=weights_dir,
            cfg=cfg,
            drift=profiled.drift if profiled is not None else None,
        )
        scored = evaluation.champion  # (version, uri) the gate's decision was taken against
        outcome = move_gated(
            registry,
            name,
            version,
            scored[0] if scored else None,
            decision,
            lambda champion: gate_against(cand, champion, registry.tracking_uri),
            reason=f"pipeline run {run.name}: gate passed",
            action="pipeline",
            label=run.name,
        )
        if outcome.regated:
            # The decision the alias move rests on is the last one; record it as the gate's.
            final = dataclasses.replace(outcome.decision, candidate=chosen)
            result.gate = final.to_dict()
            registry.call(
                "logging the gate decision",
                registry.log_json,
                final.to_dict(),
                "reports/gate_decision.json",
            )
            registry.set_version_tags(
                name,
                version,
                {
                    "rayline.gate": "passed" if final.passed else "rejected",
                    "rayline.gated_against": json.dumps(outcome.regated),
                },
            )
        result.promoted = outcome.moved
        current = registry.champion(name)
        result.champion_uri = current[1] if current else None
        return version

    @staticmethod
    def _log_model(registry, report, prep, model_spec, weights_dir) -> str:
        """Log the pyfunc model (preprocessor, network spec, weights); return its URI."""
        import torch

        from rayline.inference import Predictor

        example = input_example(report.staged_path, prep)
        weights = os.path.join(weights_dir, "model.pt")
        state = torch.load(weights, map_location="cpu", weights_only=True)
        predictor = Predictor(prep, model_spec, state)
        return registry.log_model(
            prep.to_json(), model_spec, weights, example, predictor.predict_frame(example)
        )

    def summary(self, run, result: str) -> str:
        alias = run.cfg.registry.alias
        return f"{run.cfg.model_name} v{result}" + (
            f" -> @{alias}" if run.result.promoted else f" (@{alias} unchanged)"
        )
