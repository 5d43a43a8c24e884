"""Record weights as an input of the fused kernel (kernels.chunk): each record's responsibilities
scaled by its weight before they are summed, against the numpy and direct-form path the chunk
takes without the fused kernel, for every covariance type and precision; zero, fractional,
huge and tiny weights; integer weights against repeated rows; and the C interface's checks."""

from __future__ import annotations

import numpy as np
import pytest
from shared_helpers import random_params

from streamgmm import MixtureParams
from streamgmm.io.sources.chunk_source import weight_scale
from streamgmm.kernels import chunk, quadratic
from streamgmm.kernels.chunk import chunk_statistics

TYPES = ["full", "tied", "diag", "spherical"]
# float64 to 1e-12 of each array's largest entry; float32 to the kernels' float32 tolerance.
TOLERANCE = {np.float64: 1e-12, np.float32: 2e-4}
NAMES = ("counts", "sums", "second")

pytestmark = pytest.mark.skipif(not quadratic.fused_kernel_enabled(), reason="no fused kernel on this machine")


def records(params: MixtureParams, n: int, rng: np.random.Generator) -> np.ndarray:
    labels = rng.integers(0, params.n_components, n)
    return params.means[labels] + rng.normal(size=(n, params.n_features)) * 1.2


def continuous_weights(n: int, rng: np.random.Generator, scale: float = 1.0) -> np.ndarray:
    """Fractional weights of many distinct values, a fifth of them zero."""
    w = rng.uniform(0.0, 3.0, n) * scale
    w[rng.random(n) < 0.2] = 0.0
    return w


def assert_same_statistics(got, expected, dtype, log_tolerance: float | None = None) -> None:
    tolerance = TOLERANCE[dtype]
    for name in NAMES:
        want = getattr(expected, name)
        largest = float(np.abs(want).max())
        np.testing.assert_allclose(getattr(got, name), want, rtol=tolerance, atol=tolerance * largest, err_msg=name)
    assert got.n_records == pytest.approx(expected.n_records, rel=1e-15)
    assert got.log_likelihood == pytest.approx(expected.log_likelihood, rel=log_tolerance or tolerance)


def without_fused_kernel(monkeypatch: pytest.MonkeyPatch, run):
    with monkeypatch.context() as patch:
        patch.setenv("STREAMGMM_FUSED", "0")
        return run()


def refuse_scoring(monkeypatch: pytest.MonkeyPatch) -> None:
    """Weighted chunks must not be scored and summed with numpy while the fused kernel runs."""

    def scored(*args, **kwargs):
        raise AssertionError("the weighted chunk was scored instead of taking the fused kernel")

    monkeypatch.setattr(chunk, "score_chunk", scored)


