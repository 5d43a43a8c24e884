"""A chunk's E-step (kernels.chunk) and scoring (kernels.scoring) for every covariance type,
against scipy's densities and scikit-learn's GaussianMixture with the same parameters, in float64
and float32, on edge shapes; and the cancellation guard (kernels.expansion)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import logsumexp
from scipy.stats import multivariate_normal
from shared_helpers import dense_covariances, random_params, scipy_chunk_statistics, unit_matrices
from sklearn.mixture import GaussianMixture

from streamgmm import MixtureParams
from streamgmm.kernels import chunk, quadratic
from streamgmm.kernels.chunk import chunk_statistics
from streamgmm.kernels.expansion import expansion
from streamgmm.kernels.scoring import score_chunk
from streamgmm.mixture.incomplete import incomplete_statistics

TYPES = ["full", "tied", "diag", "spherical"]
# (records, features, components): one record, one feature, one component, a part block and a
# part tile of the C kernel (1024 records a block), no records, K = 64.
SHAPES = [(1, 3, 2), (700, 1, 3), (500, 4, 1), (2 * 1024 + 37, 5, 6), (0, 3, 2), (3001, 16, 64)]
TOLERANCE = {np.float64: 1e-10, np.float32: 2e-4}


def records(params: MixtureParams, n: int, rng: np.random.Generator) -> np.ndarray:
    labels = rng.integers(0, params.n_components, n)
    return params.means[labels] + rng.normal(size=(n, params.n_features)) * 1.2


def assert_close(got: np.ndarray, expected: np.ndarray, dtype) -> None:
    """Within the precision's tolerance of each entry, or of the largest one (an entry that is
    the difference of large ones, e.g. a sum near zero, keeps only their absolute accuracy)."""
    tolerance = TOLERANCE[dtype]
    largest = float(np.abs(expected).max()) if expected.size else 0.0
    np.testing.assert_allclose(got, expected, rtol=tolerance, atol=tolerance * max(1.0, largest))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("covariance_type", TYPES)
def test_statistics_equal_the_definitions(covariance_type: str, shape, dtype) -> None:
    n, d, k = shape
    rng = np.random.default_rng(n + 10 * d + 100 * k)
    params = random_params(covariance_type, k, d, rng)
    X = np.asfortranarray(records(params, n, rng))  # a source's mini-batches are column-major
    shift = X.mean(axis=0) + 0.5 if n else np.zeros(d)
    stats, log_norm = chunk_statistics(X, params, shift, dtype)
    expected = scipy_chunk_statistics(X, params, shift)
    assert stats.n_records == n and stats.covariance_type == covariance_type
    assert stats.second.shape == expected["second"].shape
    assert_close(log_norm, expected["log_norm"], dtype)
    assert stats.log_likelihood == pytest.approx(expected["log_norm"].sum(), rel=TOLERANCE[dtype], abs=1e-12)
    for name in ("counts", "sums", "second"):
        assert_close(getattr(stats, name), expected[name], dtype)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("covariance_type", TYPES)
def test_scores_equal_scikit_learn(covariance_type: str, shape, dtype) -> None:
    n, d, k = shape
    rng = np.random.default_rng(7 + n + 10 * d + 100 * k)
    params = random_params(covariance_type, k, d, rng)
    X = records(params, n, rng)  # row-major, as a user's array
    sk = GaussianMixture(k, covariance_type=covariance_type)
    sk.weights_, sk.means_, sk.covariances_ = params.weights, params.means, params.covariances
    sk.precisions_cholesky_ = params.precisions_cholesky
    log_norm, resp = score_chunk(X, params, dtype)
    assert log_norm.dtype == np.float64 and resp.dtype == dtype and resp.shape == (n, k)
    if n == 0:
        return
    assert_close(log_norm, sk.score_samples(X), dtype)
    assert_close(resp, sk.predict_proba(X), dtype)


@pytest.mark.parametrize("covariance_type", TYPES)
def test_without_the_fused_kernel_the_direct_form_gives_the_same(
    monkeypatch: pytest.MonkeyPatch, covariance_type
) -> None:
    rng = np.random.default_rng(5)
    params = random_params(covariance_type, 4, 3, rng)
    X = records(params, 1500, rng)
    shift = X[:100].mean(axis=0)
    fused = chunk_statistics(X, params, shift), score_chunk(X, params)
    monkeypatch.setenv("STREAMGMM_FUSED", "0")
    direct = chunk_statistics(X, params, shift), score_chunk(X, params)
    for name in ("counts", "sums", "second"):
        np.testing.assert_allclose(getattr(fused[0][0], name), getattr(direct[0][0], name), rtol=1e-10, atol=1e-9)
    for got, expected in zip((fused[0][1], *fused[1]), (direct[0][1], *direct[1])):
        np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("covariance_type", TYPES)
def test_tiny_covariances_far_from_the_shift_stay_exact(covariance_type: str, dtype) -> None:
    """The guard against cancellation: one component of variance 1e-8 a thousand units from the
    shift is computed in the direct form (tied: the whole chunk, its direct form not being of
    the kernel's features), and the results stay those of scipy."""
    rng = np.random.default_rng(11)
    d, k = 3, 3
    base = random_params(covariance_type, k, d, rng)
    means = base.means.copy()
    means[0] += 1000.0
    if covariance_type == "tied":
        covariances = base.covariances * 1e-8
    else:
        covariances = base.covariances.copy()
        covariances[0] = covariances[0] * 1e-8
    params = MixtureParams.from_covariances(base.weights, means, covariances, covariance_type)
    labels = rng.integers(0, k, 3000)
    spread = np.full(3000, 1e-4) if covariance_type == "tied" else np.where(labels == 0, 1e-4, 1.0)
    X = means[labels] + rng.normal(size=(3000, d)) * spread[:, None]
    shift = X.mean(axis=0)
    inputs = expansion(params, shift, dtype)
    if covariance_type == "tied":
        assert inputs is None
    else:
        assert 0 in inputs.direct
    stats, log_norm = chunk_statistics(X, params, shift, dtype)
    expected = scipy_chunk_statistics(X, params, shift)
    # float32 rounds the records' offsets (1000 + 1e-4) to about 1e-4: compare the records'
    # log-likelihoods to the float32 tolerance of the expansion, a few nats on 1e-8 variances.
    tolerance = 1e-6 if dtype == np.float64 else 1e-2
    np.testing.assert_allclose(stats.counts, expected["counts"], rtol=tolerance, atol=tolerance)
    scored_norm, resp = score_chunk(X, params, dtype)
    np.testing.assert_allclose(resp, expected["resp"], atol=tolerance)
    if dtype == np.float64:
        np.testing.assert_allclose(log_norm, expected["log_norm"], rtol=1e-9)
        np.testing.assert_allclose(scored_norm, expected["log_norm"], rtol=1e-9)
        np.testing.assert_allclose(stats.sums, expected["sums"], rtol=1e-9, atol=1e-6)


@pytest.mark.parametrize("covariance_type", ["diag", "spherical"])
def test_every_diagonal_component_in_the_direct_form_over_many_features_stays_exact(covariance_type: str) -> None:
    """Every component in the direct form (variances 1e-8, each mean a thousand units from the
    shift), over 20 features: the kernel reads each diagonal factor's one term per row, and the
    results are scipy's."""
    rng = np.random.default_rng(12)
    d, k = 20, 4
    base = random_params(covariance_type, k, d, rng)
    means = base.means + 1000.0 * np.arange(1, k + 1)[:, None]
    params = MixtureParams.from_covariances(base.weights, means, base.covariances * 1e-8, covariance_type)
    labels = rng.integers(0, k, 2000)
    X = means[labels] + rng.normal(size=(2000, d)) * 1e-4
    shift = X.mean(axis=0)
    assert quadratic.fused_kernel_enabled() and expansion(params, shift, np.float64).direct.tolist() == list(range(k))
    stats, log_norm = chunk_statistics(X, params, shift)
    expected = scipy_chunk_statistics(X, params, shift)
    np.testing.assert_allclose(stats.counts, expected["counts"], rtol=1e-9)
    np.testing.assert_allclose(stats.sums, expected["sums"], rtol=1e-9, atol=1e-6)
    np.testing.assert_allclose(stats.second, expected["second"], rtol=1e-7, atol=1e-6)
    np.testing.assert_allclose(log_norm, expected["log_norm"], rtol=1e-9)


@pytest.mark.parametrize("covariance_type", TYPES)
def test_float32_responsibilities_have_no_subnormal(covariance_type: str) -> None:
    """Responsibilities far below their record's largest are floored to zero, never subnormal
    (which slows float32 arithmetic tenfold), and rows still sum to one."""
    rng = np.random.default_rng(3)
    params = random_params(covariance_type, 5, 2, rng, scale=0.05)
    X = np.concatenate([records(params, 500, rng), params.means.mean(axis=0) + rng.normal(size=(500, 2)) * 8])
    _, resp = score_chunk(X, params, np.float32)
    assert not np.any((resp != 0) & (np.abs(resp) < np.finfo(np.float32).tiny))
    assert np.any(resp == 0)  # the case is exercised
    np.testing.assert_allclose(resp.sum(axis=1), 1.0, rtol=1e-5)


def test_the_c_interface_checks_the_layout_and_the_responsibilities_buffer() -> None:
    extension = quadratic.fused_extension()
    if extension is None or not quadratic.FUSED_KERNELS:
        pytest.skip("the fused kernel was not built, or this CPU cannot run it")
    n, d, k = 10, 3, 2
    p = 1 + 2 * d
    X, shift = np.zeros((d, n)), np.zeros(d)
    V, direct = np.zeros((8, p)), np.zeros(k, np.uint8)
    W, constant = np.zeros((k * d, d + 1)), np.zeros(k)
    S, log_norm = np.zeros((k, p)), np.zeros(n)
    resp = np.zeros((n, k))
    extension.run(n, d, k, 8, "diag", X, shift, V, direct, W, constant, S, log_norm, resp)
    np.testing.assert_allclose(resp, 0.5)  # equal log-densities
    with pytest.raises(ValueError, match="layout"):
        extension.run(n, d, k, 8, "banded", X, shift, V, direct, W, constant, S, log_norm, resp)
    with pytest.raises(ValueError, match="resp has"):
        extension.run(n, d, k, 8, "diag", X, shift, V, direct, W, constant, S, log_norm, resp[:5])
    with pytest.raises(ValueError, match="V has"):  # a diag V is not a full one
        extension.run(n, d, k, 8, "full", X, shift, V, direct, W, constant, S, log_norm, None)


@pytest.mark.parametrize("covariance_type", TYPES)
def test_float32_division_by_many_equal_components_leaves_no_subnormal(covariance_type: str) -> None:
    """63 equal components and one 85 nats below them at the record: exp(-85) is a normal float32
    but a share of 1/63 of it is not; the kernel floors such responsibilities to zero."""
    k, d = 64, 2
    means = np.zeros((k, d))
    means[-1, 0] = np.sqrt(2 * 85.0)
    covariances = unit_matrices(covariance_type, k, d)
    params = MixtureParams.from_covariances(np.full(k, 1 / k), means, covariances, covariance_type)
    X = np.zeros((40, d)) + np.linspace(0.0, 0.3, 40)[:, None] * np.array([-1.0, 1.0])
    _, resp = score_chunk(X, params, np.float32)
    assert not np.any((resp != 0) & (np.abs(resp) < np.finfo(np.float32).tiny))
    stats, _ = chunk_statistics(X, params, np.zeros(d), np.float32)
    np.testing.assert_allclose(stats.counts[:-1], 40 / 63, rtol=1e-5)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("covariance_type", TYPES)
def test_a_component_of_weight_zero_takes_no_record(covariance_type: str, dtype) -> None:
    """Its log-density is -inf: no responsibility, and the others' as without it."""
    rng = np.random.default_rng(8)
    params = random_params(covariance_type, 3, 4, rng)
    weights = np.array([0.6, 0.4, 0.0])
    zero = MixtureParams(weights, params.means, params.covariances, params.precisions_cholesky, covariance_type)
    X = records(params, 2000, rng)
    expected = scipy_chunk_statistics(X, zero, X.mean(axis=0))
    stats, log_norm = chunk_statistics(X, zero, X.mean(axis=0), dtype)
    scored_norm, resp = score_chunk(X, zero, dtype)
    assert stats.counts[2] == 0 and np.all(resp[:, 2] == 0)
    assert_close(log_norm, expected["log_norm"], dtype)
    assert_close(scored_norm, expected["log_norm"], dtype)
    assert_close(resp, expected["resp"], dtype)


# ------------------------------------------------------------------ missing features and weights


def with_gaps(X: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """About half the records lose each feature with probability 0.4; one row loses every one."""
    X = X.copy()
    gaps = (rng.random(X.shape) < 0.4) & (rng.random(X.shape[0]) < 0.5)[:, None]
    X[gaps] = np.nan
    X[0] = np.nan
    return X


def marginal_oracle(X: np.ndarray, params: MixtureParams) -> tuple[np.ndarray, np.ndarray]:
    """scipy's density of each record's observed sub-vector; the records that observe the same
    features are scored by one call per component (scipy's densities are row by row)."""
    n, k = X.shape[0], params.n_components
    covariances = dense_covariances(params)
    log_norm, resp = np.full(n, np.nan), np.full((n, k), np.nan)
    observed = ~np.isnan(X)
    for pattern in np.unique(observed, axis=0):
        rows = np.flatnonzero((observed == pattern).all(axis=1))
        o = np.flatnonzero(pattern)
        if o.size:
            x = X[np.ix_(rows, o)]
            log_prob = np.column_stack(
                [
                    np.log(params.weights[j])
                    + np.atleast_1d(multivariate_normal(params.means[j, o], covariances[j][np.ix_(o, o)]).logpdf(x))
                    for j in range(k)
                ]
            )
            log_norm[rows] = logsumexp(log_prob, axis=1)
            resp[rows] = np.exp(log_prob - log_norm[rows, None])
    return log_norm, resp


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("covariance_type", TYPES)
def test_incomplete_rows_are_marginalised_and_complete_rows_keep_the_kernel(covariance_type: str, dtype) -> None:
    """log_norm and responsibilities in row order against scipy on the observed features; the
    statistics are the complete rows' (the definitions, as above) plus the incomplete rows'
    exact E-step (mixture.incomplete, tested against a per-record oracle)."""
    rng = np.random.default_rng(31)
    params = random_params(covariance_type, 3, 4, rng)
    X = np.asfortranarray(with_gaps(records(params, 1500, rng), rng))
    shift = np.nanmean(X, axis=0)
    stats, log_norm = chunk_statistics(X, params, shift, dtype)
    expected_norm, expected_resp = marginal_oracle(X, params)
    complete = ~np.isnan(X).any(axis=1)
    assert np.isnan(log_norm[0]) and 0.1 < (~complete).mean() < 0.5
    assert_close(log_norm[1:], expected_norm[1:], dtype)
    scored_norm, resp = score_chunk(X, params, dtype)
    assert resp.dtype == dtype and np.isnan(scored_norm[0]) and np.isnan(resp[0]).all()
    assert_close(scored_norm[1:], expected_norm[1:], dtype)
    assert_close(resp[1:], expected_resp[1:], dtype)
    some = ~np.isnan(X).all(axis=1)
    incomplete, _ = incomplete_statistics(X[~complete], params, shift)
    ordinary = scipy_chunk_statistics(X[complete], params, shift)
    assert stats.n_records == some.sum()
    assert stats.log_likelihood == pytest.approx(expected_norm[some].sum(), rel=TOLERANCE[dtype])
    for name in ("counts", "sums", "second"):
        assert_close(getattr(stats, name), ordinary[name] + getattr(incomplete, name), dtype)


@pytest.mark.parametrize("covariance_type", TYPES)
def test_only_incomplete_rows_and_one_feature(covariance_type: str) -> None:
    rng = np.random.default_rng(12)
    params = random_params(covariance_type, 2, 3, rng)
    X = records(params, 50, rng)
    X[np.arange(50), np.arange(50) % 3] = np.nan  # every row incomplete
    stats, log_norm = chunk_statistics(X, params, np.zeros(3))
    np.testing.assert_allclose(log_norm, marginal_oracle(X, params)[0], rtol=1e-10)
    assert stats.n_records == 50
    one = random_params(covariance_type, 2, 1, rng)
    X = np.array([[np.nan], [10.0], [np.nan], [12.0]])
    stats, log_norm = chunk_statistics(X, one, np.zeros(1))
    reference, reference_norm = chunk_statistics(X[[1, 3]], one, np.zeros(1))
    np.testing.assert_array_equal(log_norm[[1, 3]], reference_norm)
    assert np.isnan(log_norm[[0, 2]]).all() and stats.n_records == 2
    np.testing.assert_array_equal(stats.second, reference.second)


@pytest.mark.parametrize("route", ["fused weights", "per weight", "scored"])
@pytest.mark.parametrize("gaps", [False, True], ids=["complete", "gaps"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("covariance_type", TYPES)
def test_weights_count_as_duplicated_records(
    monkeypatch: pytest.MonkeyPatch, covariance_type: str, dtype, gaps: bool, route: str
) -> None:
    """Integer weights equal duplicated rows, zero weights equal dropped rows, all-ones weights
    equal no weights; whether the complete rows take the fused kernel's weight input or, without
    the fused kernel, the direct form once per distinct weight or scored and summed with numpy
    (the route of weights of many distinct values)."""
    if route != "fused weights":
        monkeypatch.setenv("STREAMGMM_FUSED", "0")
    if route == "scored":
        monkeypatch.setattr(chunk, "MAX_WEIGHT_GROUPS", 0)
    rng = np.random.default_rng(40)
    params = random_params(covariance_type, 3, 4, rng)
    X = records(params, 2000, rng)
    if gaps:
        X = with_gaps(X, rng)
    shift = np.nanmean(X, axis=0)
    w = rng.integers(0, 4, X.shape[0]).astype(np.float64)
    some = ~np.isnan(X).all(axis=1)
    tolerance = 1e-10 if dtype == np.float64 else TOLERANCE[dtype]
    weighted, log_norm = chunk_statistics(X, params, shift, dtype, weights=w)
    duplicated, _ = chunk_statistics(np.repeat(X, w.astype(int), axis=0), params, shift, dtype)
    dropped, dropped_norm = chunk_statistics(X[w > 0], params, shift, dtype, weights=w[w > 0])
    unweighted, unweighted_norm = chunk_statistics(X, params, shift, dtype)
    ones, ones_norm = chunk_statistics(X, params, shift, dtype, weights=np.ones(X.shape[0]))
    assert weighted.n_records == duplicated.n_records == w[some].sum() == dropped.n_records
    assert ones.n_records == unweighted.n_records == some.sum()
    assert weighted.log_likelihood == pytest.approx(duplicated.log_likelihood, rel=tolerance)
    assert weighted.log_likelihood == pytest.approx(np.nansum(w * unweighted_norm), rel=tolerance)
    np.testing.assert_allclose(log_norm[w > 0], dropped_norm, rtol=1e-13)  # patterns may pool otherwise
    assert_close(ones_norm, unweighted_norm, dtype)
    for name in ("counts", "sums", "second"):
        got = getattr(weighted, name)
        np.testing.assert_allclose(got, getattr(duplicated, name), rtol=tolerance, atol=tolerance * np.abs(got).max())
        if not gaps and route == "per weight":  # the same rows summed in the same order
            np.testing.assert_array_equal(got, getattr(dropped, name))
        else:
            np.testing.assert_allclose(got, getattr(dropped, name), rtol=tolerance, atol=tolerance * np.abs(got).max())
        expected = getattr(unweighted, name)
        if dtype == np.float64:
            scale = np.abs(expected).max()
            np.testing.assert_allclose(getattr(ones, name), expected, rtol=1e-12, atol=1e-12 * scale)
        else:
            assert_close(getattr(ones, name), expected, dtype)


@pytest.mark.parametrize("path", ["fused", "direct form", "no fused kernel"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("covariance_type", TYPES)
def test_every_kernel_path_finds_the_incomplete_rows(
    monkeypatch: pytest.MonkeyPatch, covariance_type: str, dtype, path: str
) -> None:
    """The complete path runs first and a NaN log-likelihood sends the chunk to the split: on
    every path (the fused kernel, its direct form for a tiny covariance far from the shift, the
    numpy forms) the result is that of the complete and incomplete rows apart."""
    rng = np.random.default_rng(17)
    params = random_params(covariance_type, 3, 3, rng)
    if path == "direct form":
        means, covariances = params.means.copy(), params.covariances * (1e-8 if covariance_type == "tied" else 1.0)
        means[0] += 1000.0
        if covariance_type != "tied":
            covariances[0] = covariances[0] * 1e-8
        params = MixtureParams.from_covariances(params.weights, means, covariances, covariance_type)
    if path == "no fused kernel":
        monkeypatch.setenv("STREAMGMM_FUSED", "0")
    X = with_gaps(records(params, 800, rng), rng)
    complete = ~np.isnan(X).any(axis=1)
    shift = np.nanmean(X, axis=0)
    stats, log_norm = chunk_statistics(X, params, shift, dtype)
    ordinary, ordinary_norm = chunk_statistics(X[complete], params, shift, dtype)
    incomplete, incomplete_norm = incomplete_statistics(X[~complete], params, shift)
    np.testing.assert_array_equal(log_norm[complete], ordinary_norm)
    np.testing.assert_array_equal(log_norm[~complete], incomplete_norm)
    for name in ("counts", "sums", "second"):
        np.testing.assert_allclose(
            getattr(stats, name), getattr(ordinary, name) + getattr(incomplete, name), rtol=1e-12, atol=1e-9
        )
    scored_norm, resp = score_chunk(X, params, dtype)
    ordinary_norm, ordinary_resp = score_chunk(X[complete], params, dtype)
    np.testing.assert_array_equal(scored_norm[complete], ordinary_norm)
    np.testing.assert_array_equal(resp[complete], ordinary_resp)
    np.testing.assert_allclose(scored_norm[~complete], incomplete_norm, rtol=1e-12)


@pytest.mark.parametrize("covariance_type", TYPES)
def test_weights_of_many_values_scale_each_record(covariance_type: str) -> None:
    """Continuous weights (more distinct values than the kernel takes one call each for): the
    definitions with each responsibility times its record's weight."""
    rng = np.random.default_rng(41)
    params = random_params(covariance_type, 3, 4, rng)
    X = records(params, 1000, rng)
    shift = X.mean(axis=0)
    w = rng.uniform(0.0, 3.0, X.shape[0])
    stats, log_norm = chunk_statistics(X, params, shift, weights=w)
    expected = scipy_chunk_statistics(X, params, shift)
    rw, u = expected["resp"] * w[:, None], X - shift
    second = {
        "full": lambda: np.einsum("nk,nd,ne->kde", rw, u, u),
        "tied": lambda: np.einsum("n,nd,ne->de", w, u, u),
        "diag": lambda: rw.T @ (u * u),
        "spherical": lambda: rw.T @ (u * u),
    }[covariance_type]()
    assert_close(log_norm, expected["log_norm"], np.float64)
    assert stats.n_records == pytest.approx(w.sum(), rel=1e-12)
    assert stats.log_likelihood == pytest.approx(w @ expected["log_norm"], rel=1e-10)
    for name, want in (("counts", rw.sum(axis=0)), ("sums", rw.T @ u), ("second", second)):
        assert_close(getattr(stats, name), want, np.float64)
