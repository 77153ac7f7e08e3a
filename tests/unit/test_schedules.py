"""LR schedules, param-key sanitising and small config rules added with the training loop."""

from __future__ import annotations

import math

import pytest

from rayline.config import validate_config
from rayline.errors import ConfigError
from rayline.registry import _safe_key
from rayline.train.schedules import ONECYCLE_END, ONECYCLE_START, lr_factor


def test_constant_with_warmup_ramps_then_holds():
    vals = [lr_factor(s, 100, "constant", 0.1) for s in range(100)]
    assert vals[0] == pytest.approx(1 / 11)
    assert all(a < b for a, b in zip(vals[:10], vals[1:11], strict=True))
    assert vals[10:] == [1.0] * 90


def test_cosine_decays_to_zero_and_clamps_past_the_end():
    assert lr_factor(0, 100, "cosine") == pytest.approx(1.0)
    assert lr_factor(50, 100, "cosine") == pytest.approx(0.5)
    assert lr_factor(100, 100, "cosine") == pytest.approx(0.0, abs=1e-12)
    assert lr_factor(150, 100, "cosine") == pytest.approx(0.0, abs=1e-12)
    vals = [lr_factor(s, 100, "cosine") for s in range(101)]
    assert all(a >= b for a, b in zip(vals, vals[1:], strict=False))


def test_onecycle_rises_over_30_percent_then_anneals():
    assert lr_factor(0, 100, "onecycle") == pytest.approx(ONECYCLE_START)
    assert lr_factor(30, 100, "onecycle") == pytest.approx(1.0)
    assert lr_factor(100, 100, "onecycle") == pytest.approx(ONECYCLE_END)
    assert lr_factor(15, 100, "onecycle") < lr_factor(29, 100, "onecycle")
    assert lr_factor(10, 100, "onecycle", 0.1) == pytest.approx(1.0)


def test_schedules_never_go_negative_or_nan():
    for kind in ("constant", "cosine", "onecycle"):
        for total in (1, 7, 1000):
            for step in (-3, 0, total // 2, total, total * 3):
                v = lr_factor(step, total, kind, 0.2)
                assert math.isfinite(v) and v >= 0


def test_param_keys_are_made_mlflow_safe():
    assert _safe_key("schema.columns.income($).min") == "schema.columns.income___.min"
    assert _safe_key("train.lr") == "train.lr"


def _raw(**target):
    return {
        "name": "t",
        "data": {"path": "x.parquet", "target": "y"},
        "schema": {"columns": {"a": {"type": "float"}, "y": {"type": "int", **target}}},
        "model": {"task": "classification"},
    }


def test_nullable_target_is_refused_with_the_fix():
    with pytest.raises(ConfigError) as err:
        validate_config(_raw(nullable=True))
    assert "schema.columns.y.nullable" in str(err.value) and "nullable: false" in str(err.value)
    assert validate_config(_raw()).data.target == "y"
