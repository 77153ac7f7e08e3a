"""Model builders: mlp, tabular, cnn and user builders by import path (no Ray)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from rayline.config import BUILTIN_BUILDERS, ModelConfig, validate_config
from rayline.data.features import FittedPreprocessor
from rayline.errors import ConfigError
from rayline.refs import is_ref
from rayline.train.models import BUILDERS, build_mlp, build_model, default_embedding_dim


def _prep(
    encoding: str = "index", cats: list[list[str]] | None = None, n_num: int = 2
) -> FittedPreprocessor:
    cats = [["a", "b", "c"], [f"v{i}" for i in range(40)]] if cats is None else cats
    return FittedPreprocessor(
        task="classification",
        target="y",
        classes=[0, 1, 2],
        numeric=[{"name": f"n{i}", "mean": 0.0, "std": 1.0, "fill": 0.0} for i in range(n_num)],
        categorical=[{"name": f"c{j}", "categories": c} for j, c in enumerate(cats)],
        encoding=encoding,
    )


def _spec(**kw) -> dict:
    """A model config as the loop passes it: ModelConfig.model_dump()."""
    return ModelConfig(task=kw.pop("task", "classification"), **kw).model_dump()


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# -- mlp ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("out_dim", [3, 1])
def test_mlp_shapes(out_dim):
    model = build_model(_spec(hidden_sizes=[8, 4]), 5, out_dim)
    assert model(torch.randn(7, 5)).shape == (7, out_dim)


def test_mlp_linear_when_no_hidden():
    model = build_model(_spec(hidden_sizes=[]), 5, 2)
    assert [type(m) for m in model] == [nn.Linear]


# -- tabular ------------------------------------------------------------------------------------
def _tabular_x(rows: int = 6) -> torch.Tensor:
    num = torch.randn(rows, 2)
    c0 = torch.tensor([0, 1, 2, 3, 0, 3], dtype=torch.float32)[:rows]
    c1 = torch.tensor([40, 0, 7, 1, 39, 12], dtype=torch.float32)[:rows]
    return torch.cat([num, c0[:, None], c1[:, None]], dim=1)


@pytest.mark.parametrize("out_dim", [3, 1])
def test_tabular_shapes(out_dim):
    prep = _prep()
    model = build_model(
        _spec(builder="tabular", hidden_sizes=[8]), prep.output_dim, out_dim, prep=prep
    )
    assert prep.output_dim == 4
    assert model(_tabular_x()).shape == (6, out_dim)


def test_tabular_embeddings_count_and_cardinality():
    prep = _prep()
    model = build_model(_spec(builder="tabular"), prep.output_dim, 3, prep=prep)
    embs = [m for m in model.modules() if isinstance(m, nn.Embedding)]
    assert [e.num_embeddings for e in embs] == [4, 41]  # categories + the unknown bucket
    assert [e.embedding_dim for e in embs] == [default_embedding_dim(4), default_embedding_dim(41)]
    assert [e.embedding_dim for e in embs] == [2, 16]


def test_tabular_embedding_dim_from_config():
    prep = _prep()
    model = build_model(_spec(builder="tabular", embedding_dim=5), prep.output_dim, 3, prep=prep)
    assert [m.embedding_dim for m in model.modules() if isinstance(m, nn.Embedding)] == [5, 5]


def test_tabular_unknown_and_bad_indices_use_bucket_zero():
    prep = _prep()
    model = build_model(_spec(builder="tabular"), prep.output_dim, 3, prep=prep).eval()
    num = torch.randn(1, 2)
    unknown = model(torch.cat([num, torch.tensor([[0.0, 0.0]])], dim=1))
    # NaN, negative and out-of-range indices all fall in the unknown bucket.
    for bad in ([float("nan"), -1.0], [4.0, 1000.0], [-3.0, float("inf")]):
        out = model(torch.cat([num, torch.tensor([bad])], dim=1))
        torch.testing.assert_close(out, unknown)
    # A known index gives a different output than unknown.
    known = model(torch.cat([num, torch.tensor([[2.0, 5.0]])], dim=1))
    assert not torch.allclose(known, unknown)


def test_tabular_only_categoricals():
    prep = _prep(n_num=0, cats=[["a", "b"]])
    model = build_model(_spec(builder="tabular"), prep.output_dim, 2, prep=prep)
    assert model(torch.tensor([[0.0], [1.0], [2.0]])).shape == (3, 2)


def test_tabular_rejects_onehot():
    prep = _prep(encoding="onehot")
    with pytest.raises(ValueError, match="the tabular builder needs index-encoded columns"):
        build_model(_spec(builder="tabular"), prep.output_dim, 3, prep=prep)


def test_tabular_rejects_no_categoricals_and_no_prep():
    prep = _prep(cats=[])
    with pytest.raises(ValueError, match="features.encoding: index"):
        build_model(_spec(builder="tabular"), prep.output_dim, 3, prep=prep)
    with pytest.raises(ValueError, match="fitted preprocessor"):
        build_model(_spec(builder="tabular"), 4, 3)


def test_tabular_state_dict_round_trip():
    prep = _prep()
    spec = _spec(builder="tabular", hidden_sizes=[8])
    a = build_model(spec, prep.output_dim, 3, prep=prep).eval()
    b = build_model(spec, prep.output_dim, 3, prep=FittedPreprocessor.from_json(prep.to_json()))
    b.load_state_dict(a.state_dict())
    b.eval()
    x = _tabular_x()
    torch.testing.assert_close(a(x), b(x))


def test_tabular_model_trains():
    """A tiny tabular model learns a target driven by a categorical and a numeric input."""
    g = torch.Generator().manual_seed(0)
    n = 256
    num = torch.randn(n, 1, generator=g)
    cat = torch.randint(0, 6, (n,), generator=g)  # 0 = unknown, 1..5 = categories
    effect = torch.tensor([0.0, -2.0, -1.0, 0.5, 1.5, 3.0])
    y = effect[cat] + 0.5 * num[:, 0]
    x = torch.cat([num, cat[:, None].float()], dim=1)
    prep = _prep(n_num=1, cats=[["a", "b", "c", "d", "e"]])
    model = build_model(
        _spec(builder="tabular", task="regression", hidden_sizes=[16]),
        prep.output_dim,
        1,
        prep=prep,
    )
    opt = torch.optim.Adam(model.parameters(), lr=0.03)
    losses = []
    for _ in range(50):
        opt.zero_grad()
        loss = nn.functional.mse_loss(model(x).squeeze(-1), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.2 * losses[0]


# -- cnn ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [[1, 8, 8], [3, 32, 32], [2, 5, 7], [1, 1, 16]])
@pytest.mark.parametrize("out_dim", [10, 1])
def test_cnn_forward(shape, out_dim):
    in_dim = shape[0] * shape[1] * shape[2]
    model = build_model(_spec(builder="cnn", image_shape=shape, hidden_sizes=[16]), in_dim, out_dim)
    assert model(torch.randn(4, in_dim)).shape == (4, out_dim)


def test_cnn_conv_channels():
    model = build_model(_spec(builder="cnn", image_shape=[1, 8, 8], conv_channels=[4, 6, 8]), 64, 3)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [4, 6, 8]
    default = build_model(_spec(builder="cnn", image_shape=[1, 8, 8]), 64, 3)
    assert [m.out_channels for m in default.modules() if isinstance(m, nn.Conv2d)] == [16, 32]


def test_cnn_shape_mismatch():
    with pytest.raises(ValueError, match=r"C\*H\*W"):
        build_model(_spec(builder="cnn", image_shape=[1, 8, 8]), 65, 3)
    model = build_model(_spec(builder="cnn", image_shape=[1, 8, 8]), 64, 3)
    with pytest.raises(ValueError, match="rows of 64 values"):
        model(torch.randn(2, 63))


def test_cnn_needs_image_shape():
    with pytest.raises(ValueError, match="image_shape"):
        build_model({"builder": "cnn"}, 64, 3)


# -- user builders ------------------------------------------------------------------------------
def test_user_builder():
    model = build_model(_spec(builder="tests.unit.user_models:build", hidden_sizes=[6]), 5, 3)
    assert model(torch.randn(2, 5)).shape == (2, 3)
    assert model[0].out_features == 6


@pytest.mark.parametrize(
    "path, match",
    [
        ("tests.unit.no_such_module:build", "cannot import module 'tests.unit.no_such_module'"),
        ("tests.unit.user_models:missing", "has no attribute 'missing'"),
        ("tests.unit.user_models:NOT_CALLABLE", "not a function"),
        ("tests.unit.user_models:not_a_module", r"returned a dict, not a torch.nn.Module"),
        ("tests.unit.user_models", "unknown model builder"),
        ("tests unit:build", "not an import path"),
    ],
)
def test_user_builder_errors(path, match):
    with pytest.raises(ValueError, match=match) as info:
        build_model({"builder": path}, 5, 3)
    assert path in str(info.value)


def test_user_builder_missing_attribute_quotes_the_signature():
    with pytest.raises(ValueError, match=r"define missing\(model_cfg: dict, in_dim: int"):
        build_model({"builder": "tests.unit.user_models:missing"}, 5, 3)


# -- the builder table --------------------------------------------------------------------------
def test_one_table_names_the_builtin_builders():
    assert tuple(BUILDERS) == BUILTIN_BUILDERS == ("mlp", "tabular", "cnn")


def test_table_dispatch_matches_the_direct_builders():
    torch.manual_seed(0)
    via_table = build_model(_spec(hidden_sizes=[4], activation="tanh", dropout=0.1), 3, 2)
    torch.manual_seed(0)
    direct = build_mlp(3, 2, [4], dropout=0.1, activation="tanh")
    assert repr(via_table) == repr(direct)
    for a, b in zip(via_table.state_dict().values(), direct.state_dict().values(), strict=True):
        assert torch.equal(a, b)


# -- config -------------------------------------------------------------------------------------
def test_config_and_loader_share_one_ref_rule():
    for b in ("pkg.mod:fn", "a:b", "pkg-mod:fn", "a:b:c", "pkg.mod.fn", "tests unit:build"):
        accepted = True
        try:
            ModelConfig(task="regression", builder=b)
        except ValueError:
            accepted = False
        assert accepted == is_ref(b), b


def test_config_builder_values():
    for b in ("mlp", "tabular", "pkg.mod:fn", "a:b"):
        assert ModelConfig(task="regression", builder=b).builder == b
    assert ModelConfig(task="regression", builder="cnn", image_shape=[1, 8, 8]).conv_channels == [
        16,
        32,
    ]
    for bad in ("resnet", "pkg.mod:", ":fn", "pkg-mod:fn", "a:b:c"):
        with pytest.raises(ValueError, match="'mlp', 'tabular', 'cnn'"):
            ModelConfig(task="regression", builder=bad)


def test_config_cnn_rules():
    with pytest.raises(ValueError, match="needs image_shape"):
        ModelConfig(task="classification", builder="cnn")
    with pytest.raises(ValueError, match="at least 3"):
        ModelConfig(task="classification", builder="cnn", image_shape=[8, 8])
    with pytest.raises(ValueError, match=">= 1"):
        ModelConfig(task="classification", builder="cnn", image_shape=[0, 8, 8])
    with pytest.raises(ValueError, match="embedding_dim"):
        ModelConfig(task="classification", embedding_dim=0)


def test_config_errors_name_the_key():
    data = {
        "name": "t",
        "data": {"path": "x.csv", "target": "y"},
        "schema": {"columns": {"a": {"type": "float"}, "y": {"type": "int"}}},
        "model": {"task": "classification", "builder": "resnet"},
    }
    with pytest.raises(ConfigError) as info:
        validate_config(data)
    assert any(p.startswith("model: builder 'resnet' is not known") for p in info.value.problems)
    data["model"] = {"task": "classification", "builder": "cnn"}
    with pytest.raises(ConfigError) as info:
        validate_config(data)
    assert any("model: builder 'cnn' needs image_shape" in p for p in info.value.problems)
