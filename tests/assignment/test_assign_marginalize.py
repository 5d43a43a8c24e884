"""``assign`` under ``nan_policy="marginalize"``: a row with missing features gets the results of its
observed features, and only a row with nothing observed has nulls. Real Parquet
files; the oracle is the model's own ``predict_proba``/``score_samples`` on a numpy array with
NaN (``nan_policy='marginalize'``), and scipy's marginal densities for a few rows."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from scipy.stats import multivariate_normal

from streamgmm import DataError, ParquetSource, StreamingGaussianMixture, assign
from streamgmm.io.sources.arrow import TableSource


@pytest.fixture(scope="module")
def incomplete(tmp_path_factory):
    """A two-file lake of three features with 15% of values missing, three empty rows, and a
    model fitted on it under marginalize."""
    root = tmp_path_factory.mktemp("incomplete")
    rng = np.random.default_rng(5)
    lake = root / "lake"
    lake.mkdir()
    arrays = []
    for i in range(2):
        X = np.concatenate([rng.normal(-3, 1, (600, 3)), rng.normal(3, 1, (600, 3))])
        X[rng.random(X.shape) < 0.15] = np.nan
        X[[4, 400, 1199] if i == 0 else [10]] = np.nan
        arrays.append(X)
        columns = {name: pa.array(X[:, j], from_pandas=i == 0) for j, name in enumerate("abc")}
        pq.write_table(pa.table({"id": np.arange(1200) + 1200 * i, **columns}), lake / f"part-{i}.parquet", 500)
    model = StreamingGaussianMixture(2, covariance_type="full", random_state=0, nan_policy="marginalize")
    model.fit(ParquetSource(lake, passthrough=["id"], nan_policy="marginalize"))
    return lake, arrays, model


def check_results(table: pa.Table, X: np.ndarray, model: StreamingGaussianMixture) -> None:
    empty = np.isnan(X).all(axis=1)
    resp = np.column_stack([table[f"resp_{k}"].to_numpy(zero_copy_only=False) for k in range(2)])
    null = table["resp_0"].is_null().to_numpy(zero_copy_only=False)
    np.testing.assert_array_equal(null, empty)
    assert table["log_likelihood"].null_count == table["component"].null_count == int(empty.sum())
    incomplete = np.isnan(X).any(axis=1) & ~empty
    assert incomplete.sum() > 300 and np.isfinite(resp[~empty]).all()
    np.testing.assert_allclose(resp[~empty], model.predict_proba(X)[~empty], rtol=1e-12, atol=1e-14)
    log_likelihood = table["log_likelihood"].to_numpy(zero_copy_only=False)
    np.testing.assert_allclose(log_likelihood[~empty], model.score_samples(X)[~empty], rtol=1e-12)
    row = int(np.flatnonzero(incomplete)[0])
    seen = ~np.isnan(X[row])
    dens = [
        model.weights_[k]
        * multivariate_normal(model.means_[k][seen], model.covariances_[k][np.ix_(seen, seen)]).pdf(X[row, seen])
        for k in range(2)
    ]
    np.testing.assert_allclose(resp[row], np.array(dens) / sum(dens), rtol=1e-9)


def test_assign_a_lake_under_marginalize(incomplete, tmp_path):
    lake, arrays, model = incomplete
    empty = sum(int(np.isnan(X).all(axis=1).sum()) for X in arrays)
    assert empty >= 4 and model.n_skipped_ == empty
    summary = assign(model, lake, tmp_path / "out", keep=["id"], nan_policy="marginalize")
    assert summary.skipped == empty and summary.rows == 2400
    with open(tmp_path / "out" / "_SUCCESS") as handle:
        assert json.load(handle)["nan_policy"] == "marginalize"
    for i, X in enumerate(arrays):
        table = pq.read_table(tmp_path / "out" / f"part-{i}.parquet")
        assert table["id"].to_pylist() == list(range(1200 * i, 1200 * (i + 1)))
        check_results(table, X, model)
    # The source's own policy is the default; under raise the same lake is an error.
    assign(model, ParquetSource(lake, passthrough=["id"], nan_policy="marginalize"), tmp_path / "own", keep=["id"])
    assert pq.read_table(tmp_path / "own" / "part-1.parquet").equals(pq.read_table(tmp_path / "out" / "part-1.parquet"))
    with pytest.raises(DataError, match=r"part-0\.parquet: row group 0, row \d+, column '[abc]'"):
        assign(model, lake, tmp_path / "raise", keep=["id"])


def test_assign_a_table_under_marginalize(incomplete, tmp_path):
    lake, arrays, model = incomplete
    table = pq.read_table(lake / "part-0.parquet")
    assign(model, TableSource(table, passthrough=["id"], nan_policy="marginalize"), tmp_path / "out", keep=["id"])
    (written,) = list((tmp_path / "out").glob("*.parquet"))
    check_results(pq.read_table(written), arrays[0], model)
