"""Sufficient statistics of a Gaussian mixture: the one value type both EM algorithms carry.

Statistics add (associatively, so Dask can tree-reduce them), blend with a step size (stepwise
EM) and turn into parameters (the M-step). Sums are kept in float64 about a fixed ``shift``
(typically the mean of the first data seen) so that data far from the origin lose no precision:
second moments about the shift are small numbers, and the M-step's subtraction of the squared
mean does not cancel catastrophically.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from scipy import linalg

from streamgmm.kernels import quadratic
from streamgmm.mixture import covariance as cov
from streamgmm.mixture.params import MixtureParams

# scikit-learn adds this to every component count before dividing; doing the same keeps batch EM
# identical to GaussianMixture and keeps an empty component's mean finite.
COUNT_EPSILON = 10 * np.finfo(np.float64).eps
# scikit-learn's words for a covariance that is singular without regularisation.
ILL_DEFINED_COVARIANCE = (
    "Fitting the mixture model failed because some components have ill-defined empirical covariance "
    "(for instance caused by singleton or collapsed samples). Try to decrease the number of components, "
    "or increase reg_covar."
)


@dataclass(frozen=True)
class SufficientStatistics:
    """Weighted counts, sums and second moments of the data about ``shift``.

    ``counts`` (K,) = sum_i r_ik; ``sums`` (K, d) = sum_i r_ik (x_i - shift); ``second`` = the
    second moments about the shift that the covariance type needs. ``n_records`` is the number
    (or, once blended, the weight) of records summed and ``log_likelihood`` the sum of their
    log-likelihoods under the parameters that produced the responsibilities.
    """

    covariance_type: str
    shift: np.ndarray
    counts: np.ndarray
    sums: np.ndarray
    second: np.ndarray
    n_records: float
    log_likelihood: float

    # ------------------------------------------------------------------ construction

    @classmethod
    def zeros(cls, n_components: int, n_features: int, covariance_type: str, shift: np.ndarray) -> SufficientStatistics:
        return cls(
            covariance_type,
            np.asarray(shift, dtype=np.float64),
            np.zeros(n_components),
            np.zeros((n_components, n_features)),
            np.zeros(cov.second_moment_shape(n_components, n_features, covariance_type)),
            0.0,
            0.0,
        )

    @classmethod
    def from_responsibilities(
        cls,
        X: np.ndarray,
        resp: np.ndarray,
        shift: np.ndarray,
        covariance_type: str,
        log_likelihood: float = 0.0,
    ) -> SufficientStatistics:
        centred = X - shift
        return cls(
            covariance_type,
            shift,
            resp.sum(axis=0),
            resp.T @ centred,
            cov.second_moments(centred, resp, covariance_type),
            float(X.shape[0]),
            float(log_likelihood),
        )

    @classmethod
    def of_chunk(
        cls, X: np.ndarray, params: MixtureParams, shift: np.ndarray, dtype: np.dtype | type = np.float64
    ) -> tuple[SufficientStatistics, np.ndarray]:
        """E-step on a chunk: its statistics and the per-record log-likelihoods.

        Full covariances take :mod:`streamgmm.kernels.quadratic`'s kernel (fused in C where it was
        built, else two matrix products), where ``dtype=np.float32`` computes in single
        precision (sums still in float64); the other types are cheap in the direct form and
        always computed in float64."""
        if params.covariance_type in quadratic.SUPPORTED:
            counts, sums, second, log_norm = quadratic.chunk_statistics(X, params, shift, dtype)
            stats = cls(params.covariance_type, shift, counts, sums, second, float(X.shape[0]), float(log_norm.sum()))
            return stats, log_norm
        log_norm, resp = params.e_step(X)
        stats = cls.from_responsibilities(X, resp, shift, params.covariance_type, float(log_norm.sum()))
        return stats, log_norm

    @classmethod
    def from_params(cls, params: MixtureParams, shift: np.ndarray, n_records: float = 1.0) -> SufficientStatistics:
        """The statistics whose M-step (without regularisation) gives back ``params``."""
        weights = params.weights / params.weights.sum()
        centred = params.means - shift
        return cls(
            params.covariance_type,
            np.asarray(shift, dtype=np.float64),
            weights * n_records,
            weights[:, None] * centred * n_records,
            cov.moments_of_parameters(weights, centred, params.covariances, params.covariance_type) * n_records,
            float(n_records),
            0.0,
        )

    # ------------------------------------------------------------------ algebra

    @property
    def n_components(self) -> int:
        return self.counts.shape[0]

    @property
    def n_features(self) -> int:
        return self.sums.shape[1]

    def recentred(self, shift: np.ndarray) -> SufficientStatistics:
        """The same statistics about another shift (exact algebra, no data needed)."""
        shift = np.asarray(shift, dtype=np.float64)
        if np.array_equal(shift, self.shift):
            return self
        delta = self.shift - shift  # x - new = (x - old) + delta
        s, n = self.sums, self.counts
        if self.covariance_type == "full":
            second = (
                self.second
                + s[:, :, None] * delta[None, None, :]
                + delta[None, :, None] * s[:, None, :]
                + n[:, None, None] * np.outer(delta, delta)[None]
            )
        elif self.covariance_type == "tied":
            total = s.sum(axis=0)
            second = self.second + np.outer(total, delta) + np.outer(delta, total) + n.sum() * np.outer(delta, delta)
        else:
            second = self.second + 2 * s * delta + n[:, None] * delta**2
        return replace(self, shift=shift, sums=s + n[:, None] * delta, second=second)

    def __add__(self, other: SufficientStatistics) -> SufficientStatistics:
        if other.covariance_type != self.covariance_type or other.counts.shape != self.counts.shape:
            raise ValueError("cannot add statistics of different mixture shapes or covariance types")
        other = other.recentred(self.shift)
        return replace(
            self,
            counts=self.counts + other.counts,
            sums=self.sums + other.sums,
            second=self.second + other.second,
            n_records=self.n_records + other.n_records,
            log_likelihood=self.log_likelihood + other.log_likelihood,
        )

    def scaled(self, factor: float) -> SufficientStatistics:
        return replace(
            self,
            counts=self.counts * factor,
            sums=self.sums * factor,
            second=self.second * factor,
            n_records=self.n_records * factor,
            log_likelihood=self.log_likelihood * factor,
        )

    def per_record(self) -> SufficientStatistics:
        """Averages instead of sums: the scale at which stepwise EM blends."""
        if self.n_records <= 0:
            raise ValueError("statistics of zero records have no per-record form")
        return self.scaled(1.0 / self.n_records)

    def blend(self, batch: SufficientStatistics, step: float) -> SufficientStatistics:
        """Stepwise EM: s <- (1 - step) s + step s_batch, both taken per record."""
        return self.per_record().scaled(1.0 - step) + batch.per_record().scaled(step)

    # ------------------------------------------------------------------ M-step

    def to_params(self, reg_covar: float) -> MixtureParams:
        """The M-step. With ``reg_covar > 0`` it never fails: a covariance that is not positive
        definite after adding ``reg_covar`` (rounding on degenerate data) has its eigenvalues
        clipped up to the floor. With ``reg_covar=0`` such a covariance raises scikit-learn's
        ``ValueError``, as ``GaussianMixture`` does: the user asked for no regularisation."""
        nk = self.counts + COUNT_EPSILON
        centred_means = self.sums / nk[:, None]
        covariances = cov.covariances_from_moments(nk, centred_means, self.second, reg_covar, self.covariance_type)
        weights = nk / nk.sum()
        means = centred_means + self.shift
        try:
            if not np.all(np.isfinite(covariances)):
                raise linalg.LinAlgError("non-finite covariance")
            return MixtureParams.from_covariances(weights, means, covariances, self.covariance_type)
        except (linalg.LinAlgError, ValueError):
            if reg_covar == 0:
                raise ValueError(ILL_DEFINED_COVARIANCE) from None
            floor = _variance_floor(covariances, self.covariance_type, reg_covar)
            repaired = cov.nearest_positive_definite(covariances, self.covariance_type, floor)
            return MixtureParams.from_covariances(weights, means, repaired, self.covariance_type)

    def arrays(self) -> dict[str, np.ndarray]:
        return {"shift": self.shift, "counts": self.counts, "sums": self.sums, "second": self.second}


def _variance_floor(covariances: np.ndarray, covariance_type: str, reg_covar: float) -> float:
    if covariance_type in ("full", "tied"):
        scale = np.diagonal(covariances, axis1=-2, axis2=-1)
    else:
        scale = covariances
    finite = np.abs(scale[np.isfinite(scale)])
    typical = float(finite.mean()) if finite.size else 1.0
    return max(reg_covar, 1e-10 * typical, np.finfo(np.float64).tiny)
