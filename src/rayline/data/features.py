"""Preprocessing: fit on the train split with Ray Data aggregations, apply anywhere.

The fitted state is a plain JSON document (:class:`FittedPreprocessor`), never a pickle, so
the registered model carries it safely and the serving path applies exactly the code that
training used: :meth:`FittedPreprocessor.transform` is pure numpy/pandas and has no Ray in it.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rayline.data import transforms
from rayline.errors import DataValidationError
from rayline.refs import load_ref

FORMAT_VERSION = 2
_READABLE_VERSIONS = (1, 2)


@dataclass
class FittedPreprocessor:
    """Everything needed to turn raw input columns into the model's feature matrix.

    Attributes:
        task: "classification" or "regression".
        target: the label column.
        classes: the label values in index order (classification), else None.
        numeric: per numeric column, ``{"name", "mean", "std", "fill"}`` from the train split.
        categorical: per categorical column, ``{"name", "categories"}``, most frequent first.
        encoding: "onehot" or "index" for categoricals.
        standardize: whether numeric columns are scaled by the train mean and std.
        input_types: the declared type of each raw input column (for signatures and casts).
        target_mean, target_std: regression targets are trained standardised by these
            train-split statistics, so one learning rate suits any target scale.
        chains: per-column fitted transform chains (:mod:`rayline.data.transforms`).
        derived: derived numeric columns, name -> expression, computed before anything else.
        user: user transform functions ``pkg.module:fn``, applied first, in order.
        raw_inputs: the raw columns the model reads, when chains, derived columns or user
            transforms make them differ from ``numeric + categorical``.

    Output layout: dense columns first (default numeric, default one-hot categoricals, the
    dense outputs of each chain), then every index column (for embeddings).
    """

    task: str
    target: str
    classes: list[Any] | None
    numeric: list[dict[str, Any]]
    categorical: list[dict[str, Any]]
    encoding: str = "onehot"
    standardize: bool = True
    input_types: dict[str, str] = field(default_factory=dict)
    target_mean: float = 0.0
    target_std: float = 1.0
    chains: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    derived: dict[str, str] = field(default_factory=dict)
    user: list[str] = field(default_factory=list)
    user_state: dict[str, Any] = field(default_factory=dict)
    raw_inputs: list[str] = field(default_factory=list)
    format_version: int = FORMAT_VERSION

    # -- shape ------------------------------------------------------------------------------
    @property
    def input_columns(self) -> list[str]:
        """The raw columns the model reads, numeric first."""
        if self.raw_inputs:
            return list(self.raw_inputs)
        return [c["name"] for c in self.numeric] + [c["name"] for c in self.categorical]

    def _layout(self) -> tuple[list[str], list[tuple[str, int]]]:
        """(dense feature names, [(index feature name, cardinality)]) in output order."""
        dense = [c["name"] for c in self.numeric]
        index: list[tuple[str, int]] = []
        for c in self.categorical:
            if self.encoding == "onehot":
                dense += [f"{c['name']}={v}" for v in c["categories"]]
            else:
                index.append((f"{c['name']}#index", len(c["categories"]) + 1))
        for name, steps in self.chains.items():
            names, idx = transforms.chain_names(name, steps)
            dense += names
            if idx is not None:
                index.append((idx, transforms.chain_width(steps)[1] or 1))
        return dense, index

    @property
    def feature_names(self) -> list[str]:
        """Names of the output columns, in order."""
        dense, index = self._layout()
        return dense + [name for name, _ in index]

    def embedding_layout(self) -> tuple[int, list[int]]:
        """(number of dense columns, cardinality of each index column after them)."""
        dense, index = self._layout()
        return len(dense), [card for _, card in index]

    @property
    def output_dim(self) -> int:
        """Width of the feature matrix."""
        return len(self.feature_names)

    @property
    def num_outputs(self) -> int:
        """Model output width: number of classes, or 1 for regression."""
        return len(self.classes) if self.task == "classification" else 1

    # -- the transform ----------------------------------------------------------------------
    def prepare(self, df: pd.DataFrame) -> pd.DataFrame:
        """User transforms, then derived columns: the frame the per-column steps read."""
        if not self.user and not self.derived:
            return df
        df = df.copy()
        for ref in self.user:
            fn = _user_fn(ref)
            if isinstance(fn, type):  # stateful: fitted state from the train split
                df = _instance(ref).transform(df, self.user_state[ref])
            else:
                df = fn(df)
            if not isinstance(df, pd.DataFrame):
                raise TypeError(f"user transform {ref} must return a pandas DataFrame")
        for name, expr in self.derived.items():
            df[name] = transforms.eval_expression(expr, df)
        return df

    def transform(self, df: pd.DataFrame) -> np.ndarray:
        """Raw rows -> float32 feature matrix of shape (rows, output_dim).

        Missing numeric values take the train-split fill; categories not seen in training
        (and nulls) fall in the unknown bucket: all zeros for one-hot, index 0 for index
        encoding.
        """
        df = self.prepare(df)
        n = len(df)
        dense: list[np.ndarray] = []
        index: list[np.ndarray] = []
        for c in self.numeric:
            col = pd.to_numeric(df[c["name"]], errors="coerce").astype("float64")
            x = col.to_numpy(na_value=np.nan)
            x = np.where(np.isnan(x), c["fill"], x)
            if self.standardize:
                x = (x - c["mean"]) / (c["std"] if c["std"] > 0 else 1.0)
            dense.append(x.reshape(n, 1))
        for c in self.categorical:
            cats = c["categories"]
            # Position in the vocabulary, -1 when unseen or null.
            codes = pd.Categorical(df[c["name"]].astype("string"), categories=cats).codes
            if self.encoding == "onehot":
                onehot = np.zeros((n, len(cats)), dtype=np.float64)
                known = codes >= 0
                onehot[np.flatnonzero(known), codes[known]] = 1.0
                dense.append(onehot)
            else:
                index.append((codes + 1).astype(np.float64).reshape(n, 1))
        for name, steps in self.chains.items():
            block, idx = transforms.apply_chain(steps, df[name])
            dense.append(block)
            if idx is not None:
                index.append(idx.reshape(n, 1))
        parts = dense + index
        if not parts:
            return np.zeros((n, 0), dtype=np.float32)
        return np.hstack(parts).astype(np.float32)

    def encode_target(self, values: pd.Series) -> np.ndarray:
        """Labels -> class indices (int64) or standardised regression targets (float32)."""
        if self.task == "regression":
            y = pd.to_numeric(values).astype("float64").to_numpy()
            return ((y - self.target_mean) / self.target_std).astype(np.float32)
        index = {_key(v): i for i, v in enumerate(self.classes or [])}
        out = np.fromiter(
            (index.get(_key(v), -1) for v in values), dtype=np.int64, count=len(values)
        )
        if (out < 0).any():
            unknown = sorted({str(v) for v, o in zip(values, out, strict=True) if o < 0})[:5]
            raise ValueError(f"labels not among the known classes: {unknown}")
        return out

    def decode_output(self, raw: np.ndarray) -> np.ndarray:
        """Network output -> class probabilities (rows, classes) or predictions (rows,)."""
        raw = np.asarray(raw, dtype=np.float64)
        if self.task == "regression":
            return raw.reshape(-1) * self.target_std + self.target_mean
        z = raw - raw.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)

    def true_values(self, values: pd.Series) -> np.ndarray:
        """Labels as the metrics expect them: class indices, or targets on their own scale."""
        if self.task == "regression":
            return pd.to_numeric(values).astype("float64").to_numpy()
        return self.encode_target(values)

    def decode_labels(self, indices: np.ndarray) -> np.ndarray:
        """Class indices -> label values."""
        return np.asarray(self.classes, dtype=object)[np.asarray(indices, dtype=np.int64)]

    # -- persistence -------------------------------------------------------------------------
    def to_json(self) -> str:
        """The fitted state as JSON."""
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> FittedPreprocessor:
        """Inverse of :meth:`to_json`."""
        data = json.loads(text)
        if data.get("format_version") not in _READABLE_VERSIONS:
            raise ValueError(
                f"preprocessor format {data.get('format_version')} is not supported "
                f"(this rayline reads {', '.join(map(str, _READABLE_VERSIONS))})"
            )
        data["format_version"] = FORMAT_VERSION  # version 1 is version 2 without chains
        return cls(**data)

    def save(self, path: str | Path) -> None:
        """Write :meth:`to_json` to ``path``."""
        Path(path).write_text(self.to_json())

    @classmethod
    def load(cls, path: str | Path) -> FittedPreprocessor:
        """Read a preprocessor written by :meth:`save`."""
        return cls.from_json(Path(path).read_text())


def _key(v: Any) -> Any:
    """Normalise a label for lookup (numpy scalars and ints/floats of equal value match)."""
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and v.is_integer():
        return int(v)
    return v


_USER_FNS: dict[str, Any] = {}


def _user_fn(ref: str):
    """Import a ``pkg.module:fn`` user transform once per process.

    Raises:
        rayline.refs.RefError: (an :class:`ImportError`) ``ref`` cannot be loaded.
    """
    if ref not in _USER_FNS:
        _USER_FNS[ref] = load_ref(ref, "user transform", signature="(df) -> DataFrame")
    return _USER_FNS[ref]


_INSTANCES: dict[str, Any] = {}


def _instance(ref: str) -> Any:
    """One instance per process of a stateful user transform class."""
    if ref not in _INSTANCES:
        _INSTANCES[ref] = _user_fn(ref)()
    return _INSTANCES[ref]


def _fit_user_transforms(shell: FittedPreprocessor, train_ds: Any) -> None:
    """Fit the stateful user transforms in order, each on the output of those before it.

    A stateful transform is a class with ``fit(self, batches) -> dict`` (``batches``: an
    iterator of pandas DataFrames of the train split, streamed to the driver; the returned
    state must be JSON-serialisable) and ``transform(self, batch, state) -> DataFrame``.
    """
    done: list[str] = []
    for ref in shell.user:
        fn = _user_fn(ref)
        if isinstance(fn, type):
            prefix = dataclasses.replace(shell, user=list(done), derived={})
            batches = train_ds.map_batches(_Prepare(prefix), batch_format="pandas").iter_batches(
                batch_format="pandas", batch_size=65536
            )
            state = fn().fit(batches)
            try:
                json.dumps(state)
            except TypeError as exc:
                raise TypeError(
                    f"user transform {ref}.fit must return JSON-serialisable state: {exc}"
                ) from None
            shell.user_state[ref] = state
        done.append(ref)


class _Prepare:
    """``map_batches`` callable: a preprocessor's user transforms and derived columns."""

    def __init__(self, prep: FittedPreprocessor):
        self.prep = prep

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        return self.prep.prepare(batch)


