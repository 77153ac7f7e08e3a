"""Streaming at scale: a dataset several times larger than Ray's object store goes through
ingest -> validate -> features -> iter_torch_batches, with every row accounted for.

The module starts its own Ray with a small object store (128 MiB); the synthetic input holds
~4x that much once decoded. Peak memory (PSS of the driver and the Ray workers) is printed for
the record; limits on it belong in benchmarks, not in assertions.
"""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from rayline.config import RuntimeConfig, validate_config
from rayline.data.ingest import fingerprint, resolve_sources
from rayline.data.stage import stage
from rayline.data.synth import synthetic_config, write_synthetic
from rayline.memory import PeakMemory
from rayline.runtime import init_ray

pytestmark = pytest.mark.integration

OBJECT_STORE = 128 * 2**20
ROWS, COLS = 1_500_000, 40


@pytest.fixture(scope="module")
def small_store_ray():
    import ray

    if ray.is_initialized():
        ray.shutdown()
    init_ray(RuntimeConfig(num_cpus=8, object_store_memory=OBJECT_STORE))
    assert ray.cluster_resources()["object_store_memory"] <= OBJECT_STORE * 1.01
    yield
    ray.shutdown()


def test_larger_than_object_store_streams_through_with_every_row_counted(small_store_ray, tmp_path):
    from rayline.data.stage import read_split
    from rayline.train.loop import batch_iter_options
    from rayline.train.trainer import as_datasets, build_datasets

    files = write_synthetic(tmp_path / "data", ROWS, COLS, shards=6)
    decoded = sum(pq.read_metadata(f).num_rows for f in files) * (COLS + 2) * 8
    assert decoded > 3 * OBJECT_STORE  # the premise: far more data than the store holds

    cfg = validate_config(
        {**synthetic_config(str(tmp_path / "data"), COLS), "runtime": {"storage_path": "x"}}
    )
    with PeakMemory() as mem:
        sources = resolve_sources(cfg.data.path)
        report = stage(cfg, sources, fingerprint(sources), str(tmp_path / "run"))
        prep = _fit(cfg, report.staged_path)
        seen = 0
        for batch in as_datasets(build_datasets(report.staged_path, prep))[
            "train"
        ].iter_torch_batches(**batch_iter_options(8192)):
            assert batch["x"].shape[1] == prep.output_dim
            seen += len(batch["y"])
    assert report.rows_in == ROWS == sum(report.rows_by_source.values())
    assert report.rows_ok + report.rows_quarantined == ROWS and report.rows_quarantined == 0
    assert seen == report.splits["train"]
    assert read_split(report.staged_path, "val").count() == report.splits["val"]
    print(f"\npeak memory over {ROWS} rows x {COLS} columns: {mem.summary_mb()}")


def _fit(cfg, staged_path):
    from rayline.data import features
    from rayline.data.stage import read_split

    return features.fit_from_config(cfg, read_split(staged_path, "train"))