@pytest.mark.parametrize("weights", ["fractional", "few values", "huge", "tiny", "huge in the fit's unit"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("covariance_type", TYPES)
def test_the_weighted_kernel_equals_the_path_without_it(
    monkeypatch: pytest.MonkeyPatch, covariance_type: str, dtype, weights: str
) -> None:
    """Weights of 0 and fractions, of a few distinct values, of 1e300 and 1e-300 as given (the
    Dask fits'), and of 1e300 divided by the fit's unit: the statistics of the fused kernel's
    weighted pass are those of the path without the fused kernel (numpy sums of the direct
    form's responsibilities, or its statistics once per distinct weight), and the records'
    log-likelihoods stay unweighted. Two blocks and a part of the kernel's 1024 records."""
    rng = np.random.default_rng(TYPES.index(covariance_type))
    params = random_params(covariance_type, 5, 6, rng)
    X = np.asfortranarray(records(params, 2 * 1024 + 37, rng))
    shift = X.mean(axis=0) + 0.3
    n = X.shape[0]
    w = {
        "fractional": lambda: continuous_weights(n, rng),
        "few values": lambda: rng.integers(0, 5, n) * 0.5,
        "huge": lambda: continuous_weights(n, rng, 1e300),
        "tiny": lambda: continuous_weights(n, rng, 1e-300),
        "huge in the fit's unit": lambda: continuous_weights(n, rng, 1e300),
    }[weights]()
    if weights == "huge in the fit's unit":
        w = w / weight_scale(w)
    expected, expected_norm = without_fused_kernel(
        monkeypatch, lambda: chunk_statistics(X, params, shift, dtype, weights=w)
    )
    # beyond float32's range the float32 kernel leaves the weights to the numpy path
    kernel = dtype == np.float64 or weights not in ("huge", "tiny")
    if kernel:
        refuse_scoring(monkeypatch)
    stats, log_norm = chunk_statistics(X, params, shift, dtype, weights=w)
    assert_same_statistics(stats, expected, dtype)
    np.testing.assert_allclose(log_norm, expected_norm, rtol=TOLERANCE[dtype])
    if kernel:
        np.testing.assert_array_equal(log_norm, chunk_statistics(X, params, shift, dtype)[1])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("covariance_type", ["full", "diag", "spherical"])
def test_weighted_components_in_the_direct_form(monkeypatch: pytest.MonkeyPatch, covariance_type: str, dtype) -> None:
    """A component of tiny covariance far from the shift, computed in the direct form inside the
    kernel, is weighted like the others."""
    rng = np.random.default_rng(21)
    base = random_params(covariance_type, 3, 3, rng)
    means, covariances = base.means.copy(), base.covariances.copy()
    means[0] += 1000.0
    covariances[0] = covariances[0] * 1e-8
    params = MixtureParams.from_covariances(base.weights, means, covariances, covariance_type)
    labels = rng.integers(0, 3, 3000)
    X = means[labels] + rng.normal(size=(3000, 3)) * np.where(labels == 0, 1e-4, 1.0)[:, None]
    shift = X.mean(axis=0)
    w = continuous_weights(3000, rng)
    expected, _ = without_fused_kernel(monkeypatch, lambda: chunk_statistics(X, params, shift, dtype, weights=w))
    refuse_scoring(monkeypatch)
    stats, _ = chunk_statistics(X, params, shift, dtype, weights=w)
    if dtype == np.float64:
        # the records' offsets from the shift (1000 + 1e-4) keep about 1e-13 of 1e-4 variances'
        # log-densities: the log-likelihood to the direct form's 1e-9, as without weights
        assert_same_statistics(stats, expected, dtype, log_tolerance=1e-9)
    else:  # float32 rounds the records' offsets (1000 + 1e-4) to about 1e-4
        np.testing.assert_allclose(stats.counts, expected.counts, rtol=1e-2, atol=1e-2)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("covariance_type", TYPES)
def test_integer_weights_equal_repeated_rows(monkeypatch: pytest.MonkeyPatch, covariance_type: str, dtype) -> None:
    """Weights 0..7 through the weighted kernel: the statistics of each row repeated that often."""
    rng = np.random.default_rng(31)
    params = random_params(covariance_type, 4, 5, rng)
    X = records(params, 1500, rng)
    shift = X.mean(axis=0)
    w = rng.integers(0, 8, X.shape[0]).astype(np.float64)
    repeated, _ = chunk_statistics(np.repeat(X, w.astype(int), axis=0), params, shift, dtype)
    refuse_scoring(monkeypatch)
    stats, _ = chunk_statistics(X, params, shift, dtype, weights=w)
    tolerance = 1e-10 if dtype == np.float64 else TOLERANCE[dtype]
    assert stats.n_records == repeated.n_records == w.sum()
    assert stats.log_likelihood == pytest.approx(repeated.log_likelihood, rel=tolerance)
    for name in NAMES:
        got = getattr(stats, name)
        np.testing.assert_allclose(got, getattr(repeated, name), rtol=tolerance, atol=tolerance * np.abs(got).max())


@pytest.mark.parametrize("covariance_type", TYPES)
def test_a_record_of_weight_zero_adds_nothing_even_at_minus_infinity(
    monkeypatch: pytest.MonkeyPatch, covariance_type: str
) -> None:
    """A record so far out that every log-density is -inf (its responsibilities 0/0) adds nothing
    at weight zero: the statistics are those of the chunk without it."""
    rng = np.random.default_rng(51)
    base = random_params(covariance_type, 3, 4, rng)
    # small variances make the far record's log-densities overflow to -inf (tied less small: its
    # expansion, which the fused kernel needs, then holds)
    small = 1e-2 if covariance_type == "tied" else 1e-4
    params = MixtureParams.from_covariances(base.weights, base.means, base.covariances * small, covariance_type)
    X = records(base, 1200, rng)
    shift = X.mean(axis=0)
    w = continuous_weights(X.shape[0], rng)
    far = X.copy()
    far[600] = 1e154
    w[600] = 0.0
    refuse_scoring(monkeypatch)
    stats, log_norm = chunk_statistics(far, params, shift, weights=w)
    kept = np.arange(X.shape[0]) != 600
    expected, _ = chunk_statistics(X[kept], params, shift, weights=w[kept])
    assert log_norm[600] == -np.inf
    assert_same_statistics(stats, expected, np.float64)


def test_the_c_interface_checks_the_weights() -> None:
    """Weights of the wrong length, or without the buffer of their log-likelihood total, are refused."""
    fused = quadratic.fused_extension()
    n, d, k = 5, 2, 1
    p = quadratic.n_quadratic_features(d)
    X = np.zeros((d, n))
    V = np.zeros((8, p))
    V[0, 0] = -1.5  # every record's log-likelihood
    common = (
        n, d, k, 8, "full", X, np.zeros(d), V, np.zeros(k, np.uint8), np.zeros((k * d, d + 1)),
        np.zeros(k), np.zeros((k, p)), np.zeros(n), None, quadratic.FUSED_KERNELS[0], None, None,
    )  # fmt: skip
    with pytest.raises(ValueError, match="weights has"):
        fused.run(*common, np.ones(n + 1), np.zeros(1))
    with pytest.raises(ValueError, match="go together"):
        fused.run(*common, np.ones(n), None)
    total = np.zeros(1)
    fused.run(*common, np.full(n, 2.0), total)
    assert total[0] == 2.0 * n * -1.5
