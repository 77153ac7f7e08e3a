"""Behaviour of input discovery and fingerprinting (rayline.data.ingest), without Ray."""

from __future__ import annotations

import os

import pyarrow.fs as pafs
import pytest

from rayline.data.ingest import fingerprint, hive_values, resolve_sources
from rayline.errors import DataSourceError


def touch(root, *names: str, content: bytes = b"x") -> None:
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)


def rel(root, sources) -> list[str]:
    return [os.path.relpath(f, root) for f in sources.files]


@pytest.fixture
def tree(tmp_path):
    """A Spark-style output directory with side files, hidden and nested folders."""
    touch(
        tmp_path,
        "part-1.parquet",
        "part-0.parquet",
        "_SUCCESS",
        "_metadata",
        ".part-0.parquet.crc",
        "part-0.parquet.crc",
        ".hidden.parquet",
        "notes.txt",
        "sub/part-2.parquet",
        "sub/deep/part-3.parquet",
        "_temporary/0/part-9.parquet",
        ".ipynb_checkpoints/part-8.parquet",
    )
    return tmp_path


# -- resolving ----------------------------------------------------------------------------------------
def test_single_file(tmp_path):
    touch(tmp_path, "a.parquet")
    s = resolve_sources(str(tmp_path / "a.parquet"))
    assert s.files == [str(tmp_path / "a.parquet")]
    assert s.uris == s.files
    assert s.format == "parquet"
    assert isinstance(s.filesystem, pafs.LocalFileSystem)


def test_relative_path_is_made_absolute(tmp_path, monkeypatch):
    touch(tmp_path, "a.csv")
    monkeypatch.chdir(tmp_path)
    s = resolve_sources("a.csv")
    assert s.files == [str(tmp_path / "a.csv")]
    assert s.format == "csv"


def test_directory_lists_data_files_recursively_and_sorted(tree):
    s = resolve_sources(str(tree))
    assert rel(tree, s) == [
        "part-0.parquet",
        "part-1.parquet",
        "sub/deep/part-3.parquet",
        "sub/part-2.parquet",
    ]
    assert s.format == "parquet"


def test_directory_with_trailing_slash(tree):
    assert resolve_sources(str(tree) + "/").files == resolve_sources(str(tree)).files


def test_glob_star_stays_in_one_directory(tree):
    s = resolve_sources(str(tree / "*.parquet"))
    assert rel(tree, s) == ["part-0.parquet", "part-1.parquet"]


def test_glob_in_a_subdirectory(tree):
    assert rel(tree, resolve_sources(str(tree / "sub/*.parquet"))) == ["sub/part-2.parquet"]
    assert rel(tree, resolve_sources(str(tree / "*/*.parquet"))) == ["sub/part-2.parquet"]


def test_glob_question_mark_and_brackets(tree):
    assert rel(tree, resolve_sources(str(tree / "part-?.parquet"))) == [
        "part-0.parquet",
        "part-1.parquet",
    ]
    assert rel(tree, resolve_sources(str(tree / "part-[1].parquet"))) == ["part-1.parquet"]
    assert rel(tree, resolve_sources(str(tree / "s?b/part-*.parquet"))) == ["sub/part-2.parquet"]


def test_double_star_spans_zero_or_more_directories(tree):
    assert rel(tree, resolve_sources(str(tree / "**/*.parquet"))) == [
        "part-0.parquet",
        "part-1.parquet",
        "sub/deep/part-3.parquet",
        "sub/part-2.parquet",
    ]
    assert rel(tree, resolve_sources(str(tree / "sub/**/*.parquet"))) == [
        "sub/deep/part-3.parquet",
        "sub/part-2.parquet",
    ]


def test_glob_wildcards_skip_side_files_and_hidden_folders(tmp_path):
    touch(tmp_path, "a.csv", "_SUCCESS", ".a.csv.crc", "_tmp/b.csv", ".cache/c.csv", "d/e.csv")
    # `*` would otherwise pick up _SUCCESS and fail on its extension.
    assert rel(tmp_path, resolve_sources(str(tmp_path / "*"))) == ["a.csv"]
    assert rel(tmp_path, resolve_sources(str(tmp_path / "**"))) == ["a.csv", "d/e.csv"]


