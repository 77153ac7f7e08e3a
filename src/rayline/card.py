"""The model card: one Markdown page per registered version, for people and auditors.

What data (fingerprint, rows, splits, quarantine), what code and config, the test metrics
with their intervals, slices, the gate's reasons, the baseline, and the intended use from
``registry.description``. The register stage logs it as ``model_card.md`` and sets it as the
version's description, so the MLflow UI shows it on the version page.
"""

from __future__ import annotations

import math
from typing import Any

#: MLflow keeps model version descriptions up to this many characters (5000 in its SQL
#: store); a longer card is cut with a pointer to the full artifact.
DESCRIPTION_MAX = 5000


def _v(x: Any) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return "NaN" if not math.isfinite(x) else f"{x:.4f}"
    return str(x)


def render(info: dict[str, Any]) -> str:
    """The card's Markdown from plain data.

    Args:
        info: ``model_name``, ``run_name``, ``mlflow_run_id``, ``description`` (or None),
            ``task``, ``target``, ``data`` (the data report), ``code`` (``commit``,
            ``dirty``), ``config_hash``, ``packages``, ``metrics`` (model -> metric ->
            value), ``intervals`` (model -> metric -> (lo, hi)), ``level``, ``slices``,
            ``gate`` (the decision dict), ``baseline`` (model name), ``report`` (the HTML
            report's artifact path), ``trial`` (the sweep trial, or None).
    """
    lines = [f"# {info['model_name']}", ""]
    lines += [
        "## Intended use",
        "",
        info.get("description") or "_Not stated: set `registry.description` in the config._",
        "",
    ]
    d = info.get("data") or {}
    lines += ["## Data", ""]
    lines.append(f"- fingerprint: `{d.get('fingerprint', '-')}`")
    if d:
        lines.append(
            f"- rows: {d['rows_in']} read = {d['rows_ok']} kept + {d['rows_quarantined']} "
            f"quarantined ({d.get('bad_fraction', 0):.2%}; limit "
            f"{d.get('max_bad_fraction', 0):.2%})"
        )
        lines.append(
            "- splits: " + ", ".join(f"{k} {v}" for k, v in (d.get("splits") or {}).items())
        )
        for r in (d.get("top_reasons") or [])[:5]:
            lines.append(f"  - quarantined: {r.get('reason', r)} ({r.get('rows', '')} rows)")
        if d.get("rows_quarantined") and d.get("quarantine_path"):
            lines.append(f"- quarantine: `{d['quarantine_path']}`")
        files = d.get("files") or []
        lines.append(f"- source: {len(files)} file(s)" + (f", e.g. `{files[0]}`" if files else ""))
    lines.append(f"- task: {info.get('task')} on target `{info.get('target')}`")
    code = info.get("code") or {}
    lines += [
        "",
        "## Code and config",
        "",
        f"- run: `{info.get('run_name')}` (MLflow run `{info.get('mlflow_run_id')}`)",
        (
            f"- git commit: `{code['commit']}`"
            + (" (with uncommitted changes)" if code.get("dirty") else "")
            if code.get("commit")
            else "- git commit: unknown (the pipeline did not run from a git checkout)"
        ),
        f"- config hash: `{info.get('config_hash')}` (the resolved config is the run's "
        "`config/resolved_config.json` artifact)",
    ]
    if info.get("trial"):
        lines.append(f"- sweep trial: `{info['trial']}`")
    pk = info.get("packages") or {}
    if pk:
        lines.append("- packages: " + ", ".join(f"{k} {v}" for k, v in sorted(pk.items())))

    metrics: dict[str, dict[str, float]] = info.get("metrics") or {}
    intervals = info.get("intervals") or {}
    if metrics:
        models = list(metrics)
        names = list(next(iter(metrics.values())))
        level = info.get("level")
        lines += ["", "## Test metrics", ""]
        if level:
            lines.append(f"Brackets: {level:.0%} bootstrap intervals.")
            lines.append("")
        shown = ["this model" if m == "challenger" else m for m in models]
        lines.append("| metric | " + " | ".join(shown) + " |")
        lines.append("|---|" + "---:|" * len(models))
        for n in names:
            cells = []
            for m in models:
                cell = _v(metrics[m].get(n))
                lo, hi = (intervals.get(m) or {}).get(n, (None, None))
                if lo is not None:
                    cell += f" [{lo:.3f}, {hi:.3f}]"
                cells.append(cell)
            lines.append(f"| {n} | " + " | ".join(cells) + " |")
        if info.get("baseline"):
            lines.append("")
            lines.append(f"The baseline is `{info['baseline']}` on the same features and splits.")
    slices = info.get("slices") or []
    if slices:
        names = list(slices[0]["metrics"].get("challenger", {}))
        lines += ["", "## Slices (this model)", ""]
        lines.append("| column | slice | rows | " + " | ".join(names) + " |")
        lines.append("|---|---|---:|" + "---:|" * len(names))
        for s in slices:
            m = s["metrics"].get("challenger", {})
            lines.append(
                f"| {s['column']} | {s['slice']} | {s['rows']} | "
                + " | ".join(_v(m.get(n)) for n in names)
                + " |"
            )
    gate = info.get("gate")
    if gate:
        lines += ["", f"## Gate: {'passed' if gate['passed'] else 'rejected'}", ""]
        lines += [f"- {r}" for r in gate["reasons"]]
    if info.get("report"):
        lines += ["", f"Full evaluation report: run artifact `{info['report']}`."]
    return "\n".join(lines) + "\n"


def description(card: str, artifact: str = "model_card.md") -> str:
    """The card as a version description, cut to MLflow's limit with a pointer."""
    if len(card) <= DESCRIPTION_MAX:
        return card
    tail = f"\n\n_(cut; the full card is the run artifact `{artifact}`)_\n"
    return card[: DESCRIPTION_MAX - len(tail)].rsplit("\n", 1)[0] + tail
