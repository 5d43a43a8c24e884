"""assign's overlapping pass (:mod:`streamgmm.assignment.pipeline`): every codec and both result
types against the model's own float64 scoring (``predict_proba``, ``score_samples``) and
scikit-learn's, a failure in the reading or the writing thread leaves no output and no thread,
and the error names its file."""

from __future__ import annotations

import json
import threading

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sklearn.mixture import GaussianMixture

from streamgmm import DataError, ParquetSource, StreamingGaussianMixture, assign
from streamgmm.assignment.layout import SUCCESS
from streamgmm.assignment.pipeline import COMPRESSIONS

K = 3
FEATURES = ["x0", "x1", "x2"]


def pipeline_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("streamgmm-assign")]


def all_files(directory) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file())


def features_of(table: pa.Table) -> np.ndarray:
    return np.column_stack([table[name].to_numpy() for name in FEATURES])


def resp_of(table: pa.Table) -> np.ndarray:
    return np.column_stack([table[f"resp_{k}"].to_numpy() for k in range(K)])


@pytest.fixture(scope="module")
def lake(make_lake):
    return make_lake("pipeline", n_records=5000, n_components=K, n_features=3, n_files=5, row_group_size=600, seed=5)


@pytest.fixture(scope="module")
def model(lake) -> StreamingGaussianMixture:
    return StreamingGaussianMixture(K, random_state=0).fit(ParquetSource(str(lake.path), passthrough=["id"]))


@pytest.mark.parametrize("compression", COMPRESSIONS)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_each_codec_and_result_type_against_predict_proba(lake, model, tmp_path, compression, dtype):
    out = tmp_path / "scored"
    summary = assign(model, str(lake.path), out, keep=["id"], dtype=dtype, compression=compression, batch_size=700)
    assert summary.rows == lake.n_records
    assert json.loads((out / SUCCESS).read_text())["compression"] == compression
    # float32 responsibilities are the float64 ones rounded: within half an ulp of values <= 1.
    atol = 1e-12 if dtype == "float64" else 2.0**-24
    for rel in lake.files:
        source, result = pq.read_table(lake.path / rel), pq.ParquetFile(out / rel)
        codec = result.metadata.row_group(0).column(1).compression
        assert codec == ("UNCOMPRESSED" if compression == "none" else compression.upper())
        assert result.metadata.num_row_groups == pq.ParquetFile(lake.path / rel).metadata.num_row_groups
        table = result.read()
        np.testing.assert_array_equal(table["id"].to_numpy(), source["id"].to_numpy())
        X = features_of(source)
        assert table.schema.field("resp_0").type == pa.from_numpy_dtype(np.dtype(dtype))
        np.testing.assert_allclose(resp_of(table), model.predict_proba(X), rtol=0, atol=atol)
        np.testing.assert_allclose(table["log_likelihood"].to_numpy(), model.score_samples(X), rtol=1e-12, atol=1e-12)
        np.testing.assert_array_equal(table["component"].to_numpy(), model.predict(X))
    assert pipeline_threads() == []


def test_every_covariance_type_against_scikit_learn(lake, tmp_path):
    first = pq.read_table(lake.path / lake.files[0], columns=FEATURES)
    X = features_of(first)
    for covariance_type in ("full", "tied", "diag", "spherical"):
        fitted = StreamingGaussianMixture(K, covariance_type=covariance_type, random_state=0).fit(first)
        oracle = GaussianMixture(K, covariance_type=covariance_type)
        oracle.weights_, oracle.means_ = fitted.weights_, fitted.means_
        oracle.covariances_, oracle.precisions_cholesky_ = fitted.covariances_, fitted.precisions_cholesky_
        out = tmp_path / covariance_type
        assign(fitted, str(lake.path), out)
        table = pq.read_table(out / lake.files[0])
        np.testing.assert_allclose(resp_of(table), oracle.predict_proba(X), rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(table["log_likelihood"].to_numpy(), oracle.score_samples(X), rtol=1e-10)


def test_invalid_compression_is_refused_before_anything_is_written(lake, model, tmp_path):
    with pytest.raises(ValueError, match="compression"):
        assign(model, str(lake.path), tmp_path / "out", compression="brotli9")
    assert not (tmp_path / "out").exists()


def test_a_failing_writer_leaves_no_output_and_names_the_file(lake, model, tmp_path, monkeypatch):
    """The third row group written fails (the write-behind thread): the files already renamed
    into place, the open one and the manifest are all gone."""
    calls = []
    write_table = pq.ParquetWriter.write_table

    def failing(self, table, *args, **kwargs):
        calls.append(threading.current_thread().name)
        if len(calls) == 5:  # in the second file (the first holds 2 row groups)
            raise OSError("disk full")
        return write_table(self, table, *args, **kwargs)

    monkeypatch.setattr(pq.ParquetWriter, "write_table", failing)
    out = tmp_path / "scored"
    with pytest.raises(OSError, match="disk full") as raised:
        assign(model, str(lake.path), out, keep=["id"])
    assert any(lake.files[2] in note for note in getattr(raised.value, "__notes__", []))
    assert set(calls) == {"streamgmm-assign-write"}  # written behind, in its own thread
    assert all_files(out) == []
    assert pipeline_threads() == []


def test_a_failing_reader_mid_way_leaves_no_output(lake, model, tmp_path):
    """A corrupt page in the last file fails in the read-ahead thread, after the first files
    were written: none of them stays, and the error names the file."""
    root = tmp_path / "lake"
    root.mkdir()
    for rel in lake.files:
        pq.write_table(pq.read_table(lake.path / rel), root / rel.replace("/", "_"), compression="none")
    names = sorted(p.name for p in root.iterdir())
    last = root / names[-1]
    data = bytearray(last.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 64] = b"\xff" * 64  # page bytes, footer intact
    last.write_bytes(bytes(data))
    out = tmp_path / "scored"
    with pytest.raises((DataError, OSError, pa.ArrowException)) as raised:
        assign(model, str(root), out, keep=["id"])
    text = str(raised.value) + " ".join(getattr(raised.value, "__notes__", []))
    assert names[-1] in text
    assert all_files(out) == []
    assert pipeline_threads() == []


def test_the_consumer_failing_stops_both_threads(lake, model, tmp_path):
    """An error in the calling thread (here the progress callback) stops the reader and the
    writer and removes what was written."""
    seen = []

    def progress(n):
        seen.append(n)
        if sum(seen) > 2500:
            raise KeyboardInterrupt

    out = tmp_path / "scored"
    with pytest.raises(KeyboardInterrupt):
        assign(model, str(lake.path), out, progress=progress)
    assert all_files(out) == []
    assert pipeline_threads() == []


def test_an_empty_table_gets_an_empty_file(model, tmp_path):
    table = pa.table({name: pa.array([], pa.float64()) for name in FEATURES})
    summary = assign(model, table, tmp_path / "out", compression="zstd")
    assert summary.rows == 0
    assert pq.read_table(summary.outputs[0]).num_rows == 0
