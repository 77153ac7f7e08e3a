"""Per-column transform chains: declared in config, fitted on the train split, applied anywhere.

A chain is a list of steps applied in order to one input column (``features.transforms``).
Each step has two halves:

* **fit** -- the Ray Data aggregations the step needs (:func:`step_aggregations`) and how
  their results become the step's JSON state (:func:`fit_step`). A step's statistics are
  taken on the output of the steps before it, so fitting runs in rounds: round *k*
  applies the fitted prefixes with ``map_batches`` and aggregates what step *k* of every
  chain needs in one ``Dataset.aggregate`` call (:func:`fit_chains`).
* **apply** -- :func:`apply_chain`, pure numpy/pandas, used by training and by the
  registered model alike.

Numeric steps: ``impute`` (mean | median | mode | constant, optional was-missing
indicator), ``standardize``, ``minmax``, ``robust`` (median / IQR), ``log1p`` (values below
0 are clipped to 0 first), ``clip`` (fixed bounds or fitted quantiles). Terminal steps (the
chain ends with them): ``bucketize`` (fixed edges or fitted quantiles, one-hot or an index
for embeddings), ``onehot`` and ``index`` (string categories, with ``min_frequency`` and
``max_categories``; 0 is the unknown/missing bucket of an index), ``hash`` (a stable hash
into N buckets), ``datetime`` (parts of a timestamp or ISO string, optionally as sin/cos).
A chain without a terminal step yields one dense column; nulls left at its end read as 0.

A fitted statistic must be finite: when the train split holds ``inf`` or ``-inf`` (a column
with ``allow_inf``) and a step's mean, std, min, max or quantile comes out infinite or
undefined, fitting stops with a :class:`~rayline.errors.DataValidationError` naming the
column and the step (:func:`finite_stat`) rather than write ``Infinity`` into the fitted state.

``features.derived`` adds numeric columns from arithmetic on raw columns
(:func:`eval_expression`: numbers, column names, ``+ - * / **``, unary minus, and
``log log1p exp sqrt abs min max``), computed before any chain.
"""

from __future__ import annotations

import ast
from typing import Any

import numpy as np
import pandas as pd

from rayline.errors import DataValidationError

TERMINAL = {"bucketize", "onehot", "index", "hash", "datetime"}
_FUNCS = {
    "log": np.log,
    "log1p": np.log1p,
    "exp": np.exp,
    "sqrt": np.sqrt,
    "abs": np.abs,
    "min": np.minimum,
    "max": np.maximum,
}
_OPS = {
    ast.Add: np.add,
    ast.Sub: np.subtract,
    ast.Mult: np.multiply,
    ast.Div: np.divide,
    ast.Pow: np.power,
}
_DT_PARTS = {
    "year": (None, lambda s: s.dt.year),
    "month": (12, lambda s: s.dt.month - 1),
    "day": (31, lambda s: s.dt.day - 1),
    "dayofweek": (7, lambda s: s.dt.dayofweek),
    "dayofyear": (366, lambda s: s.dt.dayofyear - 1),
    "hour": (24, lambda s: s.dt.hour),
    "minute": (60, lambda s: s.dt.minute),
}


# -- derived columns -----------------------------------------------------------------------------
def parse_expression(text: str) -> tuple[ast.Expression, list[str]]:
    """Parse and check an arithmetic expression; return it with the column names it reads.

    Raises:
        ValueError: naming the construct that is not allowed.
    """
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as exc:
        raise ValueError(f"'{text}' is not an expression: {exc.msg}") from None
    names: list[str] = []

    def check(node: ast.AST) -> None:
        if isinstance(node, ast.Expression):
            check(node.body)
        elif isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            check(node.left)
            check(node.right)
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
            check(node.operand)
        elif isinstance(node, ast.Constant) and isinstance(node.value, int | float):
            pass
        elif isinstance(node, ast.Name):
            if node.id not in names:
                names.append(node.id)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in _FUNCS
            and not node.keywords
        ):
            for arg in node.args:
                check(arg)
        else:
            raise ValueError(
                f"'{text}': {ast.unparse(node)!r} is not allowed; use numbers, column names, "
                f"+ - * / **, and {', '.join(_FUNCS)}"
            )

    check(tree)
    return tree, names


