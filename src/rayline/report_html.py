"""The evaluation report as pictures and one self-contained HTML page.

PNG figures (matplotlib, Agg backend, no display) of every scored model side by side —
the challenger, the champion, the baseline — and one HTML page that embeds them (base64)
with the metric tables, so the page opens anywhere, from MLflow's artifact view included.
matplotlib and scikit-learn are imported here and in :mod:`rayline.analysis` only; nothing
the registered model loads imports either.
"""

from __future__ import annotations

import base64
import html
import math
from pathlib import Path
from typing import Any

import numpy as np

#: Colours per model, in report order (challenger first).
COLOURS = ["#1f77b4", "#ff7f0e", "#7f7f7f", "#2ca02c", "#9467bd", "#8c564b", "#e377c2"]
#: The most points a scatter plot draws (a random, seeded subset beyond it).
SCATTER_MAX = 5000


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: Path) -> str:
    fig.tight_layout()
    fig.savefig(path, format="png")
    return str(path)


def figures(
    task: str,
    models: dict[str, tuple[np.ndarray, np.ndarray]],
    classes: list[str] | None,
    out_dir: str | Path,
) -> dict[str, str]:
    """Draw the task's figures for every model; return figure name -> PNG path.

    Args:
        models: model name -> ``(y_true, output)``, the challenger first. Each model's
            pair is its own (the baseline reads the split in its own pass).
        classes: Class labels in index order (classification).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    models = {k: v for k, v in models.items() if len(v[0])}
    if not models:
        return {}
    if task == "classification":
        return {
            "roc": _save(_curves(models, "roc"), out / "roc.png"),
            "precision_recall": _save(_curves(models, "pr"), out / "precision_recall.png"),
            "confusion_matrix": _save(_confusion(models, classes), out / "confusion_matrix.png"),
            "reliability": _save(_reliability(models), out / "reliability.png"),
        }
    return {
        "residuals_vs_predicted": _save(_residuals(models), out / "residuals_vs_predicted.png"),
        "residual_histogram": _save(_residual_hist(models), out / "residual_histogram.png"),
        "predicted_vs_actual": _save(_pred_actual(models), out / "predicted_vs_actual.png"),
        "error_by_target_decile": _save(_by_decile(models), out / "error_by_target_decile.png"),
    }


def _onehot(y: np.ndarray, k: int) -> np.ndarray:
    return np.eye(k)[np.asarray(y).astype(np.int64)]


def _curves(models, kind: str):
    """ROC or precision-recall: the positive class for two classes, else micro-averaged."""
    from sklearn.metrics import auc, precision_recall_curve, roc_curve

    fig = _figure(6, 5)
    ax = fig.subplots()
    for i, (name, (y, proba)) in enumerate(models.items()):
        k = proba.shape[1]
        if k == 2:
            truth, score = (np.asarray(y) == 1).astype(int), proba[:, 1]
        else:
            truth, score = _onehot(y, k).ravel(), proba.ravel()
        if truth.min() == truth.max():
            continue
        colour = COLOURS[i % len(COLOURS)]
        if kind == "roc":
            fpr, tpr, _ = roc_curve(truth, score)
            ax.plot(fpr, tpr, color=colour, label=f"{name} (AUC {auc(fpr, tpr):.3f})")
        else:
            prec, rec, _ = precision_recall_curve(truth, score)
            ax.plot(rec, prec, color=colour, label=name, drawstyle="steps-post")
    if kind == "roc":
        ax.plot([0, 1], [0, 1], "--", color="#bbbbbb", lw=1)
        ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC curve")
    else:
        ax.set(xlabel="recall", ylabel="precision", title="precision-recall curve")
    first = next(iter(models.values()))[1]
    if first.shape[1] > 2:
        ax.set_title(ax.get_title() + " (micro-average over classes)")
    ax.set(xlim=(0, 1), ylim=(0, 1.02))
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right" if kind == "roc" else "lower left", fontsize=8)
    return fig


def _confusion(models, classes):
    from sklearn.metrics import confusion_matrix

    fig = _figure(4.2 * len(models), 4)
    axes = np.atleast_1d(fig.subplots(1, len(models)))
    for ax, (name, (y, proba)) in zip(axes, models.items(), strict=True):
        k = proba.shape[1]
        labels = [str(c) for c in (classes or range(k))]
        cm = confusion_matrix(np.asarray(y).astype(int), proba.argmax(axis=1), labels=range(k))
        ax.imshow(cm, cmap="Blues")
        for (r, c), v in np.ndenumerate(cm):
            dark = v > cm.max() / 2
            ax.text(c, r, str(v), ha="center", va="center", color="white" if dark else "black")
        ax.set_xticks(range(k), labels, rotation=45 if k > 4 else 0)
        ax.set_yticks(range(k), labels)
        ax.set(xlabel="predicted", ylabel="true", title=name)
    return fig


def _reliability(models):
    from rayline.analysis import calibration

    fig = _figure(6, 5)
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], "--", color="#bbbbbb", lw=1, label="perfectly calibrated")
    basis = ""
    for i, (name, (y, proba)) in enumerate(models.items()):
        cal = calibration(y, proba)
        basis = cal["basis"]
        xs = [b["confidence"] for b in cal["bins"]]
        ys = [b["observed"] for b in cal["bins"]]
        ax.plot(
            xs,
            ys,
            "o-",
            color=COLOURS[i % len(COLOURS)],
            label=f"{name} (ECE {cal['ece']:.3f}, Brier {cal['brier']:.3f})",
        )
    ax.set(
        xlim=(0, 1),
        ylim=(0, 1),
        xlabel=f"predicted probability ({basis})",
        ylabel="observed frequency",
        title="reliability diagram",
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    return fig


def _subset(n: int) -> np.ndarray:
    if n <= SCATTER_MAX:
        return np.arange(n)
    return np.sort(np.random.default_rng(0).choice(n, SCATTER_MAX, replace=False))


def _residuals(models):
    fig = _figure(4.2 * len(models), 4)
    axes = np.atleast_1d(fig.subplots(1, len(models), sharey=True))
    for i, (ax, (name, (y, pred))) in enumerate(zip(axes, models.items(), strict=True)):
        pred = np.asarray(pred, dtype=float).reshape(-1)
        keep = _subset(len(pred))
        resid = np.asarray(y, dtype=float) - pred
        ax.scatter(pred[keep], resid[keep], s=8, alpha=0.5, color=COLOURS[i % len(COLOURS)])
        ax.axhline(0, color="#999999", lw=1)
        ax.set(xlabel="predicted", title=name)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("residual (actual - predicted)")
    return fig


def _residual_hist(models):
    fig = _figure(6, 4.5)
    ax = fig.subplots()
    all_resid = np.concatenate(
        [np.asarray(y, float) - np.asarray(p, float).reshape(-1) for y, p in models.values()]
    )
    edges = np.histogram_bin_edges(all_resid, bins=30)
    for i, (name, (y, pred)) in enumerate(models.items()):
        resid = np.asarray(y, float) - np.asarray(pred, float).reshape(-1)
        ax.hist(resid, bins=edges, histtype="step", lw=1.5, color=COLOURS[i % len(COLOURS)],
                label=name)  # fmt: skip
    ax.axvline(0, color="#999999", lw=1)
    ax.set(xlabel="residual (actual - predicted)", ylabel="rows", title="residual histogram")
    ax.legend(fontsize=8)
    return fig


def _pred_actual(models):
    fig = _figure(6, 5)
    ax = fig.subplots()
    lo, hi = math.inf, -math.inf
    for i, (name, (y, pred)) in enumerate(models.items()):
        y, pred = np.asarray(y, float), np.asarray(pred, float).reshape(-1)
        keep = _subset(len(y))
        ax.scatter(y[keep], pred[keep], s=8, alpha=0.5, color=COLOURS[i % len(COLOURS)],
                   label=name)  # fmt: skip
        lo, hi = min(lo, y.min(), pred.min()), max(hi, y.max(), pred.max())
    ax.plot([lo, hi], [lo, hi], "--", color="#bbbbbb", lw=1)
    ax.set(xlabel="actual", ylabel="predicted", title="predicted vs actual")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def _by_decile(models):
    from rayline.analysis import regression_detail

    fig = _figure(7, 4.5)
    ax = fig.subplots()
    width = 0.8 / len(models)
    ticks = 0
    for i, (name, (y, pred)) in enumerate(models.items()):
        rows = regression_detail(y, pred)["by_target_decile"]
        ticks = ticks or len(rows)  # the first model's deciles label the axis
        ax.bar(np.arange(len(rows)) + i * width, [r["mae"] for r in rows], width,
               color=COLOURS[i % len(COLOURS)], label=name)  # fmt: skip
    ax.set(xlabel="decile of the actual target (1 = lowest)", ylabel="mean absolute error",
           title="error by target decile")  # fmt: skip
    ax.set_xticks(np.arange(ticks) + 0.4 - width / 2, [str(t + 1) for t in range(ticks)])
    ax.legend(fontsize=8)
    return fig


# -- the page -----------------------------------------------------------------------------------
_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:24px;color:#222;max-width:1200px}
h1{font-size:22px}h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:8px 0;font-size:13px}
th,td{border:1px solid #ddd;padding:4px 8px;text-align:right}th{background:#f4f4f4}
td.l,th.l{text-align:left}.pass{color:#137333;font-weight:600}.fail{color:#b3261e;font-weight:600}
.muted{color:#777}img{max-width:100%;border:1px solid #eee;margin:6px 0}
.figs{display:flex;flex-wrap:wrap;gap:12px}.figs img{max-width:580px}.figs img.wide{max-width:100%}
"""


