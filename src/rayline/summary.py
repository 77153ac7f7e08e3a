"""What a person reads at the end of a run: stages, data, metrics, gate, model, trials."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from rayline.run import PipelineResult


def format_summary(result: PipelineResult, alias: str = "champion") -> str:
    """The end-of-run summary a person reads: stages, metrics, gate, model URI, UI hint."""
    lines = [f"rayline run {result.run_name}", ""]
    if result.already_complete:
        lines += [
            "this run had already finished: nothing was run again (its recorded result is "
            "below); leave runtime.run_name unset, or choose a new one, for a new run",
            "",
        ]
    elif result.resumed_at:
        lines += [f"resumed at stage {result.resumed_at} (the stages before it were reused)", ""]
    lines.append("stages:")
    for s in result.stages:
        lines.append(f"  {s.name:<15} {s.seconds:7.1f}s  {s.label}")
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
    if result.report:
        lines += ["", f"report: {result.report} (MLflow run {result.mlflow_run_id})"]
        if result.report_path:
            lines.append(f"  local copy: {result.report_path}")
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
    if result.deploy:
        d = result.deploy
        if d["action"] == "skipped":
            lines.append(f"deployed:   no ({d['reason']}); Serve application {d['app']} unchanged")
        elif d["action"] == "superseded":
            lines.append(
                f"deployed:   Serve application {d['app']}: {d['reason']} (v{d['version']})"
            )
        else:
            n = len(d["replicas"])
            where = f" at {d['url']}" if d.get("url") else ""
            lines.append(
                f"deployed:   Serve application {d['app']} {d['action']}{where}, "
                f"v{d['version']} on {n} replica{'s' if n != 1 else ''}"
            )
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
