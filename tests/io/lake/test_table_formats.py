"""Delta and Iceberg tables are read at a snapshot, never with the stale files of their folders,
through the real deltalake and pyiceberg packages."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from shared_helpers import run_streamgmm_here

from streamgmm.io.lake.table_formats import table_format, table_snapshot
from streamgmm.io.records.columns import DataError

deltalake = pytest.importorskip("deltalake")


def records(start: int, n: int) -> pa.Table:
    rng = np.random.default_rng(start)
    return pa.table({"id": np.arange(start, start + n), "x": rng.normal(size=n), "y": rng.normal(size=n)})


def rows_of(files: list[str]) -> int:
    return sum(pq.read_metadata(f).num_rows for f in files)


@pytest.fixture(scope="module")
def delta_table(tmp_path_factory) -> tuple[str, datetime]:
    """Version 0: 1,000 rows; 1: an append of 500; 2: a delete of 300 (a file rewritten)."""
    path = str(tmp_path_factory.mktemp("delta") / "table")
    deltalake.write_deltalake(path, records(0, 1000))
    deltalake.write_deltalake(path, records(1000, 500), mode="append")
    time.sleep(0.05)
    between = datetime.now(UTC)
    time.sleep(0.05)
    deltalake.DeltaTable(path).delete("id < 300")
    return path, between


def test_a_delta_table_is_read_at_its_current_snapshot_not_its_folder(delta_table) -> None:
    path, _ = delta_table
    assert table_format(path) == "delta"
    snapshot = table_snapshot(path)
    expected = deltalake.DeltaTable(path).to_pyarrow_table()
    assert snapshot.version == 2 and snapshot.n_records == expected.num_rows == 1200
    assert rows_of(snapshot.files) == 1200
    # The folder holds the replaced file too: 1,000 + 500 + 700 rows.
    folder = [str(p) for p in Path(path).glob("*.parquet")]
    assert rows_of(folder) == 2200
    ids = pa.concat_tables([pq.read_table(f, columns=["id"]) for f in snapshot.files]).column("id").to_numpy()
    np.testing.assert_array_equal(np.sort(ids), np.arange(300, 1500))


def test_a_delta_table_at_a_version_or_a_time(delta_table) -> None:
    path, between = delta_table
    assert table_snapshot(path, version=0).n_records == 1000
    assert table_snapshot(path, version=1).n_records == 1500
    at = table_snapshot(path, as_of=between)
    assert at.version == 1 and rows_of(at.files) == 1500
    with pytest.raises(DataError, match="no version committed at or before 2001-01-01"):
        table_snapshot(path, as_of="2001-01-01")
    with pytest.raises(DataError, match="cannot load the Delta table at version 9"):
        table_snapshot(path, version=9)
    with pytest.raises(ValueError, match="version or as_of"):
        table_snapshot(path, version=1, as_of=between)


def test_without_the_extra_a_table_is_an_error_naming_it(delta_table) -> None:
    """deltalake made unimportable in a fresh interpreter: the folder is refused, not read stale."""
    path, _ = delta_table
    code = (
        "import sys; sys.modules['deltalake'] = None\n"
        "from streamgmm.io.lake.table_formats import table_snapshot\n"
        f"table_snapshot({path!r})\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "is a Delta table; reading its current snapshot needs the deltalake package" in result.stderr
    assert "pip install 'streamgmm[delta]'" in result.stderr


def test_a_plain_folder_is_no_table(tmp_path) -> None:
    pq.write_table(records(0, 10), tmp_path / "part.parquet")
    assert table_format(str(tmp_path)) is None
    with pytest.raises(DataError, match="not a Delta or Iceberg table"):
        table_snapshot(str(tmp_path))


@pytest.fixture(scope="module")
def iceberg_table(tmp_path_factory) -> tuple[str, list[int]]:
    """Three snapshots: 1,000 rows, an append of 500, a delete of 300 (copy on write)."""
    sql = pytest.importorskip("pyiceberg.catalog.sql")
    pytest.importorskip("sqlalchemy")
    root = tmp_path_factory.mktemp("iceberg")
    catalog = sql.SqlCatalog("test", uri=f"sqlite:///{root}/catalog.db", warehouse=f"file://{root}/warehouse")
    catalog.create_namespace("db")
    table = catalog.create_table("db.records", schema=records(0, 1).schema)
    table.append(records(0, 1000))
    table.append(records(1000, 500))
    table.delete("id < 300")
    table = catalog.load_table("db.records")
    return str(root / "warehouse" / "db" / "records"), [s.snapshot_id for s in table.metadata.snapshots]


def test_an_iceberg_table_is_read_at_its_current_snapshot(iceberg_table) -> None:
    path, snapshots = iceberg_table
    assert table_format(path) == "iceberg"
    snapshot = table_snapshot(path)
    assert snapshot.version == snapshots[-1] and snapshot.n_records == rows_of(snapshot.files) == 1200
    ids = pa.concat_tables([pq.read_table(f, columns=["id"]) for f in snapshot.files]).column("id").to_numpy()
    np.testing.assert_array_equal(np.sort(ids), np.arange(300, 1500))
    assert table_snapshot(path, version=snapshots[0]).n_records == 1000
    with pytest.raises(DataError, match="has no snapshot 7"):
        table_snapshot(path, version=7)


def test_a_delta_table_folder_is_fitted_at_its_snapshot(delta_table, tmp_path) -> None:
    from streamgmm import ParquetSource, StreamingGaussianMixture

    path, between = delta_table
    source = ParquetSource(path, passthrough=["id"])
    assert source.n_records == 1200 and source.feature_names == ["x", "y"]
    files = table_snapshot(path).files
    model = StreamingGaussianMixture(2, random_state=0).fit(source)
    oracle = StreamingGaussianMixture(2, random_state=0).fit(ParquetSource(files, passthrough=["id"]))
    np.testing.assert_array_equal(model.means_, oracle.means_)
    assert ParquetSource(path, version=1).n_records == ParquetSource(path, as_of=between).n_records == 1500
    with pytest.raises(ValueError, match="version and as_of apply to a Delta or Iceberg table"):
        ParquetSource(str(tmp_path), version=1)


def test_cli_fit_of_a_delta_table_at_a_version(delta_table, tmp_path) -> None:
    path, _ = delta_table
    for options, records in (([], 1200), (["--version", "0"], 1000)):
        command = ["fit", path, "-k", "2", "--passthrough", "id", "--json", "--model", tmp_path / f"m{records}.model"]
        result = run_streamgmm_here(*command, *options)
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["records"] == records


def test_an_iceberg_table_folder_is_read_at_its_snapshot(iceberg_table) -> None:
    from streamgmm import ParquetSource

    path, snapshots = iceberg_table
    assert ParquetSource(path, passthrough=["id"]).n_records == 1200
    assert ParquetSource(path, passthrough=["id"], version=snapshots[1]).n_records == 1500


def test_a_delta_table_in_an_object_store_is_read_at_its_snapshot(s3_bucket, tmp_path) -> None:
    """On the moto S3 server: deltalake writes the table (an append, then a delete), and
    streamgmm reads its snapshot, not the prefix's every object."""
    from streamgmm import ParquetSource

    url = f"s3://{s3_bucket}/delta"
    options = {"AWS_ALLOW_HTTP": "true", "AWS_S3_ALLOW_UNSAFE_RENAME": "true"}
    deltalake.write_deltalake(url, records(0, 1000), storage_options=options)
    deltalake.write_deltalake(url, records(1000, 500), mode="append", storage_options=options)
    deltalake.DeltaTable(url, storage_options=options).delete("id < 300")
    assert table_format(url) == "delta"
    assert ParquetSource(url, passthrough=["id"]).n_records == 1200
    assert ParquetSource(url, passthrough=["id"], version=1).n_records == 1500
    result = run_streamgmm_here("fit", url, "-k", "2", "--passthrough", "id", "--json", "--model", tmp_path / "m")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["records"] == 1200
