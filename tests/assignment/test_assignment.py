"""The responsibilities pass (:func:`streamgmm.assign`) on real Parquet files.

The oracle is always an independent computation on the records read back with pyarrow: the
model's own ``predict_proba`` / ``score_samples`` on a plain numpy array, and scikit-learn's
``GaussianMixture`` given the same parameters. Every output row is compared with the input row
at the same place (same file, same position), never through a join.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sklearn.mixture import GaussianMixture

from streamgmm import DataError, ParquetSource, StreamingGaussianMixture, assign
from streamgmm.assignment.layout import SUCCESS, read_output_metadata
from streamgmm.datasets.synthetic_lake import write_lake

K = 3
FEATURES = ["x0", "x1", "x2"]
RESULT_COLUMNS = [f"resp_{k}" for k in range(K)] + ["component", "log_likelihood"]


# ---------------------------------------------------------------------- helpers


def sklearn_oracle(model: StreamingGaussianMixture) -> GaussianMixture:
    """A scikit-learn GaussianMixture holding exactly the streaming model's parameters."""
    gm = GaussianMixture(n_components=model.n_components, covariance_type=model.covariance_type)
    gm.weights_ = np.array(model.weights_, copy=True)
    gm.means_ = np.array(model.means_, copy=True)
    gm.covariances_ = np.array(model.covariances_, copy=True)
    gm.precisions_cholesky_ = np.array(model.precisions_cholesky_, copy=True)
    gm.precisions_ = np.array(model.precisions_, copy=True)
    gm.n_features_in_ = model.n_features_in_
    gm.converged_ = True
    gm.n_iter_ = 1
    gm.lower_bound_ = 0.0
    return gm


def features_of(table: pa.Table, names=FEATURES) -> np.ndarray:
    return np.column_stack([table[name].to_numpy(zero_copy_only=False).astype(np.float64) for name in names])


def resp_of(table: pa.Table, k: int = K) -> np.ndarray:
    return np.column_stack([table[f"resp_{j}"].to_numpy(zero_copy_only=False) for j in range(k)])


def all_files(directory: Path) -> list[str]:
    """Every file under ``directory`` (hidden ones too), relative, sorted."""
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file())


def parquet_outputs(directory: Path) -> list[str]:
    """Non-hidden .parquet files under ``directory``, relative, sorted."""
    return sorted(
        str(p.relative_to(directory))
        for p in directory.rglob("*.parquet")
        if not any(part.startswith((".", "_")) for part in p.relative_to(directory).parts)
    )


