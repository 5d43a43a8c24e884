"""partial_fit continues the online recursion exactly as one fit over the same batches."""

from __future__ import annotations

import math

import numpy as np
import pytest

from streamgmm import StreamingGaussianMixture, make_mixture
from streamgmm.mixture.covariance import COVARIANCE_TYPES

K = 3
BATCH = 1000
PARAMETERS = ("weights_", "means_", "covariances_", "precisions_cholesky_", "precisions_")


@pytest.fixture(scope="module")
def stream() -> np.ndarray:
    X, _, _ = make_mixture(12_000, K, 2, random_state=9)
    return X


def start(X: np.ndarray, covariance_type: str) -> dict[str, np.ndarray]:
    """A start of the right shapes, away from the truth, from the data's own moments."""
    rng = np.random.default_rng(1)
    d = X.shape[1]
    variance = X.var(axis=0)
    precisions = {
        "full": np.stack([np.diag(1 / variance)] * K),
        "tied": np.diag(1 / variance),
        "diag": np.tile(1 / variance, (K, 1)),
        "spherical": np.full(K, 1 / variance.mean()),
    }[covariance_type]
    means = X.mean(axis=0) + rng.normal(0.0, 1.0, (K, d)) * np.sqrt(variance)
    return dict(weights_init=np.full(K, 1 / K), means_init=means, precisions_init=precisions)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_stream_of_partial_fits_equals_one_fit(stream: np.ndarray, covariance_type: str) -> None:
    X = stream
    init = start(X, covariance_type)
    # Online EM from the user's start as given (max_iter=0: not refined on a sample first, which
    # would be the whole data for fit but only the first chunk for partial_fit).
    kwargs = dict(
        covariance_type=covariance_type, algorithm="online", max_iter=0, batch_size=BATCH, shuffle=False, **init
    )
    whole = StreamingGaussianMixture(K, **kwargs).fit(X)
    pieces = StreamingGaussianMixture(K, **kwargs)
    bounds = [3000, 4000, 9000]  # chunk sizes 3000, 1000, 5000, 3000: multiples of batch_size
    chunks = np.split(X, bounds)
    assert all(c.shape[0] % BATCH == 0 for c in chunks)
    for chunk in chunks:
        pieces.partial_fit(chunk)

    # Not vacuous: the recursion moved the means well away from the start.
    assert np.abs(whole.means_ - init["means_init"]).max() > 0.5
    assert pieces.n_steps_ == whole.n_steps_ == X.shape[0] // BATCH
    assert pieces.records_seen_ == whole.records_seen_ == X.shape[0]
    for name in PARAMETERS:
        np.testing.assert_array_equal(getattr(pieces, name), getattr(whole, name), err_msg=name)
    # The running statistics (what the next step blends into) are the same too.
    for name, value in whole.online_state_.statistics.arrays().items():
        np.testing.assert_array_equal(pieces.online_state_.statistics.arrays()[name], value, err_msg=name)
    # Each call reports its chunk's mean log-likelihood; weighted by records they make the pass's.
    sizes = [c.shape[0] for c in chunks]
    assert len(pieces.lower_bounds_) == len(chunks) and pieces.n_iter_ == len(chunks)
    np.testing.assert_allclose(np.dot(pieces.lower_bounds_, sizes) / sum(sizes), whole.lower_bound_, rtol=1e-12)


def test_partial_fit_after_fit_continues_the_same_recursion(stream: np.ndarray) -> None:
    X = stream
    kwargs = dict(algorithm="online", max_iter=0, batch_size=BATCH, shuffle=False, **start(X, "full"))
    whole = StreamingGaussianMixture(K, **kwargs).fit(X)
    resumed = StreamingGaussianMixture(K, **kwargs).fit(X[:5000]).partial_fit(X[5000:8000]).partial_fit(X[8000:])
    assert resumed.n_steps_ == whole.n_steps_
    for name in PARAMETERS:
        np.testing.assert_array_equal(getattr(resumed, name), getattr(whole, name), err_msg=name)


