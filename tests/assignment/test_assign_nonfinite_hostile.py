"""``assign`` never publishes a non-finite result: a model whose parameters are consistent (it
loads) but overflow on some record makes every output refuse, naming the input and the row, with
nothing written: Parquet to a local directory, Parquet to an object store (moto's S3 server), a
Delta table, from Python and from the command.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from streamgmm import DataError, StreamingGaussianMixture, assign, make_mixture
from streamgmm.cli.command import main

K = 3
FAR_ROW = 1234
# A spherical variance of 1e-300 (its precision factor 1e150, exactly its inverse square root):
# a record 1e5 from every mean has a squared distance of 1e310, beyond float64.
VARIANCE = 1e-300


@pytest.fixture(scope="module")
def records() -> np.ndarray:
    X = make_mixture(3000, K, 2, separation=6.0, random_state=0)[0]
    X[FAR_ROW] = [1e5, -1e5]
    return X


@pytest.fixture(scope="module")
def model_path(tmp_path_factory, records) -> Path:
    """A spherical model of tiny variances, written member by member (the writer's checks pass
    it too: it is consistent, only extreme)."""
    directory = tmp_path_factory.mktemp("model")
    good = directory / "good.sgmm"
    clean = np.delete(records, FAR_ROW, axis=0)
    StreamingGaussianMixture(K, covariance_type="spherical", random_state=0).fit(clean).save(good)
    with zipfile.ZipFile(good) as archive:
        contents = {name: archive.read(name) for name in archive.namelist()}
    for name, value in (("covariances", np.full(K, VARIANCE)), ("precisions_cholesky", np.full(K, 1e150))):
        buffer = io.BytesIO()
        np.lib.format.write_array(buffer, value, allow_pickle=False)
        contents[f"arrays/{name}.npy"] = buffer.getvalue()
    path = directory / "tiny.sgmm"
    with zipfile.ZipFile(path, "w") as archive:
        for name, body in contents.items():
            archive.writestr(name, body)
    return path


@pytest.fixture(scope="module")
def data_file(tmp_path_factory, records) -> Path:
    path = tmp_path_factory.mktemp("data") / "data.parquet"
    pq.write_table(pa.table({"x0": records[:, 0], "x1": records[:, 1]}), path, row_group_size=1000)
    return path


def test_the_far_record_overflows_and_the_others_do_not(model_path, records) -> None:
    # The oracle, in plain numpy: each record's squared distance to each mean, scaled by the precision.
    model = StreamingGaussianMixture.load(model_path)  # consistent: it loads
    with np.errstate(over="ignore"):
        squared = (((records[:, None, :] - model.means_[None]) * 1e150) ** 2).sum(axis=2)
    overflowing = np.flatnonzero(np.isinf(squared).all(axis=1))
    assert overflowing.tolist() == [FAR_ROW]


def test_assign_refuses_the_record_and_writes_nothing(model_path, records, tmp_path) -> None:
    out = tmp_path / "out"
    with pytest.raises(DataError, match=f"row {FAR_ROW}: the model gives this record a non-finite score"):
        assign(model_path, records, out)
    assert not out.exists() or not any(out.iterdir())
    # Without it, every result is finite and written.
    summary = assign(model_path, np.delete(records, FAR_ROW, axis=0), tmp_path / "rest")
    table = pq.read_table(summary.outputs[0])
    assert table.num_rows == len(records) - 1
    assert all(np.isfinite(table[name].to_numpy()).all() for name in table.column_names)


def test_cli_assign_exits_1_naming_the_file_and_row(model_path, data_file, tmp_path, capsys) -> None:
    out = tmp_path / "out"
    code = main(["assign", "--model", str(model_path), str(data_file), "--out", str(out)])
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 1 and len(lines) == 1 and "Traceback" not in err, err
    # Row FAR_ROW of the file is row 234 of its second row group of 1000.
    assert f"{data_file}: row group 1, row {FAR_ROW}" in lines[0], lines[0]
    assert not out.exists() or not any(out.rglob("*.parquet")) and not (out / "_SUCCESS").exists()


def test_delta_output_commits_nothing(model_path, data_file, tmp_path, capsys) -> None:
    deltalake = pytest.importorskip("deltalake")
    out = tmp_path / "delta"
    code = main(["assign", "--model", str(model_path), str(data_file), "--out", str(out), "--out-format", "delta"])
    err = capsys.readouterr().err
    assert code == 1 and f"row {FAR_ROW}" in err and "non-finite" in err, err
    with pytest.raises(deltalake.exceptions.TableNotFoundError):
        deltalake.DeltaTable(str(out))


def test_object_store_output_keeps_nothing(model_path, data_file, s3_bucket) -> None:
    with pytest.raises(DataError, match=f"row {FAR_ROW}"):
        assign(model_path, str(data_file), f"s3://{s3_bucket}/scored/")
    fs = pafs.FileSystem.from_uri(f"s3://{s3_bucket}")[0]
    left = fs.get_file_info(pafs.FileSelector(f"{s3_bucket}/scored", recursive=True, allow_not_found=True))
    assert [info.path for info in left if info.type == pafs.FileType.File] == []
