"""Synthetic Parquet lakes: layout on disk, and records checked against the generating parameters."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from streamgmm.datasets import synthetic_lake
from streamgmm.datasets.synthetic_lake import read_truth, write_lake
from streamgmm.mixture.covariance import COVARIANCE_TYPES


def read_files(root: Path, files: list[str]) -> list:
    return [pq.read_table(root / f) for f in files]


def test_files_rows_and_row_groups(tmp_path: Path) -> None:
    root = tmp_path / "lake"
    info = write_lake(root, n_records=10_007, n_components=3, n_features=4, n_files=3, row_group_size=1000, seed=3)
    assert info.files == ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    assert sorted(p.name for p in root.iterdir()) == ["_truth.json", *info.files]
    sizes = [pq.ParquetFile(root / f).metadata.num_rows for f in info.files]
    assert sizes == [3336, 3336, 3335]
    for f, size in zip(info.files, sizes):
        meta = pq.ParquetFile(root / f).metadata
        assert meta.num_row_groups == math.ceil(size / 1000)
        assert all(meta.row_group(i).num_rows == 1000 for i in range(meta.num_row_groups - 1))
    schema = pq.read_schema(root / info.files[0])
    assert schema.names == ["id", "x0", "x1", "x2", "x3"]
    assert str(schema.field("id").type) == "int64" and str(schema.field("x0").type) == "double"
    # ids are the global record number, increasing through the files in write order.
    ids = np.concatenate([t.column("id").to_numpy() for t in read_files(root, info.files)])
    np.testing.assert_array_equal(ids, np.arange(10_007))
    assert info.held_out_path is None and info.n_records == 10_007 and info.feature_names == ["x0", "x1", "x2", "x3"]


def test_hive_partitions_and_underscore_names_are_not_data(tmp_path: Path) -> None:
    root = tmp_path / "lake"
    info = write_lake(
        root, n_records=5000, n_components=2, n_features=2, n_files=5, partitions=3, held_out=700, labels=True, seed=1
    )
    assert info.files == [
        "day=0/part-00000.parquet",
        "day=0/part-00001.parquet",
        "day=1/part-00002.parquet",
        "day=1/part-00003.parquet",
        "day=2/part-00004.parquet",
    ]
    assert sorted(p.name for p in root.iterdir()) == ["_held_out", "_truth.json", "day=0", "day=1", "day=2"]
    dataset = ds.dataset(root, format="parquet", partitioning="hive")
    assert not any("_held_out" in f or "_truth" in f for f in dataset.files)
    assert len(dataset.files) == 5
    table = dataset.to_table()
    assert table.num_rows == 5000
    assert sorted(table.column_names) == ["day", "id", "label", "x0", "x1"]
    by_id = table.sort_by("id")
    np.testing.assert_array_equal(by_id.column("id").to_numpy(), np.arange(5000))
    # Partitions are contiguous slices of the record order: 2 files, 2 files, 1 file of 1000 each.
    np.testing.assert_array_equal(by_id.column("day").to_numpy(), np.repeat([0, 1, 2], [2000, 2000, 1000]))

    held = pq.read_table(info.held_out_path)
    assert info.held_out_path == root / "_held_out" / "part-00000.parquet"
    assert held.schema == pq.read_schema(root / info.files[0])
    np.testing.assert_array_equal(held.column("id").to_numpy(), np.arange(5000, 5700))


def test_partitions_need_enough_files(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="partitions"):
        write_lake(tmp_path / "lake", n_records=100, n_files=2, partitions=3)
    assert not (tmp_path / "lake").exists()


def test_sorted_by_component(tmp_path: Path) -> None:
    root = tmp_path / "lake"
    info = write_lake(
        root,
        n_records=20_000,
        n_components=4,
        n_features=3,
        n_files=4,
        row_group_size=1500,
        sort_by="component",
        labels=True,
        seed=5,
    )
    tables = read_files(root, info.files)
    labels = np.concatenate([t.column("label").to_numpy() for t in tables])
    assert labels.dtype == np.int32
    assert np.all(np.diff(labels) >= 0)
    assert tables[0].column("label")[0].as_py() == 0 and tables[-1].column("label")[-1].as_py() == 3
    # Component counts are one multinomial draw over the whole lake.
    counts = np.bincount(labels, minlength=4)
    w = info.params.weights
    se = np.sqrt(20_000 * w * (1 - w))
    assert np.all(np.abs(counts - 20_000 * w) < 5 * se)
    # Each record really comes from the component its label names.
    X = np.concatenate([np.column_stack([t.column(c).to_numpy() for c in info.feature_names]) for t in tables])
    _, resp = info.params.e_step(X)
    assert np.mean(resp.argmax(axis=1) == labels) > 0.99


@pytest.mark.parametrize("sort_by", [None, "component"])
def test_per_component_means_match_truth(tmp_path: Path, sort_by: str | None) -> None:
    info = write_lake(
        tmp_path / "lake",
        n_records=200_000,
        n_components=3,
        n_features=4,
        n_files=4,
        row_group_size=50_000,
        sort_by=sort_by,
        labels=True,
        seed=11,
    )
    table = ds.dataset(info.path, format="parquet").to_table()
    X = np.column_stack([table.column(c).to_numpy() for c in info.feature_names])
    labels = table.column("label").to_numpy()
    params = info.params
    for k in range(params.n_components):
        rows = X[labels == k]
        se = np.sqrt(np.diag(params.covariances[k]) / rows.shape[0])
        z = (rows.mean(axis=0) - params.means[k]) / se
        assert np.all(np.abs(z) < 5), (k, z)
        # Sample covariance near the truth too (loose: 5% relative on the diagonal).
        np.testing.assert_allclose(np.diag(np.cov(rows.T)), np.diag(params.covariances[k]), rtol=0.05)
    w = params.weights
    assert np.all(np.abs(np.bincount(labels) / 200_000 - w) < 5 * np.sqrt(w * (1 - w) / 200_000))


def test_same_seed_same_bytes_different_seed_different_values(tmp_path: Path) -> None:
    kwargs = dict(
        n_records=3000,
        n_components=3,
        n_features=2,
        n_files=2,
        row_group_size=700,
        partitions=2,
        held_out=50,
        labels=True,
        sort_by="component",
    )
    a = write_lake(tmp_path / "a", seed=7, **kwargs)
    b = write_lake(tmp_path / "b", seed=7, **kwargs)
    assert b.files == a.files
    c = write_lake(tmp_path / "c", seed=8, **kwargs)
    names = [*a.files, "_held_out/part-00000.parquet", "_truth.json"]
    for name in names:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    first_a = pq.read_table(tmp_path / "a" / a.files[0]).column("x0").to_numpy()
    first_c = pq.read_table(tmp_path / "c" / c.files[0]).column("x0").to_numpy()
    assert not np.array_equal(first_a, first_c)


def test_non_empty_target_refused(tmp_path: Path) -> None:
    (tmp_path / "lake").mkdir()
    (tmp_path / "lake" / "keep.txt").write_text("mine")
    with pytest.raises(ValueError, match="not an empty directory"):
        write_lake(tmp_path / "lake", n_records=100)
    assert [p.name for p in (tmp_path / "lake").iterdir()] == ["keep.txt"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError):
        write_lake(tmp_path / "file", n_records=100)
    # An existing empty directory is fine.
    (tmp_path / "empty").mkdir()
    assert write_lake(tmp_path / "empty", n_records=100, n_files=1).files == ["part-00000.parquet"]


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_read_truth_round_trips(tmp_path: Path, covariance_type: str) -> None:
    info = write_lake(
        tmp_path / "lake",
        n_records=400,
        n_components=3,
        n_features=3,
        n_files=2,
        covariance_type=covariance_type,
        sort_by="component",
        labels=True,
        seed=2,
    )
    params, names = read_truth(info.path)
    assert names == info.feature_names == ["x0", "x1", "x2"]
    assert params.covariance_type == covariance_type
    for attr in ("weights", "means", "covariances", "precisions_cholesky"):
        np.testing.assert_array_equal(getattr(params, attr), getattr(info.params, attr))
    truth = json.loads((info.path / "_truth.json").read_text())
    assert truth["format"] == "streamgmm.datasets.synthetic_lake" and truth["version"] == 1
    assert {k: truth[k] for k in ("n_records", "n_files", "partitions", "sort_by", "seed", "held_out")} == {
        "n_records": 400,
        "n_files": 2,
        "partitions": 0,
        "sort_by": "component",
        "seed": 2,
        "held_out": 0,
    }


def test_read_truth_rejects_other_json(tmp_path: Path) -> None:
    (tmp_path / "_truth.json").write_text(json.dumps({"format": "something else"}))
    with pytest.raises(ValueError, match="not a streamgmm.datasets.synthetic_lake"):
        read_truth(tmp_path)


def test_interrupted_write_leaves_no_finished_looking_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = synthetic_lake.sample_mixture
    calls = {"n": 0}

    def failing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(synthetic_lake, "sample_mixture", failing)
    root = tmp_path / "lake"
    with pytest.raises(KeyboardInterrupt):
        write_lake(root, n_records=3000, n_components=2, n_features=2, n_files=3, row_group_size=500)
    # File 0 (two chunks) finished; file 1 died mid-way and left nothing, not even its temporary.
    assert sorted(p.name for p in root.iterdir()) == ["part-00000.parquet"]
    assert pq.read_table(root / "part-00000.parquet").num_rows == 1000


def test_main_via_subprocess(tmp_path: Path) -> None:
    out = tmp_path / "cli"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "streamgmm.datasets.synthetic_lake",
            "--records",
            "2500",
            "--components",
            "2",
            "--features",
            "3",
            "--files",
            "3",
            "--row-group-size",
            "400",
            "--partitions",
            "2",
            "--sort-by",
            "component",
            "--covariance",
            "diag",
            "--held-out",
            "100",
            "--labels",
            "--seed",
            "4",
            str(out),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.strip() == f"wrote 2500 records (+100 held out) in 3 files to {out}"
    params, names = read_truth(out)
    assert params.covariance_type == "diag" and params.n_components == 2 and names == ["x0", "x1", "x2"]
    table = ds.dataset(out, format="parquet", partitioning="hive").to_table()
    assert table.num_rows == 2500 and set(table.column("day").to_pylist()) == {0, 1}
    assert pq.ParquetFile(out / "day=0" / "part-00000.parquet").metadata.num_row_groups == 3  # 834 rows / 400

    refused = subprocess.run(
        [sys.executable, "-m", "streamgmm.datasets.synthetic_lake", "--records", "10", str(out)],
        capture_output=True,
        text=True,
    )
    assert refused.returncode == 2 and "not an empty directory" in refused.stderr
