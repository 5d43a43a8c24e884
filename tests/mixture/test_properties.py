"""Properties that must hold for any parameters and any data, found by hypothesis."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamgmm import ConvergenceWarning, MixtureParams, StreamingGaussianMixture
from streamgmm.mixture.covariance import COVARIANCE_TYPES

ALGORITHMS = ["online", "batch"]
FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FITS = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def random_params(rng: np.random.Generator, k: int, d: int, covariance_type: str, scale: float) -> MixtureParams:
    # Dirichlet(0.5) gives some tiny weights, whose very negative logs the E-step must absorb.
    weights = rng.dirichlet(np.full(k, 0.5))
    means = rng.normal(scale=scale, size=(k, d))
    a = rng.normal(size=(k, d, d))
    full = a @ a.transpose(0, 2, 1) + np.exp(rng.uniform(-3, 3)) * np.eye(d)
    covariances = {
        "full": full,
        "tied": full[0],
        "diag": np.exp(rng.uniform(-4, 4, size=(k, d))),
        "spherical": np.exp(rng.uniform(-4, 4, size=k)),
    }[covariance_type]
    return MixtureParams.from_covariances(weights, means, covariances, covariance_type)


def typical_sd(params: MixtureParams) -> float:
    c = params.covariances
    variances = np.diagonal(c, axis1=-2, axis2=-1) if params.covariance_type in ("full", "tied") else c
    return float(np.sqrt(variances.max()))


@FAST
@given(
    seed=st.integers(0, 2**32 - 1),
    k=st.integers(1, 6),
    d=st.integers(1, 5),
    covariance_type=st.sampled_from(COVARIANCE_TYPES),
    scale=st.sampled_from([1.0, 100.0, 1e6]),
)
def test_responsibilities_are_finite_and_rows_sum_to_one(seed, k, d, covariance_type, scale) -> None:
    rng = np.random.default_rng(seed)
    params = random_params(rng, k, d, covariance_type, scale)
    sd = typical_sd(params)
    near = params.means[rng.integers(k, size=20)] + rng.normal(size=(20, d)) * sd
    # ~1e3 standard deviations out: every log density is below ~ -5e5, so a naive exp underflows
    # to 0 (asserted below).
    direction = rng.normal(size=(10, d))
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    far = params.means.mean(axis=0) + 1e3 * sd * direction + np.abs(params.means).max() * direction
    X = np.concatenate([near, far])
    log_norm, resp = params.e_step(X)
    assert np.all(np.isfinite(log_norm))
    assert np.all(np.isfinite(resp)) and np.all(resp >= 0)
    np.testing.assert_allclose(resp.sum(axis=1), 1.0, rtol=0, atol=1e-12)
    # The far rows are the case that matters: naively exponentiated, their weighted densities
    # are all zero, so a normalisation by their sum would divide 0 by 0.
    with np.errstate(under="ignore"):
        naive = np.exp(params.weighted_log_prob(far)).sum(axis=1)
    assert np.all(naive == 0.0)
    # And log_norm is the log-sum-exp, computed here independently with the max trick.
    weighted = params.weighted_log_prob(X)
    top = weighted.max(axis=1)
    with np.errstate(under="ignore"):
        expected = top + np.log(np.exp(weighted - top[:, None]).sum(axis=1))
    np.testing.assert_allclose(log_norm, expected, rtol=1e-12)


def test_far_rows_sum_to_one_within_1e12() -> None:
    # Two unit Gaussians 0.02 apart, records 1000 sd out: log densities ~ -5e5 whose two
    # components differ by 20 nats, so the smaller responsibility (~2e-9) is not lost in the sum
    # but exp(w - log_norm) of the larger is rounded at the ulp of 5e5 (1e-10): without the
    # renormalisation in e_step these rows sum to 1 + 2e-11. (Random cases rarely hit this.)
    params = MixtureParams.from_covariances(
        np.array([0.5, 0.5]), np.array([[0.0], [0.02]]), np.array([1.0, 1.0]), "spherical"
    )
    _, resp = params.e_step(np.array([[1000.0], [-1000.0]]))
    np.testing.assert_allclose(resp.sum(axis=1), 1.0, rtol=0, atol=1e-12)


# --------------------------------------------------------------------------- degenerate data


@st.composite
def degenerate_data(draw: st.DrawFn) -> tuple[str, np.ndarray, int]:
    """(kind, X, n_components) for one of the degenerate cases a fit must survive."""
    kind = draw(
        st.sampled_from(["duplicates", "constant_column", "collinear", "more_components_than_points", "all_identical"])
    )
    seed = draw(st.integers(0, 2**32 - 1))
    d = draw(st.integers(1, 4))
    location = draw(st.sampled_from([0.0, 3.5, -1e4, 1e6]))
    rng = np.random.default_rng(seed)
    if kind == "duplicates":
        base = rng.normal(size=(draw(st.integers(3, 20)), d))
        X = base[rng.integers(base.shape[0], size=draw(st.integers(30, 200)))]
        k = draw(st.integers(1, 4))
    elif kind == "constant_column":
        X = rng.normal(size=(draw(st.integers(20, 200)), d + 1))
        X[:, draw(st.integers(0, d))] = draw(st.sampled_from([0.0, 7.0, -1e3]))
        k = draw(st.integers(1, 4))
    elif kind == "collinear":
        # Full rank in no direction but one: the full and tied covariances are singular.
        t = rng.normal(size=(draw(st.integers(20, 200)), 1))
        X = t * rng.normal(size=(1, d + 1))
        k = draw(st.integers(1, 4))
    elif kind == "more_components_than_points":
        distinct = draw(st.integers(1, 3))
        base = rng.normal(scale=5.0, size=(distinct, d))
        X = base[np.arange(draw(st.integers(8, 40))) % distinct]
        k = draw(st.integers(distinct + 1, 6))
    else:
        X = np.tile(rng.normal(size=(1, d)), (draw(st.integers(5, 50)), 1))
        k = draw(st.integers(1, 4))
    return kind, X + location, k


def assert_valid_fit(model: StreamingGaussianMixture, X: np.ndarray) -> None:
    for name in ("weights_", "means_", "covariances_", "precisions_cholesky_", "precisions_"):
        assert np.all(np.isfinite(getattr(model, name))), name
    assert model.weights_.sum() == pytest.approx(1.0, abs=1e-12)
    assert np.all(model.weights_ >= 0)
    c = model.covariances_
    if model.covariance_type == "full":
        for component in c:
            np.linalg.cholesky(component)  # raises LinAlgError unless positive definite
    elif model.covariance_type == "tied":
        np.linalg.cholesky(c)
    else:
        assert np.all(c > 0)
    proba = model.predict_proba(X)
    assert np.all(np.isfinite(proba))
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=0, atol=1e-12)
    assert np.all(np.isfinite(model.score_samples(X)))
    assert np.isfinite(model.lower_bound_)


@FITS
@given(
    case=degenerate_data(),
    covariance_type=st.sampled_from(COVARIANCE_TYPES),
    algorithm=st.sampled_from(ALGORITHMS),
    batch_size=st.sampled_from([7, 64, 8192]),
)
def test_fits_on_degenerate_data_are_finite_and_positive_definite(case, covariance_type, algorithm, batch_size) -> None:
    kind, X, k = case
    model = StreamingGaussianMixture(
        k,
        covariance_type=covariance_type,
        algorithm=algorithm,
        batch_size=batch_size,
        max_iter=20,
        n_init=2,
        random_state=0,
    )
    with warnings.catch_warnings():
        # Batch EM may stop at max_iter on such data; that is reported, not an error here.
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(X)
    assert_valid_fit(model, X)
    assert model.records_seen_ == X.shape[0]


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
@pytest.mark.parametrize(
    "kind", ["duplicates", "constant_column", "collinear", "more_components_than_points", "all_identical"]
)
def test_every_degenerate_case_every_type(kind: str, covariance_type: str, algorithm: str) -> None:
    """The hypothesis test samples the grid; this walks all of it once, deterministically."""
    rng = np.random.default_rng(3)
    if kind == "duplicates":
        X = rng.normal(size=(5, 2))[rng.integers(5, size=100)]
        k = 3
    elif kind == "constant_column":
        X = rng.normal(size=(100, 3))
        X[:, 1] = 42.0
        k = 3
    elif kind == "collinear":
        t = rng.normal(size=(100, 1))
        X = np.hstack([t, 2 * t, 1 - t])
        k = 3
    elif kind == "more_components_than_points":
        X = rng.normal(size=(2, 2))[np.arange(30) % 2]
        k = 5
    else:
        X = np.full((20, 3), 1e6 + 0.25)
        k = 3
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = StreamingGaussianMixture(
            k, covariance_type=covariance_type, algorithm=algorithm, batch_size=16, random_state=1
        ).fit(X)
    assert_valid_fit(model, X)
    # Partial fits of the same data continue the recursion without breaking it either.
    model.partial_fit(X).partial_fit(X[:1])
    assert_valid_fit(model, X)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_more_components_than_points_without_regularisation(covariance_type: str, algorithm: str) -> None:
    """reg_covar=0 on collapsed data: scikit-learn's ValueError, as GaussianMixture raises it
    (the user asked for no regularisation, so no eigenvalue floor is applied silently)."""
    from sklearn.mixture import GaussianMixture

    X = np.repeat(np.array([[0.0, 0.0], [5.0, 5.0], [0.0, 9.0]]), 40, axis=0)
    message = "ill-defined empirical covariance"
    with pytest.raises(ValueError, match=message):
        GaussianMixture(7, covariance_type=covariance_type, reg_covar=0.0, random_state=0).fit(X)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        with pytest.raises(ValueError, match=message):
            StreamingGaussianMixture(
                7, covariance_type=covariance_type, algorithm=algorithm, reg_covar=0.0, batch_size=16, random_state=0
            ).fit(X)
    # The smallest regularisation is enough for a valid fit of the same data.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = StreamingGaussianMixture(
            7, covariance_type=covariance_type, algorithm=algorithm, reg_covar=1e-6, batch_size=16, random_state=0
        ).fit(X)
    assert_valid_fit(model, X)
