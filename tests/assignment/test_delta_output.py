"""``assign(..., out_format="delta")``: the responsibilities as one commit of a Delta table, read
back through the real deltalake package."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from shared_helpers import run_streamgmm

from streamgmm import DataError, StreamingGaussianMixture, assign
from streamgmm.assignment.delta_output import FINGERPRINT_KEY

deltalake = pytest.importorskip("deltalake")


@pytest.fixture(scope="module")
def lake(make_lake):
    return make_lake(
        "delta_output", n_records=6_000, n_components=3, n_features=2, n_files=3, row_group_size=1000, seed=8
    )


@pytest.fixture(scope="module")
def model(lake):
    return StreamingGaussianMixture(3, random_state=0).fit(str(lake.path))


def sorted_by_id(table: pa.Table) -> pa.Table:
    return table.sort_by("id")


def test_a_delta_output_holds_what_the_parquet_output_holds(lake, model, tmp_path) -> None:
    parquet = assign(model, str(lake.path), tmp_path / "parquet", keep=["id"])
    delta = assign(model, str(lake.path), tmp_path / "delta", keep=["id"], out_format="delta")
    table = deltalake.DeltaTable(str(tmp_path / "delta"))
    assert table.version() == 0 and delta.rows == parquet.rows == 6_000
    written = pa.concat_tables([pq.read_table(path) for path in parquet.outputs]).replace_schema_metadata(None)
    assert sorted_by_id(table.to_pyarrow_table()).equals(sorted_by_id(written))
    assert table.history(1)[0][FINGERPRINT_KEY] == model.params_.fingerprint()  # which model wrote it
    assert not (tmp_path / "delta" / "_SUCCESS").exists()


def test_a_second_delta_output_needs_overwrite_and_makes_a_new_version(lake, model, tmp_path) -> None:
    out = tmp_path / "delta"
    assign(model, str(lake.path), out, keep=["id"], out_format="delta")
    with pytest.raises(ValueError, match="holds a Delta table; pass overwrite=True"):
        assign(model, str(lake.path), out, out_format="delta")
    assign(model, str(lake.path), out, out_format="delta", overwrite=True)
    table = deltalake.DeltaTable(str(out))
    assert table.version() == 1 and "id" not in table.to_pyarrow_table().column_names
    assert deltalake.DeltaTable(str(out), version=0).to_pyarrow_table().num_rows == 6_000


def test_a_failed_delta_output_commits_nothing(lake, model, tmp_path) -> None:
    bad = tmp_path / "bad"
    bad.mkdir()
    for name in lake.files:
        table = pq.read_table(lake.path / name)
        pq.write_table(table, bad / name.replace("/", "_"), row_group_size=1000)
    last = sorted(bad.iterdir())[-1]
    table = pq.read_table(last)
    x = table.column("x0").to_numpy().copy()
    x[-1] = np.nan
    pq.write_table(table.set_column(table.schema.get_field_index("x0"), "x0", pa.array(x)), last, row_group_size=1000)
    with pytest.raises(DataError, match=rf"{last.name}: row group 1, row 1999, column 'x0'"):
        assign(model, str(bad), tmp_path / "out", keep=["id"], out_format="delta")
    assert not deltalake.DeltaTable.is_deltatable(str(tmp_path / "out"))


def test_cli_assign_out_format_delta(lake, model, tmp_path) -> None:
    model.save(tmp_path / "m.model")
    result = run_streamgmm(
        "assign", lake.path, "--model", tmp_path / "m.model", "--out", tmp_path / "scored", "--out-format", "delta",
        "--keep", "id", "--json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["records"] == 6_000
    assert deltalake.DeltaTable(str(tmp_path / "scored")).to_pyarrow_table().num_rows == 6_000
