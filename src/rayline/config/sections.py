"""The config sections: one pydantic model per YAML section, each forbidding unknown keys.

Rules local to a section are checked here (split fractions sum to one, a tuned key exists,
a builder is known); rules across sections live on
:class:`~rayline.config.pipeline.PipelineConfig`.
"""

from __future__ import annotations

import difflib
import json
import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from rayline.refs import is_ref

ColumnType = Literal["float", "int", "bool", "string"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=False)


class SplitConfig(_Section):
    """How rows are split into train / val / test."""

    train: float = Field(0.7, gt=0, lt=1, description="Fraction of rows in the train split.")
    val: float = Field(0.15, gt=0, lt=1, description="Fraction of rows in the validation split.")
    test: float = Field(0.15, gt=0, lt=1, description="Fraction of rows in the test split.")
    key: str | None = Field(
        None,
        description="Column whose value decides a row's split (e.g. a user or entity id, so "
        "that all rows of one entity land together). When unset, the row's content is hashed.",
    )
    seed: int = Field(0, description="Salt for the split hash; change it to draw a new split.")

    @model_validator(mode="after")
    def _fractions_sum_to_one(self) -> SplitConfig:
        total = self.train + self.val + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(
                f"train + val + test must sum to 1, got {total:g}; adjust the fractions"
            )
        return self


class DataConfig(_Section):
    """Where the raw data lives and which column is the label."""

    path: str | list[str] = Field(
        ...,
        description="A file, directory, glob or hive-partitioned tree (or a list of them) of "
        "Parquet, CSV or JSON Lines files. Local paths are relative to the working directory; "
        "s3:// and gs:// URIs go through pyarrow filesystems with credentials from the "
        "environment. Hive `key=value` directory names become columns.",
    )
    format: Literal["auto", "parquet", "csv", "json"] = Field(
        "auto",
        description="File format; 'auto' decides by file extension (.parquet/.pq, .csv, "
        ".jsonl/.ndjson/.json). 'json' means JSON Lines: one object per line.",
    )
    endpoint_url: str | None = Field(
        None,
        description="S3-compatible endpoint for s3:// paths (MinIO, Ceph, a local test "
        "server), e.g. http://localhost:9000. Default: AWS_ENDPOINT_URL, else AWS itself.",
    )
    on_unreadable_row: Literal["quarantine", "fail"] = Field(
        "quarantine",
        description="A CSV row with the wrong number of fields or a JSON line that does not "
        "parse: quarantine it (file, line and text in the reason; it counts as a bad row) or "
        "fail the run naming it.",
    )
    target: str = Field(..., description="The label column; it must be declared in `schema`.")
    split: SplitConfig = Field(default_factory=SplitConfig, description="Train/val/test split.")


RULES = ("type", "nullable", "finite", "min", "max", "allowed", "regex", "unique")


class ColumnSpec(_Section):
    """The contract for one input column."""

    type: ColumnType = Field(..., description="Logical type: float, int, bool or string.")
    nullable: bool = Field(False, description="Whether null values are allowed.")
    min: float | None = Field(None, description="Smallest allowed value (numeric columns).")
    max: float | None = Field(None, description="Largest allowed value (numeric columns).")
    allow_inf: bool = Field(
        False,
        description="Whether inf and -inf are valid values (float columns only). By default "
        "they break the rule '<column>.finite' and the row is quarantined (or the run fails, "
        "per on_violation). A NaN is always read as a null, which `nullable` decides about.",
    )
    allowed: list[Any] | None = Field(
        None, description="The only values allowed (e.g. the categories of a string column)."
    )
    regex: str | None = Field(
        None,
        description="A regular expression every non-null value must match in full (string "
        "columns), e.g. '^[A-Z]{2}-[0-9]{6}$'.",
    )
    unique: bool = Field(
        False,
        description="No two rows may share a value (a key column). Every row of a duplicated "
        "value is quarantined: which copy is right cannot be told.",
    )
    on_violation: Literal["quarantine", "fail"] | None = Field(
        None,
        description="What a broken rule of this column does: quarantine the row, or fail "
        "the run. Default: schema.on_violation.",
    )

    @model_validator(mode="after")
    def _check_bounds(self) -> ColumnSpec:
        if (self.min is not None or self.max is not None) and self.type in ("string", "bool"):
            raise ValueError(f"min/max apply to numeric columns, not to type '{self.type}'")
        if self.allow_inf and self.type != "float":
            raise ValueError(
                f"allow_inf applies to float columns, not to type '{self.type}' (only a float "
                "can be infinite); remove it"
            )
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min:g}) is greater than max ({self.max:g})")
        if self.regex is not None:
            if self.type != "string":
                raise ValueError(f"regex applies to string columns, not to type '{self.type}'")
            try:
                re.compile(self.regex)
            except re.error as exc:
                raise ValueError(f"regex {self.regex!r} does not compile: {exc}") from None
        return self


