"""The log-densities of every covariance type as linear functions of a record's features.

With u = x - shift, the fused kernel computes each component's weighted log-density as one dot
product V_k z(u) over the features of a layout (see ``quadratic.fused_run``):

- ``full``: z = [1, u_i, u_i u_j for i <= j] (:func:`quadratic.expanded_log_density`);
- ``diag`` and ``spherical``: z = [1, u_i, u_i^2], p = 2d + 1; a spherical covariance is a
  diagonal one with equal variances, and its statistics (``sum r u_i^2`` per feature) are the
  diagonal's;
- ``tied``: z = [1, u_i], p = d + 1. The shared quadratic term -u'Pu/2 is the same for every
  component, so it cancels from the responsibilities: the kernel leaves it out and the caller
  adds it to the log-likelihoods (the kernel's ``shared`` term, :func:`shared_factor`).

As for full covariances, a component whose expansion would lose more than
``quadratic.EXPANSION_TOLERANCE`` to cancellation (a covariance small next to its mean's
distance from the shift) is computed in the direct form ||W_k [1; u]||^2 instead
(:func:`Expansion.direct`); for ``tied``, whose direct form is not of the kernel's linear
features, such parameters have no expansion (:func:`expansion` returns None) and the caller
takes the direct path.

Examples
--------
>>> import numpy as np
>>> from streamgmm.mixture.params import MixtureParams
>>> params = MixtureParams.from_covariances(
...     np.array([0.5, 0.5]), np.array([[0.0, 0.0], [4.0, 4.0]]), np.array([[1.0, 1.0], [2.0, 2.0]]), "diag")
>>> e = expansion(params, np.zeros(2), np.float64)
>>> e.layout, e.V.shape, e.direct.size
('diag', (2, 5), 0)
>>> u = np.array([1.0, 3.0])
>>> z = np.concatenate([[1.0], u, u**2])
>>> bool(np.allclose(e.V @ z, params.weighted_log_prob(u[None])[0]))
True
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from streamgmm.kernels import quadratic
from streamgmm.mixture import covariance as cov
from streamgmm.mixture.params import MixtureParams

LAYOUTS = {"full": "full", "diag": "diag", "spherical": "diag", "tied": "linear"}


@dataclass(frozen=True)
class Expansion:
    """What the fused kernel needs for one set of parameters about one shift, in ``dtype``.

    ``V`` (K, p): the log-densities' coefficients; ``direct``: the components computed in the
    direct form, constants_k - ||W_k [1; u]||^2 / 2 with ``W`` (K d, d + 1) and
    ``direct_constant`` (K,) (zeros when there are none); ``shared``: for tied, the term every
    log-density leaves out (:func:`shared_factor`), else None."""

    layout: str
    V: np.ndarray
    direct: np.ndarray
    W: np.ndarray
    direct_constant: np.ndarray
    shared: np.ndarray | None

    def run(
        self, X: np.ndarray, shift: np.ndarray, scoring: bool = False, weights: np.ndarray | None = None
    ) -> quadratic.FusedResult:
        """:func:`~streamgmm.kernels.quadratic.fused_run` of ``X`` about ``shift`` (with the
        record ``weights``, if given) with these coefficients, on this machine's widest fused
        build."""
        return quadratic.fused_run(
            X,
            shift,
            self.V,
            self.direct,
            self.W,
            self.direct_constant,
            quadratic.FUSED_KERNELS[0],
            self.layout,
            scoring=scoring,
            shared=self.shared,
            weights=weights,
        )


def _log_weights(params: MixtureParams) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return np.log(params.weights)


def _size(constant: np.ndarray) -> np.ndarray:
    """|constant|, 0 for a component of weight zero (-inf): its log-density is -inf in either
    form, so it needs no direct form (which tied parameters would pay for with the exact path)."""
    return np.where(np.isfinite(constant), np.abs(constant), 0.0)


def _diagonal_factors(params: MixtureParams) -> np.ndarray:
    """1 / sqrt(variance) per component and feature, (K, d), for diag and spherical."""
    prec_chol = params.precisions_cholesky
    if params.covariance_type == "spherical":
        return np.repeat(prec_chol[:, None], params.n_features, axis=1)
    return prec_chol


def _expanded_diag(params: MixtureParams, shift: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(V (K, 2d + 1), error_scale (K,))`` for diag and spherical; error_scale as
    :func:`quadratic.expanded_log_density`'s."""
    d = params.n_features
    factors = _diagonal_factors(params)
    precision = factors**2
    centred = params.means - shift
    whitened = centred * factors
    constant = (
        _log_weights(params)
        + np.log(factors).sum(axis=1)
        - 0.5 * d * cov.LOG_2PI
        - 0.5 * np.einsum("kd,kd->k", whitened, whitened)
    )
    V = np.empty((params.n_components, 1 + 2 * d))
    V[:, 0] = constant
    V[:, 1 : d + 1] = precision * centred
    V[:, d + 1 :] = -0.5 * precision
    # The terms' sizes on a component's own records (within two standard deviations of its mean).
    reach = np.abs(centred) + 2.0 / factors
    size = _size(constant) + (np.abs(V[:, 1 : d + 1]) * reach).sum(axis=1) + 0.5 * (precision * reach**2).sum(axis=1)
    return V, np.sqrt(V.shape[1]) * size


