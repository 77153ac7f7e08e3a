"""Finding input files and reading them lazily with Ray Data.

Paths go through pyarrow filesystems, so a local path, a directory, a glob, a
hive-partitioned tree (``.../year=2024/region=eu/part-0.parquet``) and an ``s3://``/``gs://``
URI all take the same route: resolve to a concrete file list on the driver (metadata only),
then hand the list to Ray Data, which streams the bytes on the cluster. Parquet goes through
``ray.data.read_parquet``; CSV and JSON Lines go through rayline's own row-accounting
datasources (:mod:`rayline.data.readers`), so one malformed line is a quarantined row, not a
failed file. Object-store credentials come from the environment (``AWS_ACCESS_KEY_ID``, ...,
``GOOGLE_APPLICATION_CREDENTIALS``); ``data.endpoint_url`` (or ``AWS_ENDPOINT_URL``) points
``s3://`` at an S3-compatible server such as MinIO.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.fs as pafs

from rayline.errors import DataSourceError
from rayline.paths import is_remote, uri_scheme

_EXTENSIONS = {
    ".parquet": "parquet",
    ".pq": "parquet",
    ".csv": "csv",
    ".jsonl": "json",
    ".ndjson": "json",
    ".json": "json",
}
FORMATS = ("parquet", "csv", "json")
_GLOB_CHARS = set("*?[")


@dataclass
class SourceFiles:
    """The concrete input files of a run and the filesystem they live on."""

    files: list[str]
    format: str
    filesystem: pafs.FileSystem = field(repr=False)
    uris: list[str] = field(default_factory=list)

    def display(self, path: str) -> str:
        """The name a user would recognise for ``path`` (the URI when there is one)."""
        return self.display_names().get(path, path)

    def display_names(self) -> dict[str, str]:
        """Filesystem path -> the URI a user gave (identity for local files)."""
        return dict(zip(self.files, self.uris, strict=True))


def hive_values(path: str) -> dict[str, str]:
    """``key=value`` directory segments of a hive-partitioned path, outermost first."""
    out = {}
    for part in path.split("/")[:-1]:
        if "=" in part and not part.startswith("="):
            key, value = part.split("=", 1)
            out[key] = value
    return out


def _s3_filesystem(uri: str, endpoint_url: str) -> tuple[pafs.FileSystem, str]:
    """An S3 filesystem that talks to ``endpoint_url`` (MinIO, Ceph, a local moto server)."""
    scheme, _, host = endpoint_url.rpartition("://")
    kwargs = {"endpoint_override": host.rstrip("/"), "scheme": scheme or "https"}
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region:
        kwargs["region"] = region
    return pafs.S3FileSystem(**kwargs), uri.split("://", 1)[1]


def _to_fs(uri: str, endpoint_url: str | None = None) -> tuple[pafs.FileSystem, str, str]:
    """(filesystem, path inside it, scheme prefix to rebuild URIs)."""
    if is_remote(uri):
        scheme = uri_scheme(uri)
        endpoint_url = endpoint_url or os.environ.get("AWS_ENDPOINT_URL")
        try:
            if scheme in ("s3://", "s3a://") and endpoint_url:
                fs, path = _s3_filesystem(uri, endpoint_url)
                return fs, path, scheme
            fs, path = pafs.FileSystem.from_uri(uri)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError) as exc:
            raise DataSourceError(
                f"cannot open '{uri}': {exc}. Check the URI scheme and that credentials are "
                "set in the environment."
            ) from None
        return fs, path, scheme
    return pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(uri)), ""


def _is_data_file(path: str, root: str = "") -> bool:
    rel = path[len(root) :] if root and path.startswith(root) else path.rsplit("/", 1)[-1]
    parts = [p for p in rel.split("/") if p]
    # Spark/Hive side files (_SUCCESS, .crc, _metadata) and hidden or temporary directories
    # (.ipynb_checkpoints, _temporary, _delta_log) are not data.
    return not any(p.startswith((".", "_")) for p in parts) and (
        os.path.splitext(parts[-1] if parts else "")[1].lower() in _EXTENSIONS
    )


def _glob_match(path: str, pattern: str) -> bool:
    """Shell-style glob: wildcards stay within one path segment; a ``**`` segment spans
    zero or more directories. As in a directory, a wildcard does not match names that
    start with '.' or '_' (side files, hidden or temporary directories) unless the
    pattern segment starts with that character itself."""

    def hidden(name: str, pat: str) -> bool:
        return name.startswith((".", "_")) and not pat.startswith(name[0])

    def match(p: list[str], q: list[str]) -> bool:
        if not q:
            return not p
        if q[0] == "**":
            return any(
                match(p[i:], q[1:])
                for i in range(len(p) + 1)
                if not any(hidden(name, "") for name in p[:i])
            )
        return (
            bool(p)
            and not hidden(p[0], q[0])
            and fnmatch.fnmatchcase(p[0], q[0])
            and match(p[1:], q[1:])
        )

    return match(path.split("/"), pattern.split("/"))


def _expand(uri: str, endpoint_url: str | None) -> tuple[pafs.FileSystem, list[str], str]:
    fs, path, scheme = _to_fs(uri, endpoint_url)
    if _GLOB_CHARS & set(path):
        parts = path.split("/")
        first = next(i for i, p in enumerate(parts) if _GLOB_CHARS & set(p))
        base = "/".join(parts[:first]) or "/"
        try:
            infos = fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
        except OSError as exc:
            raise DataSourceError(f"cannot list '{scheme}{base}' for glob '{uri}': {exc}") from None
        files = sorted(
            i.path for i in infos if i.type == pafs.FileType.File and _glob_match(i.path, path)
        )
        if not files:
            raise DataSourceError(
                f"the glob '{uri}' matches no files; check the pattern and the directory "
                f"'{scheme}{base}'"
            )
        return fs, files, scheme
    try:
        info = fs.get_file_info(path)
    except OSError as exc:
        raise DataSourceError(
            f"cannot access '{uri}': {exc}. Check the path, the credentials in the "
            "environment and, for an S3-compatible server, data.endpoint_url"
        ) from None
    if info.type == pafs.FileType.NotFound:
        raise DataSourceError(f"data path '{uri}' does not exist; check data.path")
    if info.type == pafs.FileType.Directory:
        try:
            infos = fs.get_file_info(pafs.FileSelector(path, recursive=True))
        except OSError as exc:
            raise DataSourceError(f"cannot list directory '{uri}': {exc}") from None
        files = sorted(
            i.path for i in infos if i.type == pafs.FileType.File and _is_data_file(i.path, path)
        )
        if not files:
            raise DataSourceError(
                f"directory '{uri}' holds no data files (.parquet, .csv, .jsonl); check data.path"
            )
        return fs, files, scheme
    return fs, [path], scheme


def resolve_sources(
    paths: str | list[str], fmt: str = "auto", endpoint_url: str | None = None
) -> SourceFiles:
    """Expand files, directories and globs into one sorted list of files of one format.

    Raises:
        DataSourceError: a path does not exist, a glob or directory matches nothing, the
            formats are mixed, or the format cannot be told from the extension.
    """
    paths = [paths] if isinstance(paths, str) else list(paths)
    if not paths:
        raise DataSourceError(
            "data.path is an empty list; give at least one file, directory or glob"
        )
    files: list[str] = []
    uris: list[str] = []
    filesystem: pafs.FileSystem | None = None
    for uri in paths:
        fs, found, scheme = _expand(uri, endpoint_url)
        if filesystem is not None and type(fs) is not type(filesystem):
            raise DataSourceError(
                "data.path mixes filesystems (e.g. local and s3://); put all inputs on one"
            )
        filesystem = fs
        files.extend(found)
        uris.extend(f"{scheme}{f}" if scheme else f for f in found)
    if fmt == "auto":
        kinds = {_EXTENSIONS.get(os.path.splitext(f)[1].lower()) for f in files}
        if None in kinds:
            bad = next(
                u
                for f, u in zip(files, uris, strict=True)
                if os.path.splitext(f)[1].lower() not in _EXTENSIONS
            )
            raise DataSourceError(
                f"cannot tell the format of '{bad}' from its extension; set data.format to "
                "parquet, csv or json"
            )
        if len(kinds) > 1:
            raise DataSourceError(
                f"data.path mixes formats ({', '.join(sorted(kinds))}); point it at one format "
                "or set data.format"
            )
        fmt = kinds.pop()
    assert filesystem is not None
    return SourceFiles(files=files, format=fmt, filesystem=filesystem, uris=uris)


def fingerprint(sources: SourceFiles) -> str:
    """A sha256 over every input file: content for local files, size + mtime for remote ones.

    Hashing remote objects in full would read the whole dataset twice; their size and
    modification time change whenever the object is rewritten, which is what lineage needs.
    """
    return fingerprint_files(sources)[0]


def fingerprint_files(
    sources: SourceFiles, footer_rows: dict[str, int] | None = None
) -> tuple[str, list[dict]]:
    """:func:`fingerprint`, and per file what lineage records, from the same read.

    Each record: ``uri``, ``size`` (bytes), ``mtime`` (UTC ISO 8601) and ``mtime_ns``,
    ``sha256`` of the content (local files, hashed in the pass the fingerprint makes anyway;
    None for remote objects, whose size and mtime tell a rewrite), ``rows`` (the Parquet
    footer's count from ``footer_rows``, by URI; None where the format records none) and
    ``partition`` (the file's hive ``key=value`` directories).
    """
    from datetime import datetime, timezone

    h = hashlib.sha256()
    local = isinstance(sources.filesystem, pafs.LocalFileSystem)
    infos = sources.filesystem.get_file_info(list(sources.files)) if sources.files else []
    records = []
    for path, uri, info in zip(sources.files, sources.uris, infos, strict=True):
        h.update(uri.encode())
        digest = None
        if local:
            own = hashlib.sha256()
            with open(path, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
                    own.update(chunk)
            digest = own.hexdigest()
        else:
            h.update(f"{info.size}:{info.mtime_ns}".encode())
        mtime_ns = info.mtime_ns
        records.append(
            {
                "uri": uri,
                "size": info.size,
                "mtime": (
                    datetime.fromtimestamp(mtime_ns / 1e9, timezone.utc).isoformat()
                    if mtime_ns is not None
                    else None
                ),
                "mtime_ns": mtime_ns,
                "sha256": digest,
                "rows": (footer_rows or {}).get(uri),
                "partition": hive_values(path),
            }
        )
    return h.hexdigest(), records


def read_dataset(
    sources: SourceFiles,
    columns: list[str],
    on_unreadable: str = "quarantine",
):
    """A lazy Ray Dataset of the declared ``columns`` of every source file.

    Parquet is read with projection pushdown and a ``path`` column (the file of each row);
    hive partition values become columns. CSV and JSON Lines are read as text through
    :func:`rayline.data.readers.text_datasource`, which keeps malformed rows as unreadable
    rows (reason and source set) instead of failing or dropping them; their values are
    parsed by the validator, so a stray value becomes a quarantined row.
    """
    import ray.data

    if sources.format == "parquet":
        # Ray adds a `path` column naming each row's file, unless the data has its own.
        return ray.data.read_parquet(
            sources.files,
            filesystem=sources.filesystem,
            columns=columns,
            include_paths="path" not in columns,
        )
    from rayline.data.readers import text_datasource

    return ray.data.read_datasource(
        text_datasource(
            sources.format,
            sources.files,
            sources.filesystem,
            columns,
            sources.display_names(),
            on_unreadable=on_unreadable,
            partitions={f: hive_values(f) for f in sources.files},
        )
    )
