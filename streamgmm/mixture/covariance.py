"""The four covariance types: one small pure function per type and task, dispatched by name.

Shapes follow scikit-learn's ``GaussianMixture`` for K components and d features:

============  ====================  ==========================================
type          covariances           precisions_cholesky
============  ====================  ==========================================
``full``      (K, d, d)             (K, d, d), upper triangular U, P = U U^T
``tied``      (d, d)                (d, d)
``diag``      (K, d)                (K, d), 1 / sqrt(variance)
``spherical`` (K,)                  (K,)
============  ====================  ==========================================

Precisions are kept as Cholesky factors: a log density is then a triangular product and a sum of
squares, and the log-determinant is the sum of the factor's log diagonal.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")
LOG_2PI = float(np.log(2.0 * np.pi))


def check_covariance_type(covariance_type: str) -> str:
    if covariance_type not in COVARIANCE_TYPES:
        raise ValueError(
            f"Invalid value for 'covariance_type': {covariance_type!r}; expected one of {', '.join(COVARIANCE_TYPES)}"
        )
    return covariance_type


# --------------------------------------------------------------------------- precisions


def _invert_lower(cov_chol: np.ndarray) -> np.ndarray:
    # LAPACK's triangular inverse: scipy's solve_triangular costs ~100x more on small matrices.
    from scipy.linalg import lapack  # here, not at the top: scipy.linalg is slow to import

    inverse, info = lapack.dtrtri(cov_chol, lower=1)
    if info != 0:
        raise np.linalg.LinAlgError("singular Cholesky factor")
    return inverse


def _precisions_cholesky_full(covariances: np.ndarray) -> np.ndarray:
    cov_chols = np.linalg.cholesky(covariances)
    return np.stack([_invert_lower(c).T for c in cov_chols])


def _precisions_cholesky_tied(covariance: np.ndarray) -> np.ndarray:
    return _invert_lower(np.linalg.cholesky(covariance)).T


def _precisions_cholesky_scaled(variances: np.ndarray) -> np.ndarray:
    if np.any(variances <= 0.0):
        raise np.linalg.LinAlgError("a variance is not positive")
    return 1.0 / np.sqrt(variances)


PRECISIONS_CHOLESKY: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "full": _precisions_cholesky_full,
    "tied": _precisions_cholesky_tied,
    "diag": _precisions_cholesky_scaled,
    "spherical": _precisions_cholesky_scaled,
}


def precisions_cholesky(covariances: np.ndarray, covariance_type: str) -> np.ndarray:
    """Cholesky factors of the precisions; raises ``LinAlgError`` if a covariance is not PD."""
    return PRECISIONS_CHOLESKY[covariance_type](covariances)


def _upper_cholesky_of_precision(precision: np.ndarray) -> np.ndarray:
    # Reversing rows and columns turns the lower Cholesky factor into an upper one U with
    # P = U U^T, the same convention as the factors computed from covariances.
    from scipy import linalg

    flipped = linalg.cholesky(precision[::-1, ::-1], lower=True)
    return np.ascontiguousarray(flipped[::-1, ::-1])


def precisions_cholesky_from_precisions(precisions: np.ndarray, covariance_type: str) -> np.ndarray:
    if covariance_type == "full":
        return np.stack([_upper_cholesky_of_precision(p) for p in precisions])
    if covariance_type == "tied":
        return _upper_cholesky_of_precision(precisions)
    return np.sqrt(precisions)


def precisions_from_cholesky(prec_chol: np.ndarray, covariance_type: str) -> np.ndarray:
    if covariance_type == "full":
        return prec_chol @ prec_chol.transpose(0, 2, 1)
    if covariance_type == "tied":
        return prec_chol @ prec_chol.T
    return prec_chol**2


def covariances_from_precisions(precisions: np.ndarray, covariance_type: str) -> np.ndarray:
    from scipy import linalg

    if covariance_type == "full":
        return np.stack([linalg.pinvh(p) for p in precisions])
    if covariance_type == "tied":
        return linalg.pinvh(precisions)
    return 1.0 / precisions


# --------------------------------------------------------------------------- log densities


def log_det_cholesky(prec_chol: np.ndarray, covariance_type: str, n_features: int) -> np.ndarray:
    """log det of each precision Cholesky factor, i.e. -1/2 log det Sigma_k, shape (K,) or ()."""
    if covariance_type == "full":
        return np.log(np.diagonal(prec_chol, axis1=1, axis2=2)).sum(axis=1)
    if covariance_type == "tied":
        return np.log(np.diagonal(prec_chol)).sum()
    if covariance_type == "diag":
        return np.log(prec_chol).sum(axis=1)
    return n_features * np.log(prec_chol)


# Records per block of the full-covariance distances: the (K d, block) products stay in cache.
MAHALANOBIS_BLOCK = 2048


def stacked_factors_full(means: np.ndarray, prec_chol: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """W (K d, 1 + d) such that W [1; x - centre] stacks U_k' (x - mu_k) for every component:
    all K components' whitened differences in one product."""
    k, d = means.shape
    W = np.empty((k, d, 1 + d))
    W[:, :, 0] = -np.einsum("kd,kde->ke", means - centre, prec_chol)
    W[:, :, 1:] = prec_chol.transpose(0, 2, 1)
    return W.reshape(k * d, 1 + d)


