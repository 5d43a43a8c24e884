"""Property tests: responsibilities are distributions; degenerate data never breaks a fit."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamgmm import ConvergenceWarning, StreamingGaussianMixture, random_mixture

COVARIANCE_TYPES = ["full", "tied", "diag", "spherical"]
FAST = settings(max_examples=40, deadline=None)


@FAST
@given(
    covariance_type=st.sampled_from(COVARIANCE_TYPES),
    k=st.integers(1, 5),
    d=st.integers(1, 4),
    seed=st.integers(0, 2**31),
    scale=st.sampled_from([1e-3, 1.0, 1e3]),
)
def test_responsibilities_are_finite_and_sum_to_one(covariance_type, k, d, seed, scale) -> None:
    params = random_mixture(k, d, covariance_type=covariance_type, random_state=seed)
    rng = np.random.default_rng(seed)
    # Records near the components and records thousands of standard deviations away, where every
    # density underflows to 0 and only log-sum-exp keeps the responsibilities defined.
    X = np.vstack([rng.normal(size=(20, d)) * 5, rng.normal(size=(5, d)) * scale * 1e3])
    log_norm, resp = params.e_step(X)
    assert np.all(np.isfinite(resp)) and np.all(np.isfinite(log_norm))
    np.testing.assert_allclose(resp.sum(axis=1), 1.0, atol=1e-12)
    assert np.all(resp >= 0)


def degenerate_data(kind: str, rng: np.random.Generator) -> np.ndarray:
    if kind == "duplicates":
        return np.repeat(rng.normal(size=(4, 3)), 25, axis=0)
    if kind == "constant_column":
        X = rng.normal(size=(100, 3))
        X[:, 1] = 7.0
        return X
    if kind == "identical":
        return np.tile([[1.0, -2.0, 3.0]], (60, 1))
    if kind == "collinear":
        t = rng.normal(size=(100, 1))
        return np.hstack([t, 2 * t, -t + 1])
    raise AssertionError(kind)


def assert_healthy(model: StreamingGaussianMixture, X: np.ndarray) -> None:
    for name in ("weights_", "means_", "covariances_", "precisions_cholesky_"):
        assert np.all(np.isfinite(getattr(model, name))), name
    np.testing.assert_allclose(model.weights_.sum(), 1.0, rtol=1e-12)
    covariances = model.covariances_
    if model.covariance_type in ("full", "tied"):
        for c in covariances.reshape(-1, *covariances.shape[-2:]):
            np.linalg.cholesky(c)  # raises if not positive definite
    else:
        assert np.all(covariances > 0)
    proba = model.predict_proba(X)
    assert np.all(np.isfinite(proba))
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-12)
    assert np.all(np.isfinite(model.score_samples(X)))


@FAST
@given(
    kind=st.sampled_from(["duplicates", "constant_column", "identical", "collinear"]),
    covariance_type=st.sampled_from(COVARIANCE_TYPES),
    algorithm=st.sampled_from(["online", "batch"]),
    k=st.integers(1, 8),
    seed=st.integers(0, 2**31),
)
def test_degenerate_data_keeps_parameters_finite_and_positive_definite(
    kind, covariance_type, algorithm, k, seed
) -> None:
    X = degenerate_data(kind, np.random.default_rng(seed))
    model = StreamingGaussianMixture(
        k, covariance_type=covariance_type, algorithm=algorithm, batch_size=32, max_iter=20, random_state=seed
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(X)
    assert_healthy(model, X)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_more_components_than_distinct_points(covariance_type: str) -> None:
    X = np.repeat(np.array([[0.0, 0.0], [5.0, 5.0], [0.0, 9.0]]), 40, axis=0)
    for reg in (1e-6, 0.0):
        model = StreamingGaussianMixture(
            7, covariance_type=covariance_type, reg_covar=reg, batch_size=16, random_state=0
        ).fit(X)
        assert_healthy(model, X)
