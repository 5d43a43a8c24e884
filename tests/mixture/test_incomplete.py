"""EM for incomplete records (mixture.incomplete) against a per-record loop written with scipy and
np.linalg.solve, for every covariance type, a few and many missingness patterns, weights and edge
shapes; and EM on missing-at-random data recovering the generating means where dropping the
incomplete records is biased."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import logsumexp
from scipy.stats import multivariate_normal
from shared_helpers import dense_covariances, random_params

from streamgmm import MixtureParams
from streamgmm.kernels.chunk import chunk_statistics
from streamgmm.mixture import incomplete
from streamgmm.mixture.incomplete import (
    complete_rows,
    incomplete_statistics,
    marginal_e_step,
    missingness_patterns,
)

TYPES = ["full", "tied", "diag", "spherical"]


def per_record_statistics(X: np.ndarray, params: MixtureParams, shift: np.ndarray, w: np.ndarray | None = None) -> dict:
    """One record at a time: scipy's marginal density, the conditional moments by np.linalg.solve."""
    n, d = X.shape
    k = params.n_components
    w = np.ones(n) if w is None else w
    S = dense_covariances(params)
    counts, sums, second = np.zeros(k), np.zeros((k, d)), np.zeros((k, d, d))
    log_norm, resp = np.full(n, np.nan), np.full((n, k), np.nan)
    total_weight = total_ll = 0.0
    for i, x in enumerate(X):
        o, m = np.flatnonzero(~np.isnan(x)), np.flatnonzero(np.isnan(x))
        if o.size == 0:
            continue
        log_prob = np.array(
            [
                np.log(params.weights[j]) + multivariate_normal(params.means[j, o], S[j][np.ix_(o, o)]).logpdf(x[o])
                for j in range(k)
            ]
        )
        log_norm[i] = logsumexp(log_prob)
        resp[i] = np.exp(log_prob - log_norm[i])
        total_weight += w[i]
        total_ll += w[i] * log_norm[i]
        for j in range(k):
            Sj, mu = S[j], params.means[j]
            xhat, C = x.copy(), np.zeros((d, d))
            if m.size:
                xhat[m] = mu[m] + Sj[np.ix_(m, o)] @ np.linalg.solve(Sj[np.ix_(o, o)], x[o] - mu[o])
                C[np.ix_(m, m)] = Sj[np.ix_(m, m)] - Sj[np.ix_(m, o)] @ np.linalg.solve(
                    Sj[np.ix_(o, o)], Sj[np.ix_(o, m)]
                )
            u, r = xhat - shift, w[i] * resp[i, j]
            counts[j] += r
            sums[j] += r * u
            second[j] += r * (np.outer(u, u) + C)
    layout = {
        "full": second,
        "tied": second.sum(axis=0),
        "diag": np.diagonal(second, axis1=1, axis2=2),
        "spherical": np.diagonal(second, axis1=1, axis2=2),
    }[params.covariance_type]
    return {
        "counts": counts,
        "sums": sums,
        "second": layout,
        "log_norm": log_norm,
        "resp": resp,
        "n_records": total_weight,
        "log_likelihood": total_ll,
    }


def with_gaps(X: np.ndarray, rng: np.random.Generator, patterns: str) -> np.ndarray:
    """'few': three fixed patterns (one observing a single feature) plus complete rows; 'random':
    each entry missing with probability 0.3, and two rows with nothing observed."""
    X = X.copy()
    n, d = X.shape
    if patterns == "few":
        kind = rng.integers(0, 4, n)
        X[kind == 1, 0] = np.nan
        X[np.ix_(kind == 2, np.arange(1, d))] = np.nan  # only the first feature observed
        X[np.ix_(kind == 3, np.arange(0, d, 2))] = np.nan
    else:
        X[rng.random((n, d)) < 0.3] = np.nan
        X[:2] = np.nan
    return X


def assert_matches(stats, log_norm, expected: dict, tolerance: float = 1e-9) -> None:
    np.testing.assert_allclose(log_norm, expected["log_norm"], rtol=tolerance, atol=tolerance)
    for name in ("counts", "sums", "second"):
        want = expected[name]
        scale = max(1.0, float(np.abs(want).max())) if want.size else 1.0
        np.testing.assert_allclose(getattr(stats, name), want, rtol=tolerance, atol=tolerance * scale)
    assert stats.n_records == pytest.approx(expected["n_records"], rel=1e-12, abs=1e-12)
    assert stats.log_likelihood == pytest.approx(expected["log_likelihood"], rel=tolerance, abs=tolerance)