def eval_expression(text: str, df: pd.DataFrame) -> np.ndarray:
    """Evaluate a derived-column expression on a batch (float64, NaN where undefined)."""
    tree, _ = parse_expression(text)

    def ev(node: ast.AST) -> Any:
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.BinOp):
            return _OPS[type(node.op)](ev(node.left), ev(node.right))
        if isinstance(node, ast.UnaryOp):
            v = ev(node.operand)
            return -v if isinstance(node.op, ast.USub) else v
        if isinstance(node, ast.Constant):
            return float(node.value)
        if isinstance(node, ast.Name):
            return _as_float(df[node.id])
        assert isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
        return _FUNCS[node.func.id](*[ev(a) for a in node.args])

    with np.errstate(all="ignore"):
        out = np.asarray(ev(tree), dtype=np.float64)
    out = np.broadcast_to(out, (len(df),)).copy()
    out[~np.isfinite(out)] = np.nan
    return out


def _as_float(s: pd.Series) -> np.ndarray:
    return pd.to_numeric(s, errors="coerce").astype("float64").to_numpy(na_value=np.nan)


# -- fitting -------------------------------------------------------------------------------------
def step_aggregations(step: dict[str, Any], column: str) -> list[Any]:
    """Ray Data aggregations that step ``step`` needs, on (already transformed) ``column``."""
    from ray.data.aggregate import ApproximateQuantile, Max, Mean, Min, Std, ValueCounter

    op, key = step["op"], f"{step['op']}:{column}"
    # Ray Data reports no mean (None) when inf and -inf cancel: the column's bounds tell
    # that apart from an all-null column.
    bounds = [Min(column, alias_name=key + ":lo"), Max(column, alias_name=key + ":hi")]
    if op == "impute":
        return {
            "mean": [Mean(column, alias_name=key), *bounds],
            "median": [ApproximateQuantile(column, [0.5], alias_name=key)],
            "mode": [ValueCounter(column, alias_name=key)],
        }.get(step.get("strategy", "mean"), [])
    if op == "standardize":
        return [
            Mean(column, alias_name=key + ":mean"),
            Std(column, ddof=0, alias_name=key + ":std"),
            *bounds,
        ]
    if op == "minmax":
        return [Min(column, alias_name=key + ":min"), Max(column, alias_name=key + ":max")]
    if op == "robust":
        return [ApproximateQuantile(column, [0.25, 0.5, 0.75], alias_name=key)]
    if op == "clip" and (
        step.get("lower_quantile") is not None or step.get("upper_quantile") is not None
    ):
        qs = [step.get("lower_quantile") or 0.0, step.get("upper_quantile") or 1.0]
        return [ApproximateQuantile(column, qs, alias_name=key)]
    if op == "bucketize" and not step.get("edges"):
        n = int(step.get("quantiles") or 4)
        return [ApproximateQuantile(column, [i / n for i in range(1, n)], alias_name=key)]
    if op in ("onehot", "index"):
        return [ValueCounter(column, alias_name=key)]
    return []


def _f(v: Any, default: float) -> float:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return default
    return f if np.isfinite(f) else default


def _number(v: Any) -> float | None:
    """``v`` as a float; None when there is no statistic (None, or not a number)."""
    if v is None:
        return None
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def infinities(lo: Any, hi: Any) -> str | None:
    """Which infinities a column holds, from its min and max: 'inf', '-inf', both, or None."""
    lo, hi = _number(lo), _number(hi)
    found = [t for t, hit in (("-inf", lo == -np.inf), ("inf", hi == np.inf)) if hit]
    return " and ".join(found) or None


def not_finite_error(
    where: str, what: str, value: float, column: str, remedy: str, infinite: str | None = None
) -> DataValidationError:
    """The :class:`DataValidationError` for a fitted statistic that is not a finite number."""
    shown = "undefined" if np.isnan(value) else f"{value:g}"
    holds = (
        f"{infinite} values"
        if infinite
        else "inf or -inf values (or values too large for float64 arithmetic)"
    )
    return DataValidationError(
        f"{where}: the train-split {what} of '{column}' is not finite ({shown}): the column "
        f"holds {holds} there (let through by schema.columns.{column}.allow_inf, or made by a "
        f"user transform). {remedy}, or remove allow_inf so that rows with inf are quarantined"
    )


