"""A data profile (and its drift against the champion's) as a self-contained HTML page.

Float and int columns are drawn as equal-width histograms (the profile's ``histogram``), the
champion's as an outline over them; bool and string columns as shares per value. The PSI in
the table is computed on the champion's decile bins (:mod:`rayline.data.drift`), which are
not drawn: every decile holds ~10% of the champion's rows, so its bars would hide the shape.
"""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np

from rayline.data.drift import (
    NULL,
    OTHER,
    ColumnDrift,
    DriftReport,
    column_shares,
    numeric_shares,
)
from rayline.data.profile import HISTOGRAM_BINS, ColumnProfile, Profile, histogram_edges

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


def _reference_histogram(
    col: ColumnProfile, ref: ColumnProfile | None
) -> tuple[list[float], list[float], bool] | None:
    """The champion's ``(edges, share of its non-null rows per bin, from_quantiles)``.

    Its own stored histogram when it has one; for a profile written before histograms
    existed, one on equal-width edges over its own min/max with the shares read off its
    stored quantiles (a piecewise-linear CDF, so within about one percentile of each edge:
    ``from_quantiles`` is True and the chart says so). None when there is nothing to draw.
    """
    if ref is None or ref.kind != "numeric" or ref.type == "bool" or ref.count == ref.nulls:
        return None
    if ref.histogram and ref.histogram_edges and sum(ref.histogram) > 0:
        total = sum(ref.histogram)
        return list(ref.histogram_edges), [k / total for k in ref.histogram], False
    if not ref.quantiles or ref.min is None or ref.max is None:
        return None
    edges = histogram_edges(ref.min, ref.max, HISTOGRAM_BINS, integer=ref.type == "int")
    # Every value lies in [edges[0], edges[-1]], so the open end bins are the closed ones;
    # the shares are of all rows, nulls first: renormalised to the non-null rows.
    shares = numeric_shares(ref, edges[1:-1])[1:]
    return edges, [float(v) for v in shares / max(shares.sum(), 1e-12)], True


