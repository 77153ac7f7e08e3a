"""Column profiles, drift against the champion's training data, and a rendered report.

:func:`compute_profile` makes ONE streaming pass (a single ``Dataset.aggregate`` call) and
keeps, per column: count, nulls, min/max/mean/std and 101 approximate quantiles (KLL sketches,
Ray Data's ``ApproximateQuantile``) for numeric columns; the most frequent categories with
their counts (and the count of all others) for string columns. A :class:`Profile` is plain
JSON: it is saved with the run and attached to the registered model version, so the next
run can compare its data with the data the champion was trained on.

:func:`compare` computes the population stability index (PSI) per column:

* numeric -- on the reference's quantile bins (``bins`` equal-probability bins of the
  reference, open-ended at both ends, plus a bin for nulls). The reference's share per bin
  is known from its quantiles; the current share is estimated from the current profile's
  quantile function (its CDF interpolated at the reference's bin edges), so no second pass
  over either dataset is needed. With 101 quantile points the estimate is good to about a
  percentage point of mass per bin.
* categorical -- over the union of both top-k lists plus an "other" bucket and nulls; also
  the *unseen rate*: the share of current rows whose category the reference never saw
  (an upper bound when the reference itself had an "other" remainder).

PSI = sum((c - r) * ln(c / r)) with shares floored at 1e-4. Rules of thumb: < 0.1 stable,
0.1-0.25 moderate shift, > 0.25 a large one. Thresholds and the action (``warn`` or
``fail``) are per column in ``drift`` config; a ``fail`` makes the gate reject the model.
"""

from __future__ import annotations

import html
import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

FORMAT_VERSION = 1
QUANTILES = [i / 100 for i in range(101)]
EPS = 1e-4
OTHER = "__other__"
NULL = "__null__"


@dataclass
class ColumnProfile:
    """One column's statistics (numeric fields are None for string columns and vice versa)."""

    kind: str  # "numeric" | "categorical"
    count: int
    nulls: int
    min: float | None = None
    max: float | None = None
    mean: float | None = None
    std: float | None = None
    quantiles: list[float] | None = None
    top: dict[str, int] | None = None
    other_count: int = 0


@dataclass
class Profile:
    """Every profiled column of one dataset."""

    rows: int
    columns: dict[str, ColumnProfile]
    format_version: int = FORMAT_VERSION

    def to_json(self) -> str:
        """Plain JSON (NaN-free)."""
        return json.dumps(asdict(self), indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Profile:
        """Inverse of :meth:`to_json`."""
        data = json.loads(text)
        if data.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"profile format {data.get('format_version')} is not supported")
        cols = {k: ColumnProfile(**v) for k, v in data["columns"].items()}
        return cls(rows=int(data["rows"]), columns=cols)


# -- computing a profile ----------------------------------------------------------------------
def _num(v: Any) -> float | None:
    if v is None:
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _bools_to_float(batch, columns: list[str]):
    for c in columns:
        batch[c] = batch[c].astype("float64")
    return batch


