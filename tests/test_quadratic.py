"""The fused full-covariance chunk kernel against the definitions, in float64 and float32."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from scipy.special import logsumexp
from scipy.stats import multivariate_normal
from threadpoolctl import ThreadpoolController

from streamgmm import MixtureParams, SufficientStatistics
from streamgmm.datasets import random_mixture
from streamgmm.quadratic import (
    block_records,
    chunk_statistics,
    direct_components,
    expanded_log_density,
    one_blas_thread,
)


def oracle(X: np.ndarray, params, shift: np.ndarray) -> tuple[np.ndarray, ...]:
    """scipy's densities, a log-sum-exp and the statistics written out with einsum."""
    log_prob = np.column_stack([
        np.log(w) + multivariate_normal(m, c).logpdf(X)
        for w, m, c in zip(params.weights, params.means, params.covariances)
    ])
    log_norm = logsumexp(log_prob, axis=1)
    resp = np.exp(log_prob - log_norm[:, None])
    u = X - shift
    return resp.sum(axis=0), resp.T @ u, np.einsum("nk,nd,ne->kde", resp, u, u), log_norm


@pytest.mark.parametrize("n", [1, 7, block_records(6, np.float64) + 3])  # one record, a part block, several blocks
def test_float64_kernel_equals_the_definitions(n: int) -> None:
    rng = np.random.default_rng(n)
    params = random_mixture(5, 6, separation=3.0, random_state=n)
    X = params.means[rng.integers(0, 5, n)] + rng.normal(size=(n, 6))
    shift = X.mean(axis=0) + 0.5
    counts, sums, second, log_norm = chunk_statistics(X, params, shift)
    for got, expected in zip((counts, sums, second, log_norm), oracle(X, params, shift)):
        np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-10)


def test_tiny_covariances_far_from_the_shift_stay_exact() -> None:
    """The direct form: a component of variance 1e-8 a thousand units from the shift."""
    rng = np.random.default_rng(1)
    means = np.array([[1000.0, 0.0], [0.0, 1000.0]])
    covariances = np.stack([np.eye(2) * 1e-8, np.eye(2)])
    params = MixtureParams.from_covariances(np.array([0.5, 0.5]), means, covariances, "full")
    X = np.vstack([means[0] + 1e-4 * rng.normal(size=(50, 2)), means[1] + rng.normal(size=(50, 2))])
    counts, sums, second, log_norm = chunk_statistics(X, params, np.zeros(2))
    np.testing.assert_allclose(log_norm, oracle(X, params, np.zeros(2))[3], rtol=1e-12)
    np.testing.assert_allclose(counts, [50, 50])


@pytest.mark.parametrize(("dtype", "far", "tight"), [(np.float64, 300.0, 1e-6), (np.float32, 50.0, 1e-2)])
def test_components_the_expansion_would_round_away_are_computed_directly(dtype, far: float, tight: float) -> None:
    """A tight component far from the shift would lose its log-density to cancellation in the
    polynomial form: it alone takes the direct form, and both kinds stay accurate together.
    (float32 gets a milder case: its direct form itself only holds ~7 digits of U'(x - shift).)"""
    rng = np.random.default_rng(6)
    means = np.array([[far, -far / 2, 0.0], [1.0, 2.0, 0.5], [-2.0, 0.0, 1.0]])
    covariances = np.stack([np.eye(3) * tight, np.eye(3), np.diag([2.0, 1.0, 0.5])])
    params = MixtureParams.from_covariances(np.array([0.2, 0.4, 0.4]), means, covariances, "full")
    shift = np.zeros(3)
    _, error_scale = expanded_log_density(params, shift)
    assert direct_components(error_scale, np.dtype(dtype)).tolist() == [0]
    X = np.vstack([means[0] + np.sqrt(tight) * rng.normal(size=(40, 3)),
                   means[1:][rng.integers(0, 2, 400)] + rng.normal(size=(400, 3))])
    counts, sums, second, log_norm = chunk_statistics(X, params, shift, dtype)
    expected = oracle(X, params, shift)
    tolerance = {"rtol": 1e-11, "atol": 0} if dtype == np.float64 else {"rtol": 1e-5, "atol": 1e-3}
    np.testing.assert_allclose(log_norm, expected[3], **tolerance)
    np.testing.assert_allclose(counts, expected[0], rtol=1e-6)


