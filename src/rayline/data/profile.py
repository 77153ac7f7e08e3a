"""Column profiles, drift against the champion's training data, and a rendered report.

:func:`compute_profile` makes ONE streaming pass (a single ``Dataset.aggregate`` call) and
keeps, per column: count, nulls, min/max/mean/std and 101 approximate quantiles (KLL sketches,
Ray Data's ``ApproximateQuantile`` fed a block at a time) for numeric and bool columns; the most frequent categories
with their counts, the count of all others and the number of distinct values for string
columns. A :class:`Profile` is plain JSON: it is saved with the run and attached to the
registered model version, so the next run can compare its data with the data the champion was
trained on.

:func:`compare` computes the population stability index (PSI) per column:

* numeric -- on the reference's quantile bins (``bins`` equal-probability bins of the
  reference, open-ended at both ends, plus a bin for nulls). The reference's share per bin
  follows from its own quantiles; the current share is *estimated* from the current profile's
  quantile function: its CDF, linearly interpolated between its quantile points, is read at
  the reference's bin edges. No second pass over either dataset is needed. With 101 quantile
  points the estimate is good to about a percentage point of mass per bin (plus the sketch's
  ~0.4% rank error); point masses (ints, constants) are exact up to that one-percent grid.
* bool -- on the shares of false / true / null, which the mean gives exactly.
* categorical -- over the union of both top-k lists plus an "other" bucket and nulls; also
  the *unseen rate*: the share of current non-null rows whose category the reference never
  listed (an upper bound when the reference itself had an "other" remainder).

PSI = sum((c - r) * ln(c / r)) with shares floored at 1e-4. Rules of thumb: < 0.1 stable,
0.1-0.25 moderate shift, > 0.25 a large one. Thresholds and the action (``warn`` or
``fail``) are per column in ``drift`` config; a ``fail`` makes the gate reject the model.
"""

from __future__ import annotations

import functools
import html
import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from rayline.config import DriftConfig

FORMAT_VERSION = 1
QUANTILES = [i / 100 for i in range(101)]
EPS = 1e-4
OTHER = "__other__"
NULL = "__null__"
NUMERIC_TYPES = ("float", "int", "bool")
STATUS_ORDER = ("ok", "skipped", "warn", "fail")


@dataclass
class ColumnProfile:
    """One column's statistics (numeric fields are None for string columns and vice versa).

    ``count`` is every row, nulls included. ``quantiles`` are values at equally spaced
    probabilities from 0 to 1 (101 points by default). ``top`` maps the most frequent
    categories to their counts; ``other_count`` counts the non-null rows outside ``top``.
    """

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
    type: str | None = None  # the schema's logical type: float, int, bool or string
    distinct: int | None = None


@dataclass
class Profile:
    """Every profiled column of one dataset."""

    rows: int
    columns: dict[str, ColumnProfile]
    format_version: int = FORMAT_VERSION

    def to_json(self) -> str:
        """Plain JSON; missing statistics are null, never NaN."""
        return json.dumps(asdict(self), indent=1, sort_keys=True, allow_nan=False)

    @classmethod
    def from_json(cls, text: str) -> Profile:
        """Inverse of :meth:`to_json`; fields a newer writer added are ignored.

        Raises:
            ValueError: the text is a profile of another format version.
        """
        data = json.loads(text)
        version = data.get("format_version")
        if version != FORMAT_VERSION:
            raise ValueError(
                f"profile format_version {version} is not supported (this rayline reads "
                f"{FORMAT_VERSION}); recompute the profile with this version"
            )
        known = {f.name for f in fields(ColumnProfile)}
        cols = {
            name: ColumnProfile(**{k: v for k, v in col.items() if k in known})
            for name, col in data["columns"].items()
        }
        return cls(rows=int(data["rows"]), columns=cols)