def _mahalanobis_full(X: np.ndarray, means: np.ndarray, prec_chol: np.ndarray) -> np.ndarray:
    n, d = X.shape
    k = means.shape[0]
    # Records along the contiguous axis, in blocks: the products and squares are long vector
    # operations on cache-resident data. Centring on the means' centroid keeps the difference
    # x - mu exact when the data sit far from the origin.
    centre = means.mean(axis=0)
    W = stacked_factors_full(means, prec_chol, centre)
    block = max(1, min(MAHALANOBIS_BLOCK, n))
    U = np.empty((1 + d, block))
    U[0] = 1.0
    out = np.empty((n, k))
    for start in range(0, n, block):
        b = min(block, n - start)
        np.subtract(X[start : start + b].T, centre[:, None], out=U[1:, :b])
        y = (W @ U[:, :b]).reshape(k, d, b)
        out[start : start + b] = np.einsum("kdn,kdn->nk", y, y)
    return out


# A component whose whitened mean lies farther than this (squared) from the centre of the means
# is measured directly: the expanded form |u|^2 - 2 u.m + |m|^2 would lose about eps times this
# to cancellation near it (1e8 * 2.2e-16: a few 1e-8 of a squared distance).
EXPANSION_LIMIT = 1e8


def _expanded_whitened(
    Z: np.ndarray, whitened_means: np.ndarray, scale: np.ndarray | None, direct: Callable[[int], np.ndarray]
) -> np.ndarray:
    """sum_d s_kd (z_d - m_kd)^2 for every record and component by matrix products, where ``Z``
    (n, d) and ``whitened_means`` (K, d) are already centred (and, for ``scale=None``, whitened);
    ``scale`` (K, d) weighs the squares per component (diagonal precisions). Components past
    ``EXPANSION_LIMIT`` take ``direct(k)``, the (n,) distances computed from the differences."""
    m = whitened_means
    if scale is None:
        reach = (m * m).sum(axis=1)
        out = (Z * Z).sum(axis=1)[:, None] - 2.0 * (Z @ m.T) + reach[None, :]
    else:
        reach = (scale * m * m).sum(axis=1)
        out = (Z * Z) @ scale.T - 2.0 * (Z @ (scale * m).T) + reach[None, :]
    np.maximum(out, 0.0, out=out)
    for k in np.flatnonzero(reach > EXPANSION_LIMIT):
        out[:, k] = direct(int(k))
    return out


def _mahalanobis_tied(X: np.ndarray, means: np.ndarray, prec_chol: np.ndarray) -> np.ndarray:
    centre = means.mean(axis=0)
    Z = (X - centre) @ prec_chol
    M = (means - centre) @ prec_chol

    def direct(k: int) -> np.ndarray:
        y = Z - M[k]
        return (y * y).sum(axis=1)

    return _expanded_whitened(Z, M, None, direct)


def _mahalanobis_diag(X: np.ndarray, means: np.ndarray, prec_chol: np.ndarray) -> np.ndarray:
    # About the centre of the means, and expanded only where that stays exact (see
    # EXPANSION_LIMIT): far from the origin the plain expansion x^2 - 2 x mu + mu^2 cancels.
    centre = means.mean(axis=0)
    Z = X - centre
    M = means - centre
    scale = prec_chol**2

    def direct(k: int) -> np.ndarray:
        y = (Z - M[k]) * prec_chol[k]
        return (y * y).sum(axis=1)

    return _expanded_whitened(Z, M, scale, direct)


def _mahalanobis_spherical(X: np.ndarray, means: np.ndarray, prec_chol: np.ndarray) -> np.ndarray:
    d = X.shape[1]
    return _mahalanobis_diag(X, means, np.repeat(prec_chol[:, None], d, axis=1))


MAHALANOBIS: dict[str, Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]] = {
    "full": _mahalanobis_full,
    "tied": _mahalanobis_tied,
    "diag": _mahalanobis_diag,
    "spherical": _mahalanobis_spherical,
}


def log_gaussian_prob(X: np.ndarray, means: np.ndarray, prec_chol: np.ndarray, covariance_type: str) -> np.ndarray:
    """log N(x_i | mu_k, Sigma_k) for every record and component, shape (n, K)."""
    d = X.shape[1]
    maha = MAHALANOBIS[covariance_type](X, means, prec_chol)
    return -0.5 * (d * LOG_2PI + maha) + log_det_cholesky(prec_chol, covariance_type, d)


# --------------------------------------------------------------------------- M-step covariances
#
# Each takes the statistics about a shift c: nk = sum r, centred means m = sum r (x - c) / nk and
# the second moments about c; the result does not depend on c (up to rounding), which is what
# keeps data far from the origin exact.


