"""Search algorithms and schedulers as the config declares them: seeded, checked, decoded."""

from __future__ import annotations

import copy

import pytest
import yaml

from rayline.config import validate_config
from rayline.errors import ConfigError

from .test_config import MINIMAL


def _cfg(**tune):
    raw = yaml.safe_load(MINIMAL)
    raw["tune"] = {"enabled": True, **tune}
    return validate_config(copy.deepcopy(raw), "pipeline.yaml")


def _problems(**tune) -> list[str]:
    with pytest.raises(ConfigError) as err:
        _cfg(**tune)
    return err.value.problems


def test_a_plain_list_is_a_choice():
    cfg = _cfg(search_space={"train.lr": [0.01, 0.1]})
    spec = cfg.tune.search_space["train.lr"]
    assert spec.type == "choice" and spec.values == [0.01, 0.1]


def test_a_continuous_range_under_grid_is_refused_naming_the_key():
    problems = _problems(
        search="grid",
        search_space={
            "train.lr": {"type": "loguniform", "low": 1e-3, "high": 1e-1},
            "train.batch_size": [32, 64],
        },
    )
    assert len(problems) == 1
    assert "train.lr" in problems[0] and "grid" in problems[0] and "choice" in problems[0]


def test_an_unknown_searcher_or_scheduler_is_refused():
    assert any("search" in p for p in _problems(search="bayes", search_space={"train.lr": [1]}))
    assert any(
        "scheduler" in p for p in _problems(scheduler="hyperband", search_space={"train.lr": [1]})
    )


def test_optuna_refuses_a_repeated_choice():
    problems = _problems(search="optuna", search_space={"train.batch_size": [32, 32]})
    assert "train.batch_size" in problems[0] and "twice" in problems[0]


def test_grid_enumerates_every_combination_once_unless_num_samples_is_set():
    from ray.tune.search.variant_generator import generate_variants

    from rayline.tune import num_trials, param_space

    space = {"train.lr": [0.01, 0.1], "model.hidden_sizes": [[8], [16, 16], [4]]}
    cfg = _cfg(search="grid", search_space=space)
    assert num_trials(cfg) == 6
    drawn = [resolved for _, resolved in generate_variants(param_space(cfg))]
    pairs = sorted((c["train"]["lr"], str(c["model"]["hidden_sizes"])) for c in drawn)
    assert pairs == sorted((lr, str(h)) for lr in [0.01, 0.1] for h in [[8], [16, 16], [4]])
    assert num_trials(_cfg(search="grid", search_space=space, num_samples=2)) == 12
    # randint is discrete, so a grid takes every integer of its range.
    ints = _cfg(
        search="grid", search_space={"train.batch_size": {"type": "randint", "low": 2, "high": 5}}
    )
    assert num_trials(ints) == 3
    assert sorted(c["train"]["batch_size"] for _, c in generate_variants(param_space(ints))) == [
        2,
        3,
        4,
    ]


def _optuna_draws(cfg, n: int) -> list[dict]:
    from rayline.tune import decode_sampled, encoded_keys, param_space, search_algorithm

    alg = search_algorithm(cfg, concurrency=1)
    assert alg.set_search_properties("val_metric", "min", param_space(cfg))
    out = []
    for i in range(n):
        sampled = alg.suggest(f"t{i}")
        out.append(decode_sampled(sampled, encoded_keys(cfg)))
        alg.on_trial_complete(f"t{i}", {"val_metric": float(i), "training_iteration": 1})
    return out


def test_optuna_is_seeded_and_carries_list_choices_intact():
    space = {
        "train.lr": {"type": "loguniform", "low": 1e-3, "high": 1e-1},
        "model.hidden_sizes": [[16], [8, 8]],
    }
    a = _optuna_draws(_cfg(search="optuna", search_space=space), 4)
    b = _optuna_draws(_cfg(search="optuna", search_space=space), 4)
    assert a == b  # same seed (train.seed), same trials
    assert all(d["model"]["hidden_sizes"] in ([16], [8, 8]) for d in a)
    assert all(1e-3 <= d["train"]["lr"] <= 1e-1 for d in a)
    other = validate_config(
        {
            **yaml.safe_load(MINIMAL),
            "train": {"seed": 7},
            "tune": {"enabled": True, "search": "optuna", "search_space": space},
        }
    )
    assert _optuna_draws(other, 4) != a  # the seed matters


