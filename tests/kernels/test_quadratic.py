"""The full-covariance chunk kernels against the definitions: the BLAS kernel in float64 and
float32, and the fused C kernel (streamgmm/kernels/_fused.c) in float32, also against the BLAS one."""

from __future__ import annotations

import shutil
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from scipy.special import logsumexp
from shared_helpers import scipy_chunk_statistics
from threadpoolctl import ThreadpoolController

from streamgmm import MixtureParams, SufficientStatistics
from streamgmm.datasets.mixtures import random_mixture
from streamgmm.kernels import quadratic
from streamgmm.kernels.chunk import chunk_statistics as dispatch
from streamgmm.kernels.quadratic import (
    FUSED_KERNELS,
    block_records,
    direct_components,
    expanded_log_density,
    full_statistics,
    one_blas_thread,
)

# Every kernel this machine has: the BLAS one always, and the fused C kernel's builds.
KERNELS = ["blas", *FUSED_KERNELS]


def scipy_full_statistics(X: np.ndarray, params, shift: np.ndarray) -> tuple[np.ndarray, ...]:
    """The shared scipy E-step's (counts, sums, second, log_norm) of full covariances."""
    expected = scipy_chunk_statistics(X, params, shift)
    return tuple(expected[name] for name in ("counts", "sums", "second", "log_norm"))


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("n", [1, 7, block_records(6, np.float64) + 3])  # one record, a part block, several blocks
def test_float64_kernel_equals_the_definitions(n: int, kernel: str) -> None:
    rng = np.random.default_rng(n)
    params = random_mixture(5, 6, separation=3.0, random_state=n)
    X = params.means[rng.integers(0, 5, n)] + rng.normal(size=(n, 6))
    shift = X.mean(axis=0) + 0.5
    counts, sums, second, log_norm = full_statistics(X, params, shift, kernel=kernel)
    for got, expected in zip((counts, sums, second, log_norm), scipy_full_statistics(X, params, shift)):
        np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("kernel", KERNELS)
def test_tiny_covariances_far_from_the_shift_stay_exact(kernel: str) -> None:
    """The direct form: a component of variance 1e-8 a thousand units from the shift."""
    rng = np.random.default_rng(1)
    means = np.array([[1000.0, 0.0], [0.0, 1000.0]])
    covariances = np.stack([np.eye(2) * 1e-8, np.eye(2)])
    params = MixtureParams.from_covariances(np.array([0.5, 0.5]), means, covariances, "full")
    X = np.vstack([means[0] + 1e-4 * rng.normal(size=(50, 2)), means[1] + rng.normal(size=(50, 2))])
    counts, sums, second, log_norm = full_statistics(X, params, np.zeros(2), kernel=kernel)
    np.testing.assert_allclose(log_norm, scipy_full_statistics(X, params, np.zeros(2))[3], rtol=1e-12)
    np.testing.assert_allclose(counts, [50, 50])


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize(("dtype", "far", "tight"), [(np.float64, 300.0, 1e-6), (np.float32, 50.0, 1e-2)])
def test_components_the_expansion_would_round_away_are_computed_directly(
    dtype, far: float, tight: float, kernel: str
) -> None:
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
    X = np.vstack(
        [
            means[0] + np.sqrt(tight) * rng.normal(size=(40, 3)),
            means[1:][rng.integers(0, 2, 400)] + rng.normal(size=(400, 3)),
        ]
    )
    counts, sums, second, log_norm = full_statistics(X, params, shift, dtype, kernel=kernel)
    expected = scipy_full_statistics(X, params, shift)
    tolerance = {"rtol": 1e-11, "atol": 0} if dtype == np.float64 else {"rtol": 1e-5, "atol": 1e-3}
    np.testing.assert_allclose(log_norm, expected[3], **tolerance)
    np.testing.assert_allclose(counts, expected[0], rtol=1e-6)


