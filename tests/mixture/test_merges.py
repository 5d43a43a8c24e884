"""Merges in closed form against the same quantities computed on the records."""

from __future__ import annotations

import numpy as np
import pytest

from streamgmm import MixtureParams, SufficientStatistics, make_mixture
from streamgmm.mixture import covariance as cov
from streamgmm.mixture.merges import (
    cheapest_pair,
    expected_log_likelihood,
    merge_components,
    merge_costs,
    shared_entropy,
)

TYPES = ["full", "tied", "diag", "spherical"]


@pytest.fixture(scope="module")
def records() -> tuple[np.ndarray, np.ndarray]:
    X, _, truth = make_mixture(3000, 3, 3, separation=4.0, random_state=2)
    _, resp = truth.e_step(X)
    return X, resp


def _expected_complete_log_likelihood(X: np.ndarray, resp: np.ndarray, params: MixtureParams) -> float:
    """sum_i sum_k r_ik [log pi_k + log N(x_i | mu_k, Sigma_k)], computed record by record."""
    log_prob = cov.log_gaussian_prob(X, params.means, params.precisions_cholesky, params.covariance_type)
    with np.errstate(divide="ignore"):
        weighted = log_prob + np.log(params.weights)
    return float(np.sum(np.where(resp > 0, resp * weighted, 0.0)))


@pytest.mark.parametrize("covariance_type", TYPES)
def test_merged_statistics_are_those_of_the_merged_responsibilities(records, covariance_type) -> None:
    X, resp = records
    shift = X.mean(axis=0)
    stats = SufficientStatistics.from_responsibilities(X, resp, shift, covariance_type)
    merged_resp = resp.copy()
    merged_resp[:, 0] += merged_resp[:, 2]
    merged_resp[:, 2] = 0.0
    oracle = SufficientStatistics.from_responsibilities(X, merged_resp, shift, covariance_type)
    merged = merge_components(stats, 0, 2)
    for name in ("counts", "sums", "second"):
        np.testing.assert_allclose(getattr(merged, name), getattr(oracle, name), rtol=1e-12, atol=1e-9)
    # The merged component is the Gaussian refitted on the records of both.
    refit, closed = oracle.to_params(1e-6), merged.to_params(1e-6)
    np.testing.assert_allclose(closed.means[0], refit.means[0], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(closed.covariances, refit.covariances, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("covariance_type", TYPES)
def test_merge_cost_is_the_change_of_the_expected_complete_log_likelihood(records, covariance_type) -> None:
    X, resp = records
    shift = X.mean(axis=0)
    stats = SufficientStatistics.from_responsibilities(X, resp, shift, covariance_type)
    # A merge empties a component: a hair of regularisation gives it a covariance (no record
    # weighs on it), the same in the closed form and in the oracle.
    reg = 1e-9
    costs = merge_costs(stats, reg_covar=reg)
    before = _expected_complete_log_likelihood(X, resp, stats.to_params(reg))
    for a, b in [(0, 1), (0, 2), (1, 2)]:
        merged_resp = resp.copy()
        merged_resp[:, a] += merged_resp[:, b]
        merged_resp[:, b] = 0.0
        merged = merge_components(stats, a, b)
        after = _expected_complete_log_likelihood(X, merged_resp, merged.to_params(reg))
        assert costs[a, b] == costs[b, a]
        np.testing.assert_allclose(costs[a, b], before - after, rtol=1e-8)
    assert np.all(np.isinf(np.diag(costs)))


def test_shared_entropy_is_zero_apart_and_the_full_split_for_twins() -> None:
    means = np.array([[0.0, 0.0], [0.0, 0.0], [100.0, 0.0]])
    params = MixtureParams.from_covariances(np.array([0.25, 0.25, 0.5]), means, np.ones(3), "spherical")
    counts = np.array([250.0, 250.0, 500.0])
    entropy = shared_entropy(params, counts, np.random.default_rng(0))
    # Twins share every record half and half: log 2 nats each; far components share nothing.
    np.testing.assert_allclose(entropy[0, 1], 500 * np.log(2), rtol=1e-12)
    assert entropy[0, 2] < 1e-12 and entropy[1, 2] < 1e-12
    np.testing.assert_array_equal(entropy, entropy.T)


def test_shared_entropy_matches_its_expectation_on_many_draws() -> None:
    """Two 1-D unit Gaussians one apart: E[H(r)] by numerical integration of the density."""
    params = MixtureParams.from_covariances(np.array([0.5, 0.5]), np.array([[0.0], [1.0]]), np.ones((2, 1)), "diag")
    grid = np.linspace(-12, 13, 200_001)
    density = np.exp(-0.5 * grid**2) / np.sqrt(2 * np.pi)
    share = 1 / (1 + np.exp(-0.5 * (grid - 1) ** 2 + 0.5 * grid**2))
    h = -(share * np.log(share) + (1 - share) * np.log1p(-share))
    expected = np.trapezoid(density * h, grid)
    estimate = shared_entropy(params, np.array([1.0, 1.0]), np.random.default_rng(1), draws=200_000)
    np.testing.assert_allclose(estimate[0, 1], 2 * expected, rtol=5e-3)


def test_the_cheapest_pair_merges_the_twins() -> None:
    means = np.array([[0.0, 0.0], [10.0, 0.0], [0.1, 0.0], [20.0, 0.0]])
    params = MixtureParams.from_covariances(np.full(4, 0.25), means, np.ones(4), "spherical")
    stats = SufficientStatistics.from_params(params, np.zeros(2))
    loss = merge_costs(stats, 0.0) + shared_entropy(params, stats.counts, np.random.default_rng(0))
    assert cheapest_pair(loss) == (0, 2)


@pytest.mark.parametrize("covariance_type", TYPES)
def test_expected_log_likelihood_from_statistics_equals_the_sum_over_records(records, covariance_type) -> None:
    X, resp = records
    stats = SufficientStatistics.from_responsibilities(X, resp, X.mean(axis=0) + 3.0, covariance_type)
    fitted = stats.to_params(1e-6)
    # Under parameters other than the statistics' own M-step too.
    other = MixtureParams.from_covariances(
        np.array([0.2, 0.3, 0.5]), fitted.means + 0.7, fitted.covariances * 1.5, covariance_type
    )
    for params in (fitted, other):
        np.testing.assert_allclose(
            expected_log_likelihood(stats, params), _expected_complete_log_likelihood(X, resp, params), rtol=1e-10
        )
