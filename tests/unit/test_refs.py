"""``pkg.module:name`` references to user code (rayline.refs), without Ray."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from rayline.refs import RefError, is_ref, load_ref, parse_ref, source_files


@pytest.fixture
def user_code(tmp_path, monkeypatch):
    """A temp dir on sys.path holding a module file and a package with a subpackage."""
    (tmp_path / "solo_mod.py").write_text("def fn(x):\n    return x + 1\n\nVALUE = 3\n")
    pkg = tmp_path / "user_pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "helpers.py").write_text("def helper():\n    return 'h'\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "deep.py").write_text("from user_pkg.helpers import helper\n")
    (pkg / "data.txt").write_text("not python")
    (tmp_path / "broken_mod.py").write_text("raise RuntimeError('boom at import')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path.resolve()
    for name in [m for m in sys.modules if m.split(".")[0] in ("solo_mod", "user_pkg")]:
        sys.modules.pop(name, None)
    sys.modules.pop("broken_mod", None)


@pytest.mark.parametrize(
    "ref, parsed",
    [
        ("pkg.mod:fn", ("pkg.mod", "fn")),
        ("a:b", ("a", "b")),
        ("a.b.c.d:Transform", ("a.b.c.d", "Transform")),
        ("_p._m:_f", ("_p._m", "_f")),
    ],
)
def test_parse_ref(ref, parsed):
    assert parse_ref(ref) == parsed
    assert is_ref(ref)


@pytest.mark.parametrize(
    "bad",
    [
        "pkg.mod.fn",  # the dotted form is not a reference: the colon is required
        "mlp",
        "pkg.mod:",
        ":fn",
        "pkg-mod:fn",
        "pkg..mod:fn",
        "a:b:c",
        "a:b.c",
        "tests unit:build",
        "",
    ],
)
def test_parse_ref_rejects(bad):
    assert not is_ref(bad)
    with pytest.raises(RefError, match="is not an import path; write it as"):
        parse_ref(bad)


def test_ref_error_is_both_value_and_import_error():
    # a bad model builder has always raised ValueError, a bad user transform ImportError
    assert issubclass(RefError, ValueError) and issubclass(RefError, ImportError)


def test_load_ref(user_code):
    assert load_ref("solo_mod:fn", "thing")(1) == 2
    assert load_ref("solo_mod:VALUE", "thing") == 3
    assert load_ref("user_pkg.helpers:helper", "thing")() == "h"


@pytest.mark.parametrize(
    "ref, match",
    [
        ("solo mod:fn", r"model builder 'solo mod:fn' is not an import path; write it as"),
        ("no_such_mod_xyz:fn", r"model builder 'no_such_mod_xyz:fn': cannot import module "),
        ("broken_mod:fn", r"cannot import module 'broken_mod' \(RuntimeError: boom at import\)"),
        ("solo_mod:missing", r"module 'solo_mod' has no attribute 'missing'; define missing\(x\)"),
    ],
)
def test_load_ref_errors_name_ref_purpose_and_fix(user_code, ref, match):
    with pytest.raises(RefError, match=match) as info:
        load_ref(ref, "model builder", signature="(x)")
    text = str(info.value)
    assert ref in text and "model builder" in text
    assert any(fix in text for fix in ("write it as", "PYTHONPATH", "fix the name"))


def test_source_files_single_module(user_code):
    assert source_files("solo_mod:fn") == [str(user_code / "solo_mod.py")]


def test_source_files_package(user_code):
    expected = sorted(
        str(user_code / "user_pkg" / p)
        for p in ("__init__.py", "helpers.py", "sub/__init__.py", "sub/deep.py")
    )
    assert source_files("user_pkg.sub.deep:helper") == expected
    assert source_files("user_pkg:anything") == expected
    assert all(Path(p).is_absolute() for p in expected)
    assert "user_pkg.sub" not in sys.modules  # located, not imported


def test_source_files_not_user_code():
    assert source_files("rayline.train.models:build_mlp") == []
    assert source_files("json:dumps") == []  # standard library
    assert source_files("sys:exit") == []  # built in: no file
    assert source_files("pytest:raises") == []  # site-packages


def test_source_files_errors(user_code):
    with pytest.raises(RefError, match="'no_such_mod_xyz:fn': cannot find module"):
        source_files("no_such_mod_xyz:fn")
    with pytest.raises(RefError, match="is not an import path"):
        source_files("solo-mod:fn")


def test_source_files_of_a_builtin_name_is_empty():
    assert source_files("mlp") == []
    assert source_files("solo_mod.fn") == []  # no colon: not a reference to user code
