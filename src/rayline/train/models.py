"""Model builders by name. Each is a small function with explicit defaults.

``model.builder`` in the config picks one:

* ``mlp`` -- a feed-forward network over the feature matrix (classification or regression).
* ``tabular`` -- an ``nn.Embedding`` per index-encoded categorical column, concatenated with
  the numeric inputs, then an MLP. Needs ``features.encoding: index``.
* ``cnn`` -- a small CNN for fixed-shape images; each row arrives flat (C*H*W values) and is
  reshaped to ``model.image_shape``.
* ``"package.module:function"`` -- a user builder, imported with :mod:`importlib` and called
  as ``function(model_cfg: dict, in_dim: int, out_dim: int) -> torch.nn.Module``. The module
  must be importable on every Ray worker and wherever the registered model is served.

Only torch (and the standard-library-only :mod:`rayline.refs`) is imported here: the
registered MLflow model rebuilds the network with these functions, and its serving
environment need not have Ray.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from rayline.refs import load_ref, parse_ref

_ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh}

USER_BUILDER_SIGNATURE = "fn(model_cfg: dict, in_dim: int, out_dim: int) -> torch.nn.Module"


def build_mlp(
    in_dim: int,
    out_dim: int,
    hidden_sizes: Sequence[int] = (64, 32),
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


# -- tabular ----------------------------------------------------------------------------------
def default_embedding_dim(cardinality: int) -> int:
    """The embedding width for a column with ``cardinality`` rows: min(16, (card + 1) // 2)."""
    return max(1, min(16, (cardinality + 1) // 2))


class TabularNet(nn.Module):
    """Numeric columns as they are, each index column through its own embedding, then an MLP.

    The input is the feature matrix: ``num_numeric`` numeric columns, then one float column per
    categorical holding its index (0 = unknown, 1..k = the k categories). Indices that are not
    a valid integer in ``[0, cardinality)`` (NaN, negative, too large) fall in the unknown
    bucket 0.
    """

    def __init__(
        self,
        num_numeric: int,
        cardinalities: Sequence[int],
        out_dim: int,
        embedding_dims: Sequence[int],
        hidden_sizes: Sequence[int] = (64, 32),
        dropout: float = 0.0,
        activation: str = "relu",
    ):
        super().__init__()
        if len(embedding_dims) != len(cardinalities):
            raise ValueError("one embedding dim per categorical column is needed")
        self.num_numeric = int(num_numeric)
        self.cardinalities = [int(c) for c in cardinalities]
        self.embeddings = nn.ModuleList(
            nn.Embedding(card, dim)
            for card, dim in zip(self.cardinalities, embedding_dims, strict=True)
        )
        self.head = build_mlp(
            self.num_numeric + sum(embedding_dims), out_dim, hidden_sizes, dropout, activation
        )

    @property
    def in_dim(self) -> int:
        """Width of the feature matrix this network reads."""
        return self.num_numeric + len(self.cardinalities)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.in_dim:
            raise ValueError(
                f"tabular model expects {self.in_dim} input columns "
                f"({self.num_numeric} numeric + {len(self.cardinalities)} index), got {x.shape[-1]}"
            )
        parts = [x[:, : self.num_numeric]]
        for j, (emb, card) in enumerate(zip(self.embeddings, self.cardinalities, strict=True)):
            col = x[:, self.num_numeric + j].float()
            col = torch.nan_to_num(col, nan=0.0, posinf=0.0, neginf=0.0).round().long()
            col = torch.where((col >= 0) & (col < card), col, torch.zeros_like(col))
            parts.append(emb(col).to(x.dtype))
        return self.head(torch.cat(parts, dim=1))


def build_tabular(
    in_dim: int,
    out_dim: int,
    num_numeric: int,
    cardinalities: Sequence[int],
    embedding_dim: int | None = None,
    hidden_sizes: Sequence[int] = (64, 32),
    dropout: float = 0.0,
    activation: str = "relu",
) -> nn.Module:
    """Embeddings for index-encoded categoricals + numeric inputs -> MLP.

    Args:
        num_numeric: numeric columns at the front of the feature matrix.
        cardinalities: per index column, the number of categories + 1 (the unknown bucket).
        embedding_dim: width of every embedding; default min(16, (cardinality + 1) // 2)
            per column.
    """
    if not cardinalities:
        raise ValueError(
            "the tabular builder needs at least one categorical column with features.encoding: "
            "index; declare string columns (or features.categorical), or use builder: mlp"
        )
    if in_dim != num_numeric + len(cardinalities):
        raise ValueError(
            f"tabular builder: in_dim {in_dim} != {num_numeric} numeric + "
            f"{len(cardinalities)} index columns; it needs features.encoding: index"
        )
    dims = [embedding_dim or default_embedding_dim(c) for c in cardinalities]
    return TabularNet(num_numeric, cardinalities, out_dim, dims, hidden_sizes, dropout, activation)


def _tabular_layout(prep: Any) -> tuple[int, list[int]]:
    """(numeric column count, index cardinalities) from a fitted preprocessor."""
    if prep is None:
        raise ValueError(
            "the tabular builder needs the fitted preprocessor (prep=...) to know which input "
            "columns are categorical indices and their cardinalities"
        )
    if hasattr(prep, "embedding_layout"):
        dense, cardinalities = prep.embedding_layout()
    else:  # a plain stand-in: numeric columns, then one index per categorical
        dense = len(prep.numeric)
        cardinalities = (
            [len(c["categories"]) + 1 for c in prep.categorical]
            if getattr(prep, "encoding", None) == "index"
            else []
        )
    if not cardinalities:
        raise ValueError(
            "the tabular builder needs index-encoded columns (features.encoding: index with a "
            "categorical column, or a transform chain ending in index, hash or bucketize with "
            "output: index); none found, so use builder: mlp"
        )
    return dense, cardinalities


# -- cnn ----------------------------------------------------------------------------------------
class SmallCNN(nn.Module):
    """Flat rows -> (C, H, W) images -> conv blocks -> pooling -> MLP head.

    Each conv block is Conv2d(3x3, same padding) -> activation -> MaxPool2d(2) (a side of size
    1 is not pooled). An adaptive average pool then caps the map at 4x4, so the head's input
    stays small for any image size.
    """

    def __init__(
        self,
        image_shape: Sequence[int],
        out_dim: int,
        conv_channels: Sequence[int] = (16, 32),
        hidden_sizes: Sequence[int] = (64, 32),
        dropout: float = 0.0,
        activation: str = "relu",
    ):
        super().__init__()
        c, h, w = (int(v) for v in image_shape)
        self.image_shape = (c, h, w)
        blocks: list[nn.Module] = []
        width = c
        for ch in conv_channels:
            kernel = (2 if h >= 2 else 1, 2 if w >= 2 else 1)
            blocks += [
                nn.Conv2d(width, int(ch), kernel_size=3, padding=1),
                _ACTIVATIONS[activation](),
                nn.MaxPool2d(kernel, ceil_mode=True),
            ]
            h, w = -(-h // kernel[0]), -(-w // kernel[1])
            width = int(ch)
        ph, pw = min(h, 4), min(w, 4)
        blocks.append(nn.AdaptiveAvgPool2d((ph, pw)))
        self.features = nn.Sequential(*blocks)
        self.head = build_mlp(width * ph * pw, out_dim, hidden_sizes, dropout, activation)

    @property
    def in_dim(self) -> int:
        """Values per flat input row: C * H * W."""
        c, h, w = self.image_shape
        return c * h * w

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.in_dim:
            raise ValueError(
                f"cnn model expects rows of {self.in_dim} values (image_shape "
                f"{list(self.image_shape)}), got {x.shape[-1]}"
            )
        x = x.reshape(x.shape[0], *self.image_shape)
        return self.head(torch.flatten(self.features(x), 1))


def build_cnn(
    in_dim: int,
    out_dim: int,
    image_shape: Sequence[int],
    conv_channels: Sequence[int] = (16, 32),
    hidden_sizes: Sequence[int] = (64, 32),
    dropout: float = 0.0,
    activation: str = "relu",
) -> nn.Module:
    """A small CNN for fixed-shape images arriving as flat rows of C*H*W values."""
    if image_shape is None or len(image_shape) != 3:
        raise ValueError(
            f"the cnn builder needs model.image_shape: [C, H, W] (3 ints), got {image_shape!r}"
        )
    c, h, w = (int(v) for v in image_shape)
    if min(c, h, w) < 1:
        raise ValueError(f"model.image_shape {list(image_shape)}: every size must be >= 1")
    if c * h * w != in_dim:
        raise ValueError(
            f"model.image_shape {[c, h, w]} holds {c * h * w} values but each row has {in_dim} "
            "features; fix image_shape so that C*H*W equals the number of feature columns"
        )
    if not conv_channels:
        raise ValueError("the cnn builder needs at least one entry in model.conv_channels")
    return SmallCNN((c, h, w), out_dim, conv_channels, hidden_sizes, dropout, activation)


# -- user builders ------------------------------------------------------------------------------
def load_user_builder(path: str) -> Callable[..., Any]:
    """Import the builder function named by ``"package.module:function"``."""
    fn = load_ref(path, "model builder", signature=USER_BUILDER_SIGNATURE.removeprefix("fn"))
    if not callable(fn):
        attr = parse_ref(path)[1]
        raise ValueError(
            f"model builder '{path}': '{attr}' is a {type(fn).__name__}, not a function; "
            f"point the builder at a function {USER_BUILDER_SIGNATURE}"
        )
    return fn


def build_user(path: str, model_cfg: dict[str, Any], in_dim: int, out_dim: int) -> nn.Module:
    """Call the user builder at ``path`` as ``fn(model_cfg, in_dim, out_dim)``."""
    fn = load_user_builder(path)
    model = fn(dict(model_cfg), in_dim, out_dim)
    if not isinstance(model, nn.Module):
        raise ValueError(
            f"model builder '{path}' returned a {type(model).__name__}, not a torch.nn.Module; "
            f"it must be {USER_BUILDER_SIGNATURE}"
        )
    return model


# -- dispatch -----------------------------------------------------------------------------------
def _common(model_cfg: dict[str, Any]) -> dict[str, Any]:
    """The MLP-head arguments every built-in builder takes."""
    return {
        "hidden_sizes": list(model_cfg.get("hidden_sizes", [64, 32])),
        "dropout": float(model_cfg.get("dropout", 0.0)),
        "activation": model_cfg.get("activation", "relu"),
    }


def _mlp(model_cfg: dict[str, Any], in_dim: int, out_dim: int, prep: Any) -> nn.Module:
    return build_mlp(in_dim, out_dim, **_common(model_cfg))


def _tabular(model_cfg: dict[str, Any], in_dim: int, out_dim: int, prep: Any) -> nn.Module:
    num_numeric, cardinalities = _tabular_layout(prep)
    return build_tabular(
        in_dim,
        out_dim,
        num_numeric,
        cardinalities,
        embedding_dim=model_cfg.get("embedding_dim"),
        **_common(model_cfg),
    )


def _cnn(model_cfg: dict[str, Any], in_dim: int, out_dim: int, prep: Any) -> nn.Module:
    return build_cnn(
        in_dim,
        out_dim,
        model_cfg.get("image_shape"),
        conv_channels=list(model_cfg.get("conv_channels") or [16, 32]),
        **_common(model_cfg),
    )


#: Built-in builder name -> ``fn(model_cfg, in_dim, out_dim, prep) -> nn.Module``. The
#: config's ``BUILTIN_BUILDERS`` lists the same names (a unit test keeps them equal).
BUILDERS: dict[str, Callable[[dict[str, Any], int, int, Any], nn.Module]] = {
    "mlp": _mlp,
    "tabular": _tabular,
    "cnn": _cnn,
}


def build_model(
    model_cfg: dict[str, Any], in_dim: int, out_dim: int, prep: Any = None
) -> nn.Module:
    """Build the network named by ``model_cfg["builder"]`` from a plain dict of its config.

    ``prep`` is the :class:`~rayline.data.features.FittedPreprocessor`; the ``tabular``
    builder reads the feature layout (numeric columns, then index columns) from it.
    """
    builder = model_cfg.get("builder") or "mlp"
    if builder in BUILDERS:
        return BUILDERS[builder](model_cfg, in_dim, out_dim, prep)
    if ":" in builder:
        return build_user(builder, model_cfg, in_dim, out_dim)
    raise ValueError(
        f"unknown model builder '{builder}'; use one of {', '.join(BUILDERS)} "
        "or an import path 'package.module:function'"
    )