def _direct_diag(params: MixtureParams, shift: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(W (K d, d + 1), constants (K,))``: W_k [1; u] = (u - m_k) / sigma_k."""
    k, d = params.n_components, params.n_features
    factors = _diagonal_factors(params)
    W = np.zeros((k, d, d + 1))
    W[:, :, 0] = -factors * (params.means - shift)
    W[:, np.arange(d), np.arange(d) + 1] = factors
    constant = _log_weights(params) + np.log(factors).sum(axis=1) - 0.5 * d * cov.LOG_2PI
    return W.reshape(k * d, d + 1), constant


def _expanded_tied(params: MixtureParams, shift: np.ndarray, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    """``(V (K, d + 1), error_scale (K,))`` for tied: the log-densities without -u'Pu/2, whose
    size the error scale counts too (the log-likelihoods add it back, :func:`shared_factor`)."""
    d = params.n_features
    factor = params.precisions_cholesky
    precision = factor @ factor.T
    centred = params.means - shift
    whitened = centred @ factor
    constant = (
        _log_weights(params)
        + np.log(np.diagonal(factor)).sum()
        - 0.5 * d * cov.LOG_2PI
        - 0.5 * np.einsum("kd,kd->k", whitened, whitened)
    )
    V = np.empty((params.n_components, 1 + d))
    V[:, 0] = constant
    V[:, 1:] = centred @ precision
    reach = np.abs(centred) + 2.0 * np.sqrt(np.diagonal(params.covariances))
    linear = _size(constant) + (np.abs(V[:, 1:]) * reach).sum(axis=1)
    # A product, not a three-operand einsum (which takes longer than the chunk's kernel call).
    quadratic_size = 0.5 * ((reach @ np.abs(precision)) * reach).sum(axis=1)
    return V, np.sqrt(1 + d) * linear + np.sqrt(d) * quadratic_size


def expansion(params: MixtureParams, shift: np.ndarray, dtype: np.dtype | type) -> Expansion | None:
    """The fused kernel's inputs for ``params`` about ``shift`` in ``dtype``; None for tied
    parameters with a component that needs the direct form (see the module's notes).

    Parameters
    ----------
    params : MixtureParams
        The mixture, of any covariance type.

    shift : ndarray of shape (n_features,)
        The point the records are centred about.

    dtype : numpy dtype
        The kernel's precision, float64 or float32.

    Returns
    -------
    expansion : Expansion or None
        The layout, coefficients and direct form.

    Examples
    --------
    >>> import numpy as np
    >>> from streamgmm.mixture.params import MixtureParams
    >>> far = MixtureParams.from_covariances(np.array([1.0]), np.array([[1e6]]), np.array([1e-6]), "spherical")
    >>> expansion(far, np.zeros(1), np.float64).direct
    array([0])
    """
    dtype = np.dtype(dtype)
    shift = np.asarray(shift, dtype=np.float64)
    covariance_type = params.covariance_type
    k, d = params.n_components, params.n_features
    if covariance_type == "full":
        V, error_scale = quadratic.expanded_log_density(params, shift)
    elif covariance_type == "tied":
        V, error_scale = _expanded_tied(params, shift, dtype)
    else:
        V, error_scale = _expanded_diag(params, shift)
    direct = quadratic.direct_components(error_scale, dtype)
    if not direct.size:
        W, direct_constant = np.zeros((k * d, d + 1), dtype=dtype), np.zeros(k, dtype=dtype)
    elif covariance_type == "full":
        W, direct_constant = quadratic.direct_form(params, shift, direct, dtype)
    elif covariance_type == "tied":
        return None
    else:
        W, direct_constant = _direct_diag(params, shift)
    shared = shared_factor(params)
    return Expansion(
        LAYOUTS[covariance_type],
        V.astype(dtype, copy=False),
        direct,
        W.astype(dtype, copy=False),
        direct_constant.astype(dtype, copy=False),
        None if shared is None else shared.astype(dtype),
    )


def shared_factor(params: MixtureParams) -> np.ndarray | None:
    """W0 (d, d + 1) with ``W0 [1; u] = U'u`` for a tied precision P = U U', so that
    ``||W0 [1; u]||^2 / 2`` is the term u'Pu / 2 the tied log-densities leave out (the fused
    kernel's ``shared``); None for the other types."""
    if params.covariance_type != "tied":
        return None
    d = params.n_features
    W0 = np.zeros((d, d + 1))
    W0[:, 1:] = params.precisions_cholesky.T
    return W0