def assert_results_match(out_table: pa.Table, X: np.ndarray, model: StreamingGaussianMixture, k: int = K) -> None:
    """Results of ``out_table`` (no nulls) against the oracle computed on ``X``."""
    resp = resp_of(out_table, k)
    expected = model.predict_proba(X)
    np.testing.assert_allclose(resp, expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(resp.sum(axis=1), 1.0, rtol=0, atol=1e-12)
    component = out_table["component"].to_numpy()
    assert out_table.schema.field("component").type == pa.int32()
    np.testing.assert_array_equal(component, resp.argmax(axis=1))
    np.testing.assert_array_equal(component, expected.argmax(axis=1))
    np.testing.assert_allclose(out_table["log_likelihood"].to_numpy(), model.score_samples(X), rtol=1e-12, atol=1e-12)


def write_mixed_lake(root: Path, bad: dict[str, dict[int, float | None]] | None = None, rows: int = 100) -> list[str]:
    """A small hive lake (day=0, day=1) with a string, a bool and a timestamp column; ``bad`` puts
    NaN/inf/null into feature 'b' of the named file at the given rows. Returns the files, relative."""
    bad = bad or {}
    rng = np.random.default_rng(7)
    layout = ["day=0/f0.parquet", "day=0/f1.parquet", "day=1/f2.parquet"]
    for index, rel in enumerate(layout):
        start = index * rows
        X = rng.normal(size=(rows, 2))
        X[: rows // 2] += 6.0
        b: list[float | None] = X[:, 1].tolist()
        for row, value in bad.get(rel, {}).items():
            b[row] = value
        table = pa.table(
            {
                "id": pa.array(np.arange(start, start + rows), pa.int64()),
                "name": pa.array([f"rec-{i}" for i in range(start, start + rows)], pa.string()),
                "a": pa.array(X[:, 0]),
                "flag": pa.array([i % 3 == 0 for i in range(rows)], pa.bool_()),
                "b": pa.array(b, pa.float64()),
                "ts": pa.array(np.arange(start, start + rows) * 1000, pa.timestamp("ms")),
            }
        )
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, root / rel, row_group_size=40)
    return layout


# ---------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def lake(make_lake):
    return make_lake(
        "lake",
        n_records=6000,
        n_components=K,
        n_features=3,
        n_files=4,
        partitions=2,
        row_group_size=700,
        seed=3,
    )


@pytest.fixture(scope="module")
def model(lake) -> StreamingGaussianMixture:
    return StreamingGaussianMixture(K, random_state=0).fit(ParquetSource(str(lake.path), passthrough=["id"]))


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    """(lake root, files, model fitted on columns a, b of the clean mixed lake)."""
    root = tmp_path_factory.mktemp("mixed") / "lake"
    files = write_mixed_lake(root)
    fitted = StreamingGaussianMixture(2, random_state=0).fit(ParquetSource(str(root), columns=["a", "b"]))
    return root, files, fitted


# ---------------------------------------------------------------------- round trip


def test_round_trip_on_a_hive_partitioned_lake(lake, model, tmp_path):
    assert list(model.feature_names_in_) == FEATURES
    out = tmp_path / "scored"
    summary = assign(model, str(lake.path), out, keep=["id"], batch_size=256)

    # One output per input, at the same relative path (hive folders kept), in the input order.
    assert [entry["output"] for entry in summary.files] == lake.files
    assert parquet_outputs(out) == sorted(lake.files)
    assert any(rel.startswith("day=1/") for rel in lake.files)
    assert summary.outputs == [os.path.join(str(out), rel) for rel in lake.files]
    assert summary.rows == lake.n_records
    assert summary.skipped == 0
    gm = sklearn_oracle(model)

    for rel in lake.files:
        source = pq.read_table(lake.path / rel)
        result = pq.read_table(out / rel)
        assert result.column_names == ["id"] + RESULT_COLUMNS
        assert result.num_rows == source.num_rows
        np.testing.assert_array_equal(result["id"].to_numpy(), source["id"].to_numpy())  # same order
        X = features_of(source)
        assert_results_match(result, X, model)
        # scikit-learn, with the same parameters, agrees.
        np.testing.assert_allclose(resp_of(result), gm.predict_proba(X), rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(result["log_likelihood"].to_numpy(), gm.score_samples(X), rtol=1e-10, atol=1e-10)
        np.testing.assert_array_equal(result["component"].to_numpy(), gm.predict(X))


def test_float32_responsibilities(lake, model, tmp_path):
    out64, out32 = tmp_path / "f64", tmp_path / "f32"
    assign(model, str(lake.path), out64)
    summary = assign(model, str(lake.path), out32, dtype="float32")
    assert json.loads((out32 / SUCCESS).read_text())["dtype"] == "float32"
    for rel in lake.files:
        wide, narrow = pq.read_table(out64 / rel), pq.read_table(out32 / rel)
        for k in range(K):
            assert narrow.schema.field(f"resp_{k}").type == pa.float32()
            assert wide.schema.field(f"resp_{k}").type == pa.float64()
        assert narrow.schema.field("component").type == pa.int32()
        assert narrow.schema.field("log_likelihood").type == pa.float64()
        np.testing.assert_allclose(resp_of(narrow), resp_of(wide), rtol=1e-6, atol=1e-7)
        np.testing.assert_array_equal(narrow["component"].to_numpy(), wide["component"].to_numpy())
        np.testing.assert_array_equal(narrow["log_likelihood"].to_numpy(), wide["log_likelihood"].to_numpy())
    assert summary.rows == lake.n_records
    with pytest.raises(ValueError, match="dtype"):
        assign(model, str(lake.path), tmp_path / "f16", dtype="float16")


def test_keep_columns_unchanged_and_in_the_listed_order(mixed, tmp_path):
    root, files, fitted = mixed
    keep = ["name", "day", "ts", "id", "flag", "a"]
    out = tmp_path / "scored"
    assign(fitted, str(root), out, keep=keep, batch_size=16)
    expected_day_type = ParquetSource(str(root), columns=["a", "b"]).dataset.schema.field("day").type
    for rel in files:
        source = pq.read_table(root / rel)
        result = pq.read_table(out / rel)
        assert result.column_names == keep + [f"resp_{k}" for k in range(2)] + ["component", "log_likelihood"]
        for name in keep:
            if name == "day":
                assert result.schema.field("day").type == expected_day_type
                day = int(rel.split("/")[0].split("=")[1])
                assert result["day"].to_pylist() == [day] * source.num_rows
                continue
            assert result.schema.field(name).type == source.schema.field(name).type, name
            assert result[name].to_pylist() == source[name].to_pylist(), name
        assert_results_match(result, features_of(source, ["a", "b"]), fitted, k=2)
    with pytest.raises(TypeError):
        assign(fitted, str(root), tmp_path / "other", keep="id")
    with pytest.raises(DataError, match="nope"):
        assign(fitted, str(root), tmp_path / "other2", keep=["nope"])


# ---------------------------------------------------------------------- missing values


def test_nan_policy_skip_keeps_the_place_with_nulls(mixed, tmp_path):
    root0, _, fitted = mixed
    root = tmp_path / "lake"
    bad_rows = {5: float("nan"), 50: None, 77: float("inf")}
    files = write_mixed_lake(root, {"day=0/f1.parquet": bad_rows})
    out = tmp_path / "scored"
    summary = assign(fitted, str(root), out, keep=["id", "name"], nan_policy="skip", batch_size=16)
    assert summary.skipped == 3
    assert [entry["skipped"] for entry in summary.files] == [0, 3, 0]
    assert summary.rows == 300  # rows written, nulls included
    manifest = json.loads((out / SUCCESS).read_text())
    assert manifest["skipped"] == 3
    assert manifest["nan_policy"] == "skip"
    assert [entry["skipped"] for entry in manifest["files"]] == [0, 3, 0]
    assert [entry["rows"] for entry in manifest["files"]] == [100, 100, 100]

    for rel in files:
        source = pq.read_table(root / rel)
        result = pq.read_table(out / rel)
        assert result.num_rows == source.num_rows
        assert result["id"].to_pylist() == source["id"].to_pylist()
        assert result["name"].to_pylist() == source["name"].to_pylist()
        nulls = sorted(bad_rows) if rel == "day=0/f1.parquet" else []
        good = np.ones(source.num_rows, dtype=bool)
        good[nulls] = False
        for name in ["resp_0", "resp_1", "component", "log_likelihood"]:
            column = result[name]
            assert column.null_count == len(nulls), name
            assert np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False)).tolist() == nulls, name
        X = features_of(source, ["a", "b"])[good]
        assert_results_match(result.filter(pa.array(good)), X, fitted, k=2)

    # float32 with nulls too.
    narrow = assign(fitted, str(root), tmp_path / "narrow", nan_policy="skip", dtype="float32")
    table = pq.read_table(narrow.outputs[1])
    assert table.schema.field("resp_0").type == pa.float32()
    assert table["resp_0"].null_count == 3


