"""rayline.paths: one answer to "local path or URI?" and the filesystem for either."""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow.fs as pafs
import pytest

from rayline.paths import absolute, filesystem, is_remote, uri_scheme

URIS = ["s3://bucket/runs", "gs://bucket/x/y.parquet", "file:///tmp/runs", "s3a://b/k"]
LOCAL = ["rayline-runs", "./data/x.parquet", "/abs/dir", "a:b/c", "s3:/not-a-uri"]


@pytest.mark.parametrize("uri", URIS)
def test_uris_are_remote_and_kept_as_given(uri):
    assert is_remote(uri)
    assert absolute(uri) == uri


@pytest.mark.parametrize("path", LOCAL)
def test_local_paths_are_made_absolute(monkeypatch, tmp_path, path):
    monkeypatch.chdir(tmp_path)
    assert not is_remote(path)
    assert not is_remote(Path(path))
    assert absolute(path) == os.path.normpath(os.path.join(tmp_path, path))


def test_the_scheme_prefix_of_a_uri():
    assert uri_scheme("s3://bucket/runs") == "s3://"
    assert uri_scheme("s3a://b/k/x://y") == "s3a://"
    assert uri_scheme("/abs/dir") == ""
    assert uri_scheme("rayline-runs") == ""


def test_a_relative_local_path_opens_on_the_local_filesystem(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "staged").mkdir()
    fs, inner = filesystem("staged/")
    assert isinstance(fs, pafs.LocalFileSystem)
    assert inner == str(tmp_path / "staged")
    assert fs.get_file_info(inner).type == pafs.FileType.Directory


def test_a_file_uri_opens_on_the_local_filesystem(tmp_path):
    fs, inner = filesystem(tmp_path.as_uri())
    assert isinstance(fs, pafs.LocalFileSystem)
    assert inner == str(tmp_path)