def test_schedulers_are_built_from_the_config():
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, MedianStoppingRule

    from rayline.tune import trial_scheduler

    space = {"train.lr": [0.01, 0.1]}
    assert isinstance(trial_scheduler(_cfg(search_space=space)), ASHAScheduler)
    median = trial_scheduler(_cfg(scheduler="median", grace_period=2, search_space=space))
    assert isinstance(median, MedianStoppingRule) and median._grace_period == 2
    assert isinstance(trial_scheduler(_cfg(scheduler="fifo", search_space=space)), FIFOScheduler)


def test_pbt_is_refused_with_a_search_algorithm_and_with_model_keys():
    space = {"train.lr": {"type": "loguniform", "low": 1e-3, "high": 1e-1}}
    problems = _problems(search="optuna", scheduler="pbt", search_space=space)
    assert any("Tune does not combine a search algorithm with PBT" in p for p in problems)
    problems = _problems(scheduler="pbt", search_space={**space, "model.hidden_sizes": [[8], [16]]})
    assert any("model.hidden_sizes" in p and "weights" in p for p in problems)
    raw = yaml.safe_load(MINIMAL)
    raw["tune"] = {"enabled": True, "scheduler": "pbt", "search_space": space}
    # Over DDP trials as over in-process ones (rayline.train.tune_reports).
    cfg = validate_config(raw)
    assert not cfg.train.local_mode

    from rayline.tune import pbt_mutations, trial_scheduler

    pbt = trial_scheduler(cfg)
    assert type(pbt).__name__ == "PopulationBasedTraining" and pbt._synch
    assert set(pbt_mutations(cfg)["train"]) == {"lr"}


def test_local_mode_trials_hold_one_cpu_and_need_no_worker_cpus():
    from rayline.config import TrainConfig
    from rayline.runtime import check_training_fits
    from rayline.tune import default_concurrency

    raw = yaml.safe_load(MINIMAL)
    raw["train"] = {"local_mode": True, "num_workers": 8}
    raw["tune"] = {"enabled": True, "search_space": {"train.lr": [0.01, 0.1]}}
    cfg = validate_config(raw)
    assert default_concurrency(cfg, 4.0) == 3  # one CPU each, one left for Ray Data
    check_training_fits(TrainConfig(local_mode=True, num_workers=8), {"CPU": 1.0}, trial_cpus=1)
    with pytest.raises(Exception, match="2 CPUs"):
        check_training_fits(TrainConfig(num_workers=2), {"CPU": 1.0})


def test_gpu_sweeps_fit_their_trials_to_the_gpus():
    from rayline.tune import default_concurrency, gpus_per_trial

    raw = yaml.safe_load(MINIMAL)
    raw["train"] = {"use_gpu": True, "num_workers": 2}
    raw["tune"] = {"enabled": True, "search_space": {"train.lr": [0.01, 0.1]}}
    cfg = validate_config(copy.deepcopy(raw))
    assert gpus_per_trial(cfg) == 2
    assert default_concurrency(cfg, 64.0, 8.0) == 4  # 8 GPUs / 2 per trial; CPUs allow 21
    raw["train"]["resources_per_worker"] = {"GPU": 0.5}  # fractional: two workers share one
    cfg = validate_config(copy.deepcopy(raw))
    assert gpus_per_trial(cfg) == 1 and default_concurrency(cfg, 64.0, 8.0) == 8
    raw["train"] = {"use_gpu": True, "local_mode": True, "resources_per_worker": {"GPU": 0.25}}
    cfg = validate_config(copy.deepcopy(raw))
    assert default_concurrency(cfg, 64.0, 1.0) == 4  # four in-process trials per GPU
    assert default_concurrency(cfg, 4.0, 1.0) == 3  # ... but CPUs (one for Ray Data) bind first


