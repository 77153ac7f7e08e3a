"""Behaviour of the deterministic train/val/test split (rayline.data.split)."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest

from rayline.config import ColumnSpec, SplitConfig
from rayline.data.split import SPLITS, assign_split, split_fractions
from rayline.data.validate import REASON_COL, validate_batch

COLUMNS = {
    "x": ColumnSpec(type="float", nullable=True),
    "n": ColumnSpec(type="int"),
    "flag": ColumnSpec(type="bool"),
    "city": ColumnSpec(type="string", nullable=True),
    "user": ColumnSpec(type="int"),
}
NAMES = list(COLUMNS)


def raw_frame(rows: int, seed: int = 0) -> pd.DataFrame:
    """Natively typed rows (as a Parquet file would give them)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=rows).round(6)
    x[rng.random(rows) < 0.05] = np.nan
    city = rng.choice(np.array(["paris", "oslo", "lima", None], dtype=object), size=rows)
    return pd.DataFrame(
        {
            "x": x,
            "n": rng.integers(-1000, 1000, size=rows),
            "flag": rng.random(rows) < 0.5,
            "city": city,
            "user": rng.integers(0, 300, size=rows),
        }
    )


def staged(df: pd.DataFrame) -> pd.DataFrame:
    """What staging hands to assign_split: validated, typed, reason dropped."""
    out = validate_batch(df, COLUMNS)
    assert out[REASON_COL].isna().all()
    return out.drop(columns=[REASON_COL])


def via_csv(df: pd.DataFrame) -> pd.DataFrame:
    """The same rows written as CSV and read back as text, as read_dataset does for CSV."""
    text = df.to_csv(index=False)
    convert = pacsv.ConvertOptions(
        column_types={c: pa.string() for c in NAMES}, strings_can_be_null=True
    )
    table = pacsv.read_csv(io.BytesIO(text.encode()), convert_options=convert)
    out = table.to_pandas()
    assert all(pd.api.types.is_string_dtype(out[c]) for c in NAMES)
    return out


def split(df: pd.DataFrame, cfg: SplitConfig | None = None) -> np.ndarray:
    return assign_split(staged(df), cfg or SplitConfig(), NAMES)


@pytest.fixture(scope="module")
def rows() -> pd.DataFrame:
    return raw_frame(3000)


@pytest.fixture(scope="module")
def reference(rows) -> np.ndarray:
    return split(rows)


def test_values_are_only_the_three_splits(reference):
    assert set(np.unique(reference)) == set(SPLITS)


def test_same_rows_same_split_on_rerun(rows, reference):
    np.testing.assert_array_equal(split(rows.copy()), reference)


def test_row_order_does_not_matter(rows, reference):
    perm = np.random.default_rng(1).permutation(len(rows))
    shuffled = split(rows.iloc[perm].reset_index(drop=True))
    np.testing.assert_array_equal(shuffled, reference[perm])


def test_batch_boundaries_do_not_matter(rows, reference):
    bounds = [0, 1, 8, 500, 501, 1777, 2999, len(rows)]
    parts = [split(rows.iloc[a:b]) for a, b in zip(bounds, bounds[1:], strict=False)]
    np.testing.assert_array_equal(np.concatenate(parts), reference)


def test_adding_rows_does_not_move_old_ones(rows, reference):
    more = pd.concat([rows, raw_frame(500, seed=9)], ignore_index=True)
    np.testing.assert_array_equal(split(more)[: len(rows)], reference)


def test_csv_text_and_native_types_split_the_same(rows, reference):
    from_csv = via_csv(rows)
    np.testing.assert_array_equal(split(from_csv), reference)


def test_csv_text_split_is_batch_independent(rows, reference):
    from_csv = via_csv(rows)
    parts = [split(from_csv.iloc[a : a + 700]) for a in range(0, len(from_csv), 700)]
    np.testing.assert_array_equal(np.concatenate(parts), reference)


def test_column_list_order_does_not_matter(rows):
    df = staged(rows)
    a = assign_split(df, SplitConfig(), NAMES)
    b = assign_split(df, SplitConfig(), NAMES[::-1])
    np.testing.assert_array_equal(a, b)