@pytest.mark.parametrize("pooling", [None, 1, 10**9], ids=["default", "patterns alone", "patterns pooled"])
@pytest.mark.parametrize("patterns", ["few", "random"])
@pytest.mark.parametrize("covariance_type", TYPES)
def test_statistics_and_log_norm_equal_the_per_record_oracle(
    monkeypatch: pytest.MonkeyPatch, covariance_type: str, patterns: str, pooling: int | None
) -> None:
    """Whether each pattern's records share its factors or gather them (patterns pooled)."""
    if pooling is not None:
        monkeypatch.setattr(incomplete, "SHARED_PATTERN_ROWS", pooling)
    rng = np.random.default_rng(10 * TYPES.index(covariance_type) + len(patterns))
    params = random_params(covariance_type, 3, 4, rng, spread=3.0, centre=5.0)
    X = with_gaps(params.means[rng.integers(0, 3, 300)] + rng.normal(size=(300, 4)), rng, patterns)
    shift = np.nanmean(X, axis=0) + 0.3
    stats, log_norm = incomplete_statistics(X, params, shift)
    expected = per_record_statistics(X, params, shift)
    assert_matches(stats, log_norm, expected)
    scored, resp = marginal_e_step(X, params)
    np.testing.assert_allclose(scored, expected["log_norm"], rtol=1e-9)
    np.testing.assert_allclose(resp, expected["resp"], rtol=1e-9, atol=1e-12)
    if patterns == "random":
        assert np.isnan(log_norm).any() and np.isnan(resp).all(axis=1).any()  # rows with nothing observed


@pytest.mark.parametrize("covariance_type", TYPES)
def test_weights_scale_responsibilities_and_equal_duplication(covariance_type: str) -> None:
    rng = np.random.default_rng(4)
    params = random_params(covariance_type, 2, 3, rng, spread=3.0, centre=5.0)
    X = with_gaps(params.means[rng.integers(0, 2, 120)] + rng.normal(size=(120, 3)), rng, "random")
    shift = np.zeros(3)
    w = rng.integers(0, 4, 120).astype(float)  # zeros included
    stats, log_norm = incomplete_statistics(X, params, shift, weights=w)
    assert_matches(stats, log_norm, per_record_statistics(X, params, shift, w))
    duplicated, dup_norm = incomplete_statistics(np.repeat(X, w.astype(int), axis=0), params, shift)
    for name in ("counts", "sums", "second"):
        np.testing.assert_allclose(getattr(stats, name), getattr(duplicated, name), rtol=1e-10, atol=1e-10)
    assert stats.n_records == duplicated.n_records
    assert stats.log_likelihood == pytest.approx(duplicated.log_likelihood, rel=1e-10)
    unweighted, _ = incomplete_statistics(X, params, shift)
    ones, _ = incomplete_statistics(X, params, shift, weights=np.ones(120))
    for name in ("counts", "sums", "second"):
        np.testing.assert_array_equal(getattr(ones, name), getattr(unweighted, name))