class SchemaConfig(_Section):
    """The data contract every input row is checked against."""

    columns: dict[str, ColumnSpec] = Field(
        ..., min_length=1, description="Column name -> contract. Columns not listed are dropped."
    )
    max_bad_fraction: float = Field(
        0.01,
        ge=0,
        le=1,
        description="The run fails if more than this fraction of rows break a row rule; "
        "below it, bad rows go to quarantine with a reason.",
    )
    max_bad_fraction_by_rule: dict[str, float] = Field(
        default_factory=dict,
        description="Tighter limits for single rules, keyed '<column>.<rule>' (rules: "
        + ", ".join(RULES)
        + ") or 'row.unreadable', e.g. {'email.regex': 0.001}: the fraction of rows breaking "
        "that rule.",
    )
    on_violation: Literal["quarantine", "fail"] = Field(
        "quarantine",
        description="What a broken row rule does by default: quarantine the row (the run "
        "fails only past max_bad_fraction), or fail the run at the first rule broken.",
    )

    @model_validator(mode="after")
    def _check_rule_limits(self) -> SchemaConfig:
        problems = []
        for key, limit in self.max_bad_fraction_by_rule.items():
            col, _, rule = key.rpartition(".")
            if key != "row.unreadable" and (col not in self.columns or rule not in RULES):
                problems.append(
                    f"max_bad_fraction_by_rule: '{key}' is not '<declared column>.<rule>' "
                    f"(rules: {', '.join(RULES)}) or 'row.unreadable'"
                )
            if not 0 <= limit <= 1:
                problems.append(f"max_bad_fraction_by_rule.{key}: {limit} is not in [0, 1]")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def on_violation_of(self, column: str) -> str:
        """``"quarantine"`` or ``"fail"`` for a rule of ``column``."""
        spec = self.columns.get(column)
        return (spec.on_violation if spec else None) or self.on_violation


class ImputeStep(_Section):
    """Fill missing values with a train-split statistic or a constant."""

    op: Literal["impute"]
    strategy: Literal["mean", "median", "mode", "constant"] = Field(
        "mean", description="mean, median (approximate), mode, or constant (`value`)."
    )
    value: float | None = Field(None, description="The fill for strategy: constant.")
    indicator: bool = Field(False, description="Also output a 0/1 was-missing column.")


class ScaleStep(_Section):
    """standardize (z-score), minmax (to [0, 1]), robust ((x - median) / IQR), or log1p."""

    op: Literal["standardize", "minmax", "robust", "log1p"]


class ClipStep(_Section):
    """Clip to fixed bounds, or to train-split quantiles."""

    op: Literal["clip"]
    lower: float | None = Field(None, description="Fixed lower bound.")
    upper: float | None = Field(None, description="Fixed upper bound.")
    lower_quantile: float | None = Field(None, ge=0, le=1, description="Fitted lower bound.")
    upper_quantile: float | None = Field(None, ge=0, le=1, description="Fitted upper bound.")


class BucketizeStep(_Section):
    """Numeric -> bucket, by explicit edges or train-split quantiles (ends a chain)."""

    op: Literal["bucketize"]
    edges: list[float] | None = Field(None, description="Explicit inner bucket edges.")
    quantiles: int | None = Field(None, ge=2, le=100, description="Equal-frequency buckets.")
    output: Literal["onehot", "index"] = Field(
        "onehot", description="One-hot columns, or an index column for embeddings."
    )


class CategoryStep(_Section):
    """String categories -> one-hot columns or an index for embeddings (ends a chain)."""

    op: Literal["onehot", "index"]
    min_frequency: int = Field(
        1, ge=1, description="Categories seen fewer times fall in the unknown bucket."
    )
    max_categories: int = Field(100, ge=1, description="Most frequent categories kept.")


class HashStep(_Section):
    """A stable hash of the value's text into `buckets` buckets (ends a chain)."""

    op: Literal["hash"]
    buckets: int = Field(..., ge=2, le=1_000_000, description="Number of hash buckets.")
    output: Literal["onehot", "index"] = Field(
        "index", description="An index column for embeddings, or one-hot columns."
    )


class DatetimeStep(_Section):
    """Parts of a timestamp or ISO-8601 string as numeric features (ends a chain)."""

    op: Literal["datetime"]
    parts: list[Literal["year", "month", "day", "dayofweek", "dayofyear", "hour", "minute"]] = (
        Field(["dayofweek", "hour"], min_length=1, description="Parts to extract.")
    )
    cyclic: bool = Field(False, description="Encode periodic parts as sin/cos pairs.")


TransformStep = Annotated[
    ImputeStep | ScaleStep | ClipStep | BucketizeStep | CategoryStep | HashStep | DatetimeStep,
    Field(discriminator="op"),
]
_STRING_STEPS = {"onehot", "index", "hash", "datetime"}
_TERMINAL_STEPS = {"bucketize", "onehot", "index", "hash", "datetime"}


