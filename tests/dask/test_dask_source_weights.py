"""A Dask source with ``weight_column`` (a lake, a Dask DataFrame), on the real two-process cluster
of ``conftest.py``: the workers build weighted batches and samples, so each partition's E-step
statistics add up to the local source's, and a batch EM fit on the cluster equals the local one."""

from __future__ import annotations

import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

pytest.importorskip("distributed")
dd = pytest.importorskip("dask.dataframe")
import cloudpickle  # noqa: E402 (distributed's dependency)

from streamgmm import ParquetSource, StreamingGaussianMixture  # noqa: E402
from streamgmm.dask.em import partition_statistics  # noqa: E402
from streamgmm.dask.source import dask_source  # noqa: E402
from streamgmm.kernels.chunk import chunk_statistics  # noqa: E402
from streamgmm.mixture.params import MixtureParams  # noqa: E402

# The workers unpickle this module's functions by value: it is not importable there.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

PARAMS = MixtureParams.from_covariances(
    np.array([0.4, 0.6]), np.array([[-1.0, 0.0, 1.0], [2.0, 1.0, -1.0]]), np.stack([np.eye(3), 2 * np.eye(3)]), "full"
)
SHIFT = np.array([0.5, 0.5, 0.0])


@pytest.fixture(scope="module")
def counted_lake(tmp_path_factory):
    """Three files of x, y, z with 10% missing values, some empty rows and a count column; and the
    same records as one numpy matrix (features, counts) read with pyarrow."""
    lake = tmp_path_factory.mktemp("weights") / "lake"
    lake.mkdir()
    rng = np.random.default_rng(8)
    features, counts = [], []
    for i in range(3):
        X = np.concatenate([rng.normal(-1, 1, (400, 3)), rng.normal(2, 1.5, (400, 3))])
        X[rng.random(X.shape) < 0.1] = np.nan
        X[[3, 500]] = np.nan
        count = rng.integers(0, 5, size=800)
        table = pa.table({"id": np.arange(800) + 800 * i, "x": X[:, 0], "y": X[:, 1], "z": X[:, 2], "count": count})
        pq.write_table(table, lake / f"part-{i}.parquet", row_group_size=300)
        features.append(X)
        counts.append(count)
    return lake, np.concatenate(features), np.concatenate(counts)


def expected_statistics(X: np.ndarray, counts: np.ndarray):
    observed = ~np.isnan(X).all(axis=1)
    return chunk_statistics(X[observed], PARAMS, SHIFT, weights=counts[observed].astype(float))[0]


def summed(source) -> tuple[object, int]:
    results = source.compute(source.map(partition_statistics, PARAMS, SHIFT, 256))
    total = results[0].statistics
    for result in results[1:]:
        total = total + result.statistics
    return total, sum(result.skipped for result in results)


def assert_same_statistics(got, expected):
    assert got.n_records == pytest.approx(expected.n_records, rel=1e-13)
    for name, value in expected.arrays().items():
        np.testing.assert_allclose(got.arrays()[name], value, rtol=1e-11, atol=1e-9, err_msg=name)


def test_a_weighted_lake_on_the_cluster_gives_the_local_statistics(counted_lake, client):
    lake, X, counts = counted_lake
    source = dask_source(lake, client=client, weight_column="count", nan_policy="marginalize", passthrough=["id"])
    assert source.weighted and source.n_features == 3 and source.feature_names == ["x", "y", "z"]
    stats, skipped = summed(source)
    assert skipped == int(np.isnan(X).all(axis=1).sum()) >= 6
    expected = expected_statistics(X, counts)
    assert expected.n_records == counts[~np.isnan(X).all(axis=1)].sum()
    assert_same_statistics(stats, expected)
    sample = source.sample(5000, np.random.default_rng(0)).stacked()
    assert sample.shape == (X.shape[0] - skipped, 4)  # every record drawn, each with its weight
    assert source.skipped_records == skipped  # the sample read every partition whole
    np.testing.assert_array_equal(np.sort(sample[:, 3]), np.sort(counts[~np.isnan(X).all(axis=1)]))


def test_a_weighted_dask_dataframe_gives_the_local_statistics(counted_lake, client):
    lake, X, counts = counted_lake
    frame = dd.from_pandas(pq.read_table(lake).to_pandas(), npartitions=4)
    source = dask_source(frame, client=client, weight_column="count", nan_policy="marginalize", passthrough=["id"])
    assert source.weighted and source.feature_names == ["x", "y", "z"]
    stats, _ = summed(source)
    assert_same_statistics(stats, expected_statistics(X, counts))
    with pytest.raises(TypeError, match="not a Dask array"):
        dask_source(frame.to_dask_array(lengths=True), weight_column="count")


@pytest.mark.parametrize("persist", [False, True])
def test_batch_em_on_the_cluster_equals_the_local_fit(counted_lake, client, persist):
    lake, _, _ = counted_lake
    start = {
        "weights_init": PARAMS.weights,
        "means_init": PARAMS.means,
        "precisions_init": np.linalg.inv(PARAMS.covariances),
    }

    def fitted(source):
        model = StreamingGaussianMixture(2, algorithm="batch", max_iter=8, tol=0.0, batch_size=256, **start)
        with pytest.warns(Warning):  # stopped at max_iter (tol=0)
            return model.fit(source)

    options = {"weight_column": "count", "nan_policy": "marginalize", "passthrough": ["id"]}
    local = fitted(ParquetSource(lake, **options))
    remote = fitted(dask_source(lake, client=client, persist=persist, **options))
    assert remote.fitted_state_.feature_names == ["x", "y", "z"]
    np.testing.assert_allclose(remote.means_, local.means_, rtol=0, atol=1e-10)
    np.testing.assert_allclose(remote.covariances_, local.covariances_, rtol=0, atol=1e-10)
    np.testing.assert_allclose(remote.weights_, local.weights_, rtol=0, atol=1e-12)
