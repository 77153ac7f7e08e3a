"""Drift of a data profile against the champion's training profile (PSI per column).

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

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from rayline.data.profile import ColumnProfile, Profile, quantile_probs

if TYPE_CHECKING:
    from rayline.config import DriftConfig

EPS = 1e-4
OTHER = "__other__"
NULL = "__null__"
STATUS_ORDER = ("ok", "skipped", "warn", "fail")


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