def test_nan_policy_raise_names_the_place_and_writes_nothing(mixed, tmp_path):
    _, _, fitted = mixed
    root = tmp_path / "lake"
    write_mixed_lake(root, {"day=0/f1.parquet": {50: float("nan"), 77: None}})
    out = tmp_path / "scored"
    # row 50 is in row group 1 (40 rows per group) and numbered within the file
    with pytest.raises(DataError, match=r"f1\.parquet: row group 1, row 50, column 'b'"):
        assign(fitted, str(root), out, keep=["id"], batch_size=16)
    assert not (out / SUCCESS).exists()
    assert all_files(out) == []  # no outputs, no temporaries
    # the default for a path source is "raise" too; a ParquetSource brings its own policy
    with pytest.raises(DataError, match="row 50"):
        assign(fitted, str(root), tmp_path / "again")
    summary = assign(fitted, ParquetSource(str(root), columns=["a", "b"], nan_policy="skip"), tmp_path / "src")
    assert summary.skipped == 2


# ---------------------------------------------------------------------- manifest and metadata


def test_success_manifest_and_file_metadata(lake, model, tmp_path):
    out = tmp_path / "scored"
    summary = assign(model, str(lake.path), out, keep=["id"])
    manifest = json.loads((out / SUCCESS).read_text())
    fingerprint = model.params_.fingerprint()
    assert summary.fingerprint == fingerprint
    assert manifest["format"] == "streamgmm.assign"
    assert manifest["version"] == 1
    assert manifest["model_fingerprint"] == fingerprint
    assert manifest["n_components"] == K
    assert manifest["covariance_type"] == "full"
    assert manifest["feature_names"] == FEATURES
    assert manifest["keep"] == ["id"]
    assert manifest["dtype"] == "float64"
    assert manifest["rows"] == lake.n_records
    assert manifest["skipped"] == 0
    assert [entry["output"] for entry in manifest["files"]] == lake.files
    for entry in manifest["files"]:
        assert Path(entry["input"]) == lake.path / entry["output"]
        assert entry["rows"] == pq.ParquetFile(entry["input"]).metadata.num_rows
        assert entry["rows"] == pq.ParquetFile(out / entry["output"]).metadata.num_rows
    # _SUCCESS comes last
    success_time = (out / SUCCESS).stat().st_mtime_ns
    assert all((out / rel).stat().st_mtime_ns <= success_time for rel in lake.files)

    for rel in lake.files:
        raw = pq.read_schema(out / rel).metadata
        assert raw[b"streamgmm.format_version"] == b"1"
        document = read_output_metadata(out / rel)
        assert document == json.loads(raw[b"streamgmm.model"])
        assert document["fingerprint"] == fingerprint
        assert document["n_components"] == K
        assert document["feature_names"] == FEATURES
        np.testing.assert_array_equal(np.array(document["weights"]), model.weights_)
        np.testing.assert_array_equal(np.array(document["means"]), model.means_)
        np.testing.assert_array_equal(np.array(document["covariances"]), model.covariances_)
    with pytest.raises(DataError, match="not a streamgmm output file"):
        read_output_metadata(lake.path / lake.files[0])