def test_a_trial_loop_config_is_the_sweep_one_with_its_sampled_values():
    import pickle

    from pydantic import ValidationError

    from rayline.data.features import FittedPreprocessor
    from rayline.train.trainer import loop_config
    from rayline.tune import decode_sampled, encoded_keys

    space = {"train.lr": [0.01, 0.1], "model.hidden_sizes": [[16], [8, 8]]}
    cfg = _cfg(search="optuna", search_space=space)
    prep = FittedPreprocessor(
        task="classification",
        target="y",
        classes=[0, 1],
        numeric=[{"name": "a", "mean": 0.0, "std": 1.0, "fill": 0.0}],
        categorical=[],
    )
    base = loop_config(cfg, prep, 100)
    assert base.train == cfg.train and base.model == cfg.model and base.train is not cfg.train
    assert (base.metric, base.mode, base.train_rows) == (cfg.metric, cfg.metric_mode, 100)
    sampled = {"train": {"lr": 0.1}, "model": {"hidden_sizes": "[8, 8]"}}  # Optuna's JSON
    trial = base.with_overrides(decode_sampled(sampled, encoded_keys(cfg)), trial_id="t1")
    assert (trial.train.lr, trial.model.hidden_sizes, trial.trial_id) == (0.1, [8, 8], "t1")
    assert trial.train.epochs == cfg.train.epochs  # everything else: the config's
    assert base.train.lr == cfg.train.lr  # the sweep's own is untouched
    assert pickle.loads(pickle.dumps(trial)) == trial  # what Ray ships to the workers
    assert trial.params()["train"] == {**cfg.train.model_dump(), "lr": 0.1}
    with pytest.raises(ValidationError):
        base.with_overrides({"train": {"batch_size": 0}})


def test_a_pbt_population_that_cannot_train_at_once_is_refused_with_the_right_fix():
    from rayline.tune import cpus_per_trial, default_concurrency, pbt_population_problem

    space = {"train.lr": {"type": "loguniform", "low": 1e-3, "high": 1e-1}}
    cfg = _cfg(scheduler="pbt", num_samples=4, search_space=space)
    fits = default_concurrency(cfg, 8.0)
    assert cpus_per_trial(cfg) == 3 and fits == 2  # 2 DDP workers + the trial's own CPU
    # The cluster is the limit: fewer workers, local mode or more resources help.
    msg = pbt_population_problem(cfg, 4, fits, fits, 8.0)
    assert "population of 4 trials" in msg and "2 run at once here (3 CPUs a trial" in msg
    assert "lower tune.num_samples to 2" in msg and "train.local_mode: true" in msg
    assert "max_concurrent_trials" not in msg
    # The user's own limit: raising it is the fix.
    msg = pbt_population_problem(cfg, 4, 1, fits, 8.0)
    assert "(tune.max_concurrent_trials=1)" in msg
    assert "raise tune.max_concurrent_trials to 2" in msg
    assert pbt_population_problem(cfg, 2, 2, fits, 8.0) is None  # the population fits
    asha = _cfg(scheduler="asha", num_samples=4, search_space=space)
    assert pbt_population_problem(asha, 4, 1, 2, 8.0) is None  # only PBT needs it


def test_trials_start_without_tunes_runtime_env_only_where_workers_inherit_its_values(
    monkeypatch,
):
    """Tune's trial actors get a runtime_env built from two of its module globals; a sweep
    on a Ray whose workers inherit those values empties them while it runs, and puts them
    back after (also after an error). Elsewhere they are left as Tune has them."""
    from ray.tune.execution import class_cache

    from rayline import tune as tune_mod

    defaults = dict(class_cache.DEFAULT_ENV_VARS)
    assert defaults == {"PL_DISABLE_FORK": "1"}  # what rayline.runtime.INHERITED_DEFAULTS sets
    # Tune also passes on those of its variables set in this process's environment.
    for key in class_cache.ENV_VARS_TO_PROPAGATE:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("RAY_TRAIN_COLLECTIVE_TIMEOUT_S", "60")
    asked: list[dict] = []

    def inherited(env_vars):
        asked.append(env_vars)
        return True

    monkeypatch.setattr(tune_mod, "inherited_by_workers", inherited)
    with pytest.raises(RuntimeError), tune_mod._trials_without_runtime_env():
        assert class_cache.DEFAULT_ENV_VARS == {} and not class_cache.ENV_VARS_TO_PROPAGATE
        assert class_cache._ActorClassCache().get(object)._default_options["runtime_env"] == {}
        raise RuntimeError("a failed sweep")
    assert asked == [{**defaults, "RAY_TRAIN_COLLECTIVE_TIMEOUT_S": "60"}]
    assert class_cache.DEFAULT_ENV_VARS == defaults and class_cache.ENV_VARS_TO_PROPAGATE
    monkeypatch.setattr(tune_mod, "inherited_by_workers", lambda env_vars: False)
    with tune_mod._trials_without_runtime_env():
        assert class_cache.DEFAULT_ENV_VARS == defaults