def _e(x: Any) -> str:
    return html.escape(str(x))


def _v(x: Any, digits: int = 4) -> str:
    if x is None:
        return "<span class='muted'>-</span>"
    if isinstance(x, float) and not math.isfinite(x):
        return "<span class='muted'>NaN</span>"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return _e(x)


def _table(header: list[str], rows: list[list[str]], left: int = 1) -> str:
    head = "".join(
        f"<th class='{'l' if i < left else ''}'>{_e(h)}</th>" for i, h in enumerate(header)
    )
    body = "".join(
        "<tr>"
        + "".join(f"<td class='{'l' if i < left else ''}'>{c}</td>" for i, c in enumerate(r))
        + "</tr>"
        for r in rows
    )
    return f"<table>{f'<tr>{head}</tr>' if any(header) else ''}{body}</table>"


def render_html(doc: dict[str, Any], figure_paths: dict[str, str]) -> str:
    """The self-contained report page.

    Args:
        doc: The report's data (:func:`rayline.stages.report.report_document`): ``title``,
            ``facts`` (label -> text), ``models`` (name -> ``{"metrics", "intervals",
            "detail"}``), ``metric_names``, ``gate`` (the decision as a dict), ``slices``,
            ``task``.
        figure_paths: figure name -> PNG path, embedded inline.
    """
    models: dict[str, Any] = doc["models"]
    names = list(models)
    parts = [f"<h1>{_e(doc['title'])}</h1>"]
    parts.append(_table(["", ""], [[_e(k), _e(v)] for k, v in doc["facts"].items()], left=2))

    gate = doc.get("gate")
    if gate:
        verdict = "PASSED" if gate["passed"] else "REJECTED"
        cls = "pass" if gate["passed"] else "fail"
        parts.append(f"<h2>Gate: <span class='{cls}'>{verdict}</span></h2><ul>")
        for line in gate["reasons"]:
            mark = "fail" if line.rstrip().endswith("FAIL") or ": FAIL" in line else "pass"
            parts.append(f"<li class='{mark}'>{_e(line)}</li>")
        parts.append("</ul>")
        for name, other in (gate.get("others") or {}).items():
            v = "passed" if other["passed"] else "rejected"
            failed = [r for r in other["reasons"] if r.endswith("FAIL")]
            why = f": {_e(failed[0])}" if failed else ""
            parts.append(f"<p class='muted'>{_e(name)} (not chosen): {v}{why}</p>")

    parts.append("<h2>Test metrics</h2>")
    level = doc.get("level")
    rows = []
    for m in doc["metric_names"]:
        row = [_e(m)]
        for n in names:
            value = models[n]["metrics"].get(m) if models[n]["metrics"] else None
            lo, hi = (models[n].get("intervals") or {}).get(m, (None, None))
            cell = _v(value)
            if lo is not None:
                cell += f" <span class='muted'>[{lo:.3f}, {hi:.3f}]</span>"
            row.append(cell)
        rows.append(row)
    parts.append(_table(["metric", *names], rows))
    if level:
        parts.append(
            f"<p class='muted'>Brackets: {level:.0%} percentile bootstrap intervals, "
            f"{doc.get('resamples')} resamples of the test rows (seed {doc.get('seed')}).</p>"
        )

    if doc["task"] == "classification":
        parts.append("<h2>Calibration</h2>")
        cal_rows = [
            [_e(n), _v((models[n].get("detail") or {}).get("calibration", {}).get("brier")),
             _v((models[n].get("detail") or {}).get("calibration", {}).get("ece"))]
            for n in names if models[n].get("detail")
        ]  # fmt: skip
        parts.append(_table(["model", "Brier score", "ECE"], cal_rows))
        parts.append("<h2>Per class</h2>")
        for n in names:
            detail = models[n].get("detail")
            if not detail:
                continue
            auc = {c["class"]: c.get("roc_auc") for c in detail["curves"]}
            ap = {c["class"]: c.get("average_precision") for c in detail["curves"]}
            per = [
                [_e(c["class"]), _v(c["precision"]), _v(c["recall"]), _v(c["f1"]),
                 _v(auc.get(c["class"])), _v(ap.get(c["class"])), str(c["support"])]
                for c in detail["per_class"]
            ]  # fmt: skip
            parts.append(f"<p><b>{_e(n)}</b></p>")
            parts.append(
                _table(
                    ["class", "precision", "recall", "F1", "ROC-AUC", "avg precision", "support"],
                    per,
                )  # fmt: skip
            )
    else:
        parts.append("<h2>Residuals</h2>")
        res_rows = []
        for n in names:
            r = (models[n].get("detail") or {}).get("residuals") or {}
            if r:
                res_rows.append([_e(n), _v(r["mean"]), _v(r["std"]), _v(r["median_absolute_error"]),
                                 _v(r["max_error"]), _v(r["explained_variance"])])  # fmt: skip
        parts.append(
            _table(
                ["model", "mean", "std", "median |error|", "max |error|", "explained var."],
                res_rows,
            )  # fmt: skip
        )

    slices = doc.get("slices") or []
    if slices:
        parts.append("<h2>Slices</h2>")
        metric_names = doc["metric_names"]
        rows = []
        for s in slices:
            for n in [m for m in names if m in s["metrics"]]:
                rows.append(
                    [_e(s["column"]), _e(s["slice"]), str(s["rows"]), _e(n)]
                    + [_v(s["metrics"][n].get(m)) for m in metric_names]
                )
        parts.append(_table(["column", "slice", "rows", "model", *metric_names], rows, left=2))

    if figure_paths:
        parts.append("<h2>Figures</h2><div class='figs'>")
        for name, path in figure_paths.items():
            data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
            wide = " class='wide'" if name == "confusion_matrix" and len(names) > 2 else ""
            parts.append(f"<img{wide} alt='{_e(name)}' src='data:image/png;base64,{data}'>")
        parts.append("</div>")
    body = "\n".join(parts)
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{_e(doc['title'])}</title><style>{_CSS}</style></head><body>{body}</body></html>"
    )