@pytest.mark.parametrize("covariance_type", TYPES)
def test_complete_records_give_the_ordinary_statistics(covariance_type: str) -> None:
    rng = np.random.default_rng(9)
    params = random_params(covariance_type, 3, 3, rng, spread=3.0, centre=5.0)
    X = params.means[rng.integers(0, 3, 200)] + rng.normal(size=(200, 3))
    shift = X.mean(axis=0)
    stats, log_norm = incomplete_statistics(X, params, shift)
    reference, reference_norm = chunk_statistics(X, params, shift)
    np.testing.assert_allclose(log_norm, reference_norm, rtol=1e-12)
    for name in ("counts", "sums", "second"):
        np.testing.assert_allclose(getattr(stats, name), getattr(reference, name), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("covariance_type", TYPES)
def test_edge_shapes(covariance_type: str) -> None:
    rng = np.random.default_rng(2)
    # One feature: a row is complete or has nothing observed.
    params = random_params(covariance_type, 2, 1, rng, spread=3.0, centre=5.0)
    X = np.array([[1.0], [np.nan], [7.0]])
    stats, log_norm = incomplete_statistics(X, params, np.zeros(1))
    assert np.isnan(log_norm[1]) and stats.n_records == 2.0
    assert_matches(stats, log_norm, per_record_statistics(X, params, np.zeros(1)))
    # One component; only one feature observed in every row.
    params = random_params(covariance_type, 1, 3, rng, spread=3.0, centre=5.0)
    X = np.full((5, 3), np.nan)
    X[np.arange(5), np.arange(5) % 3] = rng.normal(size=5) + 5.0
    stats, log_norm = incomplete_statistics(X, params, np.ones(3))
    np.testing.assert_allclose(stats.counts, [5.0])
    assert_matches(stats, log_norm, per_record_statistics(X, params, np.ones(3)))
    # No records, and only records with nothing observed.
    for X in (np.empty((0, 3)), np.full((4, 3), np.nan)):
        stats, log_norm = incomplete_statistics(X, params, np.zeros(3))
        assert stats.n_records == 0.0 and stats.log_likelihood == 0.0 and not stats.counts.any()
        assert log_norm.shape == (X.shape[0],) and np.isnan(log_norm).all()
        scored, resp = marginal_e_step(X, params)
        assert resp.shape == (X.shape[0], 1) and np.isnan(scored).all()


def test_patterns_group_identical_rows_and_complete_rows() -> None:
    observed = np.array([[1, 0, 1], [1, 1, 1], [1, 0, 1], [0, 0, 0]], dtype=bool)
    patterns, inverse = missingness_patterns(observed)
    np.testing.assert_array_equal(patterns[inverse], observed)
    assert patterns.shape[0] == 3
    for d in (20, 70):  # more than a byte, more than a word of features
        wide = np.random.default_rng(d).random((50, d)) < 0.5
        wide[10:20] = wide[0]
        patterns, inverse = missingness_patterns(wide)
        np.testing.assert_array_equal(patterns[inverse], wide)
        assert patterns.shape[0] == len({tuple(row) for row in wide}) == 40
    assert complete_rows(np.where(observed, 1.0, np.nan)).tolist() == [False, True, False, False]
    assert complete_rows(np.ones((2, 3))).tolist() == [True, True]


MAR_COVARIANCES = {
    "full": np.array([[[1.0, 0.8], [0.8, 1.0]], [[1.0, -0.6], [-0.6, 1.5]]]),
    "tied": np.array([[1.0, 0.7], [0.7, 1.2]]),
    "diag": np.array([[1.0, 0.5], [1.0, 1.5]]),
    "spherical": np.array([1.0, 1.3]),
}


def mar_data(n: int, rng: np.random.Generator, covariance_type: str) -> tuple[np.ndarray, MixtureParams]:
    """Two components; x2 missing whenever x1 is large (missing at random, 30%)."""
    truth = MixtureParams.from_covariances(
        np.array([0.6, 0.4]), np.array([[0.0, 0.0], [4.0, 3.0]]), MAR_COVARIANCES[covariance_type], covariance_type
    )
    covariances = dense_covariances(truth)
    labels = rng.random(n) < truth.weights[1]
    X = np.where(
        labels[:, None],
        rng.multivariate_normal(truth.means[1], covariances[1], n),
        rng.multivariate_normal(truth.means[0], covariances[0], n),
    )
    X[X[:, 0] > np.quantile(X[:, 0], 0.7), 1] = np.nan
    return X, truth


def batch_em(X: np.ndarray, params: MixtureParams, iterations: int) -> MixtureParams:
    shift = np.nanmean(X, axis=0)
    for _ in range(iterations):
        params = chunk_statistics(X, params, shift)[0].to_params(1e-6)
    return params


@pytest.mark.parametrize("covariance_type", TYPES)
def test_em_on_missing_at_random_data_recovers_the_truth_where_skipping_is_biased(covariance_type: str) -> None:
    """50 batch EM iterations from the generating parameters on 50000 records: with the
    incomplete records marginalised the fit stays at the truth (to sampling error); on the
    complete records only it moves visibly away (the large x1 are under-represented)."""
    rng = np.random.default_rng(19)
    X, truth = mar_data(50000, rng, covariance_type)
    assert 0.29 < np.isnan(X).any(axis=1).mean() < 0.31
    marginalized = batch_em(X, truth, 50)
    complete = X[~np.isnan(X).any(axis=1)]
    skipped = batch_em(complete, truth, 50)
    assert np.abs(marginalized.means - truth.means).max() < 0.05
    assert np.abs(marginalized.weights - truth.weights).max() < 0.02
    assert np.abs(marginalized.covariances - truth.covariances).max() < 0.1
    assert np.abs(skipped.means - truth.means).max() > 0.5