def finite_stat(
    v: Any,
    default: float,
    *,
    where: str,
    what: str,
    column: str,
    remedy: str,
    infinite: str | None = None,
) -> float:
    """A fitted statistic as a finite float; ``default`` where there is none.

    ``infinite`` names the infinities in the data the statistic was taken on (see the
    column's min and max): a mean or std of such data is not finite even where Ray Data
    reports no value at all (``inf + -inf``).

    Raises:
        DataValidationError: the statistic is inf or NaN, or ``infinite`` is set.
    """
    f = _number(v)
    if infinite is not None and (f is None or np.isfinite(f)):
        f = np.inf if infinite == "inf" else -np.inf if infinite == "-inf" else np.nan
    if f is None:
        return default
    if not np.isfinite(f):
        raise not_finite_error(where, what, f, column, remedy, infinite)
    return f


def fit_step(step: dict[str, Any], column: str, stats: dict[str, Any]) -> dict[str, Any]:
    """The fitted (JSON) state of ``step`` from the aggregation results ``stats``.

    Raises:
        DataValidationError: a fitted statistic is not finite (the column holds inf).
    """
    op, key = step["op"], f"{step['op']}:{column}"
    state = dict(step)
    name = column.removeprefix(_tmp(""))

    def stat(v: Any, default: float, what: str, infinite: str | None = None) -> float:
        return finite_stat(
            v,
            default,
            where=f"features.transforms.{name} ({op} step)",
            what=what,
            column=name,
            remedy=f"Put a clip step with fixed lower and upper bounds before the {op} step",
            infinite=infinite,
        )

    bounds = infinities(stats.get(key + ":lo"), stats.get(key + ":hi"))
    if op == "impute":
        strategy = step.get("strategy", "mean")
        if strategy == "mean":
            state["fill"] = stat(stats.get(key), 0.0, "mean", bounds)
        elif strategy == "median":
            state["fill"] = stat((stats.get(key) or [None])[0], 0.0, "median")
        elif strategy == "mode":
            vc = stats.get(key) or {"values": [], "counts": []}
            pairs = [
                (c, v)
                for v, c in zip(vc["values"], vc["counts"], strict=True)
                if _f(v, np.nan) == _f(v, np.nan) or _number(v) in (np.inf, -np.inf)
            ]
            state["fill"] = (
                stat(max(pairs, key=lambda p: (p[0], -_f(p[1], 0)))[1], 0.0, "mode")
                if pairs
                else 0.0
            )
        else:
            state["fill"] = _f(step.get("value"), 0.0)
    elif op == "standardize":
        state["mean"] = stat(stats.get(key + ":mean"), 0.0, "mean", bounds)
        state["std"] = stat(stats.get(key + ":std"), 1.0, "std", bounds) or 1.0
    elif op == "minmax":
        lo = stat(stats.get(key + ":min"), 0.0, "min")
        hi = stat(stats.get(key + ":max"), 1.0, "max")
        state["min"], state["range"] = lo, (hi - lo) or 1.0
    elif op == "robust":
        qs = stats.get(key) or [0, 0, 1]
        q1, med, q3 = [
            stat(v, 0.0, f"{p} quantile") for v, p in zip(qs, (0.25, 0.5, 0.75), strict=True)
        ]
        state["median"], state["iqr"] = med, (q3 - q1) or 1.0
    elif op == "clip":
        qs = stats.get(key)
        lower, upper = step.get("lower"), step.get("upper")
        if qs:  # [] when the column has no values
            if step.get("lower_quantile") is not None:
                lower = stat(qs[0], -np.inf, f"{step['lower_quantile']:g} quantile")
            if step.get("upper_quantile") is not None:
                upper = stat(qs[1], np.inf, f"{step['upper_quantile']:g} quantile")
        state["lower"], state["upper"] = lower, upper
    elif op == "bucketize":
        edges = step.get("edges") or sorted(
            {stat(v, 0.0, "quantile edge") for v in (stats.get(key) or [])}
        )
        state["edges"] = [float(e) for e in edges]
    elif op in ("onehot", "index"):
        vc = stats.get(key) or {"values": [], "counts": []}
        pairs = [
            (str(v), int(n))
            for v, n in zip(vc["values"], vc["counts"], strict=True)
            if v is not None
            and not (isinstance(v, float) and np.isnan(v))
            and int(n) >= int(step.get("min_frequency") or 1)
        ]
        pairs.sort(key=lambda p: (-p[1], p[0]))
        state["categories"] = [v for v, _ in pairs[: int(step.get("max_categories") or 100)]]
    return state


