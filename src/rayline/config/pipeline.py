"""The whole pipeline config and the rules across its sections.

Cross-field rules (the target is declared in the schema, a feature column exists, a gate
metric fits the task) are checked once, here, before any stage runs.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import yaml
from pydantic import ConfigDict, Field, model_validator

from rayline.config.sections import (
    _STRING_STEPS,
    _TERMINAL_STEPS,
    DISPLAY_ONLY,
    DataConfig,
    DeployConfig,
    DriftConfig,
    EvaluateConfig,
    FeaturesConfig,
    GateConfig,
    ModelConfig,
    RegistryConfig,
    RetrainConfig,
    RuntimeConfig,
    SchemaConfig,
    ServeConfig,
    TrainConfig,
    TuneConfig,
    _Section,
)
from rayline.metrics import METRICS, metric_names
from rayline.refs import is_ref


class PipelineConfig(_Section):
    """A whole rayline pipeline."""

    name: str = Field(
        ...,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
        description="Pipeline name; the default registered model name.",
    )
    data: DataConfig = Field(..., description="Raw data source and label.")
    schema_: SchemaConfig = Field(..., alias="schema", description="The data contract.")
    features: FeaturesConfig = Field(default_factory=FeaturesConfig, description="Preprocessing.")
    drift: DriftConfig = Field(
        default_factory=DriftConfig, description="Data profiles and drift checks."
    )
    model: ModelConfig = Field(..., description="The network.")
    train: TrainConfig = Field(default_factory=TrainConfig, description="Distributed training.")
    tune: TuneConfig = Field(default_factory=TuneConfig, description="Hyperparameter search.")
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig, description="Test scoring.")
    gate: GateConfig = Field(default_factory=GateConfig, description="Promotion rules.")
    registry: RegistryConfig = Field(default_factory=RegistryConfig, description="MLflow.")
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig, description="Ray runtime.")
    retrain: RetrainConfig = Field(
        default_factory=RetrainConfig, description="When `rayline retrain` retrains."
    )
    serve: ServeConfig = Field(default_factory=ServeConfig, description="`rayline serve`.")
    deploy: DeployConfig = Field(
        default_factory=DeployConfig, description="Serving the new champion after a run."
    )

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    # -- derived values -------------------------------------------------------------------
    @property
    def metric(self) -> str:
        """The validation metric that selects checkpoints and trials."""
        if self.train.metric:
            return self.train.metric
        return "log_loss" if self.model.task == "classification" else "rmse"

    @property
    def metric_mode(self) -> str:
        """``"max"`` or ``"min"`` for :attr:`metric`."""
        return METRICS[self.metric].mode

    @property
    def compare_metric(self) -> str:
        """The metric on which a challenger is compared with the champion."""
        return self.gate.compare_metric or self.metric

    @property
    def model_name(self) -> str:
        """The registered model name."""
        return self.registry.model_name or self.name

    def numeric_features(self) -> list[str]:
        """Numeric input columns, explicit or derived from the schema."""
        if self.features.numeric is not None:
            return [c for c in self.features.numeric if c not in self.features.transforms]
        return [
            c
            for c, spec in self.schema_.columns.items()
            if spec.type in ("float", "int", "bool") and c not in self._non_features()
        ] + [c for c in self.features.derived if c not in self.features.transforms]

    def categorical_features(self) -> list[str]:
        """Categorical input columns, explicit or derived from the schema."""
        if self.features.categorical is not None:
            return [c for c in self.features.categorical if c not in self.features.transforms]
        return [
            c
            for c, spec in self.schema_.columns.items()
            if spec.type == "string" and c not in self._non_features()
        ]

    def _non_features(self) -> set[str]:
        key = {self.data.split.key} if self.data.split.key else set()
        return {self.data.target} | key | set(self.features.transforms)

    def to_dict(self) -> dict[str, Any]:
        """The resolved config as plain data (aliases as written in YAML)."""
        return self.model_dump(mode="json", by_alias=True)

    def to_yaml(self) -> str:
        """The resolved config as YAML."""
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def fingerprint(self) -> str:
        """sha256 of the canonical JSON of the resolved config, display-only keys left out.

        ``runtime`` keys that change how a run looks or where it is reused from, never what
        it computes (:data:`DISPLAY_ONLY`), are not hashed: ``rayline run -v`` resumes a
        run started without it.
        """
        data = self.to_dict()
        for key in DISPLAY_ONLY:
            data["runtime"].pop(key, None)
        data.pop("serve", None)  # how a model is served changes nothing a run computes
        data.pop("retrain", None)  # when to retrain changes nothing a run computes
        data.pop("deploy", None)  # where the champion is served changes nothing either
        blob = json.dumps(data, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()

    # -- cross-field rules ------------------------------------------------------------------
    def _feature_problems(self) -> list[str]:
        from rayline.data.transforms import parse_expression

        cols = self.schema_.columns
        problems = []
        for name, expr in self.features.derived.items():
            if name in cols:
                problems.append(f"features.derived.{name}: a schema column has that name")
            try:
                _, names = parse_expression(expr)
            except ValueError as exc:
                problems.append(f"features.derived.{name}: {exc}")
                continue
            for n in names:
                if n not in cols or cols[n].type == "string" or n == self.data.target:
                    problems.append(
                        f"features.derived.{name}: '{n}' is not a numeric input column of "
                        "schema.columns"
                    )
        for name, steps in self.features.transforms.items():
            where = f"features.transforms.{name}"
            if name == self.data.target:
                problems.append(f"{where}: the target cannot be a feature")
                continue
            if name not in cols and name not in self.features.derived and not self.features.user:
                problems.append(
                    f"{where}: not a schema column or a derived column (columns a user "
                    "transform adds can be named once features.user is set)"
                )
                continue
            if not steps:
                problems.append(f"{where}: give at least one step")
                continue
            for i, step in enumerate(steps[:-1]):
                if step.op in _TERMINAL_STEPS:
                    problems.append(f"{where}[{i}]: '{step.op}' must be the last step")
            is_string = name in cols and cols[name].type == "string"
            for i, step in enumerate(steps):
                if is_string and step.op not in _STRING_STEPS:
                    problems.append(
                        f"{where}[{i}]: '{step.op}' needs a numeric column; '{name}' is a "
                        "string (use onehot, index, hash or datetime)"
                    )
                if not is_string and step.op in {"onehot", "index", "datetime"}:
                    problems.append(
                        f"{where}[{i}]: '{step.op}' needs a string column; use bucketize "
                        "for numbers"
                    )
                if step.op == "bucketize" and not step.edges and not step.quantiles:
                    problems.append(f"{where}[{i}]: bucketize needs `edges` or `quantiles`")
                if step.op == "impute" and step.strategy == "constant" and step.value is None:
                    problems.append(f"{where}[{i}]: impute strategy constant needs `value`")
        for path in self.features.user:
            if not is_ref(path):
                problems.append(f"features.user: '{path}' is not 'package.module:function'")
        return problems

    @model_validator(mode="after")
    def _cross_field(self) -> PipelineConfig:
        problems: list[str] = []
        if self.train.elastic and (self.tune.enabled or self.train.local_mode):
            problems.append(
                "train.num_workers: an elastic [min, max] range is for one training run on a "
                "cluster; set tune.enabled: false and train.local_mode: false, or give one "
                "number"
            )
        cols = self.schema_.columns
        declared = ", ".join(sorted(cols))
        if self.data.target not in cols:
            problems.append(
                f"data.target: '{self.data.target}' is not declared in schema.columns "
                f"(declared: {declared}); add it to the schema or fix the name"
            )
        elif cols[self.data.target].nullable:
            problems.append(
                f"schema.columns.{self.data.target}.nullable: the target cannot be nullable (a "
                "row without a label cannot train or be scored); set nullable: false so such "
                "rows go to quarantine"
            )
        elif self.model.task == "regression" and cols[self.data.target].type not in (
            "float",
            "int",
        ):
            problems.append(
                f"model.task: regression needs a numeric target, but schema.columns."
                f"{self.data.target}.type is '{cols[self.data.target].type}'; use task: classification"
            )
        if self.data.split.key and self.data.split.key not in cols:
            problems.append(
                f"data.split.key: '{self.data.split.key}' is not declared in schema.columns; "
                "declare it or leave key unset to hash row content"
            )
        for section in ("numeric", "categorical"):
            for c in getattr(self.features, section) or []:
                if c not in cols and (self.features.user or c in self.features.derived):
                    continue  # made by a user transform or a derived expression
                if c not in cols:
                    problems.append(
                        f"features.{section}: '{c}' is not declared in schema.columns ({declared})"
                    )
                elif c == self.data.target:
                    problems.append(f"features.{section}: the target '{c}' cannot be a feature")
        for c in self.features.numeric or []:
            if c in cols and cols[c].type == "string":
                problems.append(
                    f"features.numeric: '{c}' is a string column; list it under features.categorical"
                )
        problems += self._feature_problems()
        if (
            not self.numeric_features()
            and not self.categorical_features()
            and not self.features.transforms
        ):
            problems.append("features: no input columns; declare feature columns in schema.columns")

        for c in self.drift.columns:
            if c not in cols:
                problems.append(
                    f"drift.columns: '{c}' is not declared in schema.columns ({declared})"
                )

        task_metrics = metric_names(self.model.task)
        for key, name in (
            ("train.metric", self.train.metric),
            ("gate.compare_metric", self.gate.compare_metric),
        ):
            if name is not None and name not in task_metrics:
                problems.append(
                    f"{key}: '{name}' is not a {self.model.task} metric; choose one of "
                    f"{', '.join(task_metrics)}"
                )
        for name, bound in self.gate.thresholds.items():
            if name not in task_metrics:
                problems.append(
                    f"gate.thresholds.{name}: not a {self.model.task} metric; choose one of "
                    f"{', '.join(task_metrics)}"
                )
            if bound.min is None and bound.max is None:
                problems.append(f"gate.thresholds.{name}: give `min`, `max` or both")

        problems += self._evaluation_problems(cols, declared, task_metrics)

        if problems:
            raise ValueError("\n".join(problems))
        return self

    def _evaluation_problems(self, cols, declared: str, task_metrics: list[str]) -> list[str]:
        """Slices name declared raw columns; slice bounds name task metrics and slices."""
        problems = []
        sliced = []
        for i, item in enumerate(self.evaluate.slices):
            name = item if isinstance(item, str) else item.column
            sliced.append(name)
            if name not in cols:
                problems.append(
                    f"evaluate.slices[{i}]: '{name}' is not declared in schema.columns ({declared})"
                )
            elif name == self.data.target:
                problems.append(f"evaluate.slices[{i}]: the target '{name}' cannot be a slice")
            elif isinstance(item, str) and cols[name].type == "float":
                problems.append(
                    f"evaluate.slices[{i}]: '{name}' is a float column; give its bins, e.g. "
                    f"{{column: {name}, bins: [0, 10, 100]}}"
                )
            elif not isinstance(item, str) and cols[name].type not in ("float", "int"):
                problems.append(
                    f"evaluate.slices[{i}]: '{name}' is a {cols[name].type} column; bins apply "
                    "to numeric columns, name it without bins to slice by value"
                )
        if len(set(sliced)) != len(sliced):
            problems.append("evaluate.slices: a column is listed twice")
        for name, bound in self.gate.slice_thresholds.items():
            if name not in task_metrics:
                problems.append(
                    f"gate.slice_thresholds.{name}: not a {self.model.task} metric; choose one "
                    f"of {', '.join(task_metrics)}"
                )
            if bound.min is None and bound.max is None:
                problems.append(f"gate.slice_thresholds.{name}: give `min`, `max` or both")
            if not self.evaluate.slices:
                problems.append(
                    f"gate.slice_thresholds.{name}: evaluate.slices is empty, so there are no "
                    "slices to bound; list the slice columns under evaluate.slices"
                )
            for c in bound.columns or []:
                if c not in sliced:
                    problems.append(
                        f"gate.slice_thresholds.{name}.columns: '{c}' is not in evaluate.slices "
                        f"({', '.join(sliced) or 'none'})"
                    )
        if self.gate.challengers > 1 and not self.tune.enabled:
            problems.append(
                f"gate.challengers: {self.gate.challengers} needs a sweep (tune.enabled: true) "
                "to pick challengers from; set it to 1 or enable tune"
            )
        return problems
