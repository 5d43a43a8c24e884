"""The variational Bayesian mixture's mathematics against scikit-learn's BayesianGaussianMixture.

From the same starting responsibilities (those scikit-learn's ``init_params="random"`` draws with
the same seed) the variational posterior, its weights and every iteration's lower bound must
agree to rounding, for every covariance type and both weight priors; the priors' defaults,
computed here from statistics, must be scikit-learn's from the data.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import BayesianGaussianMixture

from streamgmm import make_mixture
from streamgmm.mixture.covariance import COVARIANCE_TYPES
from streamgmm.mixture.statistics import SufficientStatistics
from streamgmm.mixture.variational import (
    PRIOR_TYPES,
    VariationalPosterior,
    default_priors,
    effective_params,
    log_responsibilities,
    posterior_from_statistics,
    posterior_weights,
)
from streamgmm.mixture.variational_bound import entropy_from_statistics, lower_bound, responsibility_entropy

K = 5
RTOL = 1e-10
REG = 1e-6


def data(seed: int = 1, n: int = 300) -> np.ndarray:
    X, _, _ = make_mixture(n, 3, 3, covariance_type="full", separation=3.0, random_state=seed)
    return X


def fit_sklearn(
    X: np.ndarray, covariance_type: str, prior_type: str, max_iter: int, **priors
) -> BayesianGaussianMixture:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return BayesianGaussianMixture(
            n_components=K,
            covariance_type=covariance_type,
            weight_concentration_prior_type=prior_type,
            init_params="random",
            random_state=0,
            max_iter=max_iter,
            tol=0.0,
            reg_covar=REG,
            **priors,
        ).fit(X)


def sklearn_start(n: int) -> np.ndarray:
    """The responsibilities scikit-learn's init_params='random' draws with random_state=0."""
    resp = np.random.RandomState(0).uniform(size=(n, K))
    return resp / resp.sum(axis=1)[:, None]


def moments(X: np.ndarray, weights: np.ndarray | None = None) -> SufficientStatistics:
    w = np.ones((X.shape[0], 1)) if weights is None else weights[:, None]
    return SufficientStatistics.from_responsibilities(X, w, X[:20].mean(axis=0), "full")


def concentration(value) -> np.ndarray:
    return np.concatenate(value) if isinstance(value, tuple) else np.asarray(value)


def assert_same_posterior(ours: VariationalPosterior, sk: BayesianGaussianMixture, rtol: float = RTOL) -> None:
    pairs = {
        "weight_concentration_": (concentration(ours.weight_concentration), concentration(sk.weight_concentration_)),
        "mean_precision_": (ours.mean_precision, sk.mean_precision_),
        "means_": (ours.means, sk.means_),
        "degrees_of_freedom_": (ours.degrees_of_freedom, sk.degrees_of_freedom_),
        "covariances_": (ours.covariances, sk.covariances_),
        "precisions_cholesky_": (ours.precisions_cholesky, sk.precisions_cholesky_),
        "weights_": (posterior_weights(ours), sk.weights_),
    }
    for name, (a, b) in pairs.items():
        # Off-diagonal entries near zero are compared on the scale of the largest entry.
        atol = rtol * float(np.max(np.abs(b)))
        np.testing.assert_allclose(a, b, rtol=rtol, atol=atol, err_msg=name)


