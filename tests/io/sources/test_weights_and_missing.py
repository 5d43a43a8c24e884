"""Record weights (``weight_column``) and ``nan_policy="marginalize"`` in the readers: FeatureReader,
ParquetSource (in order, shuffled, sampled, other columns), TableSource and arrow_source, on real
Parquet files."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from shared_helpers import all_records

from streamgmm import DataError, ParquetSource, StreamingGaussianMixture
from streamgmm.io.records.columns import FeatureReader
from streamgmm.io.sources.arrow import TableSource, arrow_source


def test_feature_reader_marginalize_keeps_incomplete_rows_and_counts_empty_ones():
    batch = pa.record_batch(
        {"x": [1.0, None, np.nan, None, 5.0], "y": pa.array([2, 3, None, None, 6], type=pa.int32())}
    )
    reader = FeatureReader(["x", "y"], "marginalize")
    X = reader.features(batch, "f.parquet: row group 0")
    np.testing.assert_array_equal(X, [[1.0, 2.0], [np.nan, 3.0], [5.0, 6.0]])
    assert reader.skipped == 2
    # A batch with every row observed somewhere is taken whole, without a mask.
    _, mask = reader.read(pa.record_batch({"x": [None, 1.0], "y": [1.0, None]}), "here")
    assert mask is None and reader.skipped == 2


@pytest.mark.parametrize("value", [np.inf, -np.inf])
def test_feature_reader_marginalize_refuses_infinity(value):
    batch = pa.record_batch({"x": [1.0, 2.0, 3.0], "y": [1.0, value, None]})
    with pytest.raises(DataError, match=r"f.parquet: row group 2, row 11, column 'y': .*inf.*not missing"):
        FeatureReader(["x", "y"], "marginalize").features(batch, "f.parquet: row group 2", first_row=10)


def test_feature_reader_puts_weights_last_and_checks_them_under_every_policy():
    batch = pa.record_batch({"x": [1.0, None, 3.0], "w": pa.array([2, 5, 0], type=pa.int64())})
    X = FeatureReader(["x"], "skip", weight_column="w").features(batch, "here")
    np.testing.assert_array_equal(X, [[1.0, 2.0], [3.0, 0.0]])
    bad = pa.record_batch({"x": [1.0, None, 3.0], "w": [2.0, -1.0, 1.0]})
    for policy in ("raise", "skip", "marginalize"):
        # The bad weight is on a row skip would drop: it is an error all the same.
        with pytest.raises(DataError, match=r"here, row 1, column 'w': weight -1 \(record weights"):
            FeatureReader(["x"], policy, weight_column="w").features(bad, "here")


def write_weighted_lake(path, rng, n_files=2, rows=300, row_group_size=128):
    """Files of x, y, an id and a count; the count is a function of the id so that a record and its
    weight can be matched after shuffling."""
    path.mkdir()
    start = 0
    for i in range(n_files):
        ids = np.arange(start, start + rows)
        X = rng.normal(size=(rows, 2))
        table = pa.table({"id": ids, "x": X[:, 0], "y": X[:, 1], "count": (ids % 4).astype(np.int32)})
        pq.write_table(table, path / f"part-{i}.parquet", row_group_size=row_group_size)
        start += rows
    return path


def test_parquet_source_weighted_batches_samples_and_shuffle(tmp_path):
    lake = write_weighted_lake(tmp_path / "lake", np.random.default_rng(0))
    source = ParquetSource(lake, weight_column="count")
    # The count column is not a feature, the id is only when not passed through.
    assert source.feature_names == ["id", "x", "y"] and source.n_features == 3 and source.weighted
    source = ParquetSource(lake, passthrough=["id"], weight_column="count")
    assert source.feature_names == ["x", "y"]
    with_ids = ParquetSource(lake, columns=["id", "x"], weight_column="count")
    for rng in (None, np.random.default_rng(1)):
        rows = all_records(with_ids.batches(100, rng))
        assert rows.shape == (600, 3)
        np.testing.assert_array_equal(rows[:, 2], rows[:, 0] % 4)  # each record with its own weight
    sample = all_records(with_ids.sample(50, np.random.default_rng(2)))
    assert sample.shape == (50, 3)
    np.testing.assert_array_equal(sample[:, 2], sample[:, 0] % 4)
    X, w = next(source.batches(64))
    assert X.shape == (64, 2) and w.shape == (64,)
    other = source.with_features(["y", "x"])
    assert other.weighted and other.feature_names == ["y", "x"]
    assert not ParquetSource(lake, passthrough=["id"]).weighted


def test_parquet_source_marginalize_counts_rows_with_nothing_observed(tmp_path):
    x = [1.0, None, None, 4.0, np.nan, 6.0]
    y = [1.0, 2.0, None, None, np.nan, 6.0]
    pq.write_table(pa.table({"x": x, "y": y, "w": [1, 1, 1, 2, 1, 3]}), tmp_path / "a.parquet", row_group_size=4)
    source = ParquetSource(tmp_path, nan_policy="marginalize", weight_column="w")
    rows = all_records(source.batches(10))
    np.testing.assert_array_equal(rows, [[1, 1, 1], [np.nan, 2, 1], [4, np.nan, 2], [6, 6, 3]])
    assert source.skipped_records == 2
    skip = ParquetSource(tmp_path, columns=["x", "y"], nan_policy="skip")
    assert skip.sample(10, np.random.default_rng(0)).features.shape == (2, 2)
    assert skip.skipped_records == 4  # a sample of the whole lake counts what it left out


@pytest.mark.parametrize(
    ("weights", "expected"),
    [
        (pa.array([1.0, 2.0, -0.5, 1.0]), r"weight -0\.5"),
        (pa.array([1, 2, None, 1], type=pa.int64()), r"weight null or NaN"),
        (pa.array([1.0, 2.0, np.nan, 1.0]), r"weight null or NaN"),
        (pa.array([1.0, 2.0, np.inf, 1.0]), r"weight inf"),
    ],
)
def test_bad_weights_name_file_row_group_row_and_column(tmp_path, weights, expected):
    # Row 2 of the file is row 0 of its second row group; the error counts rows in the file.
    table = pa.table({"x": [0.0, 1.0, 2.0, 3.0], "count": weights})
    pq.write_table(table, tmp_path / "bad.parquet", row_group_size=2)
    source = ParquetSource(tmp_path, weight_column="count", nan_policy="skip")
    pattern = rf"bad\.parquet: row group 1, row 2, column 'count': {expected} \(record weights must be finite"
    with pytest.raises(DataError, match=pattern):
        list(source.batches(10))
    with pytest.raises(DataError, match=pattern):
        source.sample(10, np.random.default_rng(0))


def test_weight_column_missing_or_not_numeric_or_a_feature(tmp_path):
    table = pa.table({"x": [0.0, 1.0], "label": ["a", "b"]})
    pq.write_table(table, tmp_path / "one.parquet")
    with pytest.raises(DataError, match=r"one\.parquet: no column 'count' \(columns: x, label\)"):
        ParquetSource(tmp_path, weight_column="count")
    with pytest.raises(DataError, match=r"one\.parquet: column 'label' is string, not numeric"):
        ParquetSource(tmp_path, weight_column="label")
    with pytest.raises(ValueError, match="weight column 'x' cannot also be a feature"):
        ParquetSource(tmp_path, columns=["x"], weight_column="x")


def test_weight_column_missing_from_a_later_file_is_schema_drift(tmp_path):
    pq.write_table(pa.table({"x": [0.0, 1.0], "count": [1, 2]}), tmp_path / "a.parquet")
    pq.write_table(pa.table({"x": [0.0, 1.0]}), tmp_path / "b.parquet")
    with pytest.raises(DataError, match=r"column 'count' is missing from .*b\.parquet"):
        ParquetSource(tmp_path, weight_column="count")


def test_table_source_and_arrow_source_are_weighted():
    table = pa.table({"id": [1, 2, 3, 4], "x": [1.0, None, None, 4.0], "y": [1.0, 2.0, None, 4.0], "w": [1, 2, 3, 0]})
    source = TableSource(table, passthrough=["id"], weight_column="w", nan_policy="marginalize")
    assert source.weighted and source.feature_names == ["x", "y"] and source.n_features == 2
    np.testing.assert_array_equal(all_records(source.batches(2)), [[1, 1, 1], [np.nan, 2, 2], [4, 4, 0]])
    np.testing.assert_array_equal(source.X, [[1, 1], [np.nan, 2], [4, 4]])
    assert source.skipped_records == 1 and source.passthrough_table()["id"].to_pylist() == [1, 2, 4]
    assert all_records(source.with_features(["y", "x"]).sample(5, np.random.default_rng(0))).shape == (3, 3)
    for data in (table, iter(table.to_batches(max_chunksize=2))):
        other = arrow_source(data, passthrough=["id"], weight_column="w", nan_policy="marginalize")
        assert other.weighted and other.n_features == 2
        np.testing.assert_array_equal(all_records(other.batches(10)), [[1, 1, 1], [np.nan, 2, 2], [4, 4, 0]])
    with pytest.raises(DataError, match=r"table, row 1, column 'w': weight -2"):
        TableSource(pa.table({"x": [1.0, 2.0], "w": [1, -2]}), weight_column="w")


def test_batch_em_on_a_count_column_equals_em_on_the_duplicated_lake(tmp_path):
    """Oracle: a record of count c is c copies of the record (zero: no record). Same start, same
    number of exact EM iterations: the parameters agree to 1e-10."""
    rng = np.random.default_rng(3)
    X = np.concatenate([rng.normal(-2, 1, (300, 2)), rng.normal(2, 0.7, (300, 2))])
    counts = rng.integers(0, 4, size=600)
    (tmp_path / "weighted").mkdir()
    (tmp_path / "duplicated").mkdir()
    pq.write_table(
        pa.table({"x": X[:, 0], "y": X[:, 1], "count": counts}), tmp_path / "weighted/a.parquet", row_group_size=100
    )
    Xd = np.repeat(X, counts, axis=0)
    pq.write_table(pa.table({"x": Xd[:, 0], "y": Xd[:, 1]}), tmp_path / "duplicated/a.parquet", row_group_size=100)
    start = {
        "weights_init": [0.5, 0.5],
        "means_init": [[-1.0, -1.0], [1.0, 1.0]],
        "precisions_init": np.stack([np.eye(2), np.eye(2)]),
    }
    fits = []
    for source in (
        ParquetSource(tmp_path / "weighted", weight_column="count"),
        ParquetSource(tmp_path / "duplicated"),
    ):
        model = StreamingGaussianMixture(2, algorithm="batch", max_iter=15, tol=0.0, batch_size=128, **start)
        with pytest.warns(Warning):  # stopped at max_iter (tol=0)
            fits.append(model.fit(source))
    weighted, duplicated = fits
    assert weighted.feature_names_in_.tolist() == ["x", "y"]
    np.testing.assert_allclose(weighted.means_, duplicated.means_, rtol=0, atol=1e-10)
    np.testing.assert_allclose(weighted.covariances_, duplicated.covariances_, rtol=0, atol=1e-10)
    np.testing.assert_allclose(weighted.weights_, duplicated.weights_, rtol=0, atol=1e-10)
    # The counts matter: the unweighted fit is elsewhere.
    plain = StreamingGaussianMixture(2, algorithm="batch", max_iter=15, tol=0.0, batch_size=128, **start)
    with pytest.warns(Warning):
        plain.fit(ParquetSource(tmp_path / "weighted", columns=["x", "y"]))
    assert np.abs(plain.means_ - weighted.means_).max() > 1e-3