class FeaturesConfig(_Section):
    """Preprocessing, fitted on the train split only."""

    numeric: list[str] | None = Field(
        None,
        description="Numeric input columns. Default: every float/int/bool schema column "
        "except the target and the split key.",
    )
    categorical: list[str] | None = Field(
        None,
        description="Categorical input columns. Default: every string schema column except "
        "the target and the split key.",
    )
    standardize: bool = Field(
        True, description="Scale numeric columns to zero mean, unit variance."
    )
    impute: Literal["mean", "zero"] = Field(
        "mean", description="How missing numeric values are filled (train-split statistics)."
    )
    encoding: Literal["onehot", "index"] = Field(
        "onehot",
        description="Categorical encoding: one-hot columns, or one integer index column "
        "(0 is the unknown/missing bucket).",
    )
    max_categories: int = Field(
        100,
        ge=1,
        description="Most frequent categories kept per column; rarer ones fall in the unknown bucket.",
    )
    transforms: dict[str, list[TransformStep]] = Field(
        default_factory=dict,
        description="Per-column transform chains, applied in order and fitted on the train "
        "split, e.g. {income: [{op: impute, strategy: median, indicator: true}, {op: log1p}, "
        "{op: robust}]}. A listed column skips the default treatment above.",
    )
    derived: dict[str, str] = Field(
        default_factory=dict,
        description="New numeric columns from arithmetic on raw columns, e.g. "
        "{income_per_year: 'income / (age + 1)'}; numbers, column names, + - * / **, and "
        "log, log1p, exp, sqrt, abs, min, max.",
    )
    user: list[str] = Field(
        default_factory=list,
        description="User transforms 'pkg.module:name', applied first, in order: a pure "
        "function pandas.DataFrame -> pandas.DataFrame (adds or replaces columns), or a "
        "class with fit(batches) -> JSON state and transform(batch, state) -> DataFrame, "
        "fitted on the train split. The module ships with the registered model.",
    )


class DriftRule(_Section):
    """When a column's drift against the champion's training data counts, and what it does."""

    psi: float = Field(
        0.25,
        ge=0,
        description="Population stability index above which the column has drifted "
        "(< 0.1 stable, 0.1-0.25 moderate, > 0.25 large).",
    )
    unseen_rate: float = Field(
        0.05,
        ge=0,
        le=1,
        description="Categorical columns: share of rows with a category the champion's "
        "training data never had, above which the column has drifted.",
    )
    action: Literal["warn", "fail"] = Field(
        "warn",
        description="warn: a reason in the report and the gate decision; fail: the gate "
        "rejects the model.",
    )


class DriftConfig(_Section):
    """Profiles of the training data, and drift against the current champion's."""

    enabled: bool = Field(
        True,
        description="Profile the train split (one Ray Data pass) and, when a champion with a "
        "profile exists, compare with it.",
    )
    bins: int = Field(
        10, ge=2, le=100, description="Equal-probability bins of the champion's data for PSI."
    )
    default: DriftRule = Field(
        default_factory=DriftRule, description="The rule for columns not listed in `columns`."
    )
    columns: dict[str, DriftRule] = Field(
        default_factory=dict, description="Per-column rules, by column name."
    )


#: The built-in ``model.builder`` names: the keys of :data:`rayline.train.models.BUILDERS`
#: (not imported from there, which would import torch to validate a config).
BUILTIN_BUILDERS = ("mlp", "tabular", "cnn")


class ModelConfig(_Section):
    """The network to train."""

    task: Literal["classification", "regression"] = Field(
        ..., description="classification (integer or string labels) or regression."
    )
    builder: str = Field(
        "mlp",
        description="Model builder: 'mlp' (feed-forward), 'tabular' (an embedding per "
        "categorical, needs features.encoding: index), 'cnn' (images, needs image_shape), or "
        "a user function 'package.module:function' called as fn(model_cfg: dict, in_dim: int, "
        "out_dim: int) -> torch.nn.Module.",
    )
    hidden_sizes: list[int] = Field(
        [64, 32], description="Widths of the hidden layers of the MLP (empty: a linear model)."
    )
    dropout: float = Field(0.0, ge=0, lt=1, description="Dropout after each hidden layer.")
    activation: Literal["relu", "gelu", "tanh"] = Field("relu", description="Hidden activation.")
    embedding_dim: int | None = Field(
        None,
        ge=1,
        description="tabular: width of each categorical embedding. Default: "
        "min(16, (cardinality + 1) // 2) per column, cardinality counting the unknown bucket.",
    )
    image_shape: list[int] | None = Field(
        None,
        min_length=3,
        max_length=3,
        description="cnn (required): [C, H, W] of each image; C x H x W must equal the number of "
        "feature columns, which arrive flat and are reshaped.",
    )
    conv_channels: list[int] = Field(
        [16, 32],
        min_length=1,
        description="cnn: output channels of each conv block (3x3 conv, activation, 2x2 max-pool).",
    )

    @model_validator(mode="after")
    def _check_builder(self) -> ModelConfig:
        problems = []
        if self.builder not in BUILTIN_BUILDERS and not is_ref(self.builder):
            problems.append(
                f"builder '{self.builder}' is not known; use 'mlp', 'tabular', 'cnn', or an "
                "import path 'package.module:function' to a user builder"
            )
        if self.builder == "cnn" and self.image_shape is None:
            problems.append("builder 'cnn' needs image_shape: [C, H, W] (e.g. [1, 8, 8])")
        if self.image_shape is not None and min(self.image_shape) < 1:
            problems.append(f"image_shape {self.image_shape}: every size must be >= 1")
        if min(self.conv_channels) < 1:
            problems.append(f"conv_channels {self.conv_channels}: every entry must be >= 1")
        if self.hidden_sizes and min(self.hidden_sizes) < 1:
            problems.append(
                f"hidden_sizes {self.hidden_sizes}: every layer width must be >= 1 (an empty "
                "list gives a linear model)"
            )
        if problems:
            raise ValueError("\n".join(problems))
        return self


