"""Batch variational EM over a source against scikit-learn's BayesianGaussianMixture.

From the same start the loop must compute what scikit-learn computes, posterior and lower bound
to 1e-10 relative after several iterations, for every covariance type and both weight priors,
with the data in one batch or in many mini-batches, and with record weights counted as
repetitions.
"""

from __future__ import annotations

import functools
import warnings

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import BayesianGaussianMixture

from streamgmm import make_mixture
from streamgmm.em.variational import (
    moment_statistics,
    run_variational_em,
    statistics_of_responsibilities,
    variational_e_step,
)
from streamgmm.io.sources.chunk_source import ArraySource, IterableSource
from streamgmm.mixture.covariance import COVARIANCE_TYPES
from streamgmm.mixture.variational import PRIOR_TYPES, VariationalPosterior, default_priors, posterior_weights

K = 5
N = 300
RTOL = 1e-10
REG = 1e-6


def data(seed: int = 1, n: int = N, separation: float = 3.0) -> np.ndarray:
    X, _, _ = make_mixture(n, 3, 3, covariance_type="full", separation=separation, random_state=seed)
    return X


def bgm(covariance_type: str, prior_type: str, max_iter: int, tol: float = 0.0, **kwargs) -> BayesianGaussianMixture:
    return BayesianGaussianMixture(
        n_components=K,
        covariance_type=covariance_type,
        weight_concentration_prior_type=prior_type,
        init_params="random",
        random_state=0,
        max_iter=max_iter,
        tol=tol,
        reg_covar=REG,
        **kwargs,
    )


def fit(model: BayesianGaussianMixture, X: np.ndarray) -> BayesianGaussianMixture:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return model.fit(X)


@functools.cache
def reference(covariance_type: str, prior_type: str, n_iter: int) -> BayesianGaussianMixture:
    """scikit-learn's fit of :func:`data` (once per case: the tests only read it)."""
    return fit(bgm(covariance_type, prior_type, n_iter), data())


def sklearn_start(n: int) -> np.ndarray:
    """The responsibilities scikit-learn's init_params='random' draws with random_state=0."""
    resp = np.random.RandomState(0).uniform(size=(n, K))
    return resp / resp.sum(axis=1)[:, None]


def posterior_of(sk: BayesianGaussianMixture) -> VariationalPosterior:
    return VariationalPosterior(
        sk.covariance_type,
        sk.weight_concentration_,
        sk.mean_precision_,
        sk.means_,
        sk.degrees_of_freedom_,
        sk.covariances_,
        sk.precisions_cholesky_,
    )


def assert_same_posterior(ours: VariationalPosterior, sk: BayesianGaussianMixture, rtol: float = RTOL) -> None:
    reference = posterior_of(sk)
    for name in ("mean_precision", "means", "degrees_of_freedom", "covariances", "precisions_cholesky"):
        expected = np.asarray(getattr(reference, name))
        atol = rtol * float(np.max(np.abs(expected)))  # off-diagonals near zero, on the largest entry's scale
        np.testing.assert_allclose(getattr(ours, name), expected, rtol=rtol, atol=atol, err_msg=name)
    np.testing.assert_allclose(
        np.concatenate(np.atleast_2d(ours.weight_concentration)),
        np.concatenate(np.atleast_2d(sk.weight_concentration_)),
        rtol=rtol,
    )
    np.testing.assert_allclose(posterior_weights(ours), sk.weights_, rtol=rtol)


def run(source, covariance_type: str, prior_type: str, max_iter: int, batch_size: int, **kwargs):
    moments = moment_statistics(source, batch_size)
    priors = default_priors(moments, K, covariance_type, prior_type)
    start = kwargs.pop("start", None)
    if start is None:
        start = statistics_of_responsibilities(source, sklearn_start(N), moments.shift, covariance_type, batch_size)
    return run_variational_em(
        source,
        priors,
        start,
        shift=moments.shift,
        reg_covar=REG,
        tol=kwargs.pop("tol", 0.0),
        max_iter=max_iter,
        batch_size=batch_size,
        **kwargs,
    )


@pytest.mark.parametrize(
    "batch_size, route",
    [(N, "exact"), (70, "exact"), (70, "fused")],  # one batch; four and a short last one; by the kernels
)
@pytest.mark.parametrize("prior_type", PRIOR_TYPES)
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_batch_variational_em_reproduces_sklearn(
    covariance_type: str, prior_type: str, batch_size: int, route: str
) -> None:
    X = data()
    n_iter = 8
    sk = reference(covariance_type, prior_type, n_iter)
    ours = run(ArraySource(X), covariance_type, prior_type, n_iter, batch_size, route=route)

    assert ours.n_iter == sk.n_iter_ == n_iter
    assert ours.converged is sk.converged_ is False  # tol=0 never converges
    assert_same_posterior(ours.posterior, sk)
    np.testing.assert_allclose(ours.history, np.ravel(sk.lower_bounds_), rtol=RTOL)
    np.testing.assert_allclose(ours.lower_bound, np.ravel(sk.lower_bound_)[0], rtol=RTOL)
    assert ours.statistics.n_records == N