def _json_value(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v


def fit_preprocessor(
    train_ds: Any,
    all_ds: Any,
    *,
    task: str,
    target: str,
    numeric: list[str],
    categorical: list[str],
    encoding: str,
    standardize: bool,
    impute: str,
    max_categories: int,
    input_types: dict[str, str],
    allowed_classes: list[Any] | None = None,
    chains: dict[str, list[dict[str, Any]]] | None = None,
    derived: dict[str, str] | None = None,
    user: list[str] | None = None,
    raw_inputs: list[str] | None = None,
) -> FittedPreprocessor:
    """Fit the preprocessor with Ray Data aggregations (one pass over the train split).

    Statistics come from ``train_ds`` only, so nothing about val/test leaks into the
    features. The class list is the target's ``allowed`` values when the schema declares
    them, else every label seen in ``all_ds`` (all good rows): a label is not a learned
    statistic, and a class that only appears in the test split must still be scorable.
    """
    from ray.data.aggregate import Count, Mean, Std, ValueCounter

    chains, derived, user = chains or {}, derived or {}, list(user or [])
    shell = FittedPreprocessor(
        task=task,
        target=target,
        classes=None,
        numeric=[],
        categorical=[],
        derived=dict(derived),
        user=user,
    )
    if user:
        _fit_user_transforms(shell, train_ds)
    if derived or user:
        # Derived columns and user transforms are fitted on like any raw column.
        train_ds = train_ds.map_batches(_Prepare(shell), batch_format="pandas")
    aggs: list[Any] = [Count()]
    if task == "regression":
        aggs += [
            Mean(target, alias_name="target_mean"),
            Std(target, ddof=0, alias_name="target_std"),
            *_bounds(target, "target"),
        ]
    for c in numeric:
        aggs += [Mean(c, alias_name=f"mean:{c}"), Std(c, ddof=0, alias_name=f"std:{c}")]
        aggs += _bounds(c, c)
    for c in categorical:
        aggs.append(ValueCounter(c, alias_name=f"counts:{c}"))
    bool_cols = [c for c in [*numeric, *chains] if input_types.get(c) == "bool"]
    if bool_cols:
        # Arrow's mean/std kernels have no boolean variant; aggregate them as 0/1.
        train_ds = train_ds.map_batches(
            bools_to_float, fn_kwargs={"columns": bool_cols}, batch_format="pandas"
        )
    stats = train_ds.aggregate(*aggs)
    if not stats or not stats.get("count()"):
        raise DataValidationError(
            "the train split is empty; add data or change data.split fractions"
        )

    num_state = numeric_state(stats, numeric, impute)
    cat_state = []
    for c in categorical:
        counts = stats[f"counts:{c}"]
        pairs = [
            (str(_json_value(v)), int(n))
            for v, n in zip(counts["values"], counts["counts"], strict=True)
            if v is not None and not (isinstance(v, float) and np.isnan(v))
        ]
        # Most frequent first; ties broken by value so the vocabulary is deterministic.
        pairs.sort(key=lambda p: (-p[1], p[0]))
        cat_state.append({"name": c, "categories": [v for v, _ in pairs[:max_categories]]})

    classes = None
    if task == "classification":
        if allowed_classes:
            classes = sorted((_key(_json_value(v)) for v in allowed_classes), key=_sort_key)
        else:
            counts = all_ds.aggregate(ValueCounter(target, alias_name="labels"))["labels"]
            classes = sorted(
                {_key(_json_value(v)) for v in counts["values"] if v is not None}, key=_sort_key
            )
        if len(classes) < 2:
            raise DataValidationError(
                f"classification needs at least 2 classes in '{target}', found {classes}; "
                "check data.target and the data"
            )
    fitted_chains = (
        transforms.fit_chains(train_ds, chains, {name: name for name in chains}) if chains else {}
    )
    t_mean, t_std = target_state(stats, target) if task == "regression" else (0.0, 1.0)
    return FittedPreprocessor(
        target_mean=t_mean,
        target_std=t_std,
        task=task,
        target=target,
        classes=classes,
        numeric=num_state,
        categorical=cat_state,
        encoding=encoding,
        standardize=standardize,
        input_types=input_types,
        chains=fitted_chains,
        derived=dict(derived),
        user=user,
        user_state=shell.user_state,
        raw_inputs=list(raw_inputs or []),
    )


def _bounds(column: str, alias: str) -> list[Any]:
    """Min and max of ``column``: they tell whether it holds inf or -inf (Ray Data reports no
    mean at all when the two cancel, as for an all-null column)."""
    from ray.data.aggregate import Max, Min

    return [Min(column, alias_name=f"lo:{alias}"), Max(column, alias_name=f"hi:{alias}")]


def numeric_state(stats: dict[str, Any], numeric: list[str], impute: str) -> list[dict[str, Any]]:
    """The default treatment's fitted state of each numeric column, from the aggregations.

    A column without values (all null) gets mean 0 and std 1.

    Raises:
        DataValidationError: a mean or std is not finite (the column holds inf or -inf).
    """
    out = []
    for c in numeric:
        infinite = transforms.infinities(stats.get(f"lo:{c}"), stats.get(f"hi:{c}"))

        def stat(v: Any, default: float, what: str, c: str = c, inf: str | None = infinite):
            return transforms.finite_stat(
                v,
                default,
                where="features",
                what=what,
                column=c,
                remedy=(
                    f"Give '{c}' a transform chain that clips them first (features.transforms."
                    f"{c}: [{{op: clip, lower: ..., upper: ...}}, {{op: standardize}}])"
                ),
                infinite=inf,
            )

        mean = stat(stats.get(f"mean:{c}"), 0.0, "mean")
        std = stat(stats.get(f"std:{c}"), 1.0, "std") or 1.0
        out.append({"name": c, "mean": mean, "std": std, "fill": mean if impute == "mean" else 0.0})
    return out


def target_state(stats: dict[str, Any], target: str) -> tuple[float, float]:
    """(mean, std) of a regression target from the aggregations; (0, 1) without values.

    Raises:
        DataValidationError: the mean or std is not finite (the target holds inf or -inf).
    """
    infinite = transforms.infinities(stats.get("lo:target"), stats.get("hi:target"))
    kw = dict(
        where="features",
        column=target,
        remedy="A regression target must be finite: fix the data",
        infinite=infinite,
    )
    mean = transforms.finite_stat(stats.get("target_mean"), 0.0, what="mean", **kw)
    std = transforms.finite_stat(stats.get("target_std"), 1.0, what="std", **kw) or 1.0
    return mean, std


def bools_to_float(batch: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """``map_batches`` callable: bool columns as 0/1 floats (Arrow's mean/std kernels reject
    booleans; as 0/1 the mean is the share of true)."""
    for c in columns:
        batch[c] = batch[c].astype("float64")
    return batch


def _sort_key(v: Any) -> tuple[int, Any]:
    return (0, v) if isinstance(v, int | float) else (1, str(v))


class BatchTransform:
    """The ``map_batches`` callable: raw pandas batch -> ``{"x": features, "y": labels}``."""

    def __init__(self, prep: FittedPreprocessor, with_target: bool = True):
        self.prep = prep
        self.with_target = with_target

    def __call__(self, batch: pd.DataFrame) -> dict[str, np.ndarray]:
        out = {"x": self.prep.transform(batch)}
        if self.with_target:
            out["y"] = self.prep.encode_target(batch[self.prep.target])
        return out


def raw_input_columns(cfg: Any) -> list[str]:
    """The raw columns a pipeline's model reads, in schema order.

    With user transforms every declared column except the target is an input (a user
    function may read any of them); otherwise the default feature columns, the columns
    with a transform chain, and the columns derived expressions read.
    """
    from rayline.data.transforms import parse_expression

    declared = [c for c in cfg.schema_.columns if c != cfg.data.target]
    if cfg.features.user:
        return declared
    used = set(cfg.numeric_features()) | set(cfg.categorical_features())
    used |= set(cfg.features.transforms)
    for expr in cfg.features.derived.values():
        used |= set(parse_expression(expr)[1])
    return [c for c in declared if c in used]


def fit_from_config(cfg: Any, train_ds: Any, all_ds: Any = None) -> FittedPreprocessor:
    """Fit the preprocessor a pipeline config declares (``features`` section) on ``train_ds``."""
    cols = cfg.schema_.columns
    fcfg = cfg.features
    chains = {
        name: [step.model_dump(mode="json") for step in steps]
        for name, steps in fcfg.transforms.items()
    }
    extended = bool(chains or fcfg.derived or fcfg.user)
    return fit_preprocessor(
        train_ds,
        all_ds,
        task=cfg.model.task,
        target=cfg.data.target,
        numeric=cfg.numeric_features(),
        categorical=cfg.categorical_features(),
        encoding=fcfg.encoding,
        standardize=fcfg.standardize,
        impute=fcfg.impute,
        max_categories=fcfg.max_categories,
        input_types={c: s.type for c, s in cols.items()},
        allowed_classes=cols[cfg.data.target].allowed,
        chains=chains,
        derived=dict(fcfg.derived),
        user=list(fcfg.user),
        raw_inputs=raw_input_columns(cfg) if extended else None,
    )


class LocalSplit:
    """A small split in this process, with the few ``ray.data.Dataset`` methods the fit uses.

    ``map_batches`` applies its function to the whole split at once, ``aggregate`` runs Ray
    Data's own aggregation functions (``aggregate_block`` then ``finalize``) on it, and
    ``iter_batches`` slices it: the same statistics as a Ray Data job, without one. A Ray
    Data job's first execution in a session starts task workers and Ray Data's actors, which
    cost the demo's features stage ~5 s on 2 cores for a fit that takes milliseconds.
    """

    def __init__(self, table: Any):
        import pyarrow as pa

        if isinstance(table, pd.DataFrame):
            table = pa.Table.from_pandas(table, preserve_index=False)
        self.table = table

    def count(self) -> int:
        return self.table.num_rows

    def map_batches(self, fn: Any, *, fn_kwargs: dict | None = None, batch_format: str = "pandas"):
        if batch_format != "pandas":
            raise ValueError(f"LocalSplit.map_batches: batch_format {batch_format!r}")
        return LocalSplit(fn(self.table.to_pandas(), **(fn_kwargs or {})))

    def aggregate(self, *aggs: Any) -> dict[str, Any]:
        return {agg.name: agg.finalize(agg.aggregate_block(self.table)) for agg in aggs}

    def iter_batches(self, *, batch_format: str = "pandas", batch_size: int = 65536):
        if batch_format != "pandas":
            raise ValueError(f"LocalSplit.iter_batches: batch_format {batch_format!r}")
        for start in range(0, self.table.num_rows, batch_size):
            yield self.table.slice(start, batch_size).to_pandas()

    def union(self, *others: LocalSplit) -> LocalSplit:
        import pyarrow as pa

        tables = [self.table, *(o.table for o in others)]
        return LocalSplit(pa.concat_tables(tables, promote_options="default"))
