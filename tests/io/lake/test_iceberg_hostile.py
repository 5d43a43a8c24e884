"""Iceberg tables under unlucky input: a damaged ``version-hint.text``, files left open, and
tables in an object store (moto's S3 server, a real process on loopback).

Oracles: pyiceberg's own scan of the same table (its rows), and a fit of the snapshot's files
named one by one.
"""

from __future__ import annotations

import gc
import json
import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from shared_helpers import run_streamgmm, run_streamgmm_here

from streamgmm import ParquetSource, StreamingGaussianMixture
from streamgmm.io.lake.table_formats import table_format, table_snapshot
from streamgmm.io.records.columns import DataError

sql = pytest.importorskip("pyiceberg.catalog.sql")
pytest.importorskip("sqlalchemy")


def records(start: int, n: int) -> pa.Table:
    rng = np.random.default_rng(start)
    x = np.concatenate([rng.normal(0, 1, n // 2), rng.normal(5, 1, n - n // 2)])
    return pa.table({"id": np.arange(start, start + n), "x": x, "y": rng.normal(size=n)})


def three_snapshots(catalog) -> tuple[object, list[int]]:
    """1,000 rows, an append of 500, a delete of 300 (copy on write)."""
    catalog.create_namespace("db")
    table = catalog.create_table("db.records", schema=records(0, 2).schema)
    table.append(records(0, 1000))
    table.append(records(1000, 500))
    table.delete("id < 300")
    table = catalog.load_table("db.records")
    return table, [s.snapshot_id for s in table.metadata.snapshots]


@pytest.fixture
def local_table(tmp_path) -> str:
    root = tmp_path / "iceberg"
    root.mkdir()
    catalog = sql.SqlCatalog("test", uri=f"sqlite:///{root}/catalog.db", warehouse=f"file://{root}/warehouse")
    three_snapshots(catalog)
    return str(root / "warehouse" / "db" / "records")


def test_the_version_hint_is_read_and_closed(local_table) -> None:
    metadata = Path(local_table) / "metadata"
    newest = max(metadata.glob("*.metadata.json"), key=lambda p: int(p.name.split("-")[0]))
    shutil.copy(newest, metadata / "v7.metadata.json")
    (metadata / "version-hint.text").write_text("7\n")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        snapshot = table_snapshot(local_table)
        gc.collect()
    assert snapshot.n_records == 1200
    unclosed = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    assert unclosed == [], unclosed


@pytest.mark.parametrize("hint", [b"\xff\xfe7\n", b"7\xc3"])
def test_a_version_hint_that_is_not_text_is_an_error_naming_it(local_table, hint) -> None:
    path = Path(local_table) / "metadata" / "version-hint.text"
    path.write_bytes(hint)
    with pytest.raises(DataError) as refused:
        table_snapshot(local_table)
    message = str(refused.value)
    assert message.startswith(f"{path}: ") and "\n" not in message, message
    result = run_streamgmm_here("info", local_table)
    assert result.returncode == 1 and result.stderr == f"streamgmm: error: {message}\n", result.stderr


def test_an_iceberg_table_in_an_object_store_is_read_at_its_snapshot(
    s3_bucket, s3_server, tmp_path, monkeypatch
) -> None:
    """pyiceberg writes the table on the S3 server; streamgmm reads its snapshot with the
    standard variables, or with --storage-option alone."""
    env = s3_server.env
    properties = {
        "s3.endpoint": env["AWS_ENDPOINT_URL"],
        "s3.access-key-id": env["AWS_ACCESS_KEY_ID"],
        "s3.secret-access-key": env["AWS_SECRET_ACCESS_KEY"],
        "s3.region": env["AWS_REGION"],
        "s3.force-virtual-addressing": "false",
    }
    catalog = sql.SqlCatalog(
        "s3", uri=f"sqlite:///{tmp_path}/catalog.db", warehouse=f"s3://{s3_bucket}/warehouse", **properties
    )
    table, snapshots = three_snapshots(catalog)
    url = f"s3://{s3_bucket}/warehouse/db/records"
    expected = table.scan().to_arrow()  # pyiceberg's own reading

    assert table_format(url) == "iceberg"
    snapshot = table_snapshot(url)
    assert snapshot.version == snapshots[-1] and snapshot.n_records == expected.num_rows == 1200
    assert all(f.startswith(f"s3://{s3_bucket}/warehouse/db/records/data/") for f in snapshot.files)
    source = ParquetSource(url, passthrough=["id"])
    assert source.n_records == 1200
    ids = pa.concat_tables(
        [pq.read_table(f.removeprefix("s3://"), columns=["id"], filesystem=s3fs()) for f in snapshot.files]
    )
    np.testing.assert_array_equal(np.sort(ids.column("id").to_numpy()), np.sort(expected.column("id").to_numpy()))
    assert table_snapshot(url, version=snapshots[0]).n_records == 1000
    assert ParquetSource(url, passthrough=["id"], version=snapshots[1]).n_records == 1500

    oracle = StreamingGaussianMixture(2, random_state=0).fit(ParquetSource(snapshot.files, passthrough=["id"]))
    clean = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    options = []
    for key, name in (
        ("endpoint_url", "AWS_ENDPOINT_URL"),
        ("access_key", "AWS_ACCESS_KEY_ID"),
        ("secret_key", "AWS_SECRET_ACCESS_KEY"),
        ("region", "AWS_REGION"),
    ):
        options += ["--storage-option", f"{key}={env[name]}"]
    command = ["fit", url, "-k", "2", "--passthrough", "id", "--json", "--model", tmp_path / "m", *options]
    result = run_streamgmm(*command, env=clean, timeout=180)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["records"] == 1200
    np.testing.assert_array_equal(StreamingGaussianMixture.load(tmp_path / "m").means_, oracle.means_)

    # The credentials on the URL instead of the variables.
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    on_url = f"s3://{env['AWS_ACCESS_KEY_ID']}:{env['AWS_SECRET_ACCESS_KEY']}@{s3_bucket}/warehouse/db/records"
    assert ParquetSource(on_url, passthrough=["id"], version=snapshots[1]).n_records == 1500


def s3fs():
    import pyarrow.fs as pafs

    return pafs.FileSystem.from_uri("s3://any")[0]
