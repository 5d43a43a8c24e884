"""Record weights and nan_policy='marginalize' on a real Dask cluster: a weighted
DataFrame fits as its rows repeated, and incomplete records fit as in one process."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from shared_helpers import assert_same_parameters

dd = pytest.importorskip("dask.dataframe")
da = pytest.importorskip("dask.array")
pd = pytest.importorskip("pandas")
cloudpickle = pytest.importorskip("cloudpickle")

from streamgmm import StreamingGaussianMixture, make_mixture  # noqa: E402
from streamgmm.dask.source import dask_source  # noqa: E402

cloudpickle.register_pickle_by_value(sys.modules[__name__])


@pytest.fixture(scope="module")
def data():
    X, _, _ = make_mixture(3000, 3, 2, random_state=4)
    weights = np.random.default_rng(0).integers(0, 4, X.shape[0]).astype(float)
    return X, weights


def start(X: np.ndarray) -> dict:
    return dict(
        n_components=3,
        weights_init=np.full(3, 1 / 3),
        means_init=X[[0, 1, 2]],
        precisions_init=np.stack([np.eye(2)] * 3),
        tol=1e-7,
        max_iter=30,
        batch_size=400,
    )


@pytest.mark.parametrize("persist", [False, True])
def test_weighted_frame_on_the_cluster_fits_as_repeated_rows(client, data, persist) -> None:
    X, w = data
    frame = dd.from_pandas(pd.DataFrame({"a": X[:, 0], "b": X[:, 1], "w": w}), npartitions=5)
    source = dask_source(frame, client=client, weight_column="w", persist=persist)
    on_cluster = StreamingGaussianMixture(algorithm="batch", **start(X)).fit(source)
    repeated = StreamingGaussianMixture(algorithm="batch", **start(X)).fit(np.repeat(X, w.astype(int), axis=0))
    assert on_cluster.n_iter_ > 3
    assert on_cluster.n_iter_ == repeated.n_iter_
    assert_same_parameters(on_cluster, repeated, atol=1e-10)
    assert on_cluster.records_seen_ == repeated.records_seen_ == int(w.sum())
    assert list(on_cluster.feature_names_in_) == ["a", "b"]


def test_weighted_waves_step_as_repeated_rows(client, data) -> None:
    """Online EM in one wave per pass: the wave's step counts its weight as records."""
    X, w = data
    weighted = dd.from_pandas(pd.DataFrame({"a": X[:, 0], "b": X[:, 1], "w": w}), npartitions=4)
    Xr = np.repeat(X, w.astype(int), axis=0)
    repeated = dd.from_pandas(pd.DataFrame({"a": Xr[:, 0], "b": Xr[:, 1]}), npartitions=4)
    options = dict(start(X), algorithm="online", max_passes=2, tol=0.0, shuffle=False)
    a = StreamingGaussianMixture(**options).fit(
        dask_source(weighted, client=client, weight_column="w"), partitions_per_step=4
    )
    b = StreamingGaussianMixture(**options).fit(repeated, client=client, partitions_per_step=4)
    assert_same_parameters(a, b, atol=1e-10)
    assert a.n_steps_ == b.n_steps_ and a.records_seen_ == b.records_seen_


def test_marginalize_on_the_cluster_equals_the_local_fit(client) -> None:
    X, _, _ = make_mixture(3000, 3, 3, random_state=5)
    X[np.random.default_rng(1).random(X.shape) < 0.2] = np.nan
    X = X[~np.isnan(X).all(axis=1)]
    options = dict(start(X[:, :2]), algorithm="batch", nan_policy="marginalize")
    options["means_init"] = np.nan_to_num(X[[0, 1, 2]])
    options["precisions_init"] = np.stack([np.eye(3)] * 3)
    on_cluster = StreamingGaussianMixture(**options).fit(da.from_array(X, chunks=(700, 3)), client=client)
    local = StreamingGaussianMixture(**options).fit(X)
    assert on_cluster.n_iter_ > 3
    assert on_cluster.n_iter_ == local.n_iter_
    assert_same_parameters(on_cluster, local, atol=1e-10)
    # A Dask collection is scored on its partitions, incomplete rows from their observed features.
    assert on_cluster.score(da.from_array(X, chunks=(700, 3))) == pytest.approx(local.score(X), rel=1e-12)
    # And online waves run on the incomplete records too.
    online = StreamingGaussianMixture(**dict(options, algorithm="online")).fit(
        da.from_array(X, chunks=(700, 3)), client=client
    )
    assert np.isfinite(online.means_).all() and online.records_seen_ == X.shape[0]
