"""Exact agreement with scikit-learn's GaussianMixture from the same starting parameters."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning as SklearnConvergenceWarning
from sklearn.mixture import GaussianMixture

from streamgmm import ConvergenceWarning, StreamingGaussianMixture, make_mixture
from streamgmm.covariance import precisions_from_cholesky

COVARIANCE_TYPES = ["full", "tied", "diag", "spherical"]
K = 3


def problem(covariance_type: str, seed: int = 0):
    X, _, truth = make_mixture(3_600, K, 4, covariance_type=covariance_type, separation=4.0, random_state=seed)
    train, test = X[:3_000], X[3_000:]
    rng = np.random.default_rng(seed)
    # Start away from the truth so EM has real work to do in every iteration.
    weights = np.full(K, 1.0 / K)
    means = truth.means + rng.normal(0.0, 1.0, truth.means.shape)
    precisions = precisions_from_cholesky(truth.precisions_cholesky, covariance_type) * 0.5
    return train, test, dict(weights_init=weights, means_init=means, precisions_init=precisions)


def fit_both(covariance_type: str, n_iter: int, seed: int = 0):
    train, test, init = problem(covariance_type, seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SklearnConvergenceWarning)
        sk = GaussianMixture(K, covariance_type=covariance_type, tol=0, max_iter=n_iter, reg_covar=1e-6, **init).fit(train)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ours = StreamingGaussianMixture(
            K, covariance_type=covariance_type, algorithm="batch", tol=0, max_iter=n_iter, reg_covar=1e-6,
            batch_size=700, **init,
        ).fit(train)
    return sk, ours, train, test


def assert_same_parameters(ours, sk, rtol: float) -> None:
    for name in ("weights_", "means_", "covariances_", "precisions_cholesky_", "precisions_"):
        np.testing.assert_allclose(getattr(ours, name), getattr(sk, name), rtol=rtol, atol=1e-12, err_msg=name)


@pytest.mark.parametrize("n_iter", [1, 5, 20])
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_batch_em_reproduces_sklearn(covariance_type: str, n_iter: int) -> None:
    sk, ours, _, test = fit_both(covariance_type, n_iter)
    assert_same_parameters(ours, sk, rtol=1e-8)
    assert ours.n_iter_ == sk.n_iter_ == n_iter
    assert ours.lower_bound_ == pytest.approx(sk.lower_bound_, rel=1e-10)
    np.testing.assert_allclose(ours.predict_proba(test), sk.predict_proba(test), rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(ours.score_samples(test), sk.score_samples(test), rtol=1e-10)
    np.testing.assert_array_equal(ours.predict(test), sk.predict(test))
    assert ours.score(test) == pytest.approx(sk.score(test), rel=1e-10)
    assert ours.bic(test) == pytest.approx(sk.bic(test), rel=1e-10)
    assert ours.aic(test) == pytest.approx(sk.aic(test), rel=1e-10)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_batch_em_log_likelihood_is_monotone(covariance_type: str) -> None:
    _, ours, _, _ = fit_both(covariance_type, 30)
    history = np.asarray(ours._history)
    assert len(history) == 30
    assert np.all(np.diff(history) >= -1e-12), np.diff(history).min()
    assert history[-1] > history[0] + 0.1  # EM did real work from the perturbed start


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_one_online_batch_with_unit_step_is_one_em_iteration(covariance_type: str) -> None:
    sk, _, train, _ = fit_both(covariance_type, 1)
    _, _, init = problem(covariance_type)
    online = StreamingGaussianMixture(
        K, covariance_type=covariance_type, algorithm="online", batch_size=train.shape[0], step_offset=0.0,
        burn_in=0, shuffle=False, max_passes=1, **init,
    ).fit(train)
    assert online.n_steps_ == 1
    # The online statistics are per record rather than sums, so sklearn's 10 eps added to each
    # count weighs a little differently: agreement is to rounding, not to the bit.
    assert_same_parameters(online, sk, rtol=1e-10)


@pytest.mark.filterwarnings("ignore::streamgmm.ConvergenceWarning")
@pytest.mark.parametrize("covariance_type", ["full", "diag"])
def test_chunked_sources_give_the_same_batch_em(covariance_type: str) -> None:
    train, _, init = problem(covariance_type)
    kwargs = dict(covariance_type=covariance_type, algorithm="batch", tol=0, max_iter=8, batch_size=512, **init)
    from_array = StreamingGaussianMixture(K, **kwargs).fit(train)
    pieces = np.split(train, [1, 999, 1000, 2222])
    from_list = StreamingGaussianMixture(K, **kwargs).fit(pieces)
    from_callable = StreamingGaussianMixture(K, **kwargs).fit(lambda: (p for p in pieces))
    for other in (from_list, from_callable):
        assert_same_parameters(other, from_array, rtol=1e-12)


def test_batch_em_stops_at_tol_like_sklearn() -> None:
    train, _, init = problem("full", seed=1)
    sk = GaussianMixture(K, tol=1e-3, max_iter=200, **init).fit(train)
    ours = StreamingGaussianMixture(K, algorithm="batch", tol=1e-3, max_iter=200, batch_size=1000, **init).fit(train)
    assert ours.converged_ and sk.converged_
    assert ours.n_iter_ == sk.n_iter_
    assert_same_parameters(ours, sk, rtol=1e-8)


def test_batch_em_warns_when_it_runs_out_of_iterations() -> None:
    train, _, init = problem("full")
    with pytest.warns(ConvergenceWarning, match="did not converge"):
        StreamingGaussianMixture(K, algorithm="batch", tol=0, max_iter=2, **init).fit(train)
