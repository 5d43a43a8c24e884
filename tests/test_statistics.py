"""SufficientStatistics: algebra against direct computations on the data."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from streamgmm import ConvergenceWarning, StreamingGaussianMixture, SufficientStatistics, make_mixture

COVARIANCE_TYPES = ["full", "tied", "diag", "spherical"]


def random_resp(n: int, k: int, rng: np.random.Generator) -> np.ndarray:
    r = rng.random((n, k))
    return r / r.sum(axis=1, keepdims=True)


def stats_of(X, resp, shift, covariance_type):
    return SufficientStatistics.from_responsibilities(X, resp, shift, covariance_type)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_addition_is_associative_and_equals_the_concatenation(covariance_type: str) -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(3.0, 2.0, (900, 4))
    resp = random_resp(900, 3, rng)
    parts = [slice(0, 200), slice(200, 650), slice(650, 900)]
    shifts = [X[:10].mean(0), np.zeros(4), np.full(4, 50.0)]  # different shifts: recentred on add
    a, b, c = (stats_of(X[p], resp[p], s, covariance_type) for p, s in zip(parts, shifts))
    whole = stats_of(X, resp, shifts[0], covariance_type)
    for total in ((a + b) + c, a + (b + c)):
        np.testing.assert_allclose(total.counts, whole.counts, rtol=1e-12)
        np.testing.assert_allclose(total.sums, whole.sums, rtol=1e-10, atol=1e-9)
        np.testing.assert_allclose(total.second, whole.second, rtol=1e-10, atol=1e-8)
        assert total.n_records == 900


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_m_step_equals_the_textbook_formulas(covariance_type: str) -> None:
    rng = np.random.default_rng(1)
    X = rng.normal(-1.0, 1.5, (500, 3))
    resp = random_resp(500, 2, rng)
    reg = 1e-3
    params = stats_of(X, resp, X.mean(0) + 0.3, covariance_type).to_params(reg)
    nk = resp.sum(0)
    means = resp.T @ X / nk[:, None]
    full = np.stack([(resp[:, k, None] * (X - means[k])).T @ (X - means[k]) / nk[k] for k in range(2)])
    expected = {
        "full": full + reg * np.eye(3),
        "tied": np.einsum("k,kde->de", nk, full) / nk.sum() + reg * np.eye(3),
        "diag": np.diagonal(full, axis1=1, axis2=2) + reg,
        "spherical": np.diagonal(full, axis1=1, axis2=2).mean(1) + reg,
    }[covariance_type]
    np.testing.assert_allclose(params.weights, nk / 500, rtol=1e-12)
    np.testing.assert_allclose(params.means, means, rtol=1e-12)
    np.testing.assert_allclose(params.covariances, expected, rtol=1e-10)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_params_round_trip_through_statistics(covariance_type: str) -> None:
    _, _, truth = make_mixture(10, 3, 4, covariance_type=covariance_type, random_state=3)
    back = SufficientStatistics.from_params(truth, shift=np.full(4, 7.0), n_records=123.0).to_params(0.0)
    np.testing.assert_allclose(back.weights, truth.weights, rtol=1e-12)
    np.testing.assert_allclose(back.means, truth.means, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(back.covariances, truth.covariances, rtol=1e-10, atol=1e-12)


def test_blend_with_unit_step_is_the_batch_per_record() -> None:
    rng = np.random.default_rng(2)
    X = rng.normal(size=(300, 2))
    old = stats_of(X[:100], random_resp(100, 2, rng), np.zeros(2), "full")
    batch = stats_of(X[100:], random_resp(200, 2, rng), np.zeros(2), "full")
    blended = old.blend(batch, 1.0)
    np.testing.assert_allclose(blended.counts, batch.counts / 200, rtol=1e-15)
    np.testing.assert_allclose(blended.second, batch.second / 200, rtol=1e-15)
    half = old.blend(batch, 0.5)
    np.testing.assert_allclose(half.sums, 0.5 * old.sums / 100 + 0.5 * batch.sums / 200, rtol=1e-14)


@pytest.mark.parametrize("covariance_type", ["full", "diag"])
def test_data_far_from_the_origin_fit_as_well_as_centred_data(covariance_type: str) -> None:
    X, _, truth = make_mixture(20_000, 3, 3, covariance_type=covariance_type, random_state=6)
    offset = 1e6
    init = dict(weights_init=truth.weights, means_init=truth.means + 0.3, precisions_init=truth.precisions)
    shifted_init = dict(init, means_init=init["means_init"] + offset)
    kwargs = dict(covariance_type=covariance_type, algorithm="batch", tol=0, max_iter=5, batch_size=3000)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        centred = StreamingGaussianMixture(3, **kwargs, **init).fit(X)
        far = StreamingGaussianMixture(3, **kwargs, **shifted_init).fit(X + offset)
    np.testing.assert_allclose(far.covariances_, centred.covariances_, rtol=1e-7)
    np.testing.assert_allclose(far.means_ - offset, centred.means_, atol=1e-8)
    np.testing.assert_allclose(far.weights_, centred.weights_, rtol=1e-9)
    assert far.lower_bound_ == pytest.approx(centred.lower_bound_, rel=1e-9)
    # The test means something: the textbook uncentred formula loses most digits at this offset.
    Y = X + offset
    resp = far.predict_proba(Y)
    nk = resp.sum(0)
    mu = resp.T @ Y / nk[:, None]
    naive = np.stack([(resp[:, k, None] * Y).T @ Y / nk[k] - np.outer(mu[k], mu[k]) for k in range(3)])
    exact = np.stack([(resp[:, k, None] * (X - (mu[k] - offset))).T @ (X - (mu[k] - offset)) / nk[k] for k in range(3)])
    assert np.max(np.abs(naive - exact) / np.abs(exact).max()) > 1e-6