def test_step_counter_grows_by_batches_per_call(stream: np.ndarray) -> None:
    X = stream
    model = StreamingGaussianMixture(K, batch_size=BATCH, **start(X, "full"))
    seen = steps = 0
    for calls, size in enumerate([2500, 100, 1000, 1, 3001, 999], start=1):
        model.partial_fit(X[seen : seen + size])
        seen += size
        steps += math.ceil(size / BATCH)
        assert model.n_steps_ == steps, size
        assert model.records_seen_ == seen
        assert model.n_iter_ == calls
    assert steps == 3 + 1 + 1 + 1 + 4 + 1


@pytest.mark.parametrize("init_params", ["k-means++", "random_from_data"])
def test_first_partial_fit_initialises_from_its_chunk(stream: np.ndarray, init_params: str) -> None:
    X = stream
    chunk = X[:4000]
    kwargs = dict(random_state=0, init_params=init_params, batch_size=BATCH, init_size=2000)
    first = StreamingGaussianMixture(K, **kwargs).partial_fit(chunk)
    # The same as an unshuffled online fit of that chunk alone: initialised from a sample of it,
    # then one step per batch of it.
    alone = StreamingGaussianMixture(K, algorithm="online", shuffle=False, **kwargs).fit(chunk)
    assert first.n_steps_ == alone.n_steps_ == 4
    assert first.n_features_in_ == 2 and first.records_seen_ == 4000
    for name in PARAMETERS:
        np.testing.assert_array_equal(getattr(first, name), getattr(alone, name), err_msg=name)
    assert first.lower_bound_ == alone.lower_bound_
    # ... and not from any other data: another chunk gives another start.
    other = StreamingGaussianMixture(K, **kwargs).partial_fit(X[4000:8000])
    assert not np.array_equal(other.means_, first.means_)


def test_partial_fit_refuses_another_number_of_features(stream: np.ndarray) -> None:
    X = stream
    model = StreamingGaussianMixture(K, batch_size=BATCH, **start(X, "full")).partial_fit(X[:1000])
    before = {name: getattr(model, name).copy() for name in PARAMETERS}
    with pytest.raises(ValueError, match="X has 3 features, but StreamingGaussianMixture is expecting 2"):
        model.partial_fit(np.hstack([X[:10], X[:10, :1]]))
    with pytest.raises(ValueError, match="X has 1 features, but StreamingGaussianMixture is expecting 2"):
        model.partial_fit(X[:10, :1])
    # The refused chunks left no trace.
    assert model.n_steps_ == 1 and model.records_seen_ == 1000 and model.n_features_in_ == 2
    for name, value in before.items():
        np.testing.assert_array_equal(getattr(model, name), value, err_msg=name)


def test_first_partial_fit_needs_as_many_records_as_components(stream: np.ndarray) -> None:
    with pytest.raises(ValueError, match="n_samples = 2"):
        StreamingGaussianMixture(K).partial_fit(stream[:2])


@pytest.mark.parametrize("change", [dict(covariance_type="diag"), dict(n_components=K + 1)])
def test_continuing_refuses_a_model_of_another_shape(stream: np.ndarray, change: dict) -> None:
    # The running statistics have the fitted K and covariance type; continuing them under other
    # settings would leave covariances_ of one type labelled as another (sample() and save() break).
    X = stream
    model = StreamingGaussianMixture(K, batch_size=BATCH, random_state=0).partial_fit(X[:2000])
    means = model.means_.copy()
    model.set_params(**change)
    with pytest.raises(ValueError, match="cannot continue a model fitted with n_components=3, covariance_type='full'"):
        model.partial_fit(X[2000:3000])
    with pytest.raises(ValueError, match="cannot continue"):
        model.set_params(warm_start=True).fit(X[2000:3000])
    np.testing.assert_array_equal(model.means_, means)
    assert model.n_steps_ == 2
    # A fresh fit under the new settings is fine.
    model.set_params(warm_start=False).fit(X[:2000])
    assert model.means_.shape[0] == model.n_components