class TrainConfig(_Section):
    """Distributed training with Ray Train (DDP)."""

    epochs: int = Field(10, ge=1, description="Passes over the train split.")
    batch_size: int = Field(64, ge=1, description="Rows per batch on each worker.")
    lr: float = Field(1e-3, gt=0, description="Learning rate.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    optimizer: Literal["adamw", "sgd"] = Field("adamw", description="Optimizer.")
    num_workers: int = Field(
        2,
        ge=1,
        description="Ray Train workers (DDP ranks). A list `[min, max]` makes training "
        "elastic (Ray Train V2's ScalingConfig(num_workers=(min, max))): it starts with as "
        "many as fit, up to max, and after a lost worker or node goes on from the last "
        "checkpoint with what is left, down to min; num_workers is then max and "
        "min_workers min.",
    )
    min_workers: int | None = Field(
        None,
        ge=1,
        description="Elastic training's lower bound (set by `num_workers: [min, max]`); "
        "unset: a fixed num_workers.",
    )
    use_gpu: bool = Field(False, description="One GPU per worker with NCCL; CPU uses gloo.")
    cpus_per_worker: float = Field(
        1.0, gt=0, description="Logical CPUs each worker reserves (fractions allowed)."
    )
    seed: int = Field(0, description="Seed for weights init and shuffling.")
    metric: str | None = Field(
        None,
        description="Validation metric that picks the best checkpoint and the best trial. "
        "Default: log_loss for classification, rmse for regression.",
    )
    lr_schedule: Literal["constant", "cosine", "onecycle"] = Field(
        "constant", description="Learning-rate schedule over all optimizer steps."
    )
    warmup_fraction: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="Fraction of optimizer steps spent warming the rate up linearly.",
    )
    grad_clip_norm: float | None = Field(
        None, gt=0, description="Clip the global gradient norm to this value (unset: no clipping)."
    )
    grad_accum_steps: int = Field(
        1,
        ge=1,
        description="Micro-batches per optimizer step (DDP skips the gradient sync on all but the last).",
    )
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto",
        description="'auto' = bf16 autocast on GPU, fp32 on CPU; 'bf16' on CPU also runs fp32.",
    )
    early_stopping_patience: int | None = Field(
        None, ge=1, description="Stop after this many epochs without a better validation metric."
    )
    deterministic: bool = Field(
        True,
        description="Feed each worker the same rows in the same order on every run (Ray Data "
        "preserve_order), so a rerun on CPU repeats its metrics; false trades that for throughput.",
    )
    keep_checkpoints: int = Field(
        1, ge=1, description="Best checkpoints kept, ranked by the validation metric."
    )
    resources_per_worker: dict[str, float] = Field(
        default_factory=dict,
        description="Extra Ray resources each worker reserves (e.g. {memory: 4e9}), added to "
        "cpus_per_worker and one GPU when use_gpu.",
    )
    log_every_n_steps: int | None = Field(
        None,
        ge=1,
        description="Also record train loss, LR and samples/s every N optimizer steps (MLflow "
        "step metrics); unset: per epoch only.",
    )
    collective_timeout_s: float = Field(
        1800,
        gt=0,
        description="A DDP collective that does not finish within this many seconds fails the "
        "attempt (so max_failures can restart it) instead of hanging.",
    )
    cache_mb: float = Field(
        512,
        ge=0,
        description="Each worker keeps its shard in memory after the first epoch when it fits "
        "in this many MiB (later epochs then skip re-reading); 0 streams every epoch.",
    )
    max_failures: int = Field(
        0,
        ge=-1,
        description="Worker-group restarts allowed (from the last checkpoint); -1 = unlimited.",
    )
    local_mode: bool = Field(
        False,
        description="Run the training loop in the calling process (Ray Train V2's local mode, "
        "ScalingConfig(num_workers=0)): no worker processes to start and no DDP, so a small "
        "run or sweep trial starts in a fraction of the time; num_workers is then ignored. "
        "Checkpoints are kept by rayline under the run directory.",
    )
    placement_strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = Field(
        "PACK",
        description="How Ray places the workers' bundles on nodes: PACK fills few nodes, "
        "SPREAD puts ranks on different nodes where it can, STRICT_* insist (a STRICT_SPREAD "
        "request larger than the node count can never be placed).",
    )
    placement_timeout_s: float = Field(
        120,
        gt=0,
        description="Seconds to wait for the cluster to place the training workers (CPUs/GPUs "
        "free, or autoscaled nodes up); past it the run (or the Tune trial) fails with the "
        "resources it waited for instead of retrying forever.",
    )

    @model_validator(mode="before")
    @classmethod
    def _elastic_range(cls, data: Any) -> Any:
        workers = data.get("num_workers") if isinstance(data, dict) else None
        if isinstance(workers, list | tuple):
            if (
                len(workers) != 2
                or not all(isinstance(w, int) and not isinstance(w, bool) for w in workers)
                or not 1 <= workers[0] <= workers[1]
            ):
                raise ValueError(
                    f"num_workers: {list(workers)} is not [min, max] with two whole numbers "
                    "1 <= min <= max; give one number for a fixed worker count"
                )
            data = {**data, "num_workers": workers[1], "min_workers": workers[0]}
        return data

    @model_validator(mode="after")
    def _min_workers(self) -> TrainConfig:
        if self.min_workers is not None and self.min_workers > self.num_workers:
            raise ValueError(
                f"min_workers ({self.min_workers}) is above num_workers ({self.num_workers}); "
                "write num_workers: [min, max]"
            )
        return self

    @property
    def elastic(self) -> bool:
        """Whether the worker count may change between attempts (min below max)."""
        return self.min_workers is not None and self.min_workers < self.num_workers

    @property
    def fewest_workers(self) -> int:
        """The workers a run must be able to place to start at all."""
        return self.min_workers if self.elastic else self.num_workers