def test_split_depends_on_row_content(rows):
    df = staged(rows)
    changed = df.copy()
    changed["x"] = changed["x"] + 1.0
    moved = assign_split(df, SplitConfig(), NAMES) != assign_split(changed, SplitConfig(), NAMES)
    assert moved.mean() > 0.3


def test_fractions_are_in_unit_interval(rows):
    u = split_fractions(staged(rows), SplitConfig(), NAMES)
    assert u.dtype == np.float64
    assert (u >= 0).all() and (u < 1).all()


def test_fractions_are_respected_on_20k_rows():
    cfg = SplitConfig(train=0.6, val=0.25, test=0.15)
    where = split(raw_frame(20_000, seed=3), cfg)
    for name, want in (("train", 0.6), ("val", 0.25), ("test", 0.15)):
        assert abs((where == name).mean() - want) < 0.02, name


def test_default_fractions_are_respected_on_20k_rows():
    where = split(raw_frame(20_000, seed=4))
    for name, want in (("train", 0.7), ("val", 0.15), ("test", 0.15)):
        assert abs((where == name).mean() - want) < 0.02, name


def test_a_different_seed_changes_assignments(rows, reference):
    other = split(rows, SplitConfig(seed=1))
    changed = (other != reference).mean()
    # Independent draws at 70/15/15 disagree on about 46% of rows.
    assert 0.3 < changed < 0.6
    assert set(np.unique(other)) == set(SPLITS)


def test_key_puts_all_rows_of_a_key_together(rows):
    cfg = SplitConfig(key="user")
    where = split(rows, cfg)
    per_user = pd.DataFrame({"user": rows["user"], "split": where}).groupby("user")["split"]
    assert (per_user.nunique() == 1).all()
    assert set(np.unique(where)) == set(SPLITS)


def test_key_split_ignores_other_columns(rows):
    cfg = SplitConfig(key="user")
    df = staged(rows)
    other = df.copy()
    other["x"] = 0.0
    other["city"] = "elsewhere"
    np.testing.assert_array_equal(assign_split(df, cfg, NAMES), assign_split(other, cfg, NAMES))


def test_key_split_is_the_same_from_csv(rows):
    cfg = SplitConfig(key="user")
    np.testing.assert_array_equal(split(via_csv(rows), cfg), split(rows, cfg))


def test_key_fractions_are_respected_over_keys():
    df = pd.DataFrame({"k": np.arange(20_000), "v": 0.0})
    where = assign_split(df, SplitConfig(key="k"), ["k", "v"])
    assert abs((where == "train").mean() - 0.7) < 0.02
    assert abs((where == "val").mean() - 0.15) < 0.02


def test_a_few_rows_of_a_staged_split_are_read_in_process_with_only_the_asked_columns(tmp_path):
    """The model's input example: the first rows of the test split, input columns only,
    read with pyarrow across the split's files (no Ray Data job)."""
    import pyarrow.parquet as pq

    from rayline.data.stage import SPLIT_COL, read_split_frame
    from rayline.data.validate import RULES_COL, SOURCE_COL
    from rayline.stages.register import input_example

    test_dir = tmp_path / f"{SPLIT_COL}=test"
    test_dir.mkdir()
    for i, part in enumerate((raw_frame(3, seed=1), raw_frame(4, seed=2))):
        extra = {
            REASON_COL: [""] * len(part),
            RULES_COL: [""] * len(part),
            SOURCE_COL: ["f"] * len(part),
        }
        pq.write_table(pa.Table.from_pandas(part.assign(**extra)), test_dir / f"part-{i}.parquet")

    class Prep:
        input_columns = ["x", "city"]

    example = input_example(str(tmp_path), Prep())
    assert list(example.columns) == ["x", "city"]
    assert len(example) == 5  # 3 rows of the first file, 2 of the second
    assert list(example.index) == [0, 1, 2, 3, 4]
    whole = read_split_frame(str(tmp_path), "test")
    assert len(whole) == 7 and REASON_COL not in whole.columns
    expected = whole[["x", "city"]].head(5).reset_index(drop=True)
    pd.testing.assert_frame_equal(example, expected)
    with pytest.raises(Exception, match="the val split is empty"):
        read_split_frame(str(tmp_path), "val", rows=5)