def compute_profile(ds: Any, columns: dict[str, str], *, top_k: int = 100) -> Profile:
    """Profile ``columns`` (name -> logical type) of a Ray Dataset in one aggregate pass."""
    from ray.data.aggregate import (
        ApproximateQuantile,
        Count,
        Max,
        Mean,
        Min,
        Std,
        ValueCounter,
    )

    numeric = [c for c, t in columns.items() if t in ("float", "int", "bool")]
    categorical = [c for c, t in columns.items() if t == "string"]
    bools = [c for c in numeric if columns[c] == "bool"]
    if bools:
        ds = ds.map_batches(_bools_to_float, fn_kwargs={"columns": bools}, batch_format="pandas")
    aggs: list[Any] = [Count(alias_name="rows")]
    for c in numeric + categorical:
        aggs.append(Count(on=c, ignore_nulls=True, alias_name=f"n:{c}"))
    for c in numeric:
        aggs += [
            Min(c, alias_name=f"min:{c}"),
            Max(c, alias_name=f"max:{c}"),
            Mean(c, alias_name=f"mean:{c}"),
            Std(c, ddof=0, alias_name=f"std:{c}"),
            ApproximateQuantile(c, QUANTILES, alias_name=f"q:{c}"),
        ]
    for c in categorical:
        aggs.append(ValueCounter(c, alias_name=f"vc:{c}"))
    stats = ds.aggregate(*aggs) or {}
    rows = int(stats.get("rows") or 0)
    out: dict[str, ColumnProfile] = {}
    for c in numeric:
        n = int(stats.get(f"n:{c}") or 0)
        q = stats.get(f"q:{c}")
        quantiles = [float(x) for x in q] if n and q is not None and len(q) else None
        if quantiles and not all(math.isfinite(x) for x in quantiles):
            quantiles = None
        out[c] = ColumnProfile(
            kind="numeric",
            count=rows,
            nulls=rows - n,
            min=_num(stats.get(f"min:{c}")) if n else None,
            max=_num(stats.get(f"max:{c}")) if n else None,
            mean=_num(stats.get(f"mean:{c}")) if n else None,
            std=_num(stats.get(f"std:{c}")) if n else None,
            quantiles=quantiles,
        )
    for c in categorical:
        n = int(stats.get(f"n:{c}") or 0)
        vc = stats.get(f"vc:{c}") or {"values": [], "counts": []}
        pairs = [
            (str(v), int(k))
            for v, k in zip(vc["values"], vc["counts"], strict=True)
            if v is not None and not (isinstance(v, float) and math.isnan(v))
        ]
        pairs.sort(key=lambda p: (-p[1], p[0]))
        top = dict(pairs[:top_k])
        out[c] = ColumnProfile(
            kind="categorical",
            count=rows,
            nulls=rows - n,
            top=top,
            other_count=n - sum(top.values()),
        )
    return Profile(rows=rows, columns=out)


# -- drift ------------------------------------------------------------------------------------
def psi(current: np.ndarray, reference: np.ndarray) -> float:
    """Population stability index between two share vectors over the same bins."""
    c = np.maximum(np.asarray(current, dtype=float), EPS)
    r = np.maximum(np.asarray(reference, dtype=float), EPS)
    return float(np.sum((c - r) * np.log(c / r)))


def _cdf(quantiles: list[float], x: np.ndarray) -> np.ndarray:
    """P(X <= x) estimated from a profile's quantile points (QUANTILES probabilities)."""
    q = np.asarray(quantiles, dtype=float)
    p = np.asarray(QUANTILES, dtype=float)
    out = np.empty(len(x))
    for i, v in enumerate(x):
        if v < q[0]:
            out[i] = 0.0
        elif v >= q[-1]:
            out[i] = 1.0
        else:
            # The last quantile point <= v, interpolated within a run of equal values' span.
            hi = np.searchsorted(q, v, side="right")
            lo = hi - 1
            span = q[hi] - q[lo]
            out[i] = p[lo] + (p[hi] - p[lo]) * ((v - q[lo]) / span if span > 0 else 1.0)
    return out


def numeric_bins(reference: ColumnProfile, bins: int) -> list[float]:
    """Interior bin edges: the reference's quantiles at 1/bins, 2/bins, ... (deduplicated)."""
    q = reference.quantiles or []
    if not q:
        return []
    idx = [round(i * (len(q) - 1) / bins) for i in range(1, bins)]
    return sorted(set(q[i] for i in idx))


def numeric_shares(profile: ColumnProfile, edges: list[float]) -> np.ndarray:
    """Share of rows per bin: nulls, (-inf, e1], (e1, e2], ..., (ek, inf)."""
    total = max(profile.count, 1)
    null_share = profile.nulls / total
    if not profile.quantiles:
        return np.array([null_share] + [0.0] * (len(edges) + 1))
    cdf = np.concatenate([[0.0], _cdf(profile.quantiles, np.asarray(edges)), [1.0]])
    return np.concatenate([[null_share], np.diff(cdf) * (1 - null_share)])


def category_shares(profile: ColumnProfile, keys: list[str]) -> np.ndarray:
    """Share of rows per category in ``keys`` (which end with OTHER and NULL)."""
    total = max(profile.count, 1)
    top = profile.top or {}
    shares = [top.get(k, 0) / total for k in keys[:-2]]
    listed = sum(top.get(k, 0) for k in keys[:-2])
    other = (sum(top.values()) - listed + profile.other_count) / total
    return np.array([*shares, other, profile.nulls / total])