class ParamSpec(_Section):
    """One dimension of the search space."""

    type: Literal["loguniform", "uniform", "choice", "randint"] = Field(
        ..., description="Distribution to sample from."
    )
    low: float | None = Field(None, description="Lower bound (loguniform, uniform, randint).")
    high: float | None = Field(
        None, description="Upper bound (loguniform, uniform, randint; exclusive for randint)."
    )
    values: list[Any] | None = Field(None, description="Candidates (choice).")

    @model_validator(mode="after")
    def _check(self) -> ParamSpec:
        if self.type == "choice":
            if not self.values:
                raise ValueError("a 'choice' parameter needs a non-empty `values` list")
        else:
            if self.low is None or self.high is None:
                raise ValueError(f"a '{self.type}' parameter needs `low` and `high`")
            if self.low >= self.high:
                raise ValueError(f"`low` ({self.low:g}) must be below `high` ({self.high:g})")
            if self.type == "loguniform" and self.low <= 0:
                raise ValueError("a 'loguniform' parameter needs `low` > 0")
        return self


class TuneConfig(_Section):
    """Hyperparameter search with Ray Tune; each trial is a distributed training run."""

    enabled: bool = Field(False, description="Run a search instead of a single training run.")
    num_samples: int = Field(4, ge=1, description="Number of trials.")
    max_concurrent_trials: int | None = Field(
        None, ge=1, description="Trials running at once (default: as many as resources allow)."
    )
    search_space: dict[str, ParamSpec] = Field(
        default_factory=dict,
        description="Dotted key under `train` or `model` (e.g. `train.lr`) -> distribution, "
        "or a plain list of candidate values (a `choice`).",
    )
    search: Literal["random", "grid", "optuna"] = Field(
        "random",
        description="How trials are drawn: 'random' (seeded by train.seed), 'grid' (every "
        "combination of `choice` values, each num_samples times when num_samples is set, "
        "else once) or 'optuna' (Optuna's TPE, seeded; reproducible with one trial at a time).",
    )
    scheduler: Literal["asha", "median", "pbt", "fifo"] = Field(
        "asha",
        description="'asha' stops weak trials early at rungs; 'median' stops a trial whose "
        "metric is worse than the median of the others at the same epoch; 'pbt' (Population "
        "Based Training) has weak trials continue from a strong trial's checkpoint with "
        "perturbed train.* values (needs search: random); 'fifo' runs "
        "each to the end.",
    )
    perturbation_interval: int = Field(
        2, ge=1, description="PBT: epochs between a trial's exploit/explore steps."
    )
    grace_period: int = Field(
        1, ge=1, description="ASHA/median: epochs before a trial may be stopped."
    )
    reduction_factor: float = Field(
        2.0, gt=1, description="ASHA: keep 1/reduction_factor of the trials at each rung."
    )

    @field_validator("search_space", mode="before")
    @classmethod
    def _lists_are_choices(cls, space: Any) -> Any:
        if isinstance(space, dict):
            return {
                k: {"type": "choice", "values": v} if isinstance(v, list) else v
                for k, v in space.items()
            }
        return space

    @model_validator(mode="after")
    def _check_space(self) -> TuneConfig:
        problems = []
        if self.search == "grid":
            for key, spec in self.search_space.items():
                if spec.type in ("loguniform", "uniform"):
                    problems.append(
                        f"search_space key '{key}' is a continuous '{spec.type}' range, which "
                        "a grid cannot enumerate; list the values to try (a `choice`, or a "
                        "plain list) or use search: random or optuna"
                    )
        if self.scheduler == "pbt":
            if self.search != "random":
                problems.append(
                    f"scheduler pbt with search {self.search}: Tune does not combine a search "
                    "algorithm with PBT, which explores by perturbing its own population; use "
                    "search: random (the initial population) or another scheduler"
                )
            for key in self.search_space:
                if not key.startswith("train."):
                    problems.append(
                        f"search_space key '{key}' under scheduler pbt: a PBT trial continues "
                        "from another trial's weights, so only train.* values can be perturbed "
                        "(model.* changes the network); move it out of the space or use asha"
                    )
        if self.search == "optuna":
            for key, spec in self.search_space.items():
                if spec.type == "choice" and len(
                    {json.dumps(v, sort_keys=True) for v in spec.values or []}
                ) < len(spec.values or []):
                    problems.append(
                        f"search_space key '{key}' lists a value twice; Optuna needs distinct "
                        "choices"
                    )
        for key in self.search_space:
            section, _, field = key.partition(".")
            model_cls = {"train": TrainConfig, "model": ModelConfig}.get(section)
            if model_cls is None or field not in model_cls.model_fields:
                tunable = [f"train.{f}" for f in TrainConfig.model_fields] + [
                    f"model.{f}" for f in ModelConfig.model_fields
                ]
                close = difflib.get_close_matches(key, tunable, n=1)
                hint = f"; did you mean '{close[0]}'?" if close else ""
                problems.append(
                    f"search_space key '{key}' is not tunable; use `train.<field>` or "
                    f"`model.<field>` (e.g. train.lr, model.hidden_sizes){hint}"
                )
        if self.enabled and not self.search_space:
            problems.append(
                "enabled is true but search_space is empty; declare at least one parameter"
            )
        if problems:
            raise ValueError("\n".join(problems))
        return self


