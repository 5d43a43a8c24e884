"""The 1-D "heights" example, checked against the normal density written out by hand.

(A published table of this example lists wrong densities, e.g. 0.3798 for N(5.2 | 5.5, 0.1);
the formula gives 0.8040. The tests trust the formula.)
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from streamgmm import ConvergenceWarning, MixtureParams, StreamingGaussianMixture

HEIGHTS = [5.2, 5.5, 5.8, 6.1, 5.7, 5.6, 6.3, 5.9, 5.6, 6.0]
MEANS = (5.5, 6.0)
VARIANCE = 0.1
X = np.array(HEIGHTS).reshape(-1, 1)
START = dict(weights_init=[0.5, 0.5], means_init=[[5.5], [6.0]], precisions_init=[[[1 / VARIANCE]], [[1 / VARIANCE]]])


def normal_pdf(x: float, mean: float, variance: float) -> float:
    return math.exp(-((x - mean) ** 2) / (2 * variance)) / math.sqrt(2 * math.pi * variance)


def hand_responsibilities() -> np.ndarray:
    rows = []
    for x in HEIGHTS:
        weighted = [0.5 * normal_pdf(x, m, VARIANCE) for m in MEANS]
        rows.append([w / sum(weighted) for w in weighted])
    return np.array(rows)


def test_density_formula_not_the_published_table() -> None:
    assert normal_pdf(5.2, 5.5, 0.1) == pytest.approx(0.804411, abs=1e-6)


def test_first_e_step_matches_the_hand_computation() -> None:
    params = MixtureParams.from_covariances(
        np.array([0.5, 0.5]), np.array([[5.5], [6.0]]), np.full((2, 1, 1), VARIANCE), "full"
    )
    log_norm, resp = params.e_step(X)
    expected = hand_responsibilities()
    np.testing.assert_allclose(resp, expected, rtol=0, atol=1e-12)
    # A few by name: 5.2 leans to the short group, 6.3 to the tall one, 5.75 would be a tie.
    assert resp[0, 0] == pytest.approx(expected[0, 0], abs=1e-12)
    assert resp[6, 1] == pytest.approx(expected[6, 1], abs=1e-12)
    hand_ll = [math.log(sum(0.5 * normal_pdf(x, m, VARIANCE) for m in MEANS)) for x in HEIGHTS]
    np.testing.assert_allclose(log_norm, hand_ll, rtol=0, atol=1e-12)


def test_first_m_step_matches_the_hand_computation() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = StreamingGaussianMixture(2, algorithm="batch", max_iter=1, tol=0, reg_covar=0, **START).fit(X)
    r = hand_responsibilities()
    x = np.array(HEIGHTS)
    nk = r.sum(axis=0)
    means = (r * x[:, None]).sum(axis=0) / nk
    variances = (r * (x[:, None] - means) ** 2).sum(axis=0) / nk
    np.testing.assert_allclose(model.weights_, nk / len(HEIGHTS), rtol=1e-12)
    np.testing.assert_allclose(model.means_[:, 0], means, rtol=1e-12)
    np.testing.assert_allclose(model.covariances_[:, 0, 0], variances, rtol=1e-10)


def test_em_converges_to_a_stable_fixed_point() -> None:
    """From this start EM drifts (slowly) until the tall component sits on the tallest record,
    6.3, with the variance floor reg_covar: the likelihood is bounded only by reg_covar, so the
    default 1e-6 is used and scikit-learn, run the same way, is the oracle."""
    from sklearn.mixture import GaussianMixture

    model = StreamingGaussianMixture(2, algorithm="batch", max_iter=20_000, tol=1e-13, **START).fit(X)
    assert model.converged_
    history = np.asarray(model._history)
    # Monotone up to rounding: near the end one variance is 1e-6, which amplifies it to ~1e-12.
    assert np.all(np.diff(history) >= -1e-10)
    # One more EM iteration from the result moves nothing.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        again = StreamingGaussianMixture(
            2, algorithm="batch", max_iter=1, tol=0, weights_init=model.weights_,
            means_init=model.means_, precisions_init=model.precisions_,
        ).fit(X)
    np.testing.assert_allclose(again.means_, model.means_, atol=1e-9)
    np.testing.assert_allclose(again.covariances_, model.covariances_, atol=1e-9)
    np.testing.assert_allclose(again.weights_, model.weights_, atol=1e-9)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sk = GaussianMixture(2, max_iter=20_000, tol=1e-13, **START).fit(X)
    np.testing.assert_allclose(model.means_, sk.means_, atol=1e-6)
    np.testing.assert_allclose(model.covariances_, sk.covariances_, atol=1e-6)
    np.testing.assert_allclose(model.weights_, sk.weights_, atol=1e-6)
    # The fixed point itself: nine records in one group, the tallest alone in the other.
    np.testing.assert_allclose(model.means_[:, 0], [np.mean(HEIGHTS[:6] + HEIGHTS[7:]), 6.3], atol=1e-3)
    np.testing.assert_allclose(model.weights_, [0.9, 0.1], atol=1e-3)