def quantile_probs(points: int) -> np.ndarray:
    """The probabilities of ``points`` equally spaced quantiles from 0 to 1."""
    return np.linspace(0.0, 1.0, points)


# -- computing a profile ----------------------------------------------------------------------
def _num(v: Any) -> float | None:
    """A finite float, or None for a missing, NaN or infinite statistic."""
    if v is None:
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


@functools.cache
def _block_quantile_cls() -> type:
    """Ray Data's ``ApproximateQuantile``, fed a whole block at a time and in float64.

    Ray's own feeds its KLL sketch one Python value at a time (~0.3 M values/s per core and
    column, measured); a numpy update is ~60x faster, and a float64 sketch keeps integer
    columns past 2**24 exact. Nulls are dropped, NaNs ignored by the sketch, as in Ray's.
    """
    import pyarrow.compute as pc
    from ray.data.aggregate import ApproximateQuantile
    from ray.data.block import BlockAccessor

    class BlockApproximateQuantile(ApproximateQuantile):
        def _require_datasketches(self):
            from datasketches import kll_doubles_sketch

            return kll_doubles_sketch

        def aggregate_block(self, block) -> bytes:
            column = BlockAccessor.for_block(block).to_arrow().column(self.get_target_column())
            values = pc.drop_null(column).to_numpy()
            sketch = self.zero(self._quantile_precision)
            if len(values):
                # A fresh, writable, contiguous float64 array: the binding refuses read-only
                # views (which Arrow hands out for zero-copy columns).
                sketch.update(np.array(values, dtype=np.float64, copy=True, order="C"))
            return sketch.serialize()

    return BlockApproximateQuantile


def _aggregates(numeric: list[str], categorical: list[str], probs: list[float]) -> list[Any]:
    """Every aggregate of the single profiling pass, aliased ``<stat>:<column>``."""
    from ray.data.aggregate import Count, Max, Mean, Min, Std, ValueCounter

    quantile = _block_quantile_cls()

    aggs: list[Any] = [Count(alias_name="rows")]
    for c in numeric + categorical:
        aggs.append(Count(on=c, ignore_nulls=True, alias_name=f"n:{c}"))
    for c in numeric:
        aggs += [
            Min(c, alias_name=f"min:{c}"),
            Max(c, alias_name=f"max:{c}"),
            Mean(c, alias_name=f"mean:{c}"),
            Std(c, ddof=0, alias_name=f"std:{c}"),
            quantile(c, probs, alias_name=f"q:{c}"),
        ]
    for c in categorical:
        # Exact counts of every distinct value: memory grows with the column's cardinality.
        aggs.append(ValueCounter(c, alias_name=f"vc:{c}"))
    return aggs


def _numeric_profile(stats: dict[str, Any], c: str, rows: int, ctype: str) -> ColumnProfile:
    # On an all-null column the aggregates give None (min/max/mean/std) and [] (quantiles);
    # on an empty dataset every one of them is None.
    n = int(stats.get(f"n:{c}") or 0)
    q = stats.get(f"q:{c}") if n else None
    quantiles = [float(x) for x in q] if q is not None and len(q) else None
    if quantiles and not all(math.isfinite(x) for x in quantiles):
        quantiles = None
    lo = _num(stats.get(f"min:{c}")) if n else None
    hi = _num(stats.get(f"max:{c}")) if n else None
    if quantiles and lo is not None and hi is not None:
        # Once a KLL sketch compacts, its 0 and 1 quantiles can be near-extreme items rather
        # than the extremes; Min/Max are exact, so they pin both ends.
        quantiles[0], quantiles[-1] = lo, hi
    return ColumnProfile(
        kind="numeric",
        type=ctype,
        count=rows,
        nulls=rows - n,
        min=lo,
        max=hi,
        mean=_num(stats.get(f"mean:{c}")) if n else None,
        std=_num(stats.get(f"std:{c}")) if n else None,
        quantiles=quantiles,
    )


