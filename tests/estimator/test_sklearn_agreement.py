"""Exact agreement with scikit-learn's GaussianMixture from the same starting parameters.

Batch EM streams the data in mini-batches and adds up sufficient statistics about a shift;
scikit-learn holds the data and computes responsibilities, means and covariances directly.
The two are algebraically the same EM, so from the same ``*_init`` and with ``tol=0`` they must
agree to rounding after any number of iterations, for every covariance type.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning as SklearnConvergenceWarning
from sklearn.mixture import GaussianMixture

from streamgmm import ConvergenceWarning, StreamingGaussianMixture, make_mixture
from streamgmm.mixture.covariance import COVARIANCE_TYPES, precisions_from_cholesky

PARAMETERS = ("weights_", "means_", "covariances_", "precisions_cholesky_", "precisions_")
K = 3
N_TRAIN = 3_000
RTOL = 1e-8
ATOL = 1e-12  # only matters for entries that are zero or nearly so (off-diagonals, tiny responsibilities)


def problem(covariance_type: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Training and held-out records, and a start perturbed away from the generating parameters."""
    X, _, truth = make_mixture(N_TRAIN + 600, K, 4, covariance_type=covariance_type, separation=4.0, random_state=seed)
    train, test = X[:N_TRAIN], X[N_TRAIN:]
    rng = np.random.default_rng(seed)
    # Away from the truth in every parameter, so each iteration moves everything.
    weights = np.full(K, 1.0 / K)
    means = truth.means + rng.normal(0.0, 1.0, truth.means.shape)
    precisions = precisions_from_cholesky(truth.precisions_cholesky, covariance_type) * 0.5
    return train, test, dict(weights_init=weights, means_init=means, precisions_init=precisions)


def fit_sklearn(
    train: np.ndarray, init: dict, covariance_type: str, max_iter: int, tol: float = 0.0
) -> GaussianMixture:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SklearnConvergenceWarning)
        return GaussianMixture(
            K, covariance_type=covariance_type, tol=tol, max_iter=max_iter, reg_covar=1e-6, **init
        ).fit(train)


def fit_batch(data, init: dict, covariance_type: str, max_iter: int, batch_size: int = 700, tol: float = 0.0):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return StreamingGaussianMixture(
            K,
            covariance_type=covariance_type,
            algorithm="batch",
            tol=tol,
            max_iter=max_iter,
            reg_covar=1e-6,
            batch_size=batch_size,
            **init,
        ).fit(data)


def assert_same_parameters(ours, reference, rtol: float = RTOL, atol: float = ATOL) -> None:
    for name in PARAMETERS:
        np.testing.assert_allclose(getattr(ours, name), getattr(reference, name), rtol=rtol, atol=atol, err_msg=name)