def fit_chains(
    ds: Any, chains: dict[str, list[dict[str, Any]]], source: dict[str, str]
) -> dict[str, list[dict[str, Any]]]:
    """Fit every chain on ``ds`` (the train split, derived columns added) in rounds.

    ``source`` maps a chain's name to the column it reads. Returns the fitted chains.
    """
    fitted: dict[str, list[dict[str, Any]]] = {name: [] for name in chains}
    depth = max((len(c) for c in chains.values()), default=0)
    for k in range(depth):
        todo = {n: c[k] for n, c in chains.items() if len(c) > k}
        prefix = {n: fitted[n] for n in todo}
        staged = ds.map_batches(
            _prefix_batch, fn_kwargs={"prefix": prefix, "source": source}, batch_format="pandas"
        )
        aggs = [a for n, step in todo.items() for a in step_aggregations(step, _tmp(n))]
        stats = staged.aggregate(*aggs) if aggs else {}
        for n, step in todo.items():
            fitted[n].append(fit_step(step, _tmp(n), stats or {}))
    return fitted


def _tmp(name: str) -> str:
    return f"__chain:{name}"


def _prefix_batch(
    batch: pd.DataFrame, prefix: dict[str, list[dict]], source: dict[str, str]
) -> pd.DataFrame:
    out = {}
    for name, steps in prefix.items():
        values = batch[source[name]]
        for step in steps:
            values = _apply_value_step(step, values)
        out[_tmp(name)] = values
    return pd.DataFrame(out)


# -- applying ------------------------------------------------------------------------------------
def _apply_value_step(step: dict[str, Any], values: Any) -> Any:
    """A non-terminal step: numeric in, numeric out (float64, NaN for missing)."""
    x = values if isinstance(values, np.ndarray) else _as_float(pd.Series(values))
    op = step["op"]
    if op == "impute":
        return np.where(np.isnan(x), step["fill"], x)
    if op == "standardize":
        return (x - step["mean"]) / step["std"]
    if op == "minmax":
        return (x - step["min"]) / step["range"]
    if op == "robust":
        return (x - step["median"]) / step["iqr"]
    if op == "log1p":
        with np.errstate(invalid="ignore"):
            return np.log1p(np.maximum(x, 0.0))
    if op == "clip":
        lo = -np.inf if step.get("lower") is None else step["lower"]
        hi = np.inf if step.get("upper") is None else step["upper"]
        return np.clip(x, lo, hi)
    raise ValueError(f"unknown transform step '{op}'")


def stable_hash(values: pd.Series, buckets: int) -> np.ndarray:
    """Bucket of each value's text under a fixed-key hash (same in every process)."""
    text = values.astype("string").fillna("\0null")
    hashed = pd.util.hash_array(text.to_numpy(dtype=object), hash_key="rayline-feature0")
    return (hashed % np.uint64(buckets)).astype(np.int64)


def chain_width(steps: list[dict[str, Any]]) -> tuple[int, int | None]:
    """(dense output columns, index cardinality or None) of a fitted chain."""
    last = steps[-1] if steps else {"op": "none"}
    extra = sum(1 for s in steps if s["op"] == "impute" and s.get("indicator"))
    op = last["op"]
    if op == "bucketize":
        n = len(last["edges"]) + 1
        return (extra, n + 1) if last.get("output") == "index" else (extra + n, None)
    if op == "onehot":
        return extra + len(last["categories"]), None
    if op == "index":
        return extra, len(last["categories"]) + 1
    if op == "hash":
        n = int(last["buckets"])
        return (extra, n) if last.get("output") == "index" else (extra + n, None)
    if op == "datetime":
        parts = last.get("parts") or ["dayofweek", "hour"]
        per = [2 if last.get("cyclic") and _DT_PARTS[p][0] else 1 for p in parts]
        return extra + sum(per), None
    return extra + 1, None


