"""Data frames (polars, DuckDB, pandas) as sources that can be read again: sampling and shuffling
work as for arrays, even on a table sorted by component."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from streamgmm import StreamingGaussianMixture
from streamgmm.datasets.mixtures import make_mixture
from streamgmm.inputs import as_source
from streamgmm.io.records.columns import DataError
from streamgmm.io.sources.arrow import TableSource

polars = pytest.importorskip("polars")
duckdb = pytest.importorskip("duckdb")

FEATURES = ["f0", "f1", "f2"]


@pytest.fixture(scope="module")
def sorted_table() -> tuple[pa.Table, np.ndarray]:
    """Records sorted by their component (the case one-shot streams read from the head get wrong),
    with an id column."""
    X, labels, _ = make_mixture(20_000, 4, 3, random_state=3)
    X = X[np.argsort(labels, kind="stable")]
    columns = {"id": np.arange(len(X))} | {name: X[:, j] for j, name in enumerate(FEATURES)}
    return pa.table(columns), X


def fit(data) -> StreamingGaussianMixture:
    return StreamingGaussianMixture(4, random_state=0).fit(data)


@pytest.mark.parametrize("kind", ["polars", "polars-lazy", "duckdb"])
def test_frames_fit_exactly_as_the_same_numbers_as_an_array(sorted_table, kind) -> None:
    table, X = sorted_table
    if kind == "polars":
        frame = polars.from_arrow(table).drop("id")
    elif kind == "polars-lazy":
        frame = polars.from_arrow(table).lazy().drop("id")
    else:
        connection = duckdb.connect()
        connection.register("records", table)
        frame = connection.sql("select f0, f1, f2 from records order by id")
    source = as_source(frame)
    assert source.reiterable and len(source) == len(X)
    model, oracle = fit(frame), fit(X)
    assert model.feature_names_in_.tolist() == FEATURES
    # The same numbers in the same order give the same fit (to rounding: the frame's columns are
    # laid out differently in memory): the frame was sampled and shuffled as an array is, not read
    # once from its (sorted) head.
    np.testing.assert_allclose(model.means_, oracle.means_, rtol=1e-9, atol=1e-12)
    assert model.score(frame) == pytest.approx(oracle.score(X), rel=1e-12)


def test_table_source_takes_columns_passthrough_and_nan_policy(sorted_table) -> None:
    table, X = sorted_table
    with_gap = table.set_column(1, "f0", pa.array([None] + X[1:, 0].tolist(), pa.float64()))
    frame = polars.from_arrow(with_gap)
    with pytest.raises(
        DataError, match=r"table, row 0, column 'f0': null or NaN .*TableSource\(data, nan_policy='skip'\)"
    ):
        StreamingGaussianMixture(4).fit(frame.drop("id"))
    source = TableSource(frame, columns=["f2", "f0"], passthrough=["id"], nan_policy="skip")
    assert source.feature_names == ["f2", "f0"] and source.skipped_records == 1
    np.testing.assert_array_equal(source.X, X[1:][:, [2, 0]])
    assert source.passthrough_table().column("id").to_pylist() == list(range(1, len(X)))
    # Scoring by a fitted model's names reads the same table by them.
    assert source.with_features(["f0"]).X.shape == (len(X) - 1, 1)


def test_a_table_source_refuses_what_is_not_a_table() -> None:
    with pytest.raises(TypeError, match="cannot read a table from int"):
        TableSource(3)


def test_assign_writes_a_frames_passthrough_columns_and_keeps_skipped_rows_in_place(sorted_table, tmp_path) -> None:
    from streamgmm import assign

    table, X = sorted_table
    with_gap = table.set_column(1, "f0", pa.array([None] + X[1:, 0].tolist(), pa.float64()))
    source = TableSource(polars.from_arrow(with_gap), passthrough=["id"], nan_policy="skip")
    model = StreamingGaussianMixture(4, random_state=0).fit(source)
    summary = assign(model, source, tmp_path / "out", keep=["id"])
    assert summary.rows == len(X) and summary.skipped == 1
    written = pq.read_table(summary.outputs[0])
    assert written.column("id").to_pylist() == list(range(len(X)))
    assert written.column("log_likelihood")[0].as_py() is None
    np.testing.assert_allclose(written.column("log_likelihood").to_numpy()[1:], model.score_samples(X[1:]), rtol=1e-12)