def _categorical_profile(stats: dict[str, Any], c: str, rows: int, top_k: int) -> ColumnProfile:
    n = int(stats.get(f"n:{c}") or 0)
    vc = stats.get(f"vc:{c}") or {"values": [], "counts": []}
    # ValueCounter counts nulls too (as a None value); they are in `nulls` already.
    pairs = [
        (str(v), int(k))
        for v, k in zip(vc["values"], vc["counts"], strict=True)
        if v is not None and not (isinstance(v, float) and math.isnan(v))
    ]
    # Most frequent first; ties broken by value so the profile is deterministic.
    pairs.sort(key=lambda p: (-p[1], p[0]))
    top = dict(pairs[:top_k])
    return ColumnProfile(
        kind="categorical",
        type="string",
        count=rows,
        nulls=rows - n,
        top=top,
        other_count=n - sum(top.values()),
        distinct=len(pairs),
    )


def compute_profile(
    ds: Any, columns: dict[str, str], *, quantiles: int = 100, top_k: int = 100
) -> Profile:
    """Profile ``columns`` of a Ray Dataset in one streaming pass (one ``aggregate`` call).

    Args:
        ds: The ``ray.data.Dataset`` to profile.
        columns: Column name -> logical type (``float``, ``int``, ``bool`` or ``string``).
        quantiles: Number of quantile intervals; ``quantiles + 1`` points from 0 to 1 are kept.
        top_k: Most frequent categories kept per string column (ties broken by value).

    Returns:
        The profile; statistics of an all-null column or an empty dataset are None.
    """
    if quantiles < 2 or top_k < 1:
        raise ValueError(f"quantiles must be >= 2 and top_k >= 1, got {quantiles} and {top_k}")
    unknown = {c: t for c, t in columns.items() if t not in (*NUMERIC_TYPES, "string")}
    if unknown:
        raise ValueError(f"unknown column types {unknown}; use float, int, bool or string")
    numeric = [c for c, t in columns.items() if t in NUMERIC_TYPES]
    categorical = [c for c, t in columns.items() if t == "string"]
    bools = [c for c in numeric if columns[c] == "bool"]
    if bools:
        from rayline.data.features import bools_to_float

        ds = ds.map_batches(bools_to_float, fn_kwargs={"columns": bools}, batch_format="pandas")
    probs = [float(p) for p in quantile_probs(quantiles + 1)]
    # An empty dataset aggregates to None.
    stats = ds.aggregate(*_aggregates(numeric, categorical, probs)) or {}
    rows = int(stats.get("rows") or 0)
    out: dict[str, ColumnProfile] = {}
    for c in columns:
        out[c] = (
            _categorical_profile(stats, c, rows, top_k)
            if c in categorical
            else _numeric_profile(stats, c, rows, columns[c])
        )
    return Profile(rows=rows, columns=out)


# -- drift ------------------------------------------------------------------------------------
def psi(current: np.ndarray, reference: np.ndarray) -> float:
    """Population stability index between two share vectors over the same bins."""
    c = np.maximum(np.asarray(current, dtype=float), EPS)
    r = np.maximum(np.asarray(reference, dtype=float), EPS)
    return float(np.sum((c - r) * np.log(c / r)))


def _cdf(quantiles: list[float], x: np.ndarray) -> np.ndarray:
    """P(X <= x) estimated from a profile's equally spaced quantile points."""
    q = np.asarray(quantiles, dtype=float)
    p = quantile_probs(len(q))
    out = np.empty(len(x))
    for i, v in enumerate(x):
        if v < q[0]:
            out[i] = 0.0
        elif v >= q[-1]:
            out[i] = 1.0
        else:
            # From the last quantile point <= v (the top of a run of equal values, so a point
            # mass at v counts below it), interpolate linearly to the next point.
            hi = int(np.searchsorted(q, v, side="right"))
            lo = hi - 1
            span = q[hi] - q[lo]
            out[i] = p[lo] + (p[hi] - p[lo]) * ((v - q[lo]) / span if span > 0 else 1.0)
    return out


