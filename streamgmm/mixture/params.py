"""The parameters of a Gaussian mixture, and the E-step that uses them."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
from scipy.special import logsumexp

from streamgmm.mixture import covariance as cov


@dataclass(frozen=True)
class MixtureParams:
    """Weights (K,), means (K, d), covariances and their precision Cholesky factors.

    Shapes of ``covariances`` and ``precisions_cholesky`` depend on ``covariance_type``
    (see :mod:`streamgmm.mixture.covariance`).
    """

    weights: np.ndarray
    means: np.ndarray
    covariances: np.ndarray
    precisions_cholesky: np.ndarray
    covariance_type: str

    @classmethod
    def from_covariances(
        cls, weights: np.ndarray, means: np.ndarray, covariances: np.ndarray, covariance_type: str
    ) -> MixtureParams:
        prec_chol = cov.precisions_cholesky(covariances, covariance_type)
        return cls(weights, means, covariances, prec_chol, covariance_type)

    @classmethod
    def from_precisions(
        cls, weights: np.ndarray, means: np.ndarray, precisions: np.ndarray, covariance_type: str
    ) -> MixtureParams:
        prec_chol = cov.precisions_cholesky_from_precisions(precisions, covariance_type)
        covariances = cov.covariances_from_precisions(precisions, covariance_type)
        return cls(weights, means, covariances, prec_chol, covariance_type)

    @property
    def n_components(self) -> int:
        return self.means.shape[0]

    @property
    def n_features(self) -> int:
        return self.means.shape[1]

    @property
    def precisions(self) -> np.ndarray:
        return cov.precisions_from_cholesky(self.precisions_cholesky, self.covariance_type)

    def n_parameters(self) -> int:
        k, d = self.means.shape
        return cov.n_covariance_parameters(k, d, self.covariance_type) + k * d + k - 1

    def weighted_log_prob(self, X: np.ndarray) -> np.ndarray:
        """log pi_k + log N(x_i | mu_k, Sigma_k), shape (n, K)."""
        with np.errstate(divide="ignore"):
            log_weights = np.log(self.weights)
        return cov.log_gaussian_prob(X, self.means, self.precisions_cholesky, self.covariance_type) + log_weights

    def e_step(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per-record log-likelihood (n,) and responsibilities (n, K), by log-sum-exp."""
        weighted = self.weighted_log_prob(X)
        log_norm = _logsumexp_rows(weighted)
        # Components along the rows of a (K, n) array: the sums over a few components run as
        # long vector operations across records (returned as its (n, K) transpose).
        resp = np.array(weighted.T, order="C")
        resp -= log_norm
        with np.errstate(under="ignore"):
            np.exp(resp, out=resp)
        # Far from every component |log_norm| is huge and the subtraction keeps only
        # ~|log_norm| * eps accuracy; renormalising makes each row sum to one to rounding.
        resp /= resp.sum(axis=0)
        return log_norm, resp.T

    def log_likelihood(self, X: np.ndarray) -> np.ndarray:
        return _logsumexp_rows(self.weighted_log_prob(X))

    def fingerprint(self) -> str:
        """SHA-256 of the parameters' bytes: equal for the same model, whatever file it came from."""
        digest = hashlib.sha256(self.covariance_type.encode())
        for array in (self.weights, self.means, self.covariances):
            digest.update(np.ascontiguousarray(array, dtype="<f8").tobytes())
        return digest.hexdigest()

    def is_finite(self) -> bool:
        return all(
            np.all(np.isfinite(a)) for a in (self.weights, self.means, self.covariances, self.precisions_cholesky)
        )


def _logsumexp_rows(a: np.ndarray) -> np.ndarray:
    """log sum_k exp(a_ik) per row, as scipy's ``logsumexp(a, axis=1)`` computes it (the same
    max-shifted formula) without its generic-array overhead, which costs more than the sum."""
    if a.shape[0] == 0 or a.shape[1] == 0:
        return logsumexp(a, axis=1)
    # Transposed, so that the max and sum over a few components are vector operations across
    # records (reducing along short rows costs several times more).
    t = np.array(a.T, order="C")  # a copy: the caller's array is not to be changed
    peak = t.max(axis=0)
    # A row of -inf (every weight zero) keeps -inf; a +inf entry makes the row +inf (nan below).
    finite_peak = np.where(np.isfinite(peak), peak, 0.0)
    t -= finite_peak
    with np.errstate(under="ignore", divide="ignore"):
        np.exp(t, out=t)
        return np.log(t.sum(axis=0)) + finite_peak
