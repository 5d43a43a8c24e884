"""Novelty and the weighted reservoir against brute force and the sampling they promise."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import chi2

from streamgmm import make_mixture
from streamgmm.em.novelty import NOVELTY_QUANTILE, Reservoir, novel_rows
from streamgmm.mixture import covariance as cov


@pytest.mark.parametrize("covariance_type", ["full", "tied", "diag", "spherical"])
def test_novel_rows_are_those_outside_every_components_ellipsoid(covariance_type) -> None:
    X, _, truth = make_mixture(5000, 3, 4, covariance_type=covariance_type, random_state=1)
    rng = np.random.default_rng(2)
    X = np.concatenate([X, rng.normal(0.0, 30.0, (500, 4))])  # far records too
    X[::97, 1] = np.nan  # an incomplete record is never novel
    log_norm = truth.log_likelihood(np.nan_to_num(X))
    log_norm[np.isnan(X).any(axis=1)] = np.nan
    got = novel_rows(X, log_norm, truth)
    # Brute force: every record's distance to every component, scipy's quantile.
    complete = ~np.isnan(X).any(axis=1)
    distances = cov.MAHALANOBIS[covariance_type](np.nan_to_num(X), truth.means, truth.precisions_cholesky)
    expected = complete & (distances > chi2.ppf(NOVELTY_QUANTILE, 4)).all(axis=1)
    np.testing.assert_array_equal(got, expected)
    assert 400 < got.sum() < 520  # the far records, and a few tails


def test_the_threshold_is_the_capacity_th_smallest_key_held() -> None:
    rng = np.random.default_rng(0)
    for _ in range(100):
        capacity = int(rng.integers(5, 60))
        reservoir = Reservoir.empty(2)
        for _ in range(int(rng.integers(1, 30))):
            n = int(rng.integers(1, 40))
            weights = np.ones(n) if rng.random() < 0.5 else rng.random(n) + 0.1
            reservoir = reservoir.offered(rng.normal(size=(n, 2)), weights, float(rng.normal()), rng, capacity)
            keys = np.concatenate([reservoir.keys, *(chunk[2] for chunk in reservoir.pending)])
            expected = np.inf if keys.shape[0] < capacity else np.partition(keys, capacity - 1)[capacity - 1]
            assert reservoir.threshold(capacity) == expected
            assert len(reservoir) == min(keys.shape[0], capacity)


def test_a_reservoir_is_a_uniform_sample_of_equal_weights_and_follows_the_weights() -> None:
    """Records 0..N-1 offered in batches of equal weight: the kept ones are uniform (mean and
    spread of a uniform sample); offered with weights 1 and 9, nine in ten kept are heavy."""
    rng = np.random.default_rng(5)
    n, capacity = 200_000, 4000
    reservoir = Reservoir.empty(1)
    values = np.arange(n, dtype=float)[:, None]
    for start in range(0, n, 5000):
        reservoir = reservoir.offered(values[start : start + 5000], np.ones(5000), 0.0, rng, capacity)
    kept = reservoir.merged()
    assert len(kept) == capacity and kept.sampled and np.all(np.diff(kept.keys) >= 0)
    assert len(np.unique(kept.records)) == capacity
    # A uniform sample of 0..n-1: mean n/2 within 4 standard errors.
    assert abs(kept.records.mean() - n / 2) < 4 * (n / np.sqrt(12)) / np.sqrt(capacity)
    weights = np.where(np.arange(n) % 2 == 0, 1.0, 9.0)
    heavy = Reservoir.empty(1)
    for start in range(0, n, 5000):
        heavy = heavy.offered(values[start : start + 5000], weights[start : start + 5000], 0.0, rng, capacity)
    share = np.mean(heavy.merged().records[:, 0] % 2 == 1)
    assert 0.85 < share < 0.95