@pytest.mark.parametrize("n_iter", [1, 5, 20])
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_batch_em_reproduces_sklearn(covariance_type: str, n_iter: int) -> None:
    train, test, init = problem(covariance_type)
    assert N_TRAIN % 700 != 0  # several full batches and a short last one
    sk = fit_sklearn(train, init, covariance_type, n_iter)
    ours = fit_batch(train, init, covariance_type, n_iter)

    # Not vacuous: EM moved far from where both started.
    assert np.abs(ours.means_ - init["means_init"]).max() > 0.1

    assert_same_parameters(ours, sk)
    assert ours.n_iter_ == sk.n_iter_ == n_iter
    assert ours.converged_ is sk.converged_ is False  # tol=0 never converges
    np.testing.assert_allclose(ours.lower_bound_, sk.lower_bound_, rtol=RTOL)

    # Inference on records neither saw.
    np.testing.assert_allclose(ours.predict_proba(test), sk.predict_proba(test), rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(ours.score_samples(test), sk.score_samples(test), rtol=RTOL)
    np.testing.assert_array_equal(ours.predict(test), sk.predict(test))
    np.testing.assert_allclose(ours.score(test), sk.score(test), rtol=RTOL)
    np.testing.assert_allclose(ours.bic(test), sk.bic(test), rtol=RTOL)
    np.testing.assert_allclose(ours.aic(test), sk.aic(test), rtol=RTOL)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_batch_em_log_likelihood_is_monotone(covariance_type: str) -> None:
    train, _, init = problem(covariance_type)
    ours = fit_batch(train, init, covariance_type, 30)
    history = np.asarray(ours.lower_bounds_)
    assert len(history) == 30
    assert np.all(np.diff(history) >= -1e-12), np.diff(history).min()
    assert history[-1] > history[0] + 0.1  # EM did real work from the perturbed start
    # The history is sklearn's sequence of lower bounds: its last entry is lower_bound_.
    assert history[-1] == ours.lower_bound_
    np.testing.assert_allclose(history[-1], fit_sklearn(train, init, covariance_type, 30).lower_bound_, rtol=RTOL)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_one_online_batch_with_unit_step_is_one_em_iteration(covariance_type: str) -> None:
    train, _, init = problem(covariance_type)
    sk = fit_sklearn(train, init, covariance_type, 1)
    batch = fit_batch(train, init, covariance_type, 1)
    # step_offset=0 makes eta_1 = 1 ** -1 = 1, and a batch of exactly batch_size records is not
    # shortened (a batch_size above n would scale the step down to n / batch_size by design).
    online = StreamingGaussianMixture(
        K,
        covariance_type=covariance_type,
        algorithm="online",
        batch_size=N_TRAIN,
        step_offset=0.0,
        burn_in=0,
        shuffle=False,
        max_passes=1,
        reg_covar=1e-6,
        max_iter=0,
        **init,
    ).fit(train)
    assert online.n_steps_ == 1 and online.n_iter_ == 1
    # Online statistics are per record, batch statistics are sums, so the 10 eps added to each
    # count weighs differently: agreement is to rounding, not to the bit.
    assert_same_parameters(online, sk, rtol=1e-10)
    assert_same_parameters(online, batch, rtol=1e-10)
    # Both report the mean log-likelihood of the E-step under the initial parameters.
    np.testing.assert_allclose(online.lower_bound_, batch.lower_bound_, rtol=1e-12)
    np.testing.assert_allclose(online.lower_bound_, sk.lower_bound_, rtol=1e-10)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_chunked_sources_give_the_same_batch_em(covariance_type: str) -> None:
    train, _, init = problem(covariance_type)
    n_iter = 6
    from_array = fit_batch(train, init, covariance_type, n_iter, batch_size=512)
    # Uneven pieces, including single records, that do not line up with the batches.
    pieces = np.split(train, [1, 999, 1000, 2222, 2223])
    assert sorted({p.shape[0] for p in pieces}) == [1, 777, 998, 1222]
    from_list = fit_batch(pieces, init, covariance_type, n_iter, batch_size=512)
    reads = []

    def chunks():
        reads.append(1)
        return (p for p in pieces)

    from_callable = fit_batch(chunks, init, covariance_type, n_iter, batch_size=512)
    # With every *_init given nothing is sampled: one read of the stream per iteration.
    assert len(reads) == n_iter
    for other in (from_list, from_callable):
        # Same records in the same batches about the same shift: the same arithmetic.
        for name in PARAMETERS:
            np.testing.assert_array_equal(getattr(other, name), getattr(from_array, name), err_msg=name)
        assert other.lower_bounds_ == from_array.lower_bounds_
        assert other.n_iter_ == from_array.n_iter_ == n_iter
        assert other.records_seen_ == from_array.records_seen_ == N_TRAIN


def test_batch_em_stops_at_tol_like_sklearn() -> None:
    train, _, init = problem("full", seed=1)
    sk = fit_sklearn(train, init, "full", max_iter=200, tol=1e-3)
    ours = fit_batch(train, init, "full", max_iter=200, batch_size=1000, tol=1e-3)
    assert ours.converged_ and sk.converged_
    assert 1 < ours.n_iter_ == sk.n_iter_ < 200
    assert_same_parameters(ours, sk)
    np.testing.assert_allclose(ours.lower_bound_, sk.lower_bound_, rtol=RTOL)


def test_batch_em_warns_when_it_runs_out_of_iterations() -> None:
    train, _, init = problem("full")
    with pytest.warns(ConvergenceWarning, match="did not converge"):
        StreamingGaussianMixture(K, algorithm="batch", tol=0, max_iter=2, **init).fit(train)


@pytest.mark.parametrize("covariance_type", ["full", "tied"])
def test_asymmetric_precisions_init_is_rejected_like_sklearn(covariance_type: str) -> None:
    train, _, init = problem(covariance_type)
    precisions = init["precisions_init"].copy()
    # Positive definite by its lower triangle alone (what a Cholesky factorisation reads), but
    # not symmetric: the upper and lower triangles describe two different starts.
    precisions[..., 0, 1] += 0.5
    init = dict(init, precisions_init=precisions)
    with pytest.raises(ValueError, match="symmetric"):
        fit_sklearn(train, init, covariance_type, 1)
    with pytest.raises(ValueError, match="precisions_init must be symmetric"):
        fit_batch(train, init, covariance_type, 1)


@pytest.mark.parametrize("algorithm", ["batch", "online"])
def test_a_stream_with_every_init_still_needs_as_many_records_as_components(algorithm: str) -> None:
    # Nothing is sampled from such a stream, so it is counted as it is read; the refusal is the
    # array's (and scikit-learn's) all the same.
    train, _, init = problem("full")
    few = train[: K - 1]
    with pytest.raises(ValueError, match=f"n_components = {K}, n_samples = {K - 1}"):
        GaussianMixture(K, **init).fit(few)
    for data in (few, [few[:1], few[1:]], lambda: iter([few])):
        model = StreamingGaussianMixture(K, algorithm=algorithm, max_passes=2, **init)
        with pytest.raises(ValueError, match=f"n_components = {K}, n_samples = {K - 1}"):
            model.fit(data)
        assert not hasattr(model, "means_")