class SliceSpec(_Section):
    """A numeric slice column with explicit bin edges."""

    column: str = Field(description="The raw input column to slice on.")
    bins: list[float] = Field(
        description="Increasing bin edges; a row falls in [edge_i, edge_i+1), the last bin "
        "closed. Rows outside the edges, or null, form their own slices.",
        min_length=2,
    )

    @field_validator("bins")
    @classmethod
    def _increasing(cls, bins: list[float]) -> list[float]:
        if any(later <= earlier for earlier, later in zip(bins[:-1], bins[1:], strict=True)):
            raise ValueError(f"bin edges must increase strictly, got {bins}")
        return bins


class EvaluateConfig(_Section):
    """Scoring the best model on the test split."""

    batch_size: int = Field(1024, ge=1, description="Rows per batch for batch inference.")
    baseline: bool = Field(
        True,
        description="Also fit a scikit-learn linear baseline (LogisticRegression or Ridge) on "
        "the same train split and report its test metrics beside the model's.",
    )
    bootstrap: int = Field(
        0,
        ge=0,
        le=100_000,
        description="Bootstrap resamples for confidence intervals on every test metric "
        "(0: none). Resampled from the predictions of the one scoring pass, never re-read.",
    )
    confidence_level: float = Field(
        0.95, gt=0.5, lt=1, description="Coverage of the bootstrap intervals."
    )
    seed: int = Field(0, description="Seed of the bootstrap resamples (same seed, same intervals).")
    slices: list[str | SliceSpec] = Field(
        default_factory=list,
        description="Columns to report every metric per value of: a categorical (string, bool "
        "or int) column by name, or `{column: x, bins: [edges]}` for a numeric one.",
    )
    report: bool = Field(
        True,
        description="Write the evaluation report (PNG figures and one self-contained HTML page "
        "with challenger, champion and baseline side by side) under `reports/` in MLflow.",
    )

    @field_validator("slices", mode="before")
    @classmethod
    def _one_form_per_slice(cls, items: Any) -> Any:
        # A mapping is a binned slice: report its own problem, not also "not a string".
        if not isinstance(items, list):
            return items
        out = []
        for i, item in enumerate(items):
            if isinstance(item, dict):
                try:
                    item = SliceSpec.model_validate(item)
                except ValidationError as exc:
                    first = exc.errors()[0]
                    where = ".".join(str(p) for p in first["loc"])
                    raise ValueError(f"[{i}].{where}: {first['msg']}") from None
            out.append(item)
        return out


class Threshold(_Section):
    """Absolute bounds on one test metric."""

    min: float | None = Field(None, description="The metric must be at least this.")
    max: float | None = Field(None, description="The metric must be at most this.")

    @model_validator(mode="after")
    def _check_bounds(self) -> Threshold:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(
                f"min ({self.min:g}) is greater than max ({self.max:g}); no model could pass"
            )
        return self


class SliceThreshold(Threshold):
    """Bounds a test metric must meet on every slice with enough rows (TFMA-style)."""

    min_rows: int = Field(
        30,
        ge=1,
        description="Slices with fewer test rows are reported but not held to the bound.",
    )
    columns: list[str] | None = Field(
        None, description="Only slices of these `evaluate.slices` columns (default: all)."
    )


