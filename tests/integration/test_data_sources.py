"""Sources and the data contract end to end through Ray Data: JSON Lines, CSV and
hive-partitioned Parquet, an S3-compatible server on loopback, rule counts, and the bad-input
cases — each checks the message and that every input row is accounted for."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import time

import pandas as pd
import pytest

from rayline.config import validate_config
from rayline.data.split import SPLIT_COL
from rayline.data.validate import REASON_COL, RULES_COL, SOURCE_COL
from rayline.errors import DataSourceError, DataValidationError
from rayline.pipeline import run_validation

from .conftest import base_config, free_port, make_table

pytestmark = pytest.mark.integration

S3_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
}


@pytest.fixture(scope="module")
def s3_endpoint():
    """A real S3-compatible server (moto's standalone mode) on loopback.

    Requested before ``ray_session`` so that Ray's workers inherit the credentials.
    """
    saved = {k: os.environ.get(k) for k in S3_ENV}
    os.environ.update(S3_ENV)
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from moto.server import main; main()",
            "-H",
            "127.0.0.1",
            "-p",
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.2)
    else:
        proc.kill()
        pytest.fail("moto server did not start")
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(timeout=10)
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


#: Staging paths for a Parquet input: small inputs are staged in-process with pyarrow by
#: default (runtime.in_process_max_rows); 0 sends the same input through Ray Data.
WHERE = ["in_process", "ray_data"]


def _cfg(path, storage, where="in_process", **schema_extra):
    raw = base_config(path, storage)
    raw["data"]["path"] = path
    raw["schema"].update(schema_extra)
    if where == "ray_data":
        raw["runtime"]["in_process_max_rows"] = 0
    return raw


def _staged(report, split: str) -> pd.DataFrame:
    return pd.read_parquet(f"{report.staged_path}/{SPLIT_COL}={split}")


@pytest.mark.parametrize("where", WHERE)
def test_jsonl_and_csv_keep_every_row_and_name_the_source_of_bad_ones(
    s3_endpoint, ray_session, tmp_path, where, caplog
):
    caplog.set_level(logging.INFO, logger="rayline.data.stage")
    df = make_table(300)
    d = tmp_path / "jsonl"
    d.mkdir()
    lines = [r.to_json() for _, r in df.iterrows()]
    lines[10] = '{"user_id": 10, "age": '  # truncated line
    lines[20] = lines[20].replace('"plan":"', '"plan":"gold').replace("gold", "gold", 1)
    (d / "a.jsonl").write_text("\n".join(lines[:150]) + "\n")
    (d / "b.jsonl").write_text("\n".join(lines[150:]) + "\n")
    report = run_validation(validate_config(_cfg(str(d), str(tmp_path / "runs"), where)))
    assert ("bytes of json in this process" in caplog.text) == (where == "in_process")
    assert report.rows_in == 300 == report.rows_ok + report.rows_quarantined
    assert report.rows_quarantined == 2
    assert report.rule_counts == {"plan.allowed": 1, "row.unreadable": 1}
    q = _staged(report, "quarantine")
    assert set(q[RULES_COL]) == {"plan.allowed", "row.unreadable"}
    assert (q[SOURCE_COL] == str(d / "a.jsonl")).all()
    assert q[REASON_COL].str.contains("a.jsonl line 11").any()
    assert SOURCE_COL not in _staged(report, "train").columns or (
        _staged(report, "train")[SOURCE_COL].isna().all()
    )

    c = tmp_path / "csv"
    c.mkdir()
    text = df.to_csv(index=False).splitlines()
    text[5] = text[5] + ",extra"  # one row with a field too many
    (c / "t.csv").write_text("\n".join(text) + "\n")
    report = run_validation(validate_config(_cfg(str(c), str(tmp_path / "runs2"), where)))
    assert report.rows_in == 300 and report.rule_counts == {"row.unreadable": 1}

    raw = _cfg(str(c), str(tmp_path / "runs3"), where)
    raw["data"]["on_unreadable_row"] = "fail"
    with pytest.raises(DataSourceError, match=r"t\.csv line 6: expected 6 fields, got 7") as e:
        run_validation(validate_config(raw))
    assert "Traceback" not in str(e.value)


@pytest.mark.parametrize("where", WHERE)
def test_hive_partitions_become_columns(s3_endpoint, ray_session, tmp_path, where, caplog):
    df = make_table(200)
    for plan, part in df.groupby("plan"):
        out = tmp_path / "hive" / f"plan={plan}"
        out.mkdir(parents=True)
        part.drop(columns=["plan"]).to_parquet(out / "part-0.parquet", index=False)
    caplog.set_level(logging.INFO, logger="rayline.data.stage")
    report = run_validation(
        validate_config(_cfg(str(tmp_path / "hive"), str(tmp_path / "runs"), where))
    )
    assert report.rows_in == 200 and report.rows_quarantined == 0
    assert sum(report.rows_by_source.values()) == 200
    staged = pd.concat(_staged(report, s) for s in ("train", "val", "test"))
    assert staged.groupby("plan").size().to_dict() == df.groupby("plan").size().to_dict()
    assert ("staging 200 rows in this process" in caplog.text) == (where == "in_process")


@pytest.mark.parametrize("where", WHERE)
def test_unique_regex_and_rule_limits(s3_endpoint, ray_session, tmp_path, where):
    df = make_table(300)
    df["email"] = [f"user{i}@example.com" for i in range(300)]
    df.loc[[3, 4], "email"] = ["not-an-email", "x@y"]
    df.loc[[50, 51, 52], "user_id"] = 7  # user 7 now appears four times
    d = tmp_path / "data"
    d.mkdir()
    df.to_parquet(d / "t.parquet", index=False)
    raw = _cfg(str(d), str(tmp_path / "runs"), where, max_bad_fraction=0.1)
    raw["data"]["split"] = {}
    raw["schema"]["columns"]["user_id"]["unique"] = True
    raw["schema"]["columns"]["email"] = {"type": "string", "regex": r"[^@\s]+@[^@\s]+\.\w+"}
    report = run_validation(validate_config(raw))
    assert report.rule_counts == {"user_id.unique": 4, "email.regex": 2}
    assert report.rows_quarantined == 6 and report.rows_ok == 294
    dup = _staged(report, "quarantine").query("user_id == 7")
    assert len(dup) == 4 and dup[REASON_COL].str.contains("duplicate value 7").all()

    raw["runtime"]["storage_path"] = str(tmp_path / "runs2")
    raw["schema"]["max_bad_fraction_by_rule"] = {"email.regex": 0.001}
    raw["schema"]["columns"]["user_id"]["on_violation"] = "fail"
    with pytest.raises(DataValidationError) as e:
        run_validation(validate_config(raw))
    msg = str(e.value)
    assert "4 row(s) break user_id.unique and schema says on_violation: fail" in msg
    assert "2 of 300 rows (0.67%) break email.regex" in msg
    assert e.value.report.rows_in == 300


@pytest.mark.parametrize("where", WHERE)
def test_inf_is_quarantined_and_nan_is_null_from_parquet(ray_session, tmp_path, where):
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    import ray.data

    from rayline.data.features import fit_from_config

    df = make_table(200)
    income = df["income"].to_numpy().copy()
    income[[3, 4, 5, 6]] = [np.inf, -np.inf, np.nan, np.nan]
    score = np.ones(200)
    score[7] = np.nan
    # pyarrow keeps NaN apart from null only when the arrays are built from lists.
    table = pa.Table.from_pandas(df.drop(columns=["income"]), preserve_index=False)
    table = table.append_column("income", pa.array(income.tolist(), type=pa.float64()))
    table = table.append_column("score", pa.array(score.tolist(), type=pa.float64()))
    assert table.column("income").null_count == 0  # the NaNs are NaN in the file
    d = tmp_path / "data"
    d.mkdir()
    pq.write_table(table, d / "t.parquet")
    raw = _cfg(str(d), str(tmp_path / "runs"), where)
    raw["schema"]["columns"]["score"] = {"type": "float"}
    report = run_validation(validate_config(raw))
    assert report.rule_counts == {"income.finite": 2, "score.nullable": 1}
    assert report.rows_in == 200 and report.rows_quarantined == 3 and report.rows_ok == 197
    q = _staged(report, "quarantine").sort_values("user_id")
    assert q["user_id"].tolist() == [3, 4, 7]
    assert q[REASON_COL].tolist() == [
        "income: not finite (inf)",
        "income: not finite (-inf)",
        "score: null in a non-nullable column",
    ]
    good = pd.concat(_staged(report, s) for s in ("train", "val", "test")).set_index("user_id")
    assert good.loc[[5, 6], "income"].isna().all()  # NaN in a nullable column: a null

    raw["runtime"]["storage_path"] = str(tmp_path / "runs2")
    raw["schema"]["columns"]["income"]["on_violation"] = "fail"
    with pytest.raises(DataValidationError) as e:
        run_validation(validate_config(raw))
    assert "2 row(s) break income.finite and schema says on_violation: fail for 'income'" in str(
        e.value
    )

    # Let through with allow_inf, the default standardization cannot fit: inf and -inf
    # cancel, Ray Data reports no mean, and the column's bounds tell.
    raw["schema"]["columns"]["income"] = {"type": "float", "nullable": True, "allow_inf": True}
    train = df.assign(income=income, score=1.0)
    with pytest.raises(DataValidationError) as e:
        fit_from_config(validate_config(raw), ray.data.from_pandas(train))
    assert str(e.value).startswith(
        "features: the train-split mean of 'income' is not finite (undefined): the column "
        "holds -inf and inf values there"
    )


@pytest.mark.parametrize("where", WHERE)
def test_object_store_source_through_an_s3_server(s3_endpoint, ray_session, tmp_path, where):
    import boto3

    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    s3.create_bucket(Bucket=f"lake-{where}".replace("_", "-"))
    df = make_table(240, bad_rows=2)
    for i, chunk in enumerate((df.iloc[:120], df.iloc[120:])):
        path = tmp_path / f"p{i}.parquet"
        chunk.to_parquet(path, index=False)
        s3.upload_file(str(path), f"lake-{where}".replace("_", "-"), f"churn/day={i}/part.parquet")
    bucket = f"lake-{where}".replace("_", "-")
    raw = _cfg(f"s3://{bucket}/churn", str(tmp_path / "runs"), where)
    raw["data"]["endpoint_url"] = s3_endpoint
    report = run_validation(validate_config(raw))
    assert report.files == [
        f"s3://{bucket}/churn/day=0/part.parquet",
        f"s3://{bucket}/churn/day=1/part.parquet",
    ]
    assert report.rows_in == 240 and report.rows_quarantined == 2
    q = _staged(report, "quarantine")
    assert set(q[SOURCE_COL]) <= set(report.files)

    raw["data"]["path"] = f"s3://{bucket}/nothing/*.parquet"
    with pytest.raises(DataSourceError, match="matches no files"):
        run_validation(validate_config(raw))
    raw["data"]["path"] = "s3://no-such-bucket/x.parquet"
    with pytest.raises(DataSourceError, match="no-such-bucket"):
        run_validation(validate_config(raw))


def test_corrupt_and_empty_files_are_named(s3_endpoint, ray_session, tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    make_table(50).to_parquet(d / "good.parquet", index=False)
    (d / "broken.parquet").write_bytes((d / "good.parquet").read_bytes()[:200])
    with pytest.raises(DataValidationError, match="broken.parquet"):
        run_validation(validate_config(_cfg(str(d), str(tmp_path / "runs"))))
    e = tmp_path / "csv"
    e.mkdir()
    (e / "empty.csv").write_text("")
    with pytest.raises(DataValidationError, match="empty.csv"):
        run_validation(validate_config(_cfg(str(e), str(tmp_path / "runs"))))


def test_profile_in_one_pass_matches_pandas(ray_session):
    import numpy as np
    import ray.data

    from rayline.data.profile import QUANTILES, compute_profile

    df = make_table(3000)
    df.loc[:9, "plan"] = None
    prof = compute_profile(
        ray.data.from_pandas(df),
        {"income": "float", "age": "int", "is_active": "bool", "plan": "string"},
    )
    inc = prof.columns["income"]
    assert prof.rows == 3000 and inc.nulls == int(df["income"].isna().sum()) > 0
    assert inc.mean == pytest.approx(df["income"].mean())
    assert inc.std == pytest.approx(df["income"].std(ddof=0))
    assert (inc.min, inc.max) == (df["income"].min(), df["income"].max())
    ranks = np.searchsorted(np.sort(df["income"].dropna()), inc.quantiles) / df["income"].count()
    assert np.abs(ranks - np.array(QUANTILES)).max() < 0.02
    assert prof.columns["is_active"].mean == pytest.approx(df["is_active"].mean())
    plan = prof.columns["plan"]
    assert plan.nulls == 10
    assert plan.top == df["plan"].value_counts().to_dict() and plan.other_count == 0


def _split(df, where):
    """The train split as the features stage hands it to the fit: a Ray Dataset, or a
    LocalSplit for a small one (the same statistics, no Ray Data job)."""
    import ray.data

    from rayline.data.features import LocalSplit

    return ray.data.from_pandas(df) if where == "ray_data" else LocalSplit(df)


@pytest.mark.parametrize("where", WHERE)
def test_transform_chains_are_fitted_in_rounds_on_the_train_rows(ray_session, where):
    import numpy as np

    from rayline.data.features import fit_from_config

    df = make_table(2000, seed=5)
    raw = base_config("unused", "unused")
    raw["features"] = {
        "transforms": {
            "income": [
                {"op": "impute", "strategy": "median"},
                {"op": "clip", "upper_quantile": 0.9},
                {"op": "standardize"},
            ],
            "plan": [{"op": "index", "min_frequency": 1}],
        },
        "derived": {"ratio": "income / (age + 1)"},
    }
    prep = fit_from_config(validate_config(raw), _split(df, where))
    imp, clip, std = prep.chains["income"]
    inc = df["income"]
    assert abs((inc.dropna() < imp["fill"]).mean() - 0.5) < 0.02  # median, within sketch error
    filled = inc.fillna(imp["fill"])
    assert abs((filled <= clip["upper"]).mean() - 0.9) < 0.02
    clipped = filled.clip(upper=clip["upper"])
    # Round 3's statistics are taken on round 1-2's output, not on the raw column.
    assert std["mean"] == pytest.approx(clipped.mean())
    assert std["std"] == pytest.approx(clipped.std(ddof=0))
    assert prep.chains["plan"][0]["categories"] == df["plan"].value_counts().index.tolist()
    assert "ratio" in [c["name"] for c in prep.numeric]
    x = prep.transform(df.head(3))
    expected = (clipped.head(3) - std["mean"]) / std["std"]
    np.testing.assert_allclose(x[:, prep.feature_names.index("income")], expected, rtol=1e-5)


@pytest.mark.parametrize("where", WHERE)
def test_stateful_user_transform_is_fitted_on_train_rows_and_replayed(ray_session, where):
    import numpy as np

    from rayline.data.features import FittedPreprocessor, fit_from_config

    df = make_table(1500, seed=6)
    raw = base_config("unused", "unused")
    raw["features"] = {
        "user": [
            "tests.integration.feature_fns:add_pro_flag",
            "tests.integration.feature_fns:IncomeVsPlan",
        ],
        "numeric": ["age", "is_pro", "income_vs_plan"],
        "categorical": ["plan"],
    }
    prep = fit_from_config(validate_config(raw), _split(df, where))
    means = prep.user_state["tests.integration.feature_fns:IncomeVsPlan"]["means"]
    expected = df.dropna(subset=["income"]).groupby("plan")["income"].mean().to_dict()
    assert means == pytest.approx(expected)
    # The state travels in the JSON: a reloaded preprocessor transforms rows identically.
    again = FittedPreprocessor.from_json(prep.to_json())
    np.testing.assert_array_equal(again.transform(df.head(50)), prep.transform(df.head(50)))
    col = prep.feature_names.index("income_vs_plan")
    row = df.iloc[0]
    spec = next(c for c in prep.numeric if c["name"] == "income_vs_plan")
    value = (row["income"] - expected[row["plan"]] - spec["mean"]) / spec["std"]
    assert prep.transform(df.head(1))[0, col] == pytest.approx(value, rel=1e-5, abs=1e-6)


def test_a_small_split_is_fitted_in_process_to_the_same_preprocessor(ray_session):
    """The features stage fits a small split in this process (LocalSplit): imputation,
    scaling (a bool and a nullable float among the columns), vocabularies, and the class
    list taken from every row, as a Ray Data job fits them."""
    import json as _json

    import ray.data

    from rayline.data.features import LocalSplit, fit_from_config

    df = make_table(400, seed=7)
    raw = base_config("unused", "unused")
    del raw["schema"]["columns"]["churned"]["allowed"]  # classes come from every row
    cfg = validate_config(raw)
    train, rest = df.iloc[:300].reset_index(drop=True), df.iloc[300:].reset_index(drop=True)
    by_ray = fit_from_config(
        cfg,
        ray.data.from_pandas(train),
        ray.data.from_pandas(train).union(ray.data.from_pandas(rest)),
    )
    here = fit_from_config(cfg, LocalSplit(train), LocalSplit(train).union(LocalSplit(rest)))
    a, b = _json.loads(by_ray.to_json()), _json.loads(here.to_json())
    assert b["classes"] == a["classes"] and b["categorical"] == a["categorical"]
    assert [c["name"] for c in b["numeric"]] == [c["name"] for c in a["numeric"]]
    for x, y in zip(a["numeric"], b["numeric"], strict=True):
        assert y == {
            k: v if isinstance(v, str) else pytest.approx(v, rel=1e-9) for k, v in x.items()
        }
    assert LocalSplit(train).count() == 300