def numeric_bins(reference: ColumnProfile, bins: int) -> list[float]:
    """Interior bin edges: the reference's quantiles at 1/bins, 2/bins, ... (deduplicated)."""
    q = reference.quantiles or []
    if not q:
        return []
    cuts = np.interp([i / bins for i in range(1, bins)], quantile_probs(len(q)), q)
    return sorted({float(e) for e in cuts})


def numeric_shares(profile: ColumnProfile, edges: list[float]) -> np.ndarray:
    """Share of rows per bin: nulls, (-inf, e1], (e1, e2], ..., (ek, inf)."""
    total = max(profile.count, 1)
    null_share = profile.nulls / total
    if not profile.quantiles:
        return np.array([null_share] + [0.0] * (len(edges) + 1))
    cdf = np.concatenate([[0.0], _cdf(profile.quantiles, np.asarray(edges)), [1.0]])
    return np.concatenate([[null_share], np.diff(cdf) * (profile.count - profile.nulls) / total])


def bool_shares(profile: ColumnProfile) -> np.ndarray:
    """Share of rows that are null, false and true (the 0/1 mean is the share of true)."""
    total = max(profile.count, 1)
    present = (profile.count - profile.nulls) / total
    true = present * (profile.mean or 0.0)
    return np.array([profile.nulls / total, present - true, true])


def category_shares(profile: ColumnProfile, keys: list[str]) -> np.ndarray:
    """Share of rows per category in ``keys`` (which end with OTHER and NULL)."""
    total = max(profile.count, 1)
    top = profile.top or {}
    shares = [top.get(k, 0) / total for k in keys[:-2]]
    listed = sum(top.get(k, 0) for k in keys[:-2])
    other = (sum(top.values()) - listed + profile.other_count) / total
    return np.array([*shares, other, profile.nulls / total])


def _edge_label(edges: list[float], i: int) -> str:
    if not edges:
        return "all values"
    if i == 0:
        return f"≤ {edges[0]:.4g}"
    if i == len(edges):
        return f"> {edges[-1]:.4g}"
    return f"({edges[i - 1]:.4g}, {edges[i]:.4g}]"


def column_shares(
    current: ColumnProfile, reference: ColumnProfile, bins: int
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Bin labels and the current's and reference's share per bin (the bins of the PSI)."""
    if current.kind == "categorical":
        ref_top, cur_top = reference.top or {}, current.top or {}
        keys = [*dict.fromkeys([*ref_top, *cur_top]), OTHER, NULL]
        return keys, category_shares(current, keys), category_shares(reference, keys)
    if current.type == reference.type == "bool":
        return ["null", "false", "true"], bool_shares(current), bool_shares(reference)
    edges = numeric_bins(reference, bins)
    labels = ["null", *(_edge_label(edges, i) for i in range(len(edges) + 1))]
    return labels, numeric_shares(current, edges), numeric_shares(reference, edges)


def _unseen_rate(current: ColumnProfile, reference: ColumnProfile) -> tuple[float, str]:
    """Share of current non-null rows with a category the reference did not list, and a note.

    Exact when neither profile has an "other" remainder. Categories in the reference's
    remainder were seen but are not listed, so they count as unseen (an upper bound). Rows in
    the current's remainder count as unseen only when the reference listed every category it
    had: when both columns are high-cardinality the remainder says nothing either way.
    """
    known = set(reference.top or {})
    present = current.count - current.nulls
    rows = sum(v for k, v in (current.top or {}).items() if k not in known)
    notes = []
    if reference.other_count == 0:
        rows += current.other_count
        if current.other_count:
            notes.append(
                f"upper bound: the {current.other_count} rows outside this run's top "
                f"{len(current.top or {})} categories count as unseen"
            )
    else:
        notes.append(
            f"upper bound: the reference lists only its top {len(reference.top or {})} categories"
        )
        if current.other_count:
            notes.append(
                f"the {current.other_count} rows outside this run's top categories are not counted"
            )
    return (rows / present if present else 0.0), "; ".join(notes)


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
    note: str = ""


@dataclass
class DriftReport:
    """Drift of every profiled column against the reference (champion) profile."""

    columns: dict[str, ColumnDrift]
    reference: str = ""

    @property
    def status(self) -> str:
        """The worst column status; ``skipped`` only when no column could be compared."""
        statuses = {c.status for c in self.columns.values()}
        if statuses and statuses <= {"skipped"}:
            return "skipped"
        return max(statuses - {"skipped"}, key=STATUS_ORDER.index, default="ok")

    @property
    def failed(self) -> list[str]:
        """Columns whose drift fails the run's gate."""
        return [c.column for c in self.columns.values() if c.status == "fail"]

    def reasons(self) -> list[str]:
        """One line per warning or failure, e.g. ``drift: income PSI 0.310 > 0.25 (fail)``."""
        return [c.reason for c in self.columns.values() if c.status in ("warn", "fail")]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "status": self.status,
            "failed": self.failed,
            "reference": self.reference,
            "columns": {k: asdict(v) for k, v in self.columns.items()},
        }


