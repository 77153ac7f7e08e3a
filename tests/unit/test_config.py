"""Behaviour of the pipeline config: loading, defaults, overrides, and error reporting."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from rayline.config import PipelineConfig, apply_overrides, load_config, validate_config
from rayline.errors import ConfigError, RaylineError

MINIMAL = """\
name: churn
data:
  path: data/churn.parquet
  target: churned
  split:
    key: user_id
schema:
  columns:
    user_id: {type: string}
    age: {type: int, min: 0}
    spend: {type: float, nullable: true}
    active: {type: bool}
    plan: {type: string, allowed: [free, pro]}
    churned: {type: int}
model:
  task: classification
"""

REGRESSION = """\
name: house-prices
data:
  path: data/houses.csv
  target: price
schema:
  columns:
    rooms: {type: int}
    area: {type: float}
    city: {type: string}
    price: {type: float}
model:
  task: regression
"""


@pytest.fixture
def write(tmp_path: Path):
    def _write(text: str, name: str = "pipeline.yaml") -> Path:
        path = tmp_path / name
        path.write_text(text)
        return path

    return _write


def base() -> dict:
    return yaml.safe_load(MINIMAL)


def problems_of(data: dict, overrides: list[str] | None = None) -> list[str]:
    """Every problem ConfigError reports for ``data`` with ``overrides``; fails if none."""
    data = copy.deepcopy(data)
    with pytest.raises(ConfigError) as info:
        apply_overrides(data, overrides or [])
        validate_config(data, "pipeline.yaml")
    return info.value.problems


def only_problem(data: dict, overrides: list[str] | None = None) -> str:
    problems = problems_of(data, overrides)
    assert len(problems) == 1, problems
    return problems[0]


# -- loading and defaults ------------------------------------------------------------------------
def test_minimal_yaml_loads(write):
    cfg = load_config(write(MINIMAL))
    assert isinstance(cfg, PipelineConfig)
    assert cfg.name == "churn"
    assert cfg.data.target == "churned"
    assert cfg.schema_.columns["plan"].allowed == ["free", "pro"]
    assert cfg.model.task == "classification"


def test_section_defaults(write):
    cfg = load_config(write(MINIMAL))
    assert (cfg.data.split.train, cfg.data.split.val, cfg.data.split.test) == (0.7, 0.15, 0.15)
    assert cfg.data.format == "auto"
    assert cfg.model.hidden_sizes == [64, 32]
    assert cfg.train.epochs == 10 and cfg.train.num_workers == 2 and not cfg.train.use_gpu
    assert not cfg.tune.enabled and cfg.tune.search_space == {}
    assert cfg.gate.thresholds == {} and cfg.gate.min_delta == 0.0
    assert cfg.registry.alias == "champion"


def test_classification_defaults_to_log_loss(write):
    cfg = load_config(write(MINIMAL))
    assert cfg.metric == "log_loss"
    assert cfg.metric_mode == "min"
    assert cfg.compare_metric == "log_loss"  # falls back to the training metric


def test_regression_defaults_to_rmse(write):
    cfg = load_config(write(REGRESSION))
    assert cfg.metric == "rmse"
    assert cfg.metric_mode == "min"
    assert cfg.compare_metric == "rmse"


def test_compare_metric_falls_back_to_train_metric_then_to_its_own(write):
    path = write(MINIMAL)
    cfg = load_config(path, ["train.metric=accuracy"])
    assert cfg.metric == "accuracy" and cfg.metric_mode == "max"
    assert cfg.compare_metric == "accuracy"
    cfg = load_config(path, ["train.metric=accuracy", "gate.compare_metric=roc_auc"])
    assert cfg.compare_metric == "roc_auc"


def test_model_name_falls_back_to_name(write):
    path = write(MINIMAL)
    assert load_config(path).model_name == "churn"
    assert load_config(path, ["registry.model_name=churn-mlp"]).model_name == "churn-mlp"


def test_features_derived_from_schema_exclude_target_and_split_key(write):
    cfg = load_config(write(MINIMAL))
    # user_id is the split key, churned the target: neither is a feature
    assert cfg.numeric_features() == ["age", "spend", "active"]
    assert cfg.categorical_features() == ["plan"]


def test_features_without_split_key_keep_every_non_target_column(write):
    cfg = load_config(write(REGRESSION))
    assert cfg.numeric_features() == ["rooms", "area"]
    assert cfg.categorical_features() == ["city"]


def test_explicit_features_win_over_derived(write):
    cfg = load_config(write(MINIMAL), ["features.numeric=[age]", "features.categorical=[]"])
    assert cfg.numeric_features() == ["age"]
    assert cfg.categorical_features() == []


# -- overrides -----------------------------------------------------------------------------------
def test_override_scalar(write):
    cfg = load_config(write(MINIMAL), ["train.epochs=3", "train.lr=0.01", "train.use_gpu=true"])
    assert cfg.train.epochs == 3
    assert cfg.train.lr == 0.01
    assert cfg.train.use_gpu is True


def test_override_list_value(write):
    cfg = load_config(write(MINIMAL), ["model.hidden_sizes=[8,4]"])
    assert cfg.model.hidden_sizes == [8, 4]


def test_override_creates_nested_sections_absent_from_the_file(write):
    # neither `gate` nor `runtime` appear in the file
    cfg = load_config(write(MINIMAL), ["gate.thresholds.accuracy.min=0.9", "runtime.num_cpus=4"])
    assert cfg.gate.thresholds["accuracy"].min == 0.9
    assert cfg.gate.thresholds["accuracy"].max is None
    assert cfg.runtime.num_cpus == 4


def test_override_empty_value_is_null(write):
    cfg = load_config(write(MINIMAL), ["train.metric=accuracy", "train.metric="])
    assert cfg.train.metric is None  # later overrides win


def test_override_search_space_entry_keeps_its_dotted_key(write):
    cfg = load_config(
        write(MINIMAL),
        [
            "tune.enabled=true",
            "tune.search_space.train.lr={type: loguniform, low: 0.0001, high: 0.1}",
            "tune.search_space.train.lr.high=0.01",
        ],
    )
    assert list(cfg.tune.search_space) == ["train.lr"]
    assert cfg.tune.search_space["train.lr"].high == 0.01


def test_apply_overrides_mutates_and_returns_data():
    data = {"train": {"epochs": 1}}
    out = apply_overrides(data, ["train.epochs=5", "model.hidden_sizes=[2]"])
    assert out is data
    assert data == {"train": {"epochs": 5}, "model": {"hidden_sizes": [2]}}


def test_override_without_equals_sign(write):
    with pytest.raises(ConfigError) as info:
        load_config(write(MINIMAL), ["train.epochs"])
    [problem] = info.value.problems
    assert "train.epochs" in problem
    assert "key=value" in problem and "train.epochs=3" in problem


def test_override_with_empty_key():
    with pytest.raises(ConfigError, match="expected dotted key=value"):
        apply_overrides({}, ["=3"])


def test_override_through_a_scalar(write):
    with pytest.raises(ConfigError) as info:
        load_config(write(MINIMAL), ["name.first=x"])
    [problem] = info.value.problems
    assert "name.first=x" in problem
    assert "'name' is a value, not a section" in problem


def test_override_with_invalid_yaml_value():
    with pytest.raises(ConfigError) as info:
        apply_overrides({}, ["model.hidden_sizes=[8,4"])
    assert "not valid YAML" in info.value.problems[0]


def test_bad_overrides_are_reported_together():
    with pytest.raises(ConfigError) as info:
        apply_overrides({"name": "x"}, ["train.epochs", "name.first=1", "train.epochs=2"])
    problems = info.value.problems
    assert len(problems) == 2
    assert "'train.epochs'" in problems[0] and "name.first=1" in problems[1]


def test_override_value_of_wrong_type_names_the_key(write):
    with pytest.raises(ConfigError) as info:
        load_config(write(MINIMAL), ["train.epochs=many"])
    [problem] = info.value.problems
    assert problem.startswith("train.epochs:")
    assert "'many'" in problem


# -- errors gathered at once ---------------------------------------------------------------------
def test_all_key_errors_in_one_file_are_reported_at_once(write):
    text = MINIMAL.replace("model:\n  task: classification\n", "") + (
        "modle:\n  task: classification\ntrain:\n  epoch: 3\n  lr: -1\nschema_extra: 1\n"
    )
    text = text.replace("age: {type: int, min: 0}", "age: {typ: int, min: 0}")
    path = write(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    err = info.value
    problems = err.problems
    text_of = "\n".join(problems)
    # every problem, each naming its key, with hints
    assert "modle: unknown key; did you mean 'model'?" in text_of
    assert "train.epoch: unknown key; did you mean 'epochs'?" in text_of
    assert "schema.columns.age.typ: unknown key; did you mean 'type'?" in text_of
    assert "schema.columns.age.type: required but missing" in text_of
    assert "model: required but missing; add it to the config" in text_of
    assert any(p.startswith("train.lr:") and "greater than 0" in p for p in problems)
    assert any(p.startswith("schema_extra: unknown key") for p in problems)
    assert len(problems) == 7, problems
    # the message names the file and counts the problems
    assert err.source == str(path)
    assert f"in {path} (7 problem(s))" in str(err)
    assert all(f"  - {p}" in str(err) for p in problems)
    assert isinstance(err, RaylineError)


def test_unknown_key_without_a_close_match_lists_the_known_keys():
    data = base()
    data["zzz"] = 1
    problem = only_problem(data)
    assert problem.startswith("zzz: unknown key; known keys here: name, data, schema")
    assert "remove it or fix the spelling" in problem


def test_missing_required_sections():
    problems = problems_of({"name": "x"})
    assert "data: required but missing; add it to the config" in problems
    assert "schema: required but missing; add it to the config" in problems
    assert "model: required but missing; add it to the config" in problems


def test_invalid_literal_names_the_key_and_the_bad_value():
    problem = only_problem(base(), ["model.task=clustering"])
    assert problem.startswith("model.task:")
    assert "'classification'" in problem and "'regression'" in problem
    assert "'clustering'" in problem


def test_invalid_name_pattern():
    problem = only_problem(base(), ["name=has space"])
    assert problem.startswith("name:") and "'has space'" in problem


# -- cross-field rules ---------------------------------------------------------------------------
def test_target_not_in_schema():
    problem = only_problem(base(), ["data.target=label"])
    assert problem.startswith("data.target: 'label' is not declared in schema.columns")
    assert "declared: active, age, churned, plan, spend, user_id" in problem
    assert "add it to the schema or fix the name" in problem


def test_regression_on_a_string_target():
    problem = only_problem(base(), ["model.task=regression", "data.target=plan"])
    assert problem.startswith("model.task: regression needs a numeric target")
    assert "schema.columns.plan.type is 'string'" in problem
    assert "use task: classification" in problem


def test_regression_on_a_numeric_target_is_fine(write):
    cfg = load_config(write(MINIMAL), ["model.task=regression"])
    assert cfg.metric == "rmse"


@pytest.mark.parametrize(
    ("overrides", "total"),
    [(["data.split.train=0.8"], "1.1"), (["data.split.val=0.1", "data.split.test=0.1"], "0.9")],
)
def test_split_fractions_must_sum_to_one(overrides, total):
    problem = only_problem(base(), overrides)
    assert problem == (
        f"data.split: train + val + test must sum to 1, got {total}; adjust the fractions"
    )


def test_split_fractions_other_than_default_that_sum_to_one(write):
    cfg = load_config(
        write(MINIMAL), ["data.split.train=0.8", "data.split.val=0.1", "data.split.test=0.1"]
    )
    assert cfg.data.split.train == 0.8


def test_split_key_not_in_schema():
    problem = only_problem(base(), ["data.split.key=uid"])
    assert problem.startswith("data.split.key: 'uid' is not declared in schema.columns")
    assert "leave key unset" in problem


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("train.metric=rmse", "train.metric"),
        ("gate.compare_metric=r2", "gate.compare_metric"),
    ],
)
def test_metric_must_fit_the_task(override, key):
    problem = only_problem(base(), [override])
    assert problem.startswith(f"{key}: ")
    assert "is not a classification metric" in problem
    assert "choose one of accuracy, f1_macro, roc_auc, log_loss" in problem


def test_gate_threshold_metric_must_fit_the_task():
    data = yaml.safe_load(REGRESSION)
    problem = only_problem(data, ["gate.thresholds.accuracy.min=0.9"])
    assert problem == (
        "gate.thresholds.accuracy: not a regression metric; choose one of rmse, mae, r2"
    )


def test_gate_threshold_needs_a_bound():
    problem = only_problem(base(), ["gate.thresholds.accuracy={}"])
    assert problem == "gate.thresholds.accuracy: give `min`, `max` or both"


def test_gate_threshold_min_above_max():
    problem = only_problem(
        base(), ["gate.thresholds.accuracy.min=0.9", "gate.thresholds.accuracy.max=0.5"]
    )
    assert problem.startswith("gate.thresholds.accuracy: min (0.9) is greater than max (0.5)")


def test_gate_min_delta_cannot_be_negative():
    problem = only_problem(base(), ["gate.min_delta=-0.1"])
    assert problem.startswith("gate.min_delta:")


def test_cross_field_problems_are_reported_together():
    problems = problems_of(
        base(),
        ["data.target=label", "train.metric=rmse", "gate.thresholds.mae.max=1"],
    )
    assert len(problems) == 3
    assert problems[0].startswith("data.target:")
    assert problems[1].startswith("train.metric:")
    assert problems[2].startswith("gate.thresholds.mae:")


def test_unknown_tune_key_suggests_the_right_one():
    problem = only_problem(
        base(),
        ["tune.enabled=true", "tune.search_space.train.lrr={type: uniform, low: 0, high: 1}"],
    )
    assert "search_space key 'train.lrr' is not tunable" in problem
    assert "use `train.<field>` or `model.<field>`" in problem
    assert "did you mean 'train.lr'?" in problem


def test_tune_key_outside_train_and_model():
    problem = only_problem(base(), ["tune.search_space.data.path={type: choice, values: [a, b]}"])
    assert "search_space key 'data.path' is not tunable" in problem
    assert "e.g. train.lr, model.hidden_sizes" in problem


def test_tune_enabled_with_empty_space():
    problem = only_problem(base(), ["tune.enabled=true"])
    assert problem == (
        "tune: enabled is true but search_space is empty; declare at least one parameter"
    )


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ("{type: choice}", "needs a non-empty `values` list"),
        ("{type: uniform, low: 1}", "needs `low` and `high`"),
        ("{type: uniform, low: 2, high: 1}", "`low` (2) must be below `high` (1)"),
        ("{type: loguniform, low: 0, high: 1}", "needs `low` > 0"),
    ],
)
def test_tune_param_spec_rules(spec, fragment):
    problem = only_problem(base(), [f"tune.search_space.train.lr={spec}"])
    assert problem.startswith("tune.search_space.train.lr: ")
    assert fragment in problem


def test_column_bounds_rules():
    problem = only_problem(base(), ["schema.columns.plan.min=1"])
    assert problem.startswith("schema.columns.plan: min/max apply to numeric columns")
    problem = only_problem(base(), ["schema.columns.age.max=-1"])
    assert problem.startswith("schema.columns.age: min (0) is greater than max (-1)")


def test_allow_inf_is_for_float_columns():
    problem = only_problem(base(), ["schema.columns.age.allow_inf=true"])
    assert problem.startswith(
        "schema.columns.age: allow_inf applies to float columns, not to type 'int'"
    )
    cfg = validate_config(apply_overrides(base(), ["schema.columns.spend.allow_inf=true"]))
    assert cfg.schema_.columns["spend"].allow_inf is True
    assert validate_config(base()).schema_.columns["spend"].allow_inf is False


def test_finite_is_a_rule_id_for_rule_limits():
    data = apply_overrides(base(), ["schema.max_bad_fraction_by_rule={spend.finite: 0.01}"])
    assert validate_config(data).schema_.max_bad_fraction_by_rule == {"spend.finite": 0.01}
    problem = only_problem(base(), ["schema.max_bad_fraction_by_rule={spend.infinite: 0.01}"])
    assert "rules: type, nullable, finite, min, max, allowed, regex, unique" in problem


def test_feature_lists_are_checked_against_the_schema():
    problems = problems_of(
        base(), ["features.numeric=[age, plan, churned, height]", "features.categorical=[]"]
    )
    joined = "\n".join(problems)
    assert "features.numeric: 'height' is not declared in schema.columns" in joined
    assert "features.numeric: the target 'churned' cannot be a feature" in joined
    assert (
        "features.numeric: 'plan' is a string column; list it under features.categorical" in joined
    )


def test_no_feature_columns():
    data = base()
    data["schema"]["columns"] = {"churned": {"type": "int"}}
    data["data"]["split"] = {}
    problem = only_problem(data)
    assert problem.startswith("features: no input columns")


# -- files ---------------------------------------------------------------------------------------
def test_missing_file(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as info:
        load_config(missing)
    assert info.value.problems == [f"config file '{missing}' does not exist; check the path"]


def test_directory_is_not_a_config_file(tmp_path):
    with pytest.raises(ConfigError, match="is a directory; give the path of a YAML file"):
        load_config(tmp_path)


def test_invalid_yaml(write):
    path = write("name: churn\ndata: [unclosed\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    [problem] = info.value.problems
    assert problem.startswith("not valid YAML:")
    assert "line" in problem  # PyYAML's position helps find the mistake
    assert info.value.source == str(path)


@pytest.mark.parametrize("text", ["- a\n- b\n", "just a string\n"])
def test_yaml_that_is_not_a_mapping(write, text):
    with pytest.raises(ConfigError) as info:
        load_config(write(text))
    assert info.value.problems == ["the config must be a YAML mapping of sections"]


def test_empty_file_reports_the_required_sections(write):
    with pytest.raises(ConfigError) as info:
        load_config(write(""))
    joined = "\n".join(info.value.problems)
    for key in ("name", "data", "schema", "model"):
        assert f"{key}: required but missing" in joined


def test_validate_config_rejects_non_mapping():
    with pytest.raises(ConfigError, match="YAML mapping"):
        validate_config(["not", "a", "dict"])  # type: ignore[arg-type]


# -- serialisation and fingerprint ---------------------------------------------------------------
def test_fingerprint_is_stable(write):
    path = write(MINIMAL)
    a, b = load_config(path), load_config(path)
    assert a.fingerprint() == b.fingerprint()
    assert len(a.fingerprint()) == 64
    int(a.fingerprint(), 16)


def test_fingerprint_ignores_spelling_out_defaults_and_key_order(write):
    explicit = MINIMAL + "train:\n  seed: 0\n  epochs: 10\n"
    assert (
        load_config(write(MINIMAL)).fingerprint()
        == load_config(write(explicit, "explicit.yaml")).fingerprint()
    )


@pytest.mark.parametrize(
    "override", ["train.epochs=11", "data.split.seed=1", "model.hidden_sizes=[64]", "name=churn2"]
)
def test_fingerprint_changes_when_a_value_changes(write, override):
    path = write(MINIMAL)
    assert load_config(path).fingerprint() != load_config(path, [override]).fingerprint()


def test_to_yaml_round_trips(write, tmp_path):
    cfg = load_config(write(MINIMAL))
    assert "schema" in cfg.to_dict() and "schema_" not in cfg.to_dict()
    again = load_config(write(cfg.to_yaml(), "resolved.yaml"))
    assert again == cfg
    assert again.fingerprint() == cfg.fingerprint()


# -- the package layout -------------------------------------------------------------------------
def test_package_re_exports_every_public_name():
    import rayline.config as config

    # every public name of the former single-module rayline/config.py
    names = (
        "BucketizeStep CategoryStep ClipStep ColumnSpec ColumnType DISPLAY_ONLY DataConfig "
        "DatetimeStep DriftConfig DriftRule EvaluateConfig FeaturesConfig GateConfig HashStep "
        "ImputeStep ModelConfig ParamSpec PipelineConfig RULES RegistryConfig RuntimeConfig "
        "ScaleStep SchemaConfig SplitConfig Threshold TrainConfig TransformStep TuneConfig "
        "apply_overrides config_reference load_config validate_config"
    ).split()
    assert set(names) <= set(config.__all__)
    for name in config.__all__:
        assert hasattr(config, name), name
    assert config.DISPLAY_ONLY == ("log_to_driver", "dashboard", "cache")


def test_user_transform_refs_follow_the_one_rule(write):
    ok = load_config(write(MINIMAL), ["features.user=[pkg.mod:fn, a:B]"])
    assert ok.features.user == ["pkg.mod:fn", "a:B"]
    with pytest.raises(ConfigError) as info:
        load_config(write(MINIMAL), ["features.user=[pkg.mod.fn, 'pkg-mod:fn', 'a:b:c']"])
    for bad in ("pkg.mod.fn", "pkg-mod:fn", "a:b:c"):
        assert f"features.user: '{bad}' is not 'package.module:function'" in info.value.problems


def test_num_workers_range_makes_training_elastic(write):
    cfg = validate_config({**base(), "train": {"num_workers": [1, 3]}, "tune": {"enabled": False}})
    assert (cfg.train.num_workers, cfg.train.min_workers) == (3, 1)
    assert cfg.train.elastic and cfg.train.fewest_workers == 1
    # The resolved config reloads to the same thing (show-config, the run's config.yaml).
    again = PipelineConfig.model_validate(cfg.model_dump(by_alias=True))
    assert again.train.elastic and again.fingerprint() == cfg.fingerprint()
    fixed = validate_config({**base(), "train": {"num_workers": [2, 2]}})
    assert not fixed.train.elastic and fixed.train.fewest_workers == 2


@pytest.mark.parametrize(
    ("workers", "fix"),
    [
        ([3, 1], "1 <= min <= max"),
        ([1, 2, 3], "[min, max]"),
        ([0, 2], "1 <= min"),
        (["a", 2], "whole"),
    ],
)
def test_bad_worker_ranges_say_how_to_write_one(workers, fix):
    assert fix in only_problem({**base(), "train": {"num_workers": workers}})


def test_elastic_training_is_refused_in_a_sweep_and_in_local_mode():
    sweep = {
        "enabled": True,
        "search_space": {"train.lr": {"type": "loguniform", "low": 1e-4, "high": 1e-2}},
    }
    text = only_problem({**base(), "train": {"num_workers": [1, 2]}, "tune": sweep})
    assert "elastic" in text and "tune.enabled: false" in text
    text = only_problem({**base(), "train": {"num_workers": [1, 2], "local_mode": True}})
    assert "elastic" in text


# -- evaluation depth: slices, slice bounds, challengers, confidence ----------------------------
def test_slices_by_value_and_by_bins_validate():
    data = base()
    data["evaluate"] = {"slices": ["plan", {"column": "spend", "bins": [0, 10, 100]}]}
    cfg = validate_config(data)
    assert cfg.evaluate.slices[0] == "plan" and cfg.evaluate.slices[1].bins == [0, 10, 100]


@pytest.mark.parametrize(
    ("evaluate", "fragment"),
    [
        ({"slices": ["nope"]}, "evaluate.slices[0]: 'nope' is not declared in schema.columns"),
        ({"slices": ["spend"]}, "'spend' is a float column; give its bins"),
        ({"slices": [{"column": "plan", "bins": [0, 1]}]}, "'plan' is a string column"),
        ({"slices": ["churned"]}, "the target 'churned' cannot be a slice"),
        ({"slices": ["plan", "plan"]}, "a column is listed twice"),
    ],
)
def test_bad_slices_name_the_entry_and_the_fix(evaluate, fragment):
    data = base()
    data["evaluate"] = evaluate
    assert fragment in only_problem(data)


def test_bin_edges_must_increase():
    data = base()
    data["evaluate"] = {"slices": [{"column": "spend", "bins": [0, 10, 10]}]}
    assert "bin edges must increase strictly" in only_problem(data)


def test_slice_thresholds_need_slices_and_known_metrics_and_columns():
    data = base()
    data["gate"] = {"slice_thresholds": {"accuracy": {"min": 0.8}}}
    assert "evaluate.slices is empty" in only_problem(data)
    data["evaluate"] = {"slices": ["plan"]}
    data["gate"] = {
        "slice_thresholds": {"rmse": {"max": 1}, "accuracy": {"min": 0.8, "columns": ["age"]}}
    }
    problems = problems_of(data)
    assert any("gate.slice_thresholds.rmse: not a classification metric" in p for p in problems)
    assert any("columns: 'age' is not in evaluate.slices (plan)" in p for p in problems)


def test_challengers_need_a_sweep_and_confidence_is_a_probability():
    data = base()
    data["gate"] = {"challengers": 3}
    assert "gate.challengers: 3 needs a sweep" in only_problem(data)
    data["gate"] = {"confidence": 1.5}
    assert "gate.confidence" in only_problem(data)
    data["gate"] = {"confidence": 0.9}
    assert validate_config(data).gate.confidence == 0.9