# ---------------------------------------------------------------------- atomicity


def test_failure_in_the_middle_leaves_nothing(mixed, tmp_path):
    _, _, fitted = mixed
    root = tmp_path / "lake"
    write_mixed_lake(root, {"day=1/f2.parquet": {90: float("nan")}})  # the 3rd and last file
    out = tmp_path / "scored"
    with pytest.raises(DataError, match=r"f2\.parquet: row group 2, row 90"):
        assign(fitted, str(root), out, keep=["id"], batch_size=16)
    assert not (out / SUCCESS).exists()
    assert parquet_outputs(out) == []
    assert all_files(out) == []  # neither the two finished files nor a temporary remain


def test_retry_after_a_failure_into_the_same_directory(mixed, tmp_path):
    _, _, fitted = mixed
    root = tmp_path / "lake"
    write_mixed_lake(root, {"day=1/f2.parquet": {90: float("nan")}})
    out = tmp_path / "scored"
    with pytest.raises(DataError):
        assign(fitted, str(root), out)
    summary = assign(fitted, str(root), out, nan_policy="skip")
    assert summary.skipped == 1


def test_retry_after_a_failure_on_a_flat_lake_works(mixed, tmp_path):
    _, _, fitted = mixed
    root = tmp_path / "lake"
    write_mixed_lake(root, {"day=1/f2.parquet": {90: float("nan")}})
    flat = tmp_path / "flat"
    flat.mkdir()
    for rel in ["day=0/f0.parquet", "day=0/f1.parquet", "day=1/f2.parquet"]:
        pq.write_table(pq.read_table(root / rel), flat / Path(rel).name)
    out = tmp_path / "scored"
    with pytest.raises(DataError):
        assign(fitted, str(flat), out)
    assert all_files(out) == []
    assert assign(fitted, str(flat), out, nan_policy="skip").skipped == 1