@pytest.mark.parametrize("kernel", KERNELS)
def test_float32_kernel_is_close_and_sums_in_float64(kernel: str) -> None:
    rng = np.random.default_rng(2)
    params = random_mixture(8, 16, separation=9.2, random_state=2)
    n = 2 * block_records(16, np.float32) + 5
    X = params.means[rng.integers(0, 8, n)] + rng.normal(size=(n, 16))
    shift = X.mean(axis=0)
    exact = full_statistics(X, params, shift, kernel="blas")
    single = full_statistics(X, params, shift, np.float32, kernel=kernel)
    assert all(a.dtype == np.float64 for a in single)
    np.testing.assert_allclose(single[0], exact[0], rtol=1e-5)
    np.testing.assert_allclose(single[1], exact[1], rtol=1e-4, atol=1e-2)
    np.testing.assert_allclose(single[3], exact[3], rtol=1e-5)


def test_chunk_dispatch_uses_the_kernel_with_the_same_statistics_as_the_direct_path() -> None:
    rng = np.random.default_rng(3)
    params = random_mixture(3, 4, separation=4.0, random_state=3)
    X = params.means[rng.integers(0, 3, 500)] + rng.normal(size=(500, 4))
    shift = X[:50].mean(axis=0)
    stats, log_norm = dispatch(X, params, shift)
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
    expected = full_statistics(X, params, np.zeros(5), kernel="blas")
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: full_statistics(X, params, np.zeros(5), kernel="blas"), range(16)))
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


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_column_major_records_give_the_same_bits(dtype, kernel: str) -> None:
    """Sources decode column-major (``columns.to_matrix``); the kernel reads either layout."""
    params = random_mixture(3, 7, random_state=5)
    X = np.random.default_rng(5).normal(scale=3.0, size=(2 * block_records(7, dtype) + 11, 7))
    assert np.isfortran(np.asfortranarray(X)) and X.flags.c_contiguous
    rows = full_statistics(X, params, np.ones(7), dtype, kernel)
    columns = full_statistics(np.asfortranarray(X), params, np.ones(7), dtype, kernel)
    for got, want in zip(columns, rows):
        np.testing.assert_array_equal(got, want)


# ---------------------------------------------------------------- the fused C kernel

needs_fused = pytest.mark.skipif(not FUSED_KERNELS, reason="no fused kernel: built without a C compiler, or no AVX2")


def cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as info:
            return set(next(line for line in info if line.startswith("flags")).split(":")[1].split())
    except (OSError, StopIteration):
        return set()


def test_the_kernel_is_built_where_it_can_be() -> None:
    """Where a C compiler and an x86-64 CPU with AVX2 and FMA are at hand (as on the machines
    this project is built and tested on), the install built the fused kernel and it runs; a
    silently failed build would otherwise only show as a slower E-step."""
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        pytest.skip("no C compiler here: the BLAS kernel serves")
    flags = cpu_flags()
    if not {"avx2", "fma"} <= flags:
        pytest.skip("this CPU has no AVX2 and FMA: the BLAS kernel serves")
    assert quadratic.fused_extension() is not None, "the fused kernel was not built (see the install log)"
    assert "avx2" in FUSED_KERNELS
    assert ("avx512" in FUSED_KERNELS) == ({"avx512f", "avx512dq", "avx512bw", "avx512vl"} <= flags)


