"""Register: log the model to MLflow, register a version, move the alias if the gate passed.

The version carries the run's lineage as tags (config hash, data fingerprint, code
commit, which stage results were reused from which run), and ``lineage.json`` goes to the
run's artifacts. The champion alias moves only here, and only on a passed gate.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict

from rayline.run import now
from rayline.stages.base import Stage


def input_example(staged_path: str, prep, rows: int = 5):
    """A few raw test rows (input columns only) for the model's signature and example."""
    from rayline.data import stage

    batch = stage.read_split(staged_path, "test", columns=prep.input_columns).take_batch(
        rows, batch_format="pandas"
    )
    return batch.reset_index(drop=True)


class Register(Stage):
    """A new model version with lineage tags; ``@alias`` moves to it only if the gate passed."""

    name = "register"
    reads = ("registry",)
    needs = ("validate+split", "features", "train", "evaluate", "gate", "profile")

    def compute(self, run, inputs, out) -> str:
        import torch

        from rayline.inference import Predictor

        cfg, registry, result = run.cfg, run.registry, run.result
        report, prep, trained = inputs["validate+split"], inputs["features"], inputs["train"]
        metrics, decision = inputs["evaluate"].report.metrics, inputs["gate"]
        run.lineage["stages"] = [asdict(s) for s in result.stages]
        run.lineage["finished_at"] = now()
        registry.log_json(run.lineage, "lineage.json")
        run.write_json("lineage.json", run.lineage)
        example = input_example(report.staged_path, prep)
        weights = os.path.join(trained.best_dir, "model.pt")
        model_spec = trained.best.params["model"]
        state = torch.load(weights, map_location="cpu", weights_only=True)
        predictor = Predictor(prep, model_spec, state)
        model_uri = registry.log_model(
            prep.to_json(), model_spec, weights, example, predictor.predict_frame(example)
        )
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
            "rayline.reused": json.dumps(run.lineage["reused"]),
            "rayline.gate": "passed" if decision.passed else "rejected",
        }
        version = registry.register(model_uri, cfg.model_name, tags)
        result.model_name, result.model_version = cfg.model_name, version
        result.model_uri = f"models:/{cfg.model_name}/{version}"
        if decision.passed:
            registry.promote(cfg.model_name, version)
            result.promoted = True
        current = registry.champion(cfg.model_name)
        result.champion_uri = current[1] if current else None
        return version

    def summary(self, run, result: str) -> str:
        alias = run.cfg.registry.alias
        return f"{run.cfg.model_name} v{result}" + (
            f" -> @{alias}" if run.result.promoted else f" (@{alias} unchanged)"
        )
