"""The stage cache: keys that change with every input, entries served only when complete."""

from __future__ import annotations

import json
import sys
import time

import pytest

from rayline.cache import (
    MARKER,
    StageCache,
    code_hash,
    parse_age,
    stage_key,
    user_code_hash,
)


def _key(**over):
    parts = {
        "stage": "features",
        "config": {"features": {"standardize": True}},
        "upstream": {"validate+split": "a" * 64},
        "code": "c" * 64,
        "user_code": "",
        "extra": None,
    }
    parts.update(over)
    return stage_key(**parts)


def test_the_key_changes_with_each_input_and_only_then():
    base = _key()
    assert base == _key()  # deterministic
    assert base == _key(config={"features": {"standardize": True}})  # equal dicts
    changed = [
        _key(stage="profile"),
        _key(config={"features": {"standardize": False}}),
        _key(upstream={"validate+split": "b" * 64}),
        _key(code="d" * 64),
        _key(user_code="e" * 64),
        _key(extra={"data_fingerprint": "f"}),
    ]
    assert len({base, *changed}) == 7


def test_code_hash_follows_the_source():
    one = code_hash(("rayline.gate",))
    assert one == code_hash(("rayline.gate",))
    assert one != code_hash(("rayline.gate", "rayline.metrics"))
    # A package counts every module in it.
    assert code_hash(("rayline.stages",)) != code_hash(("rayline.stages.base",))
    with pytest.raises(ValueError, match="not found"):
        code_hash(("rayline.no_such_module",))


def test_user_code_hash_covers_the_whole_package(tmp_path, monkeypatch):
    pkg = tmp_path / "mypkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "fns.py").write_text("def f(b):\n    return b\n")
    (pkg / "util.py").write_text("X = 1\n")
    (tmp_path / "single.py").write_text("def g(b):\n    return b\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    first, files = user_code_hash(["mypkg.sub.fns:f"])
    assert str(pkg / "util.py") in files and str(pkg / "sub" / "fns.py") in files
    (pkg / "util.py").write_text("X = 2\n")  # not the module named, but its package
    assert user_code_hash(["mypkg.sub.fns:f"])[0] != first
    single, files = user_code_hash(["single:g"])
    assert files == [str(tmp_path / "single.py")] and single
    assert user_code_hash([]) == ("", [])
    assert user_code_hash(["mlp"]) == ("", [])  # a built-in name, not user code
    sys.modules.pop("mypkg", None)


def test_an_entry_is_served_only_after_commit(tmp_path):
    cache = StageCache(str(tmp_path / "cache"))
    key = "k" * 64
    assert cache.lookup("features", key) is None
    out = cache.begin("features", key)
    (tmp_path / "cache" / "features" / key / "preprocessor.json").write_text("{}")
    assert cache.lookup("features", key) is None  # written, not committed
    assert cache.entries() == []
    cache.commit("features", key, {"result": {"a": 1}, "run_name": "r1"})
    meta = cache.lookup("features", key)
    assert meta["result"] == {"a": 1} and meta["run_name"] == "r1"
    assert out == cache.path("features", key)
    [entry] = cache.entries()
    assert entry.stage == "features" and entry.run_name == "r1" and entry.bytes > 0


def test_a_dead_writer_leaves_nothing_servable_and_the_next_begin_clears_it(tmp_path):
    cache = StageCache(str(tmp_path / "cache"))
    key = "k" * 64
    cache.begin("train", key)
    entry = tmp_path / "cache" / "train" / key
    (entry / "half.bin").write_bytes(b"\0" * 10)
    (entry / MARKER).write_text('{"key": "kkk')  # a torn marker
    assert cache.lookup("train", key) is None
    (entry / MARKER).write_text(json.dumps({"key": "other", "format": 1}))
    assert cache.lookup("train", key) is None  # a marker for another key
    cache.begin("train", key)
    assert list(entry.iterdir()) == []


def test_prune_removes_what_was_not_used_recently(tmp_path):
    cache = StageCache(str(tmp_path / "cache"))
    for name in ("old", "used", "new"):
        key = name * 16
        cache.begin("features", key)
        cache.commit("features", key, {"created": time.time() - 30 * 86400})
    cache.touch("features", "used" * 16)  # reused today
    # "new" is as old as "old" and unused, but the caller keeps it.
    gone = cache.prune(7 * 86400, keep={"new" * 16})
    assert [e.key for e in gone] == ["old" * 16]
    assert {e.key for e in cache.entries()} == {"used" * 16, "new" * 16}


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("7d", 604800), ("12h", 43200), ("30m", 1800), ("45s", 45), ("2w", 1209600), ("90", 90)],
)
def test_parse_age(text, seconds):
    assert parse_age(text) == seconds


@pytest.mark.parametrize("text", ["soon", "", "-1d", "d"])
def test_parse_age_refuses_what_it_cannot_read(text):
    with pytest.raises(ValueError, match="7d"):
        parse_age(text)