@pytest.mark.parametrize("prior_type", PRIOR_TYPES)
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_record_weights_count_as_repetitions(covariance_type: str, prior_type: str) -> None:
    X = data(2, 120)
    counts = np.arange(120) % 3 + 1
    repeated = np.repeat(X, counts, axis=0)
    # scikit-learn starts from its own draw on the repeated records: both continue from its start.
    sk = fit(bgm(covariance_type, prior_type, 0, warm_start=True), repeated)
    start = posterior_of(sk)
    sk.max_iter = 6
    fit(sk, repeated)

    source = ArraySource(X, weights=counts.astype(np.float64))
    ours = run(source, covariance_type, prior_type, 6, 50, start=start)
    assert_same_posterior(ours.posterior, sk)
    np.testing.assert_allclose(ours.history, np.ravel(sk.lower_bounds_), rtol=RTOL)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_it_stops_at_tol_as_sklearn(covariance_type: str) -> None:
    X = data(3, separation=6.0)  # a few dozen iterations to converge
    sk = fit(bgm(covariance_type, "dirichlet_process", 300, tol=1e-2), X)
    ours = run(ArraySource(X), covariance_type, "dirichlet_process", 300, 64, tol=1e-2)
    assert sk.converged_ and ours.converged
    assert ours.n_iter == sk.n_iter_ < 300
    assert_same_posterior(ours.posterior, sk, rtol=1e-8)  # dozens of iterations compound the rounding


@pytest.mark.parametrize("prior_type", PRIOR_TYPES)
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_the_fused_kernels_give_the_same_e_step(covariance_type: str, prior_type: str) -> None:
    X = data(4)
    sk = fit(bgm(covariance_type, prior_type, 4), X)
    posterior = posterior_of(sk)
    source = ArraySource(X, weights=np.linspace(0.5, 2.0, N))
    shift = X[:50].mean(axis=0)
    exact, exact_entropy = variational_e_step(source, posterior, shift, 70, route="exact")
    fused, fused_entropy = variational_e_step(source, posterior, shift, 70, route="fused")
    for name in ("counts", "sums", "second"):
        expected = getattr(exact, name)
        atol = 1e-10 * float(np.abs(expected).max())
        np.testing.assert_allclose(getattr(fused, name), expected, rtol=1e-10, atol=atol, err_msg=name)
    np.testing.assert_allclose(fused.log_likelihood, exact.log_likelihood, rtol=1e-12)
    # The entropy from statistics is a difference of sums over the records: to their rounding.
    np.testing.assert_allclose(fused_entropy, exact_entropy, rtol=0, atol=1e-12 * abs(exact.log_likelihood))


def test_max_iter_zero_returns_the_start_and_a_warm_start_continues() -> None:
    X = data(5)
    sk = fit(bgm("full", "dirichlet_process", 7), X)
    nothing = run(ArraySource(X), "full", "dirichlet_process", 0, 100)
    assert nothing.n_iter == 0 and nothing.statistics is None and nothing.lower_bound == -np.inf
    first = run(ArraySource(X), "full", "dirichlet_process", 3, 100)
    rest = run(ArraySource(X), "full", "dirichlet_process", 4, 100, start=first.posterior)
    assert_same_posterior(rest.posterior, sk)
    np.testing.assert_allclose(first.history + rest.history, sk.lower_bounds_, rtol=RTOL)


def test_bad_sources_say_what_is_wrong() -> None:
    X = data(6)
    with pytest.raises(ValueError, match="needs a source it can read again"):
        run(
            IterableSource(iter([X])),
            "diag",
            "dirichlet_process",
            1,
            100,
            start=posterior_of(fit(bgm("diag", "dirichlet_process", 1), X)),
        )
    missing = X.copy()
    missing[7, 1] = np.nan
    start = posterior_of(fit(bgm("diag", "dirichlet_process", 1), X))
    for route in ("exact", "fused"):
        with pytest.raises(ValueError, match="missing"):
            variational_e_step(ArraySource(missing), start, X.mean(axis=0), 100, route)
    with pytest.raises(ValueError, match="'route'"):
        variational_e_step(ArraySource(X), start, X.mean(axis=0), 100, "fast")
    with pytest.raises(ValueError, match="resp has 10 rows"):
        statistics_of_responsibilities(ArraySource(X), np.ones((10, K)) / K, X.mean(axis=0), "diag", 100)


@pytest.mark.parametrize("route", ["exact", "fused"])
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_data_far_from_the_origin_fit_as_near_it(covariance_type: str, route: str) -> None:
    # Sums about a shift near the data keep their precision: only the records' own rounding
    # (1e-10 at 1e6) is lost, where raw second moments would lose everything.
    X = data(7)
    near = run(ArraySource(X), covariance_type, "dirichlet_process", 5, 70, route=route)
    far = run(ArraySource(X + 1e6), covariance_type, "dirichlet_process", 5, 70, route=route)
    np.testing.assert_allclose(far.posterior.means - 1e6, near.posterior.means, rtol=0, atol=1e-8)
    scale = float(np.abs(near.posterior.covariances).max())
    np.testing.assert_allclose(far.posterior.covariances, near.posterior.covariances, rtol=1e-8, atol=1e-8 * scale)
    np.testing.assert_allclose(far.history, near.history, rtol=1e-10)
