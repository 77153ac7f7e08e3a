"""Model builders by name. Each is a small function with explicit defaults.

Only torch is imported here: the registered MLflow model rebuilds the network with these
functions, and its serving environment need not have Ray.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

_ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh}


def build_mlp(
    in_dim: int,
    out_dim: int,
    hidden_sizes: list[int] | tuple[int, ...] = (64, 32),
    dropout: float = 0.0,
    activation: str = "relu",
) -> nn.Module:
    """A feed-forward network: [Linear -> activation -> dropout] per hidden layer, then Linear.

    Outputs logits (classification) or one value per row (regression).
    """
    layers: list[nn.Module] = []
    width = in_dim
    for h in hidden_sizes:
        layers += [nn.Linear(width, h), _ACTIVATIONS[activation]()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        width = h
    layers.append(nn.Linear(width, out_dim))
    return nn.Sequential(*layers)


BUILDERS: dict[str, Callable[..., nn.Module]] = {"mlp": build_mlp}


def build_model(model_cfg: dict[str, Any], in_dim: int, out_dim: int, prep: Any = None) -> nn.Module:
    """Build the network named by ``model_cfg["builder"]`` from a plain dict of its config."""
    builder = model_cfg.get("builder", "mlp")
    if builder not in BUILDERS:
        raise ValueError(f"unknown model builder '{builder}'; known: {', '.join(BUILDERS)}")
    return BUILDERS[builder](
        in_dim,
        out_dim,
        hidden_sizes=list(model_cfg.get("hidden_sizes", [64, 32])),
        dropout=float(model_cfg.get("dropout", 0.0)),
        activation=model_cfg.get("activation", "relu"),
    )