@pytest.mark.parametrize("prior_type", PRIOR_TYPES)
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_iterations_from_the_same_start_reproduce_sklearn(covariance_type: str, prior_type: str) -> None:
    X = data()
    n_iter = 6
    sk = fit_sklearn(X, covariance_type, prior_type, n_iter)
    start = fit_sklearn(X, covariance_type, prior_type, 0)
    shift = X[:20].mean(axis=0)
    priors = default_priors(moments(X), K, covariance_type, prior_type)

    posterior = posterior_from_statistics(
        SufficientStatistics.from_responsibilities(X, sklearn_start(len(X)), shift, covariance_type), priors, REG
    )
    assert_same_posterior(posterior, start)  # scikit-learn's _initialize
    bounds = []
    for _ in range(n_iter):  # scikit-learn's order: E-step, M-step, then the bound of the new posterior
        _, log_resp = log_responsibilities(X, posterior)
        stats = SufficientStatistics.from_responsibilities(X, np.exp(log_resp), shift, covariance_type)
        posterior = posterior_from_statistics(stats, priors, REG)
        bounds.append(lower_bound(posterior, responsibility_entropy(log_resp)))

    assert np.abs(posterior.means - start.means_).max() > 1e-3  # not vacuous: the iterations moved
    assert_same_posterior(posterior, sk)
    np.testing.assert_allclose(bounds, np.ravel(sk.lower_bounds_), rtol=RTOL)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_default_priors_are_sklearn_s_from_the_data(covariance_type: str) -> None:
    X = data(2, 60)
    sk = fit_sklearn(X, covariance_type, "dirichlet_process", 1)
    plain = default_priors(moments(X), K, covariance_type)
    np.testing.assert_allclose(plain.mean_prior, sk.mean_prior_, rtol=RTOL)
    np.testing.assert_allclose(plain.covariance_prior, sk.covariance_prior_, rtol=RTOL)
    assert plain.degrees_of_freedom_prior == sk.degrees_of_freedom_prior_ == 3
    assert plain.weight_concentration_prior == sk.weight_concentration_prior_ == 1.0 / K
    assert plain.mean_precision_prior == sk.mean_precision_prior_ == 1.0

    # Record weights count as repetitions: the priors of repeated records.
    counts = np.arange(60) % 3 + 1.0
    repeated = fit_sklearn(np.repeat(X, counts.astype(int), axis=0), covariance_type, "dirichlet_process", 1)
    weighted = default_priors(moments(X, counts), K, covariance_type)
    np.testing.assert_allclose(weighted.mean_prior, repeated.mean_prior_, rtol=RTOL)
    np.testing.assert_allclose(weighted.covariance_prior, repeated.covariance_prior_, rtol=RTOL)


def test_given_priors_are_kept_and_checked() -> None:
    X = data(3, 40)
    priors = default_priors(
        moments(X),
        K,
        "diag",
        "dirichlet_distribution",
        weight_concentration_prior=2.0,
        mean_precision_prior=0.5,
        mean_prior=np.ones(3),
        degrees_of_freedom_prior=2.5,
        covariance_prior=np.full(3, 4.0),
    )
    assert (priors.weight_concentration_prior, priors.mean_precision_prior, priors.degrees_of_freedom_prior) == (
        2.0,
        0.5,
        2.5,
    )
    np.testing.assert_array_equal(priors.mean_prior, np.ones(3))
    np.testing.assert_array_equal(priors.covariance_prior, np.full(3, 4.0))
    with pytest.raises(ValueError, match="'degrees_of_freedom_prior' should be greater than 2, but got 2.000"):
        default_priors(moments(X), K, "full", degrees_of_freedom_prior=2.0)
    with pytest.raises(ValueError, match="'weight_concentration_prior_type'"):
        default_priors(moments(X), K, "full", "dirichlet")
    diag_moments = SufficientStatistics.from_responsibilities(X, np.ones((40, 1)), np.zeros(3), "diag")
    with pytest.raises(ValueError, match="full second moments"):
        default_priors(diag_moments, K, "tied")


@pytest.mark.parametrize("prior_type", PRIOR_TYPES)
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_the_effective_mixture_s_e_step_is_the_vb_e_step(covariance_type: str, prior_type: str) -> None:
    X = data(4, 200)
    sk = fit_sklearn(X, covariance_type, prior_type, 3)
    posterior = VariationalPosterior(
        covariance_type,
        sk.weight_concentration_,
        sk.mean_precision_,
        sk.means_,
        sk.degrees_of_freedom_,
        sk.covariances_,
        sk.precisions_cholesky_,
    )
    log_norm, log_resp = log_responsibilities(X, posterior)
    np.testing.assert_allclose(log_norm, sk.score_samples(X), rtol=RTOL)
    np.testing.assert_allclose(np.exp(log_resp), sk.predict_proba(X), rtol=RTOL, atol=1e-14)

    params, offset = effective_params(posterior)
    kernel_norm, kernel_resp = params.e_step(X)
    np.testing.assert_allclose(kernel_norm + offset, log_norm, rtol=RTOL)
    np.testing.assert_allclose(kernel_resp, np.exp(log_resp), rtol=1e-9, atol=1e-14)

    # The entropy from statistics (what the fused kernels give) equals the entropy of the rows.
    stats = SufficientStatistics.from_responsibilities(X, np.exp(log_resp), X.mean(axis=0), covariance_type)
    direct = responsibility_entropy(log_resp)
    np.testing.assert_allclose(entropy_from_statistics(stats, posterior, log_norm.sum()), direct, rtol=1e-9)