def test_glob_wildcard_does_not_hide_other_files(tree):
    with pytest.raises(DataSourceError, match="cannot tell the format") as exc:
        resolve_sources(str(tree / "*"))
    assert str(tree / "notes.txt") in str(exc.value)


def test_glob_can_name_an_underscore_folder_explicitly(tree):
    s = resolve_sources(str(tree / "_temporary/*/*.parquet"))
    assert rel(tree, s) == ["_temporary/0/part-9.parquet"]


def test_list_of_paths_keeps_the_given_order(tree, tmp_path):
    s = resolve_sources([str(tree / "sub"), str(tree / "part-1.parquet")])
    assert rel(tree, s) == [
        "sub/deep/part-3.parquet",
        "sub/part-2.parquet",
        "part-1.parquet",
    ]
    assert s.display(s.files[0]) == s.files[0]


def test_format_inference(tmp_path):
    touch(tmp_path, "a.pq", "b.PARQUET", "c.CSV")
    assert resolve_sources(str(tmp_path / "a.pq")).format == "parquet"
    assert resolve_sources(str(tmp_path / "b.PARQUET")).format == "parquet"
    assert resolve_sources(str(tmp_path / "c.CSV")).format == "csv"


def test_explicit_format_accepts_any_extension(tmp_path):
    touch(tmp_path, "data.txt")
    s = resolve_sources(str(tmp_path / "data.txt"), fmt="csv")
    assert s.format == "csv"
    assert s.files == [str(tmp_path / "data.txt")]


# -- errors -------------------------------------------------------------------------------------------
def test_missing_path(tmp_path):
    missing = str(tmp_path / "nope.parquet")
    with pytest.raises(DataSourceError, match="does not exist; check data.path") as exc:
        resolve_sources(missing)
    assert missing in str(exc.value)


def test_missing_path_in_a_list(tmp_path):
    touch(tmp_path, "a.parquet")
    missing = str(tmp_path / "b.parquet")
    with pytest.raises(DataSourceError, match="does not exist") as exc:
        resolve_sources([str(tmp_path / "a.parquet"), missing])
    assert missing in str(exc.value)


def test_glob_matching_nothing(tmp_path):
    touch(tmp_path, "a.csv")
    pattern = str(tmp_path / "*.parquet")
    with pytest.raises(DataSourceError, match="matches no files") as exc:
        resolve_sources(pattern)
    assert pattern in str(exc.value)
    assert str(tmp_path) in str(exc.value)


def test_glob_under_a_missing_directory(tmp_path):
    with pytest.raises(DataSourceError, match="matches no files"):
        resolve_sources(str(tmp_path / "nowhere" / "*.parquet"))


def test_empty_directory(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataSourceError, match="holds no data files") as exc:
        resolve_sources(str(tmp_path / "empty"))
    assert str(tmp_path / "empty") in str(exc.value)


def test_directory_with_only_side_files(tmp_path):
    touch(tmp_path, "_SUCCESS", ".x.parquet.crc", "readme.md", "_temporary/part-0.parquet")
    with pytest.raises(DataSourceError, match="holds no data files"):
        resolve_sources(str(tmp_path))


def test_mixed_parquet_and_csv(tmp_path):
    touch(tmp_path, "a.parquet", "b.csv")
    with pytest.raises(DataSourceError, match=r"mixes formats \(csv, parquet\)"):
        resolve_sources(str(tmp_path))
    with pytest.raises(DataSourceError, match="set data.format"):
        resolve_sources([str(tmp_path / "a.parquet"), str(tmp_path / "b.csv")])


def test_unknown_extension_with_auto_format(tmp_path):
    touch(tmp_path, "data.txt")
    path = str(tmp_path / "data.txt")
    with pytest.raises(DataSourceError, match="cannot tell the format") as exc:
        resolve_sources(path)
    assert path in str(exc.value)
    assert "set data.format to parquet, csv or json" in str(exc.value)


