"""Fit quality against the generating parameters and against scikit-learn's converged fit."""

from __future__ import annotations

import numpy as np
import pytest

from streamgmm import StreamingGaussianMixture, make_mixture
from streamgmm.datasets.mixtures import match_components
from streamgmm.mixture.covariance import COVARIANCE_TYPES


@pytest.mark.parametrize("algorithm", ["online", "batch"])
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_recovers_generating_parameters(covariance_type: str, algorithm: str) -> None:
    X, _, truth = make_mixture(60_000, 4, 3, covariance_type=covariance_type, random_state=11)
    model = StreamingGaussianMixture(
        4, covariance_type=covariance_type, algorithm=algorithm, batch_size=2048, random_state=0
    ).fit(X)
    order = match_components(truth.means, model.means_)
    # Standard errors at n = 60k are ~0.01 for means and ~0.002 for weights; allow several.
    np.testing.assert_allclose(model.means_[order], truth.means, atol=0.06)
    np.testing.assert_allclose(model.weights_[order], truth.weights, atol=0.01)
    if covariance_type == "tied":
        np.testing.assert_allclose(model.covariances_, truth.covariances, atol=0.05)
    else:
        np.testing.assert_allclose(model.covariances_[order], truth.covariances, rtol=0.1, atol=0.05)


def test_one_online_pass_is_within_001_nats_of_sklearn_converged() -> None:
    from sklearn.mixture import GaussianMixture

    X, _, truth = make_mixture(120_000, 5, 6, random_state=3)
    train, test = X[:100_000], X[100_000:]
    sk = GaussianMixture(5, n_init=2, tol=1e-6, max_iter=500, random_state=0).fit(train)
    ours = StreamingGaussianMixture(5, algorithm="online", random_state=0).fit(train)
    assert ours.n_iter_ == 1 and ours.records_seen_ == 100_000
    gap = sk.score(test) - ours.score(test)
    assert gap < 0.01, gap
    # And it is a real fit, not just close to a bad sklearn optimum: near the truth too.
    assert truth.log_likelihood(test).mean() - ours.score(test) < 0.01


def test_sorted_stream_one_pass_still_finds_every_component() -> None:
    """A stream sorted by component (files often arrive sorted) must not bias one pass."""
    X, labels, truth = make_mixture(80_000, 5, 4, random_state=5)
    sorted_X = X[np.argsort(labels, kind="stable")]
    model = StreamingGaussianMixture(5, shuffle=False, batch_size=2048, random_state=1).fit(sorted_X)
    order = match_components(truth.means, model.means_)
    np.testing.assert_allclose(model.weights_[order], truth.weights, atol=0.01)
    assert truth.log_likelihood(X).mean() - model.score(X) < 0.01


def test_burn_in_holds_parameters_for_the_first_batches() -> None:
    X, _, _ = make_mixture(5_000, 2, 2, random_state=2)
    kwargs = dict(batch_size=500, shuffle=False, random_state=0)
    start = StreamingGaussianMixture(2, burn_in=3, **kwargs).partial_fit(X[:1500])
    # After exactly burn_in batches nothing has moved from the initialisation...
    init_only = StreamingGaussianMixture(2, burn_in=10**6, **kwargs).partial_fit(X[:1500])
    np.testing.assert_array_equal(start.means_, init_only.means_)
    # ...and the next batch moves it.
    start.partial_fit(X[1500:2000])
    assert not np.allclose(start.means_, init_only.means_)


def test_step_sizes_follow_the_schedule() -> None:
    from streamgmm.em.online import StepSchedule

    schedule = StepSchedule(exponent=0.7, offset=2.0, floor=0.05)
    assert schedule.step(1) == pytest.approx(3.0**-0.7)
    assert schedule.step(10) == pytest.approx(12.0**-0.7)
    assert schedule.step(10_000) == 0.05
    with pytest.raises(ValueError, match="step_exponent"):
        StepSchedule(exponent=0.5)


def test_n_init_candidates_pick_the_best_sample_likelihood() -> None:
    from streamgmm.em.candidates import initialize

    X, _, truth = make_mixture(4_000, 6, 2, separation=5.0, random_state=8)
    rng = np.random.default_rng(0)
    best = initialize(X, 6, "full", reg_covar=1e-6, n_init=5, rng=rng)
    # Candidates whose starts coincide run once (see initialization.distinct).
    assert 1 <= len(best.candidate_log_likelihoods) <= 5
    assert best.sample_log_likelihood == max(best.candidate_log_likelihoods)
    # The score is that of EM's last E-step (scikit-learn's criterion); the M-step after it can
    # only raise the likelihood, by less than tol once converged.
    final = best.params.log_likelihood(X).mean()
    assert best.sample_log_likelihood <= final < best.sample_log_likelihood + 1e-3


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_sample_draws_from_the_fitted_mixture(covariance_type: str) -> None:
    X, _, truth = make_mixture(20_000, 3, 2, covariance_type=covariance_type, random_state=21)
    model = StreamingGaussianMixture(3, covariance_type=covariance_type, random_state=0).fit(X)
    drawn, labels = model.sample(60_000)
    assert drawn.shape == (60_000, 2) and labels.shape == (60_000,)
    counts = np.bincount(labels, minlength=3) / 60_000
    np.testing.assert_allclose(counts, model.weights_, atol=0.01)
    for k in range(3):
        rows = drawn[labels == k]
        np.testing.assert_allclose(rows.mean(axis=0), model.means_[k], atol=0.05)
        expected = {
            "full": model.covariances_[k] if covariance_type == "full" else None,
            "tied": model.covariances_ if covariance_type == "tied" else None,
            "diag": np.diag(model.covariances_[k]) if covariance_type == "diag" else None,
            "spherical": np.eye(2) * model.covariances_[k] if covariance_type == "spherical" else None,
        }[covariance_type]
        np.testing.assert_allclose(np.cov(rows.T), expected, atol=0.06)
    # Refitting on the draws recovers the model: the sampler and the fitter agree.
    refit = StreamingGaussianMixture(3, covariance_type=covariance_type, random_state=1).fit(drawn)
    assert abs(refit.score(X) - model.score(X)) < 0.01


@pytest.mark.parametrize("algorithm", ["online", "batch"])
def test_float32_compute_fits_as_well_as_float64(algorithm: str) -> None:
    """compute_dtype="float32": the same held-out quality as the exact path, near the truth."""
    X, _, truth = make_mixture(120_000, 6, 8, random_state=7)
    train, test = X[:100_000], X[100_000:]
    fits = {
        dtype: StreamingGaussianMixture(6, algorithm=algorithm, compute_dtype=dtype, random_state=0).fit(train)
        for dtype in ("float64", "float32")
    }
    exact, single = fits["float64"].score(test), fits["float32"].score(test)
    assert abs(exact - single) < 1e-3, (exact, single)
    assert truth.log_likelihood(test).mean() - single < 0.01
    assert fits["float32"].get_params()["compute_dtype"] == "float32"


def test_compute_dtype_is_checked() -> None:
    with pytest.raises(ValueError, match="compute_dtype"):
        StreamingGaussianMixture(2, compute_dtype="float16").fit(np.zeros((10, 2)))
