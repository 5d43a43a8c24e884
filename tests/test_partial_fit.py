"""partial_fit continues the online recursion exactly as one fit over the same batches."""

from __future__ import annotations

import numpy as np
import pytest

from streamgmm import StreamingGaussianMixture, make_mixture


@pytest.fixture(scope="module")
def stream():
    X, _, truth = make_mixture(12_000, 3, 2, random_state=9)
    init = dict(weights_init=truth.weights, means_init=truth.means + 0.5, precisions_init=truth.precisions)
    return X, init


@pytest.mark.parametrize("covariance_type", ["full", "spherical"])
def test_stream_of_partial_fits_equals_one_fit(stream, covariance_type: str) -> None:
    X, init = stream
    if covariance_type == "spherical":
        init = dict(init, precisions_init=np.ones(3))
    kwargs = dict(covariance_type=covariance_type, batch_size=1000, shuffle=False, **init)
    whole = StreamingGaussianMixture(3, **kwargs).fit(X)
    pieces = StreamingGaussianMixture(3, **kwargs)
    for chunk in np.split(X, [3000, 4000, 9000]):  # sizes are multiples of batch_size
        pieces.partial_fit(chunk)
    assert pieces.n_steps_ == whole.n_steps_ == 12
    assert pieces.records_seen_ == whole.records_seen_ == X.shape[0]
    for name in ("weights_", "means_", "covariances_", "precisions_cholesky_"):
        np.testing.assert_array_equal(getattr(pieces, name), getattr(whole, name), err_msg=name)


def test_step_counter_grows_by_batches_per_call(stream) -> None:
    X, init = stream
    model = StreamingGaussianMixture(3, batch_size=1000, **init)
    model.partial_fit(X[:2500])
    assert model.n_steps_ == 3
    model.partial_fit(X[2500:2600])
    assert model.n_steps_ == 4 and model.records_seen_ == 2600


def test_first_partial_fit_initialises_from_its_chunk(stream) -> None:
    X, _ = stream
    model = StreamingGaussianMixture(3, random_state=0).partial_fit(X[:5000])
    assert model.weights_.shape == (3,) and np.isclose(model.weights_.sum(), 1.0)
    assert model.n_features_in_ == 2


def test_partial_fit_refuses_another_number_of_features(stream) -> None:
    X, init = stream
    model = StreamingGaussianMixture(3, **init).partial_fit(X[:1000])
    with pytest.raises(ValueError, match="X has 3 features, but StreamingGaussianMixture is expecting 2"):
        model.partial_fit(np.hstack([X[:10], X[:10, :1]]))


def test_first_partial_fit_needs_as_many_records_as_components(stream) -> None:
    X, _ = stream
    with pytest.raises(ValueError, match="n_samples = 2"):
        StreamingGaussianMixture(3).partial_fit(X[:2])