def test_empty_list_of_paths():
    with pytest.raises(DataSourceError, match="empty list"):
        resolve_sources([])


# -- fingerprint --------------------------------------------------------------------------------------
def test_fingerprint_is_stable_for_the_same_content(tmp_path):
    touch(tmp_path, "a.csv", content=b"x,y\n1,2\n")
    first = fingerprint(resolve_sources(str(tmp_path)))
    assert first == fingerprint(resolve_sources(str(tmp_path)))
    assert len(first) == 64 and int(first, 16) >= 0
    # Rewriting identical bytes (new mtime) does not change it.
    touch(tmp_path, "a.csv", content=b"x,y\n1,2\n")
    assert fingerprint(resolve_sources(str(tmp_path))) == first


def test_fingerprint_changes_when_a_byte_changes(tmp_path):
    touch(tmp_path, "a.csv", content=b"x,y\n1,2\n")
    before = fingerprint(resolve_sources(str(tmp_path)))
    touch(tmp_path, "a.csv", content=b"x,y\n1,3\n")
    assert fingerprint(resolve_sources(str(tmp_path))) != before


def test_fingerprint_changes_when_a_file_is_added(tmp_path):
    touch(tmp_path, "a.csv", content=b"x,y\n1,2\n")
    before = fingerprint(resolve_sources(str(tmp_path)))
    touch(tmp_path, "b.csv", content=b"x,y\n")
    assert fingerprint(resolve_sources(str(tmp_path))) != before


def test_fingerprint_ignores_side_files(tmp_path):
    touch(tmp_path, "a.csv", content=b"x,y\n1,2\n")
    before = fingerprint(resolve_sources(str(tmp_path)))
    touch(tmp_path, "_SUCCESS", ".a.csv.crc")
    assert fingerprint(resolve_sources(str(tmp_path))) == before


def test_fingerprint_tells_apart_the_same_bytes_split_differently(tmp_path):
    touch(tmp_path / "one", "a.csv", content=b"ab")
    touch(tmp_path / "two", "a.csv", content=b"a")
    touch(tmp_path / "two", "b.csv", content=b"b")
    assert fingerprint(resolve_sources(str(tmp_path / "one"))) != fingerprint(
        resolve_sources(str(tmp_path / "two"))
    )


def test_json_lines_extensions(tmp_path):
    touch(tmp_path, "a.jsonl", "b.ndjson", "c.json")
    s = resolve_sources(str(tmp_path))
    assert s.format == "json" and len(s.files) == 3


def test_hive_values_from_a_partitioned_path():
    assert hive_values("/d/year=2024/region=eu/part-0.parquet") == {"year": "2024", "region": "eu"}
    assert hive_values("bucket/data/part=a=b/x.csv") == {"part": "a=b"}
    assert hive_values("/d/x.parquet") == {}


def test_hive_tree_resolves_every_partition_file(tmp_path):
    touch(tmp_path, "year=2024/region=eu/a.parquet", "year=2025/region=us/b.parquet")
    assert rel(tmp_path, resolve_sources(str(tmp_path))) == [
        "year=2024/region=eu/a.parquet",
        "year=2025/region=us/b.parquet",
    ]


def test_the_unique_checks_group_by_has_a_partition_per_256_mib_of_input(tmp_path, monkeypatch):
    from rayline.data import stage

    (tmp_path / "a.csv").write_text("x\n1\n")
    (tmp_path / "b.csv").write_text("x\n2\n")
    sources = resolve_sources(str(tmp_path / "*.csv"))
    assert stage.shuffle_partitions(sources) == 1  # not Ray Data's 200 for two tiny files
    monkeypatch.setattr(stage, "SHUFFLE_PARTITION_BYTES", 4)
    assert stage.shuffle_partitions(sources) == 2  # 8 bytes in all, 4 a partition
    monkeypatch.setattr(stage, "SHUFFLE_PARTITION_BYTES", 1e-6)
    assert stage.shuffle_partitions(sources) == 200  # never past Ray Data's default