def _skipped(name: str, kind: str, reason: str) -> ColumnDrift:
    return ColumnDrift(name, kind, None, None, "skipped", f"drift: {name} {reason}")


def compare_column(
    name: str, current: ColumnProfile, reference: ColumnProfile, cfg: DriftConfig
) -> ColumnDrift:
    """One column's PSI (and unseen rate) against its rule in ``cfg``."""
    rule = cfg.columns.get(name, cfg.default)
    labels, c_sh, r_sh = column_shares(current, reference, cfg.bins)
    value = psi(c_sh, r_sh)
    unseen, note = _unseen_rate(current, reference) if current.kind == "categorical" else (None, "")
    broken = []
    if value > rule.psi:
        broken.append(f"PSI {value:.3f} > {rule.psi:g}")
    if unseen is not None and unseen > rule.unseen_rate:
        broken.append(f"unseen categories {100 * unseen:.1f}% > {100 * rule.unseen_rate:g}%")
    status = rule.action if broken else "ok"
    if broken:
        reason = f"drift: {name} " + ", ".join(broken) + f" ({status})"
    else:
        reason = f"drift: {name} PSI {value:.3f} <= {rule.psi:g} (ok)"
    return ColumnDrift(
        name,
        current.kind,
        value,
        unseen,
        status,
        reason,
        labels,
        [float(x) for x in c_sh],
        [float(x) for x in r_sh],
        note,
    )


def compare(
    current: Profile, reference: Profile, cfg: DriftConfig, reference_name: str = ""
) -> DriftReport:
    """Drift of ``current`` against ``reference`` under ``cfg`` (the ``drift`` config section).

    A column only one of the profiles has, or whose kind changed, is ``skipped`` with a
    reason saying why; it never warns or fails.
    """
    out: dict[str, ColumnDrift] = {}
    for name, cur in current.columns.items():
        ref = reference.columns.get(name)
        if ref is None:
            out[name] = _skipped(name, cur.kind, "is new: the reference profile lacks it")
        elif ref.kind != cur.kind:
            out[name] = _skipped(
                name, cur.kind, f"was {ref.kind} in the reference, now {cur.kind}; not compared"
            )
        else:
            out[name] = compare_column(name, cur, ref, cfg)
    for name, ref in reference.columns.items():
        if name not in current.columns:
            out[name] = _skipped(name, ref.kind, "is in the reference profile but not in this one")
    return DriftReport(columns=out, reference=reference_name)


# -- the rendered report ----------------------------------------------------------------------
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