def chain_names(name: str, steps: list[dict[str, Any]]) -> tuple[list[str], str | None]:
    """Names of a chain's dense outputs, and of its index output (or None)."""
    last = steps[-1] if steps else {"op": "none"}
    names = [f"{name}#missing" for s in steps if s["op"] == "impute" and s.get("indicator")]
    op = last["op"]
    if op == "bucketize":
        n = len(last["edges"]) + 1
        return (
            (names, f"{name}#bucket")
            if last.get("output") == "index"
            else (names + [f"{name}#b{i}" for i in range(n)], None)
        )
    if op == "onehot":
        return names + [f"{name}={c}" for c in last["categories"]], None
    if op == "index":
        return names, f"{name}#index"
    if op == "hash":
        n = int(last["buckets"])
        return (
            (names, f"{name}#hash")
            if last.get("output") == "index"
            else (names + [f"{name}#h{i}" for i in range(n)], None)
        )
    if op == "datetime":
        for p in last.get("parts") or ["dayofweek", "hour"]:
            names += (
                [f"{name}.{p}_sin", f"{name}.{p}_cos"]
                if last.get("cyclic") and _DT_PARTS[p][0]
                else [f"{name}.{p}"]
            )
        return names, None
    return names + [name], None


def apply_chain(
    steps: list[dict[str, Any]], raw: pd.Series
) -> tuple[np.ndarray, np.ndarray | None]:
    """One fitted chain on a raw column -> (dense block (n, k), index column (n,) or None)."""
    n = len(raw)
    dense: list[np.ndarray] = []
    terminal = steps[-1] if steps and steps[-1]["op"] in TERMINAL else None
    body = steps[:-1] if terminal else steps
    values: Any = raw
    for step in body:
        if step["op"] == "impute" and step.get("indicator"):
            missing = (
                pd.Series(values).isna().to_numpy()
                if not isinstance(values, np.ndarray)
                else np.isnan(values)
            )
            dense.append(missing.astype(np.float64).reshape(n, 1))
        values = _apply_value_step(step, values)
    if terminal is None:
        x = values if isinstance(values, np.ndarray) else _as_float(pd.Series(values))
        dense.append(np.nan_to_num(x, nan=0.0).reshape(n, 1))
        return _stack(dense, n), None
    op = terminal["op"]
    if op == "bucketize":
        x = values if isinstance(values, np.ndarray) else _as_float(pd.Series(values))
        idx = np.searchsorted(np.asarray(terminal["edges"]), x, side="right")
        if terminal.get("output") == "index":
            return _stack(dense, n), np.where(np.isnan(x), 0, idx + 1).astype(np.float64)
        k = len(terminal["edges"]) + 1
        block = np.zeros((n, k))
        ok = ~np.isnan(x)
        block[np.flatnonzero(ok), idx[ok]] = 1.0
        return _stack([*dense, block], n), None
    series = pd.Series(values) if not isinstance(values, pd.Series) else values
    if op in ("onehot", "index"):
        cats = terminal["categories"]
        codes = pd.Categorical(series.astype("string"), categories=cats).codes
        if op == "index":
            return _stack(dense, n), (codes + 1).astype(np.float64)
        block = np.zeros((n, len(cats)))
        known = codes >= 0
        block[np.flatnonzero(known), codes[known]] = 1.0
        return _stack([*dense, block], n), None
    if op == "hash":
        b = int(terminal["buckets"])
        h = stable_hash(series, b)
        if terminal.get("output") == "index":
            return _stack(dense, n), h.astype(np.float64)
        block = np.zeros((n, b))
        block[np.arange(n), h] = 1.0
        return _stack([*dense, block], n), None
    # datetime
    ts = pd.to_datetime(series, errors="coerce", utc=True)
    for part in terminal.get("parts") or ["dayofweek", "hour"]:
        period, fn = _DT_PARTS[part]
        v = fn(ts).astype("float64").to_numpy(na_value=np.nan)
        if terminal.get("cyclic") and period:
            angle = 2 * np.pi * v / period
            dense += [
                np.nan_to_num(np.sin(angle)).reshape(n, 1),
                np.nan_to_num(np.cos(angle)).reshape(n, 1),
            ]
        else:
            dense.append(np.nan_to_num(v, nan=0.0).reshape(n, 1))
    return _stack(dense, n), None


def _stack(parts: list[np.ndarray], n: int) -> np.ndarray:
    return np.hstack(parts) if parts else np.zeros((n, 0))
