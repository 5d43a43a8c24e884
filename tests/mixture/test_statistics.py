"""SufficientStatistics against direct numpy oracles, and exactness far from the origin."""

from __future__ import annotations

import numpy as np
import pytest
from shared_helpers import unit_matrices

from streamgmm import ConvergenceWarning, MixtureParams, StreamingGaussianMixture, SufficientStatistics
from streamgmm.mixture.covariance import COVARIANCE_TYPES
from streamgmm.mixture.reseeding import WorstRecords, worst_rows
from streamgmm.mixture.statistics import COUNT_EPSILON

K, D = 3, 4


def responsibilities(rng: np.random.Generator, n: int, k: int = K) -> np.ndarray:
    """Random rows on the simplex, as an E-step produces (the tied second moment relies on it)."""
    logits = rng.normal(scale=2.0, size=(n, k))
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def oracle_statistics(
    X: np.ndarray, resp: np.ndarray, shift: np.ndarray, covariance_type: str
) -> dict[str, np.ndarray]:
    """The definitions, written out with einsum rather than the package's GEMM tricks."""
    c = X - shift
    second = {
        "full": np.einsum("nk,nd,ne->kde", resp, c, c),
        "tied": np.einsum("nk,nd,ne->de", resp, c, c),
        "diag": np.einsum("nk,nd->kd", resp, c * c),
        "spherical": np.einsum("nk,nd->kd", resp, c * c),
    }[covariance_type]
    return {"counts": resp.sum(axis=0), "sums": np.einsum("nk,nd->kd", resp, c), "second": second}


def oracle_m_step(X: np.ndarray, resp: np.ndarray, reg: float, covariance_type: str) -> tuple[np.ndarray, ...]:
    """The textbook M-step from the data and responsibilities (scikit-learn's closed form)."""
    nk = resp.sum(axis=0) + COUNT_EPSILON
    weights = nk / nk.sum()
    means = resp.T @ X / nk[:, None]
    diff = X[None, :, :] - means[:, None, :]  # (K, n, d)
    full = np.einsum("kn,knd,kne->kde", resp.T, diff, diff) / nk[:, None, None]
    d = X.shape[1]
    if covariance_type == "full":
        covariances = full + reg * np.eye(d)
    elif covariance_type == "tied":
        covariances = np.einsum("k,kde->de", nk, full) / nk.sum() + reg * np.eye(d)
    elif covariance_type == "diag":
        covariances = np.diagonal(full, axis1=1, axis2=2) + reg
    else:
        covariances = np.diagonal(full, axis1=1, axis2=2).mean(axis=1) + reg
    return weights, means, covariances


def assert_statistics_close(a: SufficientStatistics, expected: dict[str, np.ndarray], rtol: float = 1e-12) -> None:
    for name in ("counts", "sums", "second"):
        value = getattr(a, name)
        scale = np.abs(expected[name]).max()
        np.testing.assert_allclose(value, expected[name], rtol=rtol, atol=rtol * scale, err_msg=name)


