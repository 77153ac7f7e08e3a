"""A data profile (and its drift against the champion's) as a self-contained HTML page."""

from __future__ import annotations

import html
from pathlib import Path

from rayline.data.drift import NULL, OTHER, ColumnDrift, DriftReport, column_shares
from rayline.data.profile import ColumnProfile, Profile

_CUR, _REF = "#3b82f6", "#f59e0b"
_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px auto;max-width:1100px;
color:#1f2933;padding:0 16px}
h1{font-size:22px;margin-bottom:4px} h2{font-size:16px;margin:0 0 4px}
.sub{color:#616e7c;margin-top:0}
table{border-collapse:collapse;font-size:13px;margin:12px 0 20px}
td,th{padding:5px 10px;border-bottom:1px solid #e4e7eb;text-align:right;white-space:nowrap}
th{background:#f5f7fa;position:sticky;top:0} td:first-child,th:first-child{text-align:left}
td.l{text-align:left;max-width:260px;overflow:hidden;text-overflow:ellipsis}
.badge{display:inline-block;padding:1px 8px;border-radius:9px;font-size:12px;font-weight:600}
.ok{background:#e3f9e5;color:#1b7f3b} .warn{background:#fff3c4;color:#8d5b00}
.fail{background:#ffe3e3;color:#c53030} .skipped,.none{background:#eef0f3;color:#616e7c}
.legend span{display:inline-block;width:12px;height:12px;margin:0 4px 0 14px;
vertical-align:middle;border-radius:2px}
.col{border:1px solid #e4e7eb;border-radius:8px;padding:12px 16px;margin:14px 0}
.stats{color:#616e7c;font-size:12px;margin:2px 0 8px} .note{font-size:12px;margin:4px 0}
svg text{fill:#3e4c59;font-family:inherit}
"""
_MAX_CATEGORIES = 20


def _fmt(v: float | None) -> str:
    return "—" if v is None else f"{v:.4g}"


def _pct(v: float) -> str:
    return f"{100 * v:.1f}%"


def _bars_svg(labels: list[str], cur: list[float], ref: list[float] | None) -> str:
    """Horizontal bars per bin: current (blue) and, when given, reference (amber) below it."""
    row_h = 26 if ref is not None else 18
    label_w, bar_w, pad = 200, 420, 60
    top = max([*cur, *(ref or []), 1e-9])
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{label_w + bar_w + pad}" '
        f'height="{row_h * len(labels) + 6}" role="img">'
    ]
    for i, lab in enumerate(labels):
        y = 3 + i * row_h
        short = lab if len(lab) <= 30 else lab[:29] + "…"
        tip = f"{lab}: this run {_pct(cur[i])}" + (
            f", champion {_pct(ref[i])}" if ref is not None else ""
        )
        parts.append(f"<g><title>{html.escape(tip)}</title>")
        parts.append(
            f'<text x="{label_w - 8}" y="{y + 12}" font-size="11" text-anchor="end">'
            f"{html.escape(short)}</text>"
        )
        series = [(cur[i], "cur")] + ([(ref[i], "ref")] if ref is not None else [])
        for j, (share, cls) in enumerate(series):
            w = bar_w * share / top
            by = y + 2 + 11 * j
            parts.append(
                f'<rect class="{cls}" x="{label_w}" y="{by}" width="{w:.1f}" height="9" rx="1" '
                f'fill="{_CUR if cls == "cur" else _REF}"/>'
                f'<text x="{label_w + w + 4:.1f}" y="{by + 8}" font-size="10">{_pct(share)}</text>'
            )
        parts.append("</g>")
    parts.append("</svg>")
    return "".join(parts)


def _chart_rows(
    labels: list[str], cur: list[float], ref: list[float] | None
) -> tuple[list[str], list[float], list[float] | None]:
    """Rows to draw: empty null/other rows dropped; categories largest first, past 20 folded.

    Numeric bins keep their order. Categories past the 20 largest (by the larger of the two
    shares) are added to the "other" row, which is drawn last with the nulls.
    """
    size = [max(cur[i], ref[i] if ref is not None else 0.0) for i in range(len(labels))]
    cur, ref = list(cur), (list(ref) if ref is not None else None)
    keep = list(range(len(labels)))
    if OTHER in labels:
        named = sorted((i for i in keep if labels[i] not in (OTHER, NULL)), key=lambda i: -size[i])
        o = labels.index(OTHER)
        for i in named[_MAX_CATEGORIES:]:
            cur[o] += cur[i]
            if ref is not None:
                ref[o] += ref[i]
        size[o] = max(cur[o], ref[o] if ref is not None else 0.0)
        keep = [*named[:_MAX_CATEGORIES], o, labels.index(NULL)]
    keep = [i for i in keep if labels[i] not in ("null", NULL, OTHER) or size[i] > 0]
    names = {OTHER: "(other)", NULL: "(null)"}
    return (
        [names.get(labels[i], labels[i]) for i in keep],
        [cur[i] for i in keep],
        [ref[i] for i in keep] if ref is not None else None,
    )


def _chart_data(
    col: ColumnProfile, ref: ColumnProfile | None, drift: ColumnDrift | None, bins: int
) -> tuple[list[str], list[float], list[float] | None]:
    if drift is not None and drift.bins:
        return drift.bins, drift.current_shares, drift.reference_shares
    if ref is not None and ref.kind == col.kind:
        labels, c_sh, r_sh = column_shares(col, ref, bins)
        return labels, list(c_sh), list(r_sh)
    # No reference: the column against its own decile bins (or its own categories).
    labels, c_sh, _ = column_shares(col, col, bins)
    return labels, list(c_sh), None


def _stats_line(col: ColumnProfile) -> str:
    nulls = f"{col.nulls:,} nulls ({_pct(col.nulls / max(col.count, 1))})"
    if col.kind == "categorical":
        distinct = f"{col.distinct:,} distinct, " if col.distinct is not None else ""
        return f"{col.count:,} rows, {nulls}, {distinct}{col.other_count:,} rows outside the top"
    if col.type == "bool":
        return f"{col.count:,} rows, {nulls}, {_pct(col.mean or 0.0)} true"
    return (
        f"{col.count:,} rows, {nulls}, min {_fmt(col.min)}, max {_fmt(col.max)}, "
        f"mean {_fmt(col.mean)} ± {_fmt(col.std)}"
    )


def _summary_cell(col: ColumnProfile) -> str:
    if col.kind == "categorical":
        if not col.top:
            return "—"
        name, n = next(iter(col.top.items()))
        return f"{name} ({_pct(n / max(col.count, 1))})"
    if col.type == "bool":
        return "—" if col.mean is None else f"{_pct(col.mean)} true"
    return f"{_fmt(col.mean)} ± {_fmt(col.std)}"


def _badge(status: str) -> str:
    return f'<span class="badge {html.escape(status)}">{html.escape(status)}</span>'


def render_html(
    current: Profile,
    reference: Profile | None = None,
    drift: DriftReport | None = None,
    title: str = "rayline data profile",
    bins: int = 10,
) -> str:
    """A self-contained HTML page (inline CSS and SVG): a summary table and a chart per column.

    Numeric columns show the share of rows per reference bin (its ``bins`` quantile bins,
    edges labelled), categorical columns the share of their most frequent categories; this
    run in blue, the reference (the champion's training data) in amber when given.
    """
    esc = html.escape
    names = list(current.columns) + [
        n for n in (drift.columns if drift else {}) if n not in current.columns
    ]
    rows, charts = [], []
    for name in names:
        col = current.columns.get(name)
        d = drift.columns.get(name) if drift else None
        ref = reference.columns.get(name) if reference else None
        status = d.status if d else "none"
        psi_txt = "" if d is None or d.psi is None else f"{d.psi:.3f}"
        unseen_txt = "" if d is None or d.unseen_rate is None else _pct(d.unseen_rate)
        if col is None:
            rows.append(
                f'<tr><td class="l">{esc(name)}</td><td colspan="6" class="l">not in this '
                f"run</td><td>{_badge(status)}</td></tr>"
            )
            continue
        rows.append(
            f'<tr><td class="l">{esc(name)}</td><td>{esc(col.type or col.kind)}</td>'
            f"<td>{col.count:,}</td><td>{col.nulls:,} ({_pct(col.nulls / max(col.count, 1))})"
            f'</td><td class="l">{esc(_summary_cell(col))}</td><td>{psi_txt}</td>'
            f"<td>{unseen_txt}</td><td>{_badge(status) if d else ''}</td></tr>"
        )
        labels, cur, ref_sh = _chart_rows(*_chart_data(col, ref, d, bins))
        note = ""
        if d is not None:
            note = f'<div class="note">{_badge(d.status)} {esc(d.reason)}'
            note += f" <i>({esc(d.note)})</i></div>" if d.note else "</div>"
        charts.append(
            f'<div class="col"><h2>{esc(name)} <small>{esc(col.type or col.kind)}</small></h2>'
            f'<div class="stats">{esc(_stats_line(col))}</div>{note}'
            f"{_bars_svg(labels, cur, ref_sh)}</div>"
        )
    has_ref = reference is not None or drift is not None
    ref_name = esc(drift.reference) if drift and drift.reference else "reference"
    legend = (
        f'<div class="legend"><span style="background:{_CUR}"></span>this run'
        + (f'<span style="background:{_REF}"></span>champion ({ref_name})' if has_ref else "")
        + "</div>"
    )
    overall = ""
    if drift is not None:
        failed = f" — failing: {esc(', '.join(drift.failed))}" if drift.failed else ""
        overall = f"<p>Drift against {ref_name}: {_badge(drift.status)}{failed}</p>"
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{esc(title)}</title><style>{_CSS}</style></head><body>"
        f"<h1>{esc(title)}</h1><p class='sub'>{current.rows:,} rows, "
        f"{len(current.columns)} columns</p>{overall}"
        "<table><tr><th>column</th><th>type</th><th>rows</th><th>nulls</th>"
        "<th>mean ± std / top category</th><th>PSI</th><th>unseen</th><th>status</th></tr>"
        + "".join(rows)
        + f"</table>{legend}"
        + "".join(charts)
        + "</body></html>"
    )


def write_html(
    path: str | Path,
    current: Profile,
    reference: Profile | None = None,
    drift: DriftReport | None = None,
    title: str = "rayline data profile",
) -> Path:
    """Write :func:`render_html`'s page to ``path`` (parents created); return the path."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_html(current, reference, drift, title), encoding="utf-8")
    return out
