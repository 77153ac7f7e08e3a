"""User model builders for tests/unit/test_models.py, loaded as 'tests.unit.user_models:<name>'."""

from __future__ import annotations

from typing import Any

from torch import nn

NOT_CALLABLE = 42


def build(model_cfg: dict[str, Any], in_dim: int, out_dim: int) -> nn.Module:
    """The documented signature: fn(model_cfg, in_dim, out_dim) -> nn.Module."""
    width = int(model_cfg.get("hidden_sizes", [8])[0]) if model_cfg.get("hidden_sizes") else 8
    return nn.Sequential(nn.Linear(in_dim, width), nn.Tanh(), nn.Linear(width, out_dim))


def not_a_module(model_cfg: dict[str, Any], in_dim: int, out_dim: int) -> Any:
    return {"in_dim": in_dim, "out_dim": out_dim}