@pytest.fixture()
def rng() -> np.random.Generator:
    return np.random.default_rng(20240611)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_sum_of_chunks_equals_statistics_of_concatenated_data(rng, covariance_type: str) -> None:
    X = rng.normal(size=(300, D)) * [1.0, 3.0, 0.5, 2.0] + [10.0, -4.0, 0.0, 100.0]
    resp = responsibilities(rng, 300)
    parts = [slice(0, 70), slice(70, 71), slice(71, 300)]
    # A different shift per chunk: adding must recentre exactly, not just add the arrays.
    shifts = [X[p].mean(axis=0) for p in parts[:1]] + [np.zeros(D), rng.normal(scale=50.0, size=D)]
    pieces = [
        SufficientStatistics.from_responsibilities(X[p], resp[p], s, covariance_type, log_likelihood=float(i + 1))
        for i, (p, s) in enumerate(zip(parts, shifts))
    ]
    a, b, c = pieces
    left, right = (a + b) + c, a + (b + c)
    # The result is about the left operand's shift, and both groupings give the same numbers.
    np.testing.assert_array_equal(left.shift, shifts[0])
    expected = oracle_statistics(X, resp, shifts[0], covariance_type)
    # Recentring from a shift ~100 away rounds at ~eps * 100^2 * n; an algebra slip is O(1).
    assert_statistics_close(left, expected, rtol=1e-10)
    assert_statistics_close(right, expected, rtol=1e-10)
    assert left.n_records == right.n_records == 300
    assert left.log_likelihood == right.log_likelihood == 6.0
    # Recentring to another shift matches the data's statistics about that shift.
    other = rng.normal(scale=10.0, size=D)
    assert_statistics_close(left.recentred(other), oracle_statistics(X, resp, other, covariance_type), rtol=1e-10)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_adding_statistics_of_other_shapes_is_refused(rng, covariance_type: str) -> None:
    X = rng.normal(size=(10, D))
    a = SufficientStatistics.from_responsibilities(X, responsibilities(rng, 10), np.zeros(D), covariance_type)
    b = SufficientStatistics.from_responsibilities(X, responsibilities(rng, 10, K + 1), np.zeros(D), covariance_type)
    with pytest.raises(ValueError, match="different mixture shapes"):
        a + b


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_blend_with_step_one_returns_the_batch_per_record(rng, covariance_type: str) -> None:
    X_old, X_new = rng.normal(size=(50, D)), rng.normal(loc=5.0, size=(80, D))
    old = SufficientStatistics.from_responsibilities(
        X_old, responsibilities(rng, 50), X_old.mean(axis=0), covariance_type, log_likelihood=-100.0
    )
    batch = SufficientStatistics.from_responsibilities(
        X_new, responsibilities(rng, 80), np.full(D, 3.0), covariance_type, log_likelihood=-400.0
    )
    blended = old.blend(batch, 1.0)
    # The running statistics keep their own shift; about the batch's shift they are its averages.
    np.testing.assert_array_equal(blended.shift, old.shift)
    expected = {name: value / 80 for name, value in batch.arrays().items() if name != "shift"}
    assert_statistics_close(blended.recentred(batch.shift), expected)
    assert blended.n_records == pytest.approx(1.0, abs=1e-15)
    assert blended.log_likelihood == pytest.approx(-5.0, rel=1e-15)
    # Step 0 keeps the old ones (per record), and a half step averages the two per-record forms.
    kept = old.blend(batch, 0.0)
    assert_statistics_close(kept, {name: v / 50 for name, v in old.arrays().items() if name != "shift"})
    half = old.blend(batch, 0.5).recentred(batch.shift)
    old_there = old.recentred(batch.shift)
    assert_statistics_close(
        half, {name: 0.5 * getattr(old_there, name) / 50 + 0.5 * getattr(batch, name) / 80 for name in expected}
    )
    assert half.n_records == pytest.approx(1.0, abs=1e-15)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
@pytest.mark.parametrize("reg", [0.0, 1e-3])
def test_to_params_equals_direct_m_step(rng, covariance_type: str, reg: float) -> None:
    X = rng.normal(size=(400, D)) @ rng.normal(size=(D, D)) + rng.normal(scale=20.0, size=D)
    resp = responsibilities(rng, 400)
    stats = SufficientStatistics.from_responsibilities(X, resp, X[:10].mean(axis=0), covariance_type)
    params = stats.to_params(reg)
    weights, means, covariances = oracle_m_step(X, resp, reg, covariance_type)
    np.testing.assert_allclose(params.weights, weights, rtol=1e-13)
    np.testing.assert_allclose(params.means, means, rtol=1e-12, atol=1e-12 * np.abs(means).max())
    np.testing.assert_allclose(params.covariances, covariances, rtol=1e-10, atol=1e-12)
    assert params.covariance_type == covariance_type
    # The precision factors belong to these covariances: P = U U^T is their inverse.
    precision = params.precisions
    if covariance_type in ("full", "tied"):
        np.testing.assert_allclose(
            precision @ params.covariances, np.broadcast_to(np.eye(D), precision.shape), atol=1e-9
        )
    else:
        np.testing.assert_allclose(precision * params.covariances, 1.0, rtol=1e-12)


def random_params(rng: np.random.Generator, covariance_type: str, k: int = K, d: int = D) -> MixtureParams:
    weights = rng.dirichlet(np.ones(k))
    means = rng.normal(scale=10.0, size=(k, d))
    a = rng.normal(size=(k, d, d))
    full = a @ a.transpose(0, 2, 1) + 0.5 * np.eye(d)
    covariances = {
        "full": full,
        "tied": full[0],
        "diag": rng.uniform(0.1, 5.0, size=(k, d)),
        "spherical": rng.uniform(0.1, 5.0, size=k),
    }[covariance_type]
    return MixtureParams.from_covariances(weights, means, covariances, covariance_type)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