def _covariances_full(nk: np.ndarray, m: np.ndarray, second: np.ndarray, reg: float) -> np.ndarray:
    cov = second / nk[:, None, None] - m[:, :, None] * m[:, None, :]
    cov = 0.5 * (cov + cov.transpose(0, 2, 1))
    d = m.shape[1]
    cov[:, np.arange(d), np.arange(d)] += reg
    return cov


def _covariances_tied(nk: np.ndarray, m: np.ndarray, second: np.ndarray, reg: float) -> np.ndarray:
    cov = (second - (nk[:, None] * m).T @ m) / nk.sum()
    cov = 0.5 * (cov + cov.T)
    cov[np.diag_indices_from(cov)] += reg
    return cov


def _covariances_diag(nk: np.ndarray, m: np.ndarray, second: np.ndarray, reg: float) -> np.ndarray:
    return second / nk[:, None] - m**2 + reg


def _covariances_spherical(nk: np.ndarray, m: np.ndarray, second: np.ndarray, reg: float) -> np.ndarray:
    return _covariances_diag(nk, m, second, reg).mean(axis=1)


COVARIANCES_FROM_MOMENTS: dict[str, Callable[[np.ndarray, np.ndarray, np.ndarray, float], np.ndarray]] = {
    "full": _covariances_full,
    "tied": _covariances_tied,
    "diag": _covariances_diag,
    "spherical": _covariances_spherical,
}


def covariances_from_moments(
    nk: np.ndarray, centred_means: np.ndarray, second: np.ndarray, reg_covar: float, covariance_type: str
) -> np.ndarray:
    return COVARIANCES_FROM_MOMENTS[covariance_type](nk, centred_means, second, reg_covar)


# --------------------------------------------------------------------------- second moments


def second_moments(X: np.ndarray, resp: np.ndarray, covariance_type: str) -> np.ndarray:
    """The weighted second moments each covariance type needs, of (already shifted) X."""
    n, d = X.shape
    if covariance_type == "full":
        k = resp.shape[1]
        # One (d, n) @ (n, d) product per component: measured 4x faster than a single product
        # over the stacked (n, K*d) weighted copy, whose transpose BLAS handles poorly.
        out = np.empty((k, d, d))
        for j in range(k):
            np.matmul((X * resp[:, j : j + 1]).T, X, out=out[j])
        return out
    if covariance_type == "tied":
        # Responsibilities of a record sum to one, so the components' moments add up to X^T X.
        return X.T @ X
    return resp.T @ (X * X)


def moments_of_parameters(
    weights: np.ndarray, centred_means: np.ndarray, covariances: np.ndarray, covariance_type: str
) -> np.ndarray:
    """Second moments (per unit of total weight) implied by parameters: the inverse of the M-step."""
    outer = centred_means[:, :, None] * centred_means[:, None, :]
    if covariance_type == "full":
        return weights[:, None, None] * (covariances + outer)
    if covariance_type == "tied":
        return covariances * weights.sum() + np.einsum("k,kde->de", weights, outer)
    if covariance_type == "diag":
        return weights[:, None] * (covariances + centred_means**2)
    return weights[:, None] * (covariances[:, None] + centred_means**2)


# --------------------------------------------------------------------------- repair and counting


def nearest_positive_definite(covariances: np.ndarray, covariance_type: str, floor: float) -> np.ndarray:
    """Clip eigenvalues (variances) to at least ``floor`` so a Cholesky factor exists."""
    if covariance_type in ("diag", "spherical"):
        return np.where(np.isfinite(covariances), np.maximum(covariances, floor), floor)

    def clip(c: np.ndarray) -> np.ndarray:
        if not np.all(np.isfinite(c)):
            return np.eye(c.shape[0]) * floor
        vals, vecs = np.linalg.eigh(c)
        fixed = (vecs * np.maximum(vals, floor)) @ vecs.T
        return 0.5 * (fixed + fixed.T)

    if covariance_type == "tied":
        return clip(covariances)
    return np.stack([clip(c) for c in covariances])


def is_positive_definite(matrices: np.ndarray, covariance_type: str) -> bool:
    """Whether covariances (or precisions) of this type are finite and positive definite."""
    if not np.all(np.isfinite(matrices)):
        return False
    if covariance_type in ("diag", "spherical"):
        return bool(np.all(matrices > 0))
    try:
        np.linalg.cholesky(matrices)
    except np.linalg.LinAlgError:
        return False
    return True


def n_covariance_parameters(n_components: int, n_features: int, covariance_type: str) -> int:
    d = n_features
    return {
        "full": n_components * d * (d + 1) // 2,
        "tied": d * (d + 1) // 2,
        "diag": n_components * d,
        "spherical": n_components,
    }[covariance_type]


def covariance_shape(n_components: int, n_features: int, covariance_type: str) -> tuple[int, ...]:
    return {
        "full": (n_components, n_features, n_features),
        "tied": (n_features, n_features),
        "diag": (n_components, n_features),
        "spherical": (n_components,),
    }[covariance_type]


def second_moment_shape(n_components: int, n_features: int, covariance_type: str) -> tuple[int, ...]:
    if covariance_type == "full":
        return (n_components, n_features, n_features)
    if covariance_type == "tied":
        return (n_features, n_features)
    return (n_components, n_features)