def test_killed_process_leaves_no_success_and_only_whole_files(tmp_path):
    """SIGKILL in the middle of a 40-file pass (no cleanup code runs).

    Every non-hidden .parquet present is complete (atomic rename), there is no _SUCCESS, hidden
    ``.NAME.RANDOM.tmp`` files may remain; a re-run into that directory (an unfinished result:
    only files assign writes) replaces it, leftovers included, without needing --overwrite."""
    info = write_lake(
        tmp_path / "lake", n_records=200_000, n_components=K, n_features=3, n_files=40, row_group_size=1000, seed=5
    )
    fitted = StreamingGaussianMixture(K, random_state=0).fit(ParquetSource(str(info.path), passthrough=["id"]))
    model_path = tmp_path / "model.sgmm"
    fitted.save(model_path)
    out = tmp_path / "scored"
    command = [
        sys.executable,
        "-m",
        "streamgmm",
        "assign",
        str(info.path),
        "--model",
        str(model_path),
        "--out",
        str(out),
        "--keep",
        "id",
        "--batch-size",
        "50",
        "-q",
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not (out.exists() and parquet_outputs(out)):
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "no output file appeared"
            time.sleep(0.002)
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.communicate()
    assert process.returncode == -signal.SIGKILL
    assert not (out / SUCCESS).exists()
    present = parquet_outputs(out)
    assert 1 <= len(present) < 40
    for rel in present:
        table = pq.read_table(out / rel)
        assert table.num_rows == 5000
        np.testing.assert_array_equal(table["id"].to_numpy(), pq.read_table(info.path / rel)["id"].to_numpy())
    leftovers = [rel for rel in all_files(out) if rel not in present]
    assert all(Path(rel).name.startswith(".") and rel.endswith(".tmp") for rel in leftovers), leftovers

    rerun = subprocess.run(command, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    assert (out / SUCCESS).exists()
    assert parquet_outputs(out) == sorted(info.files)
    assert all_files(out) == sorted([*info.files, SUCCESS])  # the killed run's temporaries are gone


# ---------------------------------------------------------------------- overwrite and refusals


def test_overwrite(lake, model, tmp_path):
    out = tmp_path / "scored"
    assign(model, str(lake.path), out, keep=["id"])
    with pytest.raises(ValueError, match="overwrite=True"):
        assign(model, str(lake.path), out, keep=["id"])
    assert (out / SUCCESS).exists()  # the refused run left the earlier result alone
    assert parquet_outputs(out) == sorted(lake.files)

    # Fewer inputs: the outputs of files no longer in the input go.
    subset = [lake.files[0], lake.files[2]]
    summary = assign(model, [str(lake.path / rel) for rel in subset], out, dtype="float32", overwrite=True)
    assert [entry["output"] for entry in summary.files] == subset
    assert parquet_outputs(out) == sorted(subset)
    manifest = json.loads((out / SUCCESS).read_text())
    assert [entry["output"] for entry in manifest["files"]] == subset
    assert manifest["dtype"] == "float32"
    for rel in subset:
        table = pq.read_table(out / rel)
        assert table.column_names == RESULT_COLUMNS  # the new run's layout (no id)
        assert table.schema.field("resp_0").type == pa.float32()
    assert not [p for p in all_files(out) if Path(p).name.startswith(".")]


def test_refuses_a_directory_it_did_not_write(model, lake, tmp_path):
    out = tmp_path / "someone_else"
    out.mkdir()
    (out / "notes.txt").write_text("precious")
    for overwrite in (False, True):
        with pytest.raises(ValueError, match="holds files assign did not write"):
            assign(model, str(lake.path), out, overwrite=overwrite)
    assert (out / "notes.txt").read_text() == "precious"
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    with pytest.raises(ValueError, match="not a directory"):
        assign(model, str(lake.path), not_a_dir)


def test_refuses_output_overlapping_the_input(lake, model):
    inside = lake.path / "scored"
    with pytest.raises(ValueError, match="overlap"):
        assign(model, str(lake.path), inside)
    assert not inside.exists()
    with pytest.raises(ValueError, match="overlap"):
        assign(model, str(lake.path), lake.path)
    with pytest.raises(ValueError, match="overlap"):
        assign(model, str(lake.path / "day=0"), lake.path.parent)  # the input lies inside the output


def test_zero_row_input_file_gets_an_empty_output(mixed, tmp_path):
    root0, files, fitted = mixed
    root = tmp_path / "lake"
    (root / "day=0").mkdir(parents=True)
    (root / "day=1").mkdir(parents=True)
    full = pq.read_table(root0 / files[0])
    pq.write_table(full, root / "day=0" / "a.parquet")
    pq.write_table(full.slice(0, 0), root / "day=1" / "b.parquet")
    assert pq.ParquetFile(root / "day=1" / "b.parquet").metadata.num_rows == 0
    out = tmp_path / "scored"
    summary = assign(fitted, str(root), out, keep=["id", "name", "day"], dtype="float32")
    assert [(entry["output"], entry["rows"]) for entry in summary.files] == [
        ("day=0/a.parquet", 100),
        ("day=1/b.parquet", 0),
    ]
    empty = pq.read_table(out / "day=1" / "b.parquet")
    whole = pq.read_table(out / "day=0" / "a.parquet")
    assert empty.num_rows == 0
    assert empty.schema.remove_metadata() == whole.schema.remove_metadata()
    assert empty.schema.field("resp_0").type == pa.float32()
    assert empty.schema.field("name").type == pa.string()
    assert read_output_metadata(out / "day=1" / "b.parquet")["fingerprint"] == fitted.params_.fingerprint()


# ---------------------------------------------------------------------- input forms


def test_numpy_array(tmp_path):
    rng = np.random.default_rng(1)
    X = np.concatenate([rng.normal(-4, 1, (700, 2)), rng.normal(4, 1.5, (600, 2))])
    fitted = StreamingGaussianMixture(2, covariance_type="diag", random_state=0).fit(X)
    out = tmp_path / "scored"
    summary = assign(fitted, X, out, batch_size=100)
    assert summary.outputs == [str(out / "part-00000.parquet")]
    assert parquet_outputs(out) == ["part-00000.parquet"]
    table = pq.read_table(summary.outputs[0])
    assert table.column_names == ["resp_0", "resp_1", "component", "log_likelihood"]
    assert_results_match(table, X, fitted, k=2)
    gm = sklearn_oracle(fitted)
    np.testing.assert_allclose(resp_of(table, 2), gm.predict_proba(X), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(table["log_likelihood"].to_numpy(), gm.score_samples(X), rtol=1e-10, atol=1e-10)
    manifest = json.loads((out / SUCCESS).read_text())
    assert manifest["files"] == [{"input": "table", "output": "part-00000.parquet", "rows": 1300, "skipped": 0}]
    with pytest.raises(ValueError, match="shape"):
        assign(fitted, X[:, :1], tmp_path / "bad")
    with pytest.raises(DataError, match="Input|NaN|nan"):
        Y = X.copy()
        Y[3, 1] = np.nan
        assign(fitted, Y, tmp_path / "nan")


def test_arrow_table_read_by_name(lake, model, tmp_path):
    source = pq.read_table(lake.path / lake.files[1])
    n = source.num_rows
    table = pa.table(
        {
            "tag": pa.array([f"t{i}" for i in range(n)]),
            "x2": source["x2"],
            "id": source["id"],
            "x0": source["x0"],
            "extra": np.zeros(n),
            "x1": source["x1"],
        }
    )
    out = tmp_path / "scored"
    summary = assign(model, table, out, keep=["tag", "id"], batch_size=333)
    result = pq.read_table(summary.outputs[0])
    assert summary.outputs == [str(out / "part-00000.parquet")]
    assert result.column_names == ["tag", "id"] + RESULT_COLUMNS
    assert result["tag"].to_pylist() == table["tag"].to_pylist()
    np.testing.assert_array_equal(result["id"].to_numpy(), source["id"].to_numpy())
    assert_results_match(result, features_of(source), model)


def test_dataframe_with_extra_columns_in_another_order(tmp_path):
    rng = np.random.default_rng(2)
    n = 900
    X = np.concatenate([rng.normal(-3, 1, (n // 2, 2)), rng.normal(3, 1, (n - n // 2, 2))])
    train = pd.DataFrame({"a": X[:, 0], "b": X[:, 1]})
    fitted = StreamingGaussianMixture(2, random_state=0).fit(train)
    assert list(fitted.feature_names_in_) == ["a", "b"]
    frame = pd.DataFrame(
        {
            "c": rng.normal(size=n),
            "b": X[:, 1],
            "id": np.arange(n) + 10,
            "label": [f"L{i}" for i in range(n)],
            "a": X[:, 0],
        }
    )
    out = tmp_path / "scored"
    summary = assign(fitted, frame, out, keep=["label", "id"], batch_size=128)
    result = pq.read_table(summary.outputs[0])
    assert result.column_names == ["label", "id", "resp_0", "resp_1", "component", "log_likelihood"]
    assert result["label"].to_pylist() == frame["label"].tolist()
    np.testing.assert_array_equal(result["id"].to_numpy(), frame["id"].to_numpy())
    assert_results_match(result, X, fitted, k=2)
    gm = sklearn_oracle(fitted)
    np.testing.assert_allclose(resp_of(result, 2), gm.predict_proba(X), rtol=1e-9, atol=1e-12)
    with pytest.raises(DataError, match="'a'"):
        assign(fitted, frame.drop(columns="a"), tmp_path / "missing")


def test_single_parquet_file_gives_one_output_named_like_it(lake, model, tmp_path):
    rel = lake.files[2]
    out = tmp_path / "scored"
    summary = assign(model, str(lake.path / rel), out, keep=["id"])
    name = Path(rel).name
    assert summary.outputs == [str(out / name)]
    assert all_files(out) == sorted([SUCCESS, name])
    source = pq.read_table(lake.path / rel)
    result = pq.read_table(out / name)
    np.testing.assert_array_equal(result["id"].to_numpy(), source["id"].to_numpy())
    assert_results_match(result, features_of(source), model)


def test_model_given_as_a_path(lake, model, tmp_path):
    path = tmp_path / "model.sgmm"
    model.save(path)
    a = assign(str(path), str(lake.path), tmp_path / "a")
    b = assign(model, str(lake.path), tmp_path / "b")
    assert a.fingerprint == b.fingerprint
    for rel in lake.files:
        assert pq.read_table(tmp_path / "a" / rel).equals(pq.read_table(tmp_path / "b" / rel))


def test_progress_callback_counts_every_record(lake, model, tmp_path):
    seen: list[int] = []
    assign(model, str(lake.path), tmp_path / "scored", batch_size=500, progress=seen.append)
    assert sum(seen) == lake.n_records
    assert max(seen) <= 500


# ---------------------------------------------------------------------- fixed bugs


def test_overwrite_after_a_failed_overwrite(lake, model, tmp_path):
    root = tmp_path / "lake"
    root.mkdir()
    for index, rel in enumerate(lake.files[:3]):
        table = pq.read_table(lake.path / rel)
        if index == 1:
            x0 = table["x0"].to_numpy().copy()
            x0[3] = np.nan
            table = table.set_column(table.schema.get_field_index("x0"), "x0", pa.array(x0))
        pq.write_table(table, root / Path(rel).name)
    out = tmp_path / "scored"
    assign(model, str(root), out, nan_policy="skip")
    with pytest.raises(DataError):
        assign(model, str(root), out, nan_policy="raise", overwrite=True)
    assert assign(model, str(root), out, nan_policy="skip", overwrite=True).skipped == 1


def test_keep_column_clashing_with_a_result_column_is_refused(tmp_path):
    rng = np.random.default_rng(3)
    X = np.concatenate([rng.normal(-4, 1, (200, 2)), rng.normal(4, 1, (200, 2))])
    fitted = StreamingGaussianMixture(2, random_state=0).fit(X)
    table = pa.table({"x0": X[:, 0], "x1": X[:, 1], "component": pa.array(np.full(400, 42, np.int64))})
    with pytest.raises(ValueError, match="component"):
        assign(fitted, table, tmp_path / "scored", keep=["component"])


def test_zero_row_output_schema_equals_the_others_for_non_nullable_keep_columns(lake, model, tmp_path):
    root = tmp_path / "lake"
    root.mkdir()
    table = pq.read_table(lake.path / lake.files[0])
    assert not table.schema.field("id").nullable
    pq.write_table(table, root / "a.parquet")
    pq.write_table(table.slice(0, 0), root / "b.parquet")
    summary = assign(model, str(root), tmp_path / "scored", keep=["id"])
    whole, empty = (pq.read_schema(path).remove_metadata() for path in summary.outputs)
    assert empty.equals(whole), (empty, whole)


def test_large_covariances_stay_out_of_the_file_metadata(tmp_path):
    """Footers stay small: beyond MAX_METADATA_COVARIANCES numbers the covariances are left out
    of each file's metadata (the fingerprint still names the model); below it they are exact."""
    from streamgmm.assignment.layout import MAX_METADATA_COVARIANCES

    rng = np.random.default_rng(4)
    d = 120  # two full 120 x 120 covariances: 28,800 numbers
    X = np.concatenate([rng.normal(-3, 1, (400, d)), rng.normal(3, 1, (400, d))])
    big = StreamingGaussianMixture(2, random_state=0, reg_covar=1e-3).fit(X)
    assert big.covariances_.size > MAX_METADATA_COVARIANCES
    small = StreamingGaussianMixture(2, covariance_type="diag", random_state=0).fit(X)
    for model, kept in ((big, False), (small, True)):
        out = tmp_path / model.covariance_type
        summary = assign(model, X, out)
        document = read_output_metadata(summary.outputs[0])
        assert document["fingerprint"] == model.params_.fingerprint()
        np.testing.assert_array_equal(document["means"], model.means_)
        if kept:
            np.testing.assert_array_equal(document["covariances"], model.covariances_)
        else:
            assert document["covariances"] is None and "covariances_omitted" in document
        assert len(pq.read_schema(summary.outputs[0]).metadata[b"streamgmm.model"]) < 600_000


def test_output_row_groups_mirror_the_input_row_groups(tmp_path):
    """Row group i of an output holds the results of row group i of its input (zero-row groups
    included: they are skipped on input, so they are absent from the output), and E-step
    batches smaller than a row group do not split it."""
    rng = np.random.default_rng(8)
    X = np.concatenate([rng.normal(-4, 1, (700, 2)), rng.normal(4, 1, (700, 2))])
    model = StreamingGaussianMixture(2, random_state=0).fit(X)
    table = pa.table({"id": np.arange(1400), "x0": X[:, 0], "x1": X[:, 1]})
    lake = tmp_path / "lake"
    lake.mkdir()
    pq.write_table(table, lake / "a.parquet", row_group_size=500)
    summary = assign(model, str(lake), tmp_path / "scored", keep=["id"], batch_size=64)
    metadata = pq.ParquetFile(summary.outputs[0]).metadata
    assert [metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)] == [500, 500, 400]
    scored = pq.read_table(summary.outputs[0])
    np.testing.assert_array_equal(scored["id"].to_numpy(), np.arange(1400))
    np.testing.assert_allclose(scored["log_likelihood"].to_numpy(), model.score_samples(X), rtol=1e-12)


def test_the_e_step_runs_on_one_blas_thread(lake, model, tmp_path, monkeypatch):
    """With one core busy elsewhere a second BLAS thread made assign 2-3x slower (1M x 16, K=8:
    2.3-3.4 s against 1.3-1.4 s); its E-steps run on one thread and leave the count as found."""
    from threadpoolctl import ThreadpoolController, threadpool_limits

    import streamgmm.assignment.pipeline as pipeline

    blas = ThreadpoolController().select(user_api="blas")
    if not blas.lib_controllers:
        pytest.skip("no BLAS library with threads to limit")
    seen: set[int] = set()
    score_chunk = pipeline.score_chunk

    def watched(X, params, *args):
        seen.update(info["num_threads"] for info in blas.info())
        return score_chunk(X, params, *args)

    monkeypatch.setattr(pipeline, "score_chunk", watched)
    with threadpool_limits(limits=2, user_api="blas"):
        summary = assign(model, lake.path, tmp_path / "out", keep=["id"])
        assert [info["num_threads"] for info in blas.info()] == [2] * len(blas.lib_controllers)
    assert summary.rows == lake.n_records and seen == {1}