@pytest.mark.parametrize("n_records", [1.0, 12345.5])
def test_from_params_then_to_params_gives_back_the_params(rng, covariance_type: str, n_records: float) -> None:
    params = random_params(rng, covariance_type)
    shift = rng.normal(scale=30.0, size=D)
    back = SufficientStatistics.from_params(params, shift, n_records).to_params(0.0)
    np.testing.assert_allclose(back.weights, params.weights, rtol=1e-12)
    np.testing.assert_allclose(back.means, params.means, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(back.covariances, params.covariances, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(back.precisions_cholesky, params.precisions_cholesky, rtol=1e-8, atol=1e-10)


# --------------------------------------------------------------------------- far from the origin

OFFSET = 1e6


def two_blobs(rng: np.random.Generator, n: int = 3000, d: int = 3) -> np.ndarray:
    centres = np.array([[-2.0] * d, [2.0] * d])
    return np.concatenate([rng.normal(size=(n // 2, d)) + centres[0], rng.normal(size=(n - n // 2, d)) + centres[1]])


def batch_fit(X: np.ndarray, means_init: np.ndarray, covariance_type: str) -> StreamingGaussianMixture:
    k, d = means_init.shape
    model = StreamingGaussianMixture(
        k,
        covariance_type=covariance_type,
        algorithm="batch",
        tol=0.0,
        max_iter=12,
        batch_size=700,
        weights_init=np.full(k, 1.0 / k),
        means_init=means_init,
        precisions_init=unit_matrices(covariance_type, k, d),
    )
    # tol=0 runs exactly max_iter iterations on both data sets, so they stay comparable.
    with pytest.warns(ConvergenceWarning):
        return model.fit(X)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_data_far_from_origin_fit_as_well_as_centred_data(covariance_type: str) -> None:
    rng = np.random.default_rng(7)
    X = two_blobs(rng)
    means_init = np.array([[-1.0, 0.0, -1.0], [1.0, 0.5, 1.0]])
    centred = batch_fit(X, means_init, covariance_type)
    far = batch_fit(X + OFFSET, means_init + OFFSET, covariance_type)

    np.testing.assert_allclose(far.covariances_, centred.covariances_, rtol=1e-7)
    np.testing.assert_allclose(far.means_ - OFFSET, centred.means_, rtol=0, atol=1e-7)
    np.testing.assert_allclose(far.weights_, centred.weights_, rtol=1e-9)
    assert abs(far.lower_bound_ - centred.lower_bound_) < 1e-8
    assert abs(far.score(X + OFFSET) - centred.score(X)) < 1e-8
    # The fit is a real two-component fit, not a trivial one.
    assert np.sort(centred.means_[:, 0]) == pytest.approx([-2.0, 2.0], abs=0.1)

    # The comparison means something: the naive uncentred formula E[x x^T] - mu mu^T, in float64
    # with the same responsibilities, loses ~1e12 * eps of the unit variances at this offset.
    Y = X + OFFSET
    resp = far.predict_proba(Y)
    nk = resp.sum(axis=0)
    mu = resp.T @ Y / nk[:, None]
    naive = np.einsum("nk,nd,ne->kde", resp, Y, Y) / nk[:, None, None] - mu[:, :, None] * mu[:, None, :]
    exact = oracle_m_step(Y - OFFSET, resp, 0.0, "full")[2]
    naive_error = np.abs(np.diagonal(naive - exact, axis1=1, axis2=2)).max()
    assert naive_error > 1e-4, naive_error  # ~1000x the tolerance the package meets above


# ------------------------------------------------------------------ re-seeding candidates


@pytest.mark.parametrize("count", [0, 1, 3, 7, 50])
@pytest.mark.parametrize("gaps", [False, True], ids=["complete", "gaps"])
def test_worst_rows_are_the_lowest_complete_rows_ties_in_row_order(count: int, gaps: bool) -> None:
    rng = np.random.default_rng(count)
    X = rng.normal(size=(30, 3))
    log_norm = rng.integers(-5, 0, 30).astype(float)  # many ties
    if gaps:
        X[rng.random((30, 3)) < 0.2] = np.nan
        nothing = rng.random(30) < 0.1
        X[nothing], log_norm[nothing] = np.nan, np.nan  # nothing observed: no log-likelihood
    complete = ~np.isnan(X).any(axis=1)
    expected = [i for i in np.argsort(log_norm, kind="stable") if complete[i]][:count]
    assert worst_rows(X, log_norm, count).tolist() == expected
    with_low_gap = log_norm.copy()
    with_low_gap[~complete] = -10.0  # the lowest rows are incomplete
    assert worst_rows(X, with_low_gap, count).tolist() == expected


def test_worst_records_keep_only_complete_rows() -> None:
    worst = WorstRecords(2, 2)
    X = np.array([[0.0, np.nan], [1.0, 1.0], [2.0, 2.0], [3.0, 3.0]])
    worst.offer(X, np.array([-100.0, -3.0, -1.0, -2.0]))
    worst.offer(np.array([[np.nan, 5.0]]), np.array([-50.0]))
    np.testing.assert_array_equal(worst.records, [[1.0, 1.0], [3.0, 3.0]])
    np.testing.assert_array_equal(worst.scores, [-3.0, -2.0])


def test_worst_rows_when_fewer_rows_have_a_log_likelihood_than_asked() -> None:
    X = np.array([[np.nan], [1.0], [np.nan], [2.0], [np.nan]])
    log_norm = np.array([np.nan, -1.0, np.nan, -2.0, np.nan])
    assert worst_rows(X, log_norm, 3).tolist() == [3, 1]