@dataclass
class ColumnDrift:
    """Drift of one column: its PSI (and unseen rate for categoricals) against the rules."""

    column: str
    kind: str
    psi: float | None
    unseen_rate: float | None
    status: str  # ok | warn | fail | skipped
    reason: str
    bins: list[str] = field(default_factory=list)
    current_shares: list[float] = field(default_factory=list)
    reference_shares: list[float] = field(default_factory=list)


@dataclass
class DriftReport:
    """Drift of every profiled column against the reference (champion) profile."""

    columns: dict[str, ColumnDrift]
    reference: str = ""

    @property
    def status(self) -> str:
        """The worst column status."""
        order = ["ok", "skipped", "warn", "fail"]
        return max((c.status for c in self.columns.values()), key=order.index, default="ok")

    @property
    def failed(self) -> list[str]:
        """Columns whose drift fails the run's gate."""
        return [c.column for c in self.columns.values() if c.status == "fail"]

    def reasons(self) -> list[str]:
        """One line per warning or failure."""
        return [c.reason for c in self.columns.values() if c.status in ("warn", "fail")]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "status": self.status,
            "failed": self.failed,
            "reference": self.reference,
            "columns": {k: asdict(v) for k, v in self.columns.items()},
        }


def compare(
    current: Profile, reference: Profile, cfg: Any, reference_name: str = ""
) -> DriftReport:
    """Drift of ``current`` against ``reference`` under ``cfg`` (a ``DriftConfig``)."""
    out: dict[str, ColumnDrift] = {}
    for name, cur in current.columns.items():
        rule = cfg.columns.get(name, cfg.default)
        ref = reference.columns.get(name)
        if ref is None or ref.kind != cur.kind:
            out[name] = ColumnDrift(
                name,
                cur.kind,
                None,
                None,
                "skipped",
                f"drift: {name} has no comparable column in the reference profile",
            )
            continue
        unseen = None
        if cur.kind == "numeric":
            edges = numeric_bins(ref, cfg.bins)
            c_sh, r_sh = numeric_shares(cur, edges), numeric_shares(ref, edges)
            labels = ["null", *(_edge_label(edges, i) for i in range(len(edges) + 1))]
        else:
            keys = list(dict.fromkeys([*(ref.top or {}), *(cur.top or {})])) + [OTHER, NULL]
            c_sh, r_sh = category_shares(cur, keys), category_shares(ref, keys)
            labels = keys
            known = set(ref.top or {})
            present = max(cur.count - cur.nulls, 1)
            unseen_rows = sum(v for k, v in (cur.top or {}).items() if k not in known)
            unseen = (unseen_rows + (cur.other_count if ref.other_count == 0 else 0)) / present
        value = psi(c_sh, r_sh)
        broken = []
        if value > rule.psi:
            broken.append(f"PSI {value:.3f} > {rule.psi:g}")
        if unseen is not None and unseen > rule.unseen_rate:
            broken.append(f"unseen categories {100 * unseen:.1f}% > {100 * rule.unseen_rate:g}%")
        status = rule.action if broken else "ok"
        reason = (
            f"drift: {name} " + ", ".join(broken) + f" ({status})"
            if broken
            else f"drift: {name} PSI {value:.3f} <= {rule.psi:g} (ok)"
        )
        out[name] = ColumnDrift(
            name,
            cur.kind,
            value,
            unseen,
            status,
            reason,
            labels,
            [float(x) for x in c_sh],
            [float(x) for x in r_sh],
        )
    return DriftReport(columns=out, reference=reference_name)


def _edge_label(edges: list[float], i: int) -> str:
    if i == 0:
        return f"<= {edges[0]:.4g}" if edges else "all"
    if i == len(edges):
        return f"> {edges[-1]:.4g}"
    return f"({edges[i - 1]:.4g}, {edges[i]:.4g}]"