def _histogram_svg(col: ColumnProfile, ref: ColumnProfile | None) -> str:
    """This run's equal-width histogram as bars, the champion's as an outline on one x-axis.

    The two histograms generally have different edges (each spans its own data's min and
    max), so the champion's is drawn on its own edges rather than re-binned: its counts on
    this run's edges are not known (a stored profile keeps only its own bins), and splitting
    its bins proportionally would invent a flat distribution inside each. The x-axis spans
    both ranges. Bar heights are this run's share of its non-null rows per bin; the
    champion's bin heights are its share per bin times (this run's bin width / its bin
    width), i.e. the share it would have in a bin of this run's width. Both are therefore
    densities in the same unit, so the areas compare (and when the widths agree, which they
    do for equal min/max, the heights are plain shares per bin).
    """
    edges, counts = col.histogram_edges or [], col.histogram or []
    n = sum(counts)
    cur = [k / n if n else 0.0 for k in counts]
    width_c = (edges[-1] - edges[0]) / max(len(counts), 1)
    reference = _reference_histogram(col, ref)
    ref_h: list[float] = []
    if reference is not None:
        r_edges, r_shares, _ = reference
        width_r = (r_edges[-1] - r_edges[0]) / max(len(r_shares), 1)
        ref_h = [v * width_c / width_r for v in r_shares]
    lo = min([edges[0], *([reference[0][0]] if reference else [])])
    hi = max([edges[-1], *([reference[0][-1]] if reference else [])])
    span = (hi - lo) or 1.0
    left, plot_w, top_pad, plot_h, axis_h = 56, 560, 14, 130, 34
    top = max([*cur, *ref_h, 1e-9])

    def px(x: float) -> float:
        return left + plot_w * (x - lo) / span

    def py(h: float) -> float:
        return top_pad + plot_h * (1 - h / top)

    base = top_pad + plot_h
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + plot_w + 24}" '
        f'height="{base + axis_h}" role="img">',
        f'<text x="{left - 6}" y="{top_pad + 4}" font-size="10" text-anchor="end">'
        f"{_pct(top)}</text>",
        f'<text x="{left - 6}" y="{base}" font-size="10" text-anchor="end">0</text>',
    ]
    # One bin per integer value (histogram_edges' half-integer edges): label the value.
    per_value = width_c == 1.0 and edges[0] % 1 == 0.5
    for i, share in enumerate(cur):
        x0, x1 = px(edges[i]), px(edges[i + 1])
        close = "]" if i == len(cur) - 1 else ")"
        where = (
            f"{edges[i] + 0.5:.4g}" if per_value else f"[{edges[i]:.4g}, {edges[i + 1]:.4g}{close}"
        )
        tip = f"{where}: {counts[i]:,} rows ({_pct(share)})"
        parts.append(
            f'<rect class="cur" x="{x0:.1f}" y="{py(share):.1f}" '
            f'width="{max(x1 - x0 - 1, 0.5):.1f}" height="{base - py(share):.1f}" '
            f'fill="{_CUR}" fill-opacity="0.75"><title>{html.escape(tip)}</title></rect>'
        )
    if reference is not None:
        r_edges, r_shares, approx = reference
        points = [(px(r_edges[0]), base)]
        for i, h in enumerate(ref_h):
            points += [(px(r_edges[i]), py(h)), (px(r_edges[i + 1]), py(h))]
        points.append((px(r_edges[-1]), base))
        path = " ".join(
            f"{'M' if i == 0 else 'L'}{x:.1f},{y:.1f}" for i, (x, y) in enumerate(points)
        )
        how = "from its percentiles" if approx else f"its own {len(r_shares)} bins"
        tip = f"champion: {ref.count - ref.nulls:,} non-null rows, {how}"
        parts.append(
            f'<path class="ref" d="{path}" fill="none" stroke="{_REF}" stroke-width="2">'
            f"<title>{html.escape(tip)}</title></path>"
        )
    parts.append(
        f'<line x1="{left}" y1="{base}" x2="{left + plot_w}" y2="{base}" stroke="#9aa5b1"/>'
    )
    for x in np.linspace(lo, hi, 5):
        parts.append(
            f'<line x1="{px(x):.1f}" y1="{base}" x2="{px(x):.1f}" y2="{base + 4}" '
            f'stroke="#9aa5b1"/><text x="{px(x):.1f}" y="{base + 16}" font-size="10" '
            f'text-anchor="middle">{_fmt(float(x))}</text>'
        )
    parts.append(
        f'<text x="{left + plot_w / 2}" y="{base + 30}" font-size="10" text-anchor="middle">'
        "share of non-null rows per bin</text></svg>"
    )
    caption = f"{len(counts)} equal-width bins"
    if reference is not None:
        caption += "; outline: the champion on its own bins, scaled to this run's bin width" + (
            " (read off its percentiles: its profile has no histogram)" if reference[2] else ""
        )
    return f'<div class="note">{html.escape(caption)}</div>' + "".join(parts)


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

    Float and int columns show their equal-width histogram (:func:`_histogram_svg`), the
    reference's (the champion's training data) as an amber outline on the same x-axis; a
    profile without a histogram (written by an older rayline) falls back to the share of
    rows per reference bin (its ``bins`` quantile bins, edges labelled). Bool and categorical
    columns show the share per value (the most frequent categories); this run in blue, the
    reference in amber when given.
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
        note = ""
        if d is not None:
            note = f'<div class="note">{_badge(d.status)} {esc(d.reason)}'
            note += f" <i>({esc(d.note)})</i></div>" if d.note else "</div>"
        if col.histogram and col.histogram_edges:
            chart = _histogram_svg(col, ref)
        else:
            chart = _bars_svg(*_chart_rows(*_chart_data(col, ref, d, bins)))
            if col.kind == "numeric" and col.type != "bool" and col.quantiles:
                chart = (
                    '<div class="note">This profile has no histogram (written by an older '
                    "rayline): shares per decile bin.</div>" + chart
                )
        charts.append(
            f'<div class="col"><h2>{esc(name)} <small>{esc(col.type or col.kind)}</small></h2>'
            f'<div class="stats">{esc(_stats_line(col))}</div>{note}{chart}</div>'
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