class GateConfig(_Section):
    """When a new model may become the champion."""

    thresholds: dict[str, Threshold] = Field(
        default_factory=dict, description="Test metric -> absolute bounds it must meet."
    )
    compare_metric: str | None = Field(
        None,
        description="Metric on which the challenger must beat the champion (default: train.metric).",
    )
    min_delta: float = Field(
        0.0,
        ge=0,
        description="How much better than the champion, on the same test split, the challenger must be.",
    )
    confidence: float | None = Field(
        None,
        gt=0.5,
        lt=1,
        description="Gate on the uncertainty of the improvement: a paired bootstrap of the "
        "compare_metric difference on the same test rows; the lower bound of this two-sided "
        "interval must clear min_delta. null: compare point values.",
    )
    bootstrap: int = Field(
        2000,
        ge=100,
        le=100_000,
        description="Paired bootstrap resamples for `confidence` (seeded by evaluate.seed).",
    )
    slice_thresholds: dict[str, SliceThreshold] = Field(
        default_factory=dict,
        description="Test metric -> bounds every slice of `evaluate.slices` with at least "
        "`min_rows` rows must meet.",
    )
    challengers: int = Field(
        1,
        ge=1,
        le=32,
        description="With a sweep, score the top-k trials' best checkpoints and the champion "
        "in one pass over the test split; the best challenger that passes every check is "
        "registered, the others are recorded with their metrics and reasons.",
    )


class RegistryConfig(_Section):
    """MLflow tracking and model registry."""

    tracking_uri: str | None = Field(
        None,
        description="MLflow tracking URI. Default: $MLFLOW_TRACKING_URI, else "
        "sqlite:///<runtime.storage_path>/mlflow.db.",
    )
    experiment: str = Field("rayline", description="MLflow experiment name.")
    model_name: str | None = Field(None, description="Registered model name (default: `name`).")
    alias: str = Field("champion", description="Alias that marks the serving model.")
    description: str | None = Field(
        None,
        description="Intended use and limits of the model, for the model card (the version's "
        "description in MLflow).",
    )


class RuntimeConfig(_Section):
    """Where and how Ray runs."""

    address: str | None = Field(
        None,
        description="Ray cluster address ('auto', 'ray://host:10001'). Default: $RAY_ADDRESS, "
        "else a local Ray started with `num_cpus`.",
    )
    num_cpus: int | None = Field(
        None,
        ge=1,
        description="Logical CPUs of a local Ray (default: max(8, 2 x os.cpu_count()), so that "
        "Ray Data always has CPUs beside the training workers).",
    )
    object_store_memory: int | None = Field(
        None, ge=78643200, description="Bytes of object store for a local Ray (default: Ray's)."
    )
    storage_path: str = Field(
        "rayline-runs",
        description="Root for runs, checkpoints and staged data (local path or URI).",
    )
    run_name: str | None = Field(None, description="Name of this run (default: name + timestamp).")

    @field_validator("run_name")
    @classmethod
    def _one_directory_name(cls, name: str | None) -> str | None:
        # The run lives in <storage_path>/runs/<run_name>: a separator or '..' would put it
        # (and `runs prune`'s deletes) somewhere else.
        if name and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
            raise ValueError(
                f"'{name}' is not a plain directory name; use letters, digits, '_', '-' and "
                "'.', starting with a letter or digit (no '/' or '..'), or leave it unset for "
                "a timestamped name"
            )
        return name

    dashboard: bool = Field(
        True,
        description="Start Ray's dashboard (and its State API, on 127.0.0.1) with a local Ray; "
        "Ray Train's own placement-group cleanup needs it. Off saves ~1 s of start-up.",
    )
    log_to_driver: bool = Field(
        False,
        description="Stream every Ray worker's log lines to the console (`rayline run -v` sets "
        "it); errors reach the console either way.",
    )
    in_process_max_rows: int = Field(
        200_000,
        ge=0,
        description="Inputs and splits of at most this many rows are validated, split and "
        "scored in one process with pyarrow, beside Ray, and reach the training workers as "
        "arrays in Ray's object store, instead of through Ray Data jobs, whose task workers "
        "and actors take seconds to start (0: always Ray Data). "
        "A CSV or JSON Lines input counts by size: at most 64 bytes a row (12.8 MB at the "
        "default).",
    )
    cache: bool = Field(
        True,
        description="Reuse a stage's result from `<storage_path>/cache/` when everything it "
        "depends on (input data, its config slice, rayline's code for it, user code it "
        "imports) matches an earlier run's; `rayline run --no-cache` turns it off for one run.",
    )


class RetrainWindow(_Section):
    """Train on the last N values of one hive partition column (``retrain.window``)."""

    partition: str = Field(
        ..., description="The hive partition key, e.g. 'day' for .../day=2026-11-01/part-0.parquet."
    )
    last: int = Field(..., ge=1, description="How many of its newest values to train on.")


