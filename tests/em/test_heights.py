"""The 1-D "heights" example, checked against the normal density written out by hand.

Ten heights, two components starting at means 5.5 and 6.0, variances 0.1, weights 0.5.
The oracle is the formula N(x | m, v) = exp(-(x - m)^2 / (2 v)) / sqrt(2 pi v), evaluated with
``math`` (no scipy, no numpy). Its value at N(5.2 | 5.5, 0.1) is exp(-0.45) / sqrt(0.2 pi) =
0.80441016..., which the literal constants below also pin (computed to 30 digits with
``decimal``); a figure such as 0.80399 or a published 0.3798 is not the formula.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning as SklearnConvergenceWarning
from sklearn.mixture import GaussianMixture

from streamgmm import ConvergenceWarning, MixtureParams, StreamingGaussianMixture
from streamgmm.mixture.covariance import COVARIANCE_TYPES

HEIGHTS = [5.2, 5.5, 5.8, 6.1, 5.7, 5.6, 6.3, 5.9, 5.6, 6.0]
MEANS = (5.5, 6.0)
VARIANCE = 0.1
WEIGHTS = (0.5, 0.5)
X = np.array(HEIGHTS).reshape(-1, 1)
START = dict(weights_init=[0.5, 0.5], means_init=[[5.5], [6.0]], precisions_init=[[[1 / VARIANCE]], [[1 / VARIANCE]]])


def normal_pdf(x: float, mean: float, variance: float) -> float:
    return math.exp(-((x - mean) ** 2) / (2 * variance)) / math.sqrt(2 * math.pi * variance)


def hand_e_step(weights, means, variances) -> tuple[list[float], list[list[float]]]:
    """Per-record log-likelihoods and responsibilities, one record at a time."""
    log_likelihoods, responsibilities = [], []
    for x in HEIGHTS:
        weighted = [w * normal_pdf(x, m, v) for w, m, v in zip(weights, means, variances)]
        total = sum(weighted)
        log_likelihoods.append(math.log(total))
        responsibilities.append([p / total for p in weighted])
    return log_likelihoods, responsibilities


def hand_m_step(responsibilities, reg_covar: float = 0.0) -> tuple[list[float], list[float], list[float]]:
    """Weights, means and (two-pass) variances from responsibilities."""
    weights, means, variances = [], [], []
    for k in range(len(responsibilities[0])):
        r = [row[k] for row in responsibilities]
        nk = sum(r)
        mean = sum(ri * x for ri, x in zip(r, HEIGHTS)) / nk
        variance = sum(ri * (x - mean) ** 2 for ri, x in zip(r, HEIGHTS)) / nk + reg_covar
        weights.append(nk / len(HEIGHTS))
        means.append(mean)
        variances.append(variance)
    return weights, means, variances


def start_params(covariance_type: str) -> MixtureParams:
    # In one dimension the four covariance types describe the same model; only shapes differ.
    covariances = {
        "full": np.full((2, 1, 1), VARIANCE),
        "tied": np.full((1, 1), VARIANCE),
        "diag": np.full((2, 1), VARIANCE),
        "spherical": np.full(2, VARIANCE),
    }[covariance_type]
    means = np.array([[m] for m in MEANS])
    return MixtureParams.from_covariances(np.array(WEIGHTS), means, covariances, covariance_type)


def test_the_formula_itself() -> None:
    assert normal_pdf(5.2, 5.5, 0.1) == pytest.approx(0.804410163156248926771, abs=1e-15)
    assert normal_pdf(5.2, 6.0, 0.1) == pytest.approx(0.051424221263517674955, abs=1e-15)
    assert normal_pdf(5.8, 6.0, 0.1) == pytest.approx(1.032883094934556640610, abs=1e-15)  # a density may exceed 1


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_first_e_step_matches_the_hand_computation(covariance_type: str) -> None:
    log_norm, resp = start_params(covariance_type).e_step(X)
    hand_ll, hand_resp = hand_e_step(WEIGHTS, MEANS, [VARIANCE, VARIANCE])
    np.testing.assert_allclose(resp, hand_resp, rtol=0, atol=1e-12)
    np.testing.assert_allclose(log_norm, hand_ll, rtol=0, atol=1e-12)
    np.testing.assert_allclose(resp.sum(axis=1), 1.0, rtol=0, atol=1e-15)
    # A few by value (30-digit decimal evaluation of the formula): 5.2 leans to the short group,
    # 6.3 (its mirror image about 5.75) to the tall one by the same odds, 5.8 slightly tall.
    assert resp[0, 0] == pytest.approx(0.939913349825992378, abs=1e-12)
    assert resp[6, 0] == pytest.approx(0.060086650174007622, abs=1e-12)
    assert resp[2, 0] == pytest.approx(0.437823499114201896, abs=1e-12)
    assert resp[0, 0] == pytest.approx(resp[6, 1], abs=1e-15)
    assert log_norm[0] == pytest.approx(math.log(0.5 * (0.804410163156248927 + 0.051424221263517675)), abs=1e-12)


def one_batch_iteration(**kwargs) -> StreamingGaussianMixture:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return StreamingGaussianMixture(2, algorithm="batch", max_iter=1, tol=0, **START, **kwargs).fit(X)


def test_first_em_iteration_through_the_estimator() -> None:
    """reg_covar=0 so the hand M-step is the exact oracle."""
    model = one_batch_iteration(reg_covar=0.0)
    hand_ll, hand_resp = hand_e_step(WEIGHTS, MEANS, [VARIANCE, VARIANCE])
    # lower_bound_ is the mean log-likelihood of the (first and only) E-step.
    assert model.lower_bound_ == pytest.approx(sum(hand_ll) / len(HEIGHTS), abs=1e-12)
    weights, means, variances = hand_m_step(hand_resp)
    np.testing.assert_allclose(model.weights_, weights, rtol=1e-12)
    np.testing.assert_allclose(model.means_[:, 0], means, rtol=1e-12)
    np.testing.assert_allclose(model.covariances_[:, 0, 0], variances, rtol=1e-12)
    np.testing.assert_allclose(model.precisions_[:, 0, 0], [1 / v for v in variances], rtol=1e-12)
    # The estimator's inference is the hand E-step under the hand M-step's parameters.
    next_ll, next_resp = hand_e_step(weights, means, variances)
    np.testing.assert_allclose(model.predict_proba(X), next_resp, rtol=0, atol=1e-12)
    np.testing.assert_allclose(model.score_samples(X), next_ll, rtol=0, atol=1e-12)
    # EM's promise: the second E-step's likelihood is no lower than the first's.
    assert sum(next_ll) > sum(hand_ll)


def test_first_online_step_with_unit_step_is_the_same_iteration() -> None:
    # max_iter=0: the user's start as given, not first refined by EM on the sample.
    online = StreamingGaussianMixture(
        2,
        algorithm="online",
        max_iter=0,
        batch_size=len(HEIGHTS),
        step_offset=0.0,
        shuffle=False,
        reg_covar=0.0,
        **START,
    ).fit(X)
    weights, means, variances = hand_m_step(hand_e_step(WEIGHTS, MEANS, [VARIANCE, VARIANCE])[1])
    assert online.n_steps_ == 1
    np.testing.assert_allclose(online.weights_, weights, rtol=1e-12)
    np.testing.assert_allclose(online.means_[:, 0], means, rtol=1e-12)
    np.testing.assert_allclose(online.covariances_[:, 0, 0], variances, rtol=1e-12)


def hand_em(
    reg_covar: float, max_iter: int = 20_000, tol: float = 1e-15
) -> tuple[list[float], list[float], list[float]]:
    """EM in plain Python until the parameters stop moving."""
    params = (list(WEIGHTS), list(MEANS), [VARIANCE, VARIANCE])
    for _ in range(max_iter):
        new = hand_m_step(hand_e_step(*params)[1], reg_covar)
        moved = max(abs(a - b) for old, now in zip(params, new) for a, b in zip(old, now))
        params = new
        if moved < tol:
            break
    return params


def test_em_converges_to_a_fixed_point() -> None:
    """From this start EM drifts (slowly, then quickly) until the tall component sits on the
    tallest record, 6.3, alone. Its variance then goes to zero and the likelihood to infinity,
    so the limit is set by reg_covar: the default 1e-6 is used here, by all three oracles."""
    model = StreamingGaussianMixture(2, algorithm="batch", max_iter=20_000, tol=1e-13, reg_covar=1e-6, **START).fit(X)
    assert model.converged_ and model.n_iter_ > 100
    history = np.asarray(model.lower_bounds_)
    assert np.all(np.diff(history) >= -1e-12), np.diff(history).min()

    # One more EM iteration from the result moves nothing.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        again = StreamingGaussianMixture(
            2,
            algorithm="batch",
            max_iter=1,
            tol=0,
            reg_covar=1e-6,
            weights_init=model.weights_,
            means_init=model.means_,
            precisions_init=model.precisions_,
        ).fit(X)
    for name in ("weights_", "means_", "covariances_"):
        np.testing.assert_allclose(getattr(again, name), getattr(model, name), rtol=0, atol=1e-9, err_msg=name)

    # scikit-learn from the same start, and EM written out by hand, reach the same point (both
    # agree with it to ~1e-13; 1e-9 leaves room for rounding on other platforms).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SklearnConvergenceWarning)
        sk = GaussianMixture(2, max_iter=20_000, tol=1e-13, reg_covar=1e-6, **START).fit(X)
    assert sk.converged_
    for name in ("weights_", "means_", "covariances_"):
        np.testing.assert_allclose(getattr(model, name), getattr(sk, name), rtol=0, atol=1e-9, err_msg=name)
    weights, means, variances = hand_em(reg_covar=1e-6)
    np.testing.assert_allclose(model.weights_, weights, rtol=0, atol=1e-9)
    np.testing.assert_allclose(model.means_[:, 0], means, rtol=0, atol=1e-9)
    np.testing.assert_allclose(model.covariances_[:, 0, 0], variances, rtol=0, atol=1e-9)

    # What the fixed point is: nine records in one group, the tallest alone in the other with
    # the variance floor.
    np.testing.assert_allclose(model.means_[:, 0], [np.mean(HEIGHTS[:6] + HEIGHTS[7:]), 6.3], atol=1e-3)
    np.testing.assert_allclose(model.weights_, [0.9, 0.1], atol=1e-3)
    assert 1e-6 <= model.covariances_[1, 0, 0] < 1.01e-6


def test_without_reg_covar_em_runs_into_the_singularity() -> None:
    """Why the fixed-point test needs reg_covar: with none, the tall component's variance
    collapses onto the single record 6.3 (scikit-learn's EM does the same)."""
    model = StreamingGaussianMixture(2, algorithm="batch", max_iter=20_000, tol=1e-13, reg_covar=0.0, **START).fit(X)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SklearnConvergenceWarning)
        sk = GaussianMixture(2, max_iter=20_000, tol=1e-13, reg_covar=0.0, **START).fit(X)
    for fitted in (model, sk):
        assert fitted.covariances_[1, 0, 0] < 1e-12
        assert fitted.means_[1, 0] == pytest.approx(6.3, abs=1e-9)
        assert fitted.lower_bound_ > 1.0  # far above any non-degenerate fit (about -0.21 here)