def test_float32_kernel_is_close_and_sums_in_float64() -> None:
    rng = np.random.default_rng(2)
    params = random_mixture(8, 16, separation=9.2, random_state=2)
    n = 2 * block_records(16, np.float32) + 5
    X = params.means[rng.integers(0, 8, n)] + rng.normal(size=(n, 16))
    shift = X.mean(axis=0)
    exact = chunk_statistics(X, params, shift)
    single = chunk_statistics(X, params, shift, np.float32)
    assert all(a.dtype == np.float64 for a in single)
    np.testing.assert_allclose(single[0], exact[0], rtol=1e-5)
    np.testing.assert_allclose(single[1], exact[1], rtol=1e-4, atol=1e-2)
    np.testing.assert_allclose(single[3], exact[3], rtol=1e-5)


def test_of_chunk_uses_the_kernel_with_the_same_statistics_as_the_direct_path() -> None:
    rng = np.random.default_rng(3)
    params = random_mixture(3, 4, separation=4.0, random_state=3)
    X = params.means[rng.integers(0, 3, 500)] + rng.normal(size=(500, 4))
    shift = X[:50].mean(axis=0)
    stats, log_norm = SufficientStatistics.of_chunk(X, params, shift)
    direct_norm, resp = params.e_step(X)
    direct = SufficientStatistics.from_responsibilities(X, resp, shift, "full", float(direct_norm.sum()))
    for name in ("counts", "sums", "second"):
        np.testing.assert_allclose(getattr(stats, name), getattr(direct, name), rtol=1e-11, atol=1e-9)
    np.testing.assert_allclose(log_norm, direct_norm, rtol=1e-12)
    assert stats.n_records == 500 and stats.log_likelihood == pytest.approx(direct.log_likelihood, rel=1e-12)


def blas_threads() -> list[int]:
    return [info["num_threads"] for info in ThreadpoolController().info() if info["user_api"] == "blas"]


def test_concurrent_callers_leave_the_blas_threads_as_they_found_them() -> None:
    """The one-thread limit is process-wide: overlapping calls from several threads (a Dask
    worker) must restore the original thread count, and each gets the same statistics."""
    before = blas_threads()
    params = random_mixture(4, 5, random_state=4)
    X = np.random.default_rng(4).normal(scale=4.0, size=(3 * block_records(5, np.float64), 5))
    expected = chunk_statistics(X, params, np.zeros(5))
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: chunk_statistics(X, params, np.zeros(5)), range(16)))
    assert blas_threads() == before
    for result in results:
        for got, want in zip(result, expected):
            np.testing.assert_array_equal(got, want)


def test_the_one_thread_limit_holds_in_any_thread() -> None:
    """threadpoolctl >= 3.8 ignores OpenBLAS limits from any thread but the first to set one
    until that thread lets go: after the main thread has used the limit, a worker thread's
    E-step must still run on one BLAS thread, and the original count come back after."""
    before = blas_threads()
    with one_blas_thread():
        assert set(blas_threads()) == {1}
    assert blas_threads() == before

    def inside() -> list[int]:
        with one_blas_thread():
            return blas_threads()

    with ThreadPoolExecutor(1) as pool:
        assert set(pool.submit(inside).result()) == {1}
    seen: list[int] = []
    worker = threading.Thread(target=lambda: seen.extend(inside()))
    worker.start()
    worker.join()
    assert set(seen) == {1}
    assert blas_threads() == before


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_column_major_records_give_the_same_bits(dtype) -> None:
    """Sources decode column-major (``columns.to_matrix``); the kernel reads either layout."""
    params = random_mixture(3, 7, random_state=5)
    X = np.random.default_rng(5).normal(scale=3.0, size=(2 * block_records(7, dtype) + 11, 7))
    assert np.isfortran(np.asfortranarray(X)) and X.flags.c_contiguous
    rows = chunk_statistics(X, params, np.ones(7), dtype)
    columns = chunk_statistics(np.asfortranarray(X), params, np.ones(7), dtype)
    for got, want in zip(columns, rows):
        np.testing.assert_array_equal(got, want)