class RetrainConfig(_Section):
    """When `rayline retrain` retrains, and on which data."""

    min_new_rows: int = Field(
        1,
        ge=1,
        description="Retrain when the files new or changed since the champion's training data "
        "hold at least this many rows (a new hive partition retrains whatever its size).",
    )
    max_age: str | None = Field(
        None,
        description="Retrain when the champion is older than this ('7d', '12h', '30m'), new "
        "data or not. Default: no age limit.",
    )
    window: Literal["all"] | RetrainWindow = Field(
        "all",
        description="The data a retrain trains on: 'all' of data.path, or {partition: day, "
        "last: 3}: the files of the last 3 values of the hive partition key `day` (sorted as "
        "numbers when every value is one, else as text, so ISO dates sort by time).",
    )

    @field_validator("window", mode="before")
    @classmethod
    def _one_form_of_window(cls, value: Any) -> Any:
        # One message per mistake, not one per branch of the union.
        if isinstance(value, str) and value != "all":
            raise ValueError(
                f"'{value}' is not a window; write 'all' or {{partition: <hive key>, last: N}}"
            )
        if isinstance(value, dict):
            try:
                return RetrainWindow.model_validate(value)
            except ValidationError as exc:
                first = exc.errors()[0]
                where = ".".join(str(p) for p in first["loc"])
                msg = first["msg"]
                if first["type"] == "missing":
                    msg = "required; write {partition: <hive key>, last: N}"
                raise ValueError(f"{where}: {msg}") from None
        if not isinstance(value, str | RetrainWindow):
            raise ValueError("write 'all' or {partition: <hive key>, last: N}")
        return value

    @field_validator("max_age")
    @classmethod
    def _age(cls, value: str | None) -> str | None:
        from rayline.cache import parse_age

        if value is not None:
            if parse_age(value) <= 0:
                raise ValueError(f"'{value}' is not a positive age; write e.g. 7d, 12h, 30m")
        return value


#: Runtime keys that cannot change a run's results, so they stay out of its config hash.
DISPLAY_ONLY = ("log_to_driver", "dashboard", "cache")


class ServeConfig(_Section):
    """`rayline serve`: the Ray Serve application that answers for NAME@alias."""

    host: str = Field(
        "127.0.0.1",
        min_length=1,
        description="Address Serve's HTTP proxy listens on; anything but loopback needs a "
        "bearer token (--token-file or $RAYLINE_SERVE_TOKEN).",
    )
    port: int = Field(8000, ge=1, le=65535, description="Port of Serve's HTTP proxy.")
    num_replicas: int = Field(1, ge=1, le=1024, description="Replicas of the model.")
    replica_cpus: float = Field(1.0, gt=0, description="Logical CPUs each replica reserves.")
    max_batch_size: int = Field(
        32,
        ge=1,
        le=4096,
        description="Requests a replica scores together in one model call (@serve.batch).",
    )
    batch_wait_timeout_s: float = Field(
        0.005,
        ge=0,
        le=10,
        description="How long a replica waits for more requests to fill a batch.",
    )
    max_rows_per_request: int = Field(
        10_000, ge=1, description="More rows in one request are refused with a 413."
    )
    poll_interval_s: float = Field(
        5.0,
        ge=0.1,
        description="How often each replica reads NAME@alias; when it moved, the new version "
        "is loaded beside the serving one and swapped in without dropping a request.",
    )
    proxy_location: Literal["EveryNode", "HeadOnly"] = Field(
        "EveryNode",
        description="Where Serve runs its HTTP proxies when this starts Serve: on every node "
        "(Ray's default) or on the head only (nodes sharing one address, e.g. a loopback "
        "test cluster). A Serve already running keeps its own.",
    )


class DeployConfig(_Section):
    """The `deploy` stage: after a passed gate, the running Serve application serves the
    new champion (on the Ray cluster the pipeline runs on)."""

    enabled: bool = Field(
        False,
        description="Run the deploy stage. It needs a Ray cluster that outlives the run "
        "(runtime.address, or a job sent with `rayline submit`).",
    )
    app: str | None = Field(
        None,
        min_length=1,
        description="The Serve application's name (default: rayline-<registered model>, as "
        "`rayline serve` names it).",
    )
    start: bool = Field(
        True,
        description="Start the application (settings from `serve`) when none runs; false "
        "fails the stage instead.",
    )
    route_prefix: str = Field(
        "/",
        pattern=r"^/",
        description="HTTP route of an application this stage starts.",
    )
    timeout_s: float = Field(
        300,
        gt=0,
        description="How long to wait for a started application to run and for every "
        "replica to serve the new version.",
    )
    token_file: str | None = Field(
        None,
        description="Bearer token of an application this stage starts (first line of the "
        "file, on the machine the pipeline's driver runs on); default $RAYLINE_SERVE_TOKEN.",
    )
    webhook_secret_file: str | None = Field(
        None,
        description="MLflow webhook secret of an application this stage starts; default "
        "$RAYLINE_SERVE_WEBHOOK_SECRET.",
    )
