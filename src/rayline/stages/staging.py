"""Ingest and validate+split: raw files -> a fingerprint -> staged, validated splits.

``ingest`` resolves the inputs, fingerprints their content and checks each file's schema
(it always runs: the fingerprint is what the staging result is keyed by). ``validate+split``
validates every row and assigns its split in one streaming pass
(:func:`rayline.data.stage.stage`); its result, the staged Parquet and the
:class:`~rayline.data.stage.DataReport`, is cached by fingerprint + ``data`` + ``schema``.
Its ``finish``, which runs on a reused result too, logs the report and the splits (as MLflow
datasets) to the run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rayline.data import ingest, stage, validate
from rayline.data.ingest import SourceFiles
from rayline.errors import DataValidationError
from rayline.stages.base import Stage


@dataclass
class Inputs:
    """What ``ingest`` found: the files, their content fingerprint, footer row counts."""

    sources: SourceFiles
    fingerprint: str
    footer_rows: dict[str, int] | None


class Ingest(Stage):
    """Resolve the input files, fingerprint them, check their schemas against the contract."""

    name = "ingest"
    reads = ("data", "schema")

    def compute(self, run, inputs, out) -> Inputs:
        cfg = run.cfg
        sources = ingest.resolve_sources(cfg.data.path, cfg.data.format, cfg.data.endpoint_url)
        fingerprint, files = ingest.fingerprint_files(sources)
        footer_rows = validate.check_file_schemas(sources, cfg.schema_.columns)
        run.lineage["data_fingerprint"] = fingerprint
        # Per file: URI, size, mtime, content digest, footer rows, hive partition values;
        # `rayline retrain` tells new and changed data from the champion's by these.
        for record in files:
            record["rows"] = (footer_rows or {}).get(record["uri"])
        run.lineage["data_inputs"] = files
        return Inputs(sources, fingerprint, footer_rows)

    def summary(self, run, result: Inputs) -> str:
        return (
            f"{len(result.sources.files)} {result.sources.format} file(s), "
            f"fingerprint {result.fingerprint[:12]}"
        )


class ValidateSplit(Stage):
    """Validate every row, quarantine the bad ones, split the rest; count every row."""

    name = "validate+split"
    reads = ("data", "schema")
    needs = ("ingest",)
    cacheable = True
    code = (
        "rayline.data.stage",
        "rayline.data.validate",
        "rayline.data.split",
        "rayline.data.ingest",
        "rayline.data.readers",
    )

    def key_inputs(self, run, inputs) -> dict[str, Any]:
        return {"data_fingerprint": inputs["ingest"].fingerprint}

    def compute(self, run, inputs, out) -> stage.DataReport:
        found: Inputs = inputs["ingest"]
        try:
            return stage.stage(run.cfg, found.sources, found.fingerprint, out, found.footer_rows)
        except DataValidationError as exc:
            report = getattr(exc, "report", None)
            if report is not None and run.registry is not None:
                run.registry.log_json(report.to_dict(), "reports/data_report.json")
            raise

    def save(self, result: stage.DataReport, out: str) -> dict[str, Any]:
        return {"report": result.to_dict()}

    def load(self, run, meta, out) -> stage.DataReport:
        return stage.DataReport(**meta["report"])

    def finish(self, run, inputs, result: stage.DataReport) -> stage.DataReport:
        # The report names this run's input URIs even when the staged data was reused.
        result.files = list(inputs["ingest"].sources.uris)
        run.result.data_report = result.to_dict()
        run.lineage["data_files"] = result.files
        if run.registry is not None:
            run.registry.log_json(result.to_dict(), "reports/data_report.json")
            run.registry.log_metrics(
                {
                    "rows_in": result.rows_in,
                    "rows_ok": result.rows_ok,
                    "rows_quarantined": result.rows_quarantined,
                    **{f"rows_{k}": v for k, v in result.splits.items()},
                },
                prefix="data.",
            )
            # The run page's Datasets panel: what trained, validated and tested the model.
            run.registry.log_datasets(
                run.cfg.name,
                result.fingerprint,
                result.files,
                {s: stage.split_schema(result.staged_path, s) for s in result.splits},
                rows=result.splits,
            )
        return result

    def summary(self, run, result: stage.DataReport) -> str:
        return (
            f"rows_in={result.rows_in} ok={result.rows_ok} "
            f"quarantined={result.rows_quarantined} "
            + " ".join(f"{k}={v}" for k, v in result.splits.items())
        )
