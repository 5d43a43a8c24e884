"""What ``assign`` reads comes from the one resolver, :func:`streamgmm.inputs.resolve_input`
with ``in_place=True``: rows in memory stay as given (nothing decoded before the pass), a lake
is opened once with the ``keep`` columns, a lake on Dask carries the inputs the output must not
overlap, and an input without rows in a fixed order is refused in one line, with nothing
written.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from streamgmm import ParquetSource, StreamingGaussianMixture, assign
from streamgmm.inputs import InMemoryRows, resolve_input
from streamgmm.io.sources.arrow import TableSource


@pytest.fixture(scope="module")
def records() -> np.ndarray:
    rng = np.random.default_rng(0)
    return np.concatenate([rng.normal(-3, 1, (200, 2)), rng.normal(3, 1, (200, 2))])


@pytest.fixture(scope="module")
def table(records) -> pa.Table:
    return pa.table({"id": np.arange(len(records)), "b": records[:, 1], "a": records[:, 0]})


@pytest.fixture
def lake(tmp_path, table) -> str:
    (tmp_path / "lake" / "day=1").mkdir(parents=True)
    pq.write_table(table, tmp_path / "lake" / "day=1" / "part.parquet", row_group_size=150)
    return str(tmp_path / "lake")


def test_rows_in_memory_are_kept_as_given(records, table) -> None:
    rows = resolve_input(table, n_features=2, feature_names=["a", "b"], passthrough=["id"], in_place=True)
    assert isinstance(rows, InMemoryRows) and rows.table is table and rows.feature_names == ["a", "b"]
    frame = resolve_input(table.to_pandas(), n_features=2, feature_names=["a", "b"], in_place=True)
    assert frame.table.equals(table)
    # Every row of a source that leaves some out when fitting: the pass keeps their places.
    skipping = TableSource(table.to_pandas().assign(a=np.nan), columns=["a", "b"], nan_policy="marginalize")
    assert resolve_input(skipping, n_features=2, feature_names=["a", "b"], in_place=True).table is skipping.table
    array = resolve_input(records, n_features=2, in_place=True)
    assert array.feature_names == ["x0", "x1"] and array.table.column_names == ["x0", "x1"]
    np.testing.assert_array_equal(array.table["x1"].to_numpy(), records[:, 1])
    with pytest.raises(ValueError, match=r"shape \(n_records, 3\)"):
        resolve_input(records, n_features=3, in_place=True)


def test_a_lake_is_opened_once_with_the_kept_columns(lake) -> None:
    resolved = resolve_input(lake, n_features=2, feature_names=["a", "b"], passthrough=["id"], in_place=True)
    assert isinstance(resolved, ParquetSource)
    assert resolved.feature_names == ["a", "b"] and resolved.passthrough == ["id"]
    listed = resolve_input([lake + "/day=1/part.parquet"], n_features=2, feature_names=["a", "b"], in_place=True)
    assert isinstance(listed, ParquetSource), "a list of paths is a lake, not rows"


def test_a_lake_on_dask_carries_the_inputs_the_output_must_not_overlap(lake) -> None:
    pytest.importorskip("dask")
    resolved = resolve_input(lake, engine="dask", n_features=2, feature_names=["a", "b"], in_place=True)
    assert type(resolved).__name__ == "DaskSource"
    assert resolved.inputs == ParquetSource(lake).listing.inputs and len(resolved.inputs) == 1


@pytest.mark.parametrize("form", ["chunks", "record batches"])
def test_an_input_without_rows_in_place_is_refused_with_nothing_written(records, table, tmp_path, form) -> None:
    model = StreamingGaussianMixture(2, random_state=0).fit(pd.DataFrame({"a": records[:, 0], "b": records[:, 1]}))
    data = iter([records]) if form == "chunks" else table.to_batches()
    out = tmp_path / "scored"
    with pytest.raises(TypeError, match="rows in a fixed order"):
        assign(model, data, out)
    assert not out.exists()