# -- the rendered report ----------------------------------------------------------------------
_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:24px;color:#1f2933}
h1{font-size:20px} h2{font-size:16px;margin-top:28px}
table{border-collapse:collapse;font-size:13px} td,th{padding:4px 10px;border-bottom:1px solid #e4e7eb;text-align:right}
th{background:#f5f7fa} td:first-child,th:first-child{text-align:left}
.ok{color:#1b7f3b}.warn{color:#b7791f;font-weight:600}.fail{color:#c53030;font-weight:700}.skipped{color:#7b8794}
.legend span{display:inline-block;width:12px;height:12px;margin:0 4px 0 12px;vertical-align:middle}
.col{margin-bottom:18px}
"""
_CUR, _REF = "#3b82f6", "#f59e0b"


def _bars_svg(labels: list[str], cur: list[float], ref: list[float] | None) -> str:
    """Horizontal paired bars: current (blue) and reference (amber) share per bin."""
    row_h, label_w, bar_w = 22, 190, 360
    top = max([*cur, *(ref or []), 1e-9])
    height = row_h * len(labels) + 8
    parts = [f'<svg width="{label_w + bar_w + 70}" height="{height}" role="img">']
    for i, lab in enumerate(labels):
        y = 4 + i * row_h
        text = html.escape(lab if len(lab) <= 28 else lab[:27] + "…")
        parts.append(
            f'<text x="{label_w - 6}" y="{y + 14}" font-size="11" text-anchor="end">{text}</text>'
        )
        w = bar_w * cur[i] / top
        parts.append(f'<rect x="{label_w}" y="{y + 2}" width="{w:.1f}" height="8" fill="{_CUR}"/>')
        if ref is not None:
            wr = bar_w * ref[i] / top
            parts.append(
                f'<rect x="{label_w}" y="{y + 11}" width="{wr:.1f}" height="8" fill="{_REF}"/>'
            )
        parts.append(
            f'<text x="{label_w + max(w, 0) + 4}" y="{y + 10}" font-size="10">{100 * cur[i]:.1f}%</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def render_html(
    current: Profile,
    reference: Profile | None = None,
    drift: DriftReport | None = None,
    title: str = "rayline data profile",
) -> str:
    """A self-contained HTML page: a summary table and one chart per column."""
    esc = html.escape
    rows_html = []
    charts = []
    for name, col in current.columns.items():
        d = drift.columns.get(name) if drift else None
        status = d.status if d else "—"
        summary = (
            f"{col.mean:.4g} ± {col.std:.4g}"
            if col.kind == "numeric" and col.mean is not None
            else (next(iter(col.top), "") if col.top else "")
        )
        rows_html.append(
            f"<tr><td>{esc(name)}</td><td>{col.kind}</td><td>{col.count:,}</td>"
            f"<td>{100 * col.nulls / max(col.count, 1):.2f}%</td><td>{esc(str(summary))}</td>"
            f"<td>{'' if not d or d.psi is None else f'{d.psi:.3f}'}</td>"
            f'<td class="{esc(status)}">{esc(status)}</td></tr>'
        )
        if d and d.bins:
            labels, cur, ref = d.bins, d.current_shares, d.reference_shares
        elif col.kind == "numeric" and col.quantiles:
            edges = numeric_bins(col, 10)
            labels = ["null", *(_edge_label(edges, i) for i in range(len(edges) + 1))]
            cur, ref = list(numeric_shares(col, edges)), None
        elif col.top:
            keys = [*list(col.top)[:20], OTHER, NULL]
            labels, cur, ref = keys, list(category_shares(col, keys)), None
        else:
            continue
        note = f'<div class="{esc(status)}">{esc(d.reason)}</div>' if d else ""
        charts.append(
            f'<div class="col"><h2>{esc(name)}</h2>{note}{_bars_svg(labels, cur, ref)}</div>'
        )
    legend = (
        f'<div class="legend"><span style="background:{_CUR}"></span>this run'
        + (
            f'<span style="background:{_REF}"></span>champion ({esc(drift.reference)})'
            if drift
            else ""
        )
        + "</div>"
    )
    overall = f'<p>Drift: <b class="{drift.status}">{drift.status}</b></p>' if drift else ""
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{esc(title)}</title>"
        f"<style>{_CSS}</style></head><body><h1>{esc(title)}</h1>"
        f"<p>{current.rows:,} rows, {len(current.columns)} columns</p>{overall}"
        "<table><tr><th>column</th><th>kind</th><th>rows</th><th>nulls</th>"
        "<th>mean ± std / top</th><th>PSI</th><th>status</th></tr>"
        + "".join(rows_html)
        + f"</table>{legend}"
        + "".join(charts)
        + "</body></html>"
    )