def mixture_data(k: int, d: int, n: int, seed: int) -> tuple[MixtureParams, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    params = random_mixture(k, d, separation=3.0, random_state=seed)
    X = params.means[rng.integers(0, k, n)] + rng.normal(size=(n, d))
    return params, X, X[: max(1, n // 2)].mean(axis=0) + 0.25 if n else np.zeros(d)


# Shapes that reach every edge: one feature and component; a part tile; a group of 8
# components plus one (padding); p not a multiple of 3 (the statistics' step); whole and part
# blocks of 1024 records.
SHAPES = [(1, 1, 1), (5, 3, 17), (9, 7, 1024), (8, 16, 2 * 1024 + 5), (17, 20, 300), (2, 4, 0)]


# float32: float32's few digits; float64: the BLAS kernel's tolerances against scipy.
PRECISIONS = {
    np.float32: {"log_norm": 1e-5, "moments": 1e-4, "blas": 1e-5},
    np.float64: {"log_norm": 1e-10, "moments": 1e-10, "blas": 1e-12},
}


@needs_fused
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kernel", FUSED_KERNELS)
@pytest.mark.parametrize(("k", "d", "n"), SHAPES)
def test_fused_kernel_equals_the_definitions(kernel: str, dtype, k: int, d: int, n: int) -> None:
    params, X, shift = mixture_data(k, d, n, seed=k * 100 + d)
    got = full_statistics(X, params, shift, dtype, kernel=kernel)
    blas = full_statistics(X, params, shift, dtype, kernel="blas")
    assert all(a.dtype == np.float64 for a in got)
    assert [a.shape for a in got] == [(k,), (k, d), (k, d, d), (n,)]
    if n == 0:
        assert all(not np.any(a) for a in got)
        return
    tolerance = PRECISIONS[dtype]
    counts, sums, second, log_norm = scipy_full_statistics(X, params, shift)
    np.testing.assert_allclose(got[3], log_norm, rtol=tolerance["log_norm"], atol=10 * tolerance["log_norm"])
    for g, want in ((got[0], counts), (got[1], sums), (got[2], second)):
        np.testing.assert_allclose(g, want, atol=tolerance["moments"] * (np.abs(want).max() + 10))
    # and as close to the BLAS kernel in the same precision as that precision allows
    np.testing.assert_allclose(got[3], blas[3], rtol=tolerance["blas"], atol=10 * tolerance["blas"])
    np.testing.assert_allclose(got[2], blas[2], atol=tolerance["blas"] * (np.abs(second).max() + 10))


@needs_fused
@pytest.mark.parametrize(
    ("dtype", "far", "tight", "rtol"), [(np.float64, 300.0, 1e-6, 1e-11), (np.float32, 50.0, 1e-2, 1e-5)]
)
@pytest.mark.parametrize("kernel", FUSED_KERNELS)
def test_fused_kernel_computes_the_guarded_components_directly(
    kernel: str, dtype, far: float, tight: float, rtol: float
) -> None:
    """A tight component far from the shift takes the direct form in the C kernel too."""
    rng = np.random.default_rng(6)
    means = np.array([[far, -far / 2, 0.0], [1.0, 2.0, 0.5], [-2.0, 0.0, 1.0]])
    covariances = np.stack([np.eye(3) * tight, np.eye(3), np.diag([2.0, 1.0, 0.5])])
    params = MixtureParams.from_covariances(np.array([0.2, 0.4, 0.4]), means, covariances, "full")
    shift = np.zeros(3)
    assert direct_components(expanded_log_density(params, shift)[1], np.dtype(dtype)).tolist() == [0]
    X = np.vstack(
        [
            means[0] + np.sqrt(tight) * rng.normal(size=(40, 3)),
            means[1:][rng.integers(0, 2, 400)] + rng.normal(size=(400, 3)),
        ]
    )
    counts, _, _, log_norm = full_statistics(X, params, shift, dtype, kernel=kernel)
    expected = scipy_full_statistics(X, params, shift)
    np.testing.assert_allclose(log_norm, expected[3], rtol=rtol, atol=0 if dtype == np.float64 else 1e-3)
    np.testing.assert_allclose(counts, expected[0], rtol=1e-6)


@needs_fused
def test_any_layout_and_dtype_of_records_gives_the_same_bits() -> None:
    """Sources hand over column-major float64 (and row slices of it), read in place; rows,
    strided records and float32 records are copied into that layout first."""
    params, X, shift = mixture_data(4, 6, 3000, seed=8)
    columns = full_statistics(np.asfortranarray(X), params, shift, np.float32)
    wide = np.asfortranarray(np.hstack([X, X]))[:, :6]  # the columns of a larger array
    longer = np.asfortranarray(np.vstack([X, X]))[:3000]  # its first rows, as a source's mini-batch: read in place
    strided = np.asfortranarray(np.repeat(X, 2, axis=0))[::2]  # every other row: copied first
    assert not longer.flags.f_contiguous and longer.strides[0] == 8
    for other in (np.ascontiguousarray(X), wide, longer, strided):
        np.testing.assert_array_equal(other, X)
        for got, want in zip(full_statistics(other, params, shift, np.float32), columns):
            np.testing.assert_array_equal(got, want)
    as_float32 = full_statistics(X.astype(np.float32), params, shift, np.float32)
    np.testing.assert_allclose(as_float32[3], columns[3], rtol=1e-5)


@needs_fused
def test_threads_run_the_kernel_at_once_with_the_same_results() -> None:
    """The kernel lets go of the GIL; concurrent calls (a Dask worker's threads) share nothing."""
    params, X, shift = mixture_data(8, 16, 20_000, seed=9)
    expected = full_statistics(X, params, shift, np.float32)
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: full_statistics(X, params, shift, np.float32), range(12)))
    for result in results:
        for got, want in zip(result, expected):
            np.testing.assert_array_equal(got, want)


@needs_fused
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_environment_switch_and_the_kernel_argument_choose_the_path(monkeypatch: pytest.MonkeyPatch, dtype) -> None:
    params, X, shift = mixture_data(3, 4, 5000, seed=10)
    fused = full_statistics(X, params, shift, dtype, kernel=FUSED_KERNELS[0])
    blas = full_statistics(X, params, shift, dtype, kernel="blas")
    assert not np.array_equal(fused[3], blas[3])  # the two paths round differently
    np.testing.assert_array_equal(full_statistics(X, params, shift, dtype)[3], fused[3])
    monkeypatch.setenv("STREAMGMM_FUSED", "0")
    assert not quadratic.fused_kernel_enabled()
    np.testing.assert_array_equal(full_statistics(X, params, shift, dtype)[3], blas[3])
    with pytest.raises(ValueError, match="'gpu'"):
        full_statistics(X, params, shift, dtype, kernel="gpu")


@needs_fused
def test_the_c_interface_checks_its_buffers() -> None:
    n, d, k = 10, 3, 2
    p = quadratic.n_quadratic_features(d)
    args = [
        np.zeros((d, n)),
        np.zeros(d),
        np.zeros((8, p), np.float32),
        np.zeros(k, np.uint8),
        np.zeros((k * d, d + 1), np.float32),
        np.zeros(k, np.float32),
        np.zeros((k, p)),
        np.zeros(n),
    ]
    extension = quadratic.fused_extension()
    extension.chunk_statistics(n, d, k, 4, *args)
    with pytest.raises(ValueError, match="V has"):  # float32 buffers where float64 is announced
        extension.chunk_statistics(n, d, k, 8, *args)
    short = list(args)
    short[2] = np.zeros((k, p), np.float32)  # V not padded to a whole group of 8
    with pytest.raises(ValueError, match="V has"):
        extension.chunk_statistics(n, d, k, 4, *short)
    with pytest.raises(ValueError, match="itemsize"):
        extension.chunk_statistics(n, d, k, 2, *args)
    with pytest.raises(ValueError, match="no sse kernel"):
        extension.chunk_statistics(n, d, k, 4, *args, "sse")
    with pytest.raises((TypeError, BufferError)):
        extension.chunk_statistics(n, d, k, 4, *args[:-1], np.zeros(2 * n)[::2])  # not contiguous


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softmax_leaves_no_subnormal_responsibility(dtype) -> None:
    """Subnormal operands slow the statistics' product by an order of magnitude (float32 BLAS):
    responsibilities far below the largest of their record are floored at a normal number, and
    the log-likelihoods stay those of the exact log-sum-exp."""

    gaps = np.array([0.0, -30.0, -90.0, -95.0, -200.0, -750.0])
    L = np.stack([gaps + shift for shift in (0.0, 5.0, -3.0)], axis=1).astype(dtype)
    exact = logsumexp(L.astype(np.float64), axis=0)
    log_norm = quadratic.softmax_columns(L)
    tiny = np.finfo(dtype).tiny
    assert not np.any((L != 0) & (np.abs(L) < tiny)), L
    np.testing.assert_allclose(L.sum(axis=0), 1.0, rtol=1e-6)
    np.testing.assert_allclose(log_norm, exact, rtol=1e-6, atol=1e-6)
