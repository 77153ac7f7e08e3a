"""The pipeline config: one pydantic model per section, loaded from YAML with overrides.

Every section forbids unknown keys and documents each field; cross-field rules (the target
is declared in the schema, split fractions sum to one, a tuned key exists, a gate metric
fits the task) are checked once, before any stage runs. :func:`load_config` reports every
problem at once, each naming the key and the fix.

* :mod:`~rayline.config.sections` -- the section models (``data``, ``schema``, ...).
* :mod:`~rayline.config.pipeline` -- :class:`PipelineConfig` and its cross-field rules.
* :mod:`~rayline.config.loader` -- YAML, dotted overrides, error formatting, validation.
* :mod:`~rayline.config.reference` -- the generated Markdown reference in the README.
"""

from __future__ import annotations

from rayline.config.loader import apply_overrides, load_config, validate_config
from rayline.config.pipeline import PipelineConfig
from rayline.config.reference import config_reference
from rayline.config.sections import (
    BUILTIN_BUILDERS,
    DISPLAY_ONLY,
    RULES,
    BucketizeStep,
    CategoryStep,
    ClipStep,
    ColumnSpec,
    ColumnType,
    DataConfig,
    DatetimeStep,
    DeployConfig,
    DriftConfig,
    DriftRule,
    EvaluateConfig,
    FeaturesConfig,
    GateConfig,
    HashStep,
    ImputeStep,
    ModelConfig,
    ParamSpec,
    RegistryConfig,
    RuntimeConfig,
    ScaleStep,
    SchemaConfig,
    ServeConfig,
    SplitConfig,
    Threshold,
    TrainConfig,
    TransformStep,
    TuneConfig,
)

__all__ = [
    "BUILTIN_BUILDERS",
    "DISPLAY_ONLY",
    "RULES",
    "BucketizeStep",
    "CategoryStep",
    "ClipStep",
    "ColumnSpec",
    "ColumnType",
    "DataConfig",
    "DeployConfig",
    "DatetimeStep",
    "DriftConfig",
    "DriftRule",
    "EvaluateConfig",
    "FeaturesConfig",
    "GateConfig",
    "HashStep",
    "ImputeStep",
    "ModelConfig",
    "ParamSpec",
    "PipelineConfig",
    "RegistryConfig",
    "RuntimeConfig",
    "ScaleStep",
    "SchemaConfig",
    "ServeConfig",
    "SplitConfig",
    "Threshold",
    "TrainConfig",
    "TransformStep",
    "TuneConfig",
    "apply_overrides",
    "config_reference",
    "load_config",
    "validate_config",
]
