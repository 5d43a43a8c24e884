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

from streamgmm.mixture import covariance as cov
from streamgmm.mixture.params import MixtureParams

# scikit-learn adds this to every component count before dividing; doing the same keeps batch EM
# identical to GaussianMixture and keeps an empty component's mean finite.
COUNT_EPSILON = 10 * np.finfo(np.float64).eps
# scikit-learn's words for a covariance that is singular without regularisation.
ILL_DEFINED_COVARIANCE = (
    "Fitting the mixture model failed because some components have ill-defined empirical covariance "
    "(for instance caused by singleton or collapsed samples). Try to decrease the number of components, "
    "increase reg_covar, or scale the input data."
)


@dataclass(frozen=True)
class SufficientStatistics:
    """Weighted counts, sums and second moments of the data about a fixed shift.

    An immutable value that adds (``a + b``), scales, blends with a step size (stepwise EM) and
    turns into parameters (:meth:`to_params`, the M-step). With r_ik the responsibility of
    component k for record x_i, the sums are taken about ``shift`` so that data far from the
    origin lose no precision. Build one with :meth:`from_responsibilities`, :meth:`from_params`
    or :meth:`zeros` (or :func:`streamgmm.kernels.chunk.chunk_statistics`, the E-step's kernels).

    Parameters
    ----------
    covariance_type : {'full', 'tied', 'diag', 'spherical'}
        The form of the covariances the statistics are for.

    shift : ndarray of shape (n_features,)
        The point the sums and second moments are taken about.

    counts : ndarray of shape (n_components,)
        ``sum_i r_ik``, the weight of records each component is responsible for.

    sums : ndarray of shape (n_components, n_features)
        ``sum_i r_ik (x_i - shift)``.

    second : ndarray
        The second moments about ``shift`` that the covariance type needs:
        ``sum_i r_ik (x_i - shift)(x_i - shift)^T`` of shape (n_components, n_features,
        n_features) for 'full'; ``sum_i (x_i - shift)(x_i - shift)^T`` of shape (n_features,
        n_features) for 'tied'; ``sum_i r_ik (x_i - shift)**2`` of shape (n_components,
        n_features) for 'diag' and 'spherical'.

    n_records : float
        The number of records summed (or, once scaled or blended, their weight).

    log_likelihood : float
        The sum of the records' log-likelihoods under the parameters that produced the
        responsibilities (0 where none did).

    Attributes
    ----------
    n_components : int
        The number of components K.

    n_features : int
        The number of features d.

    Examples
    --------
    >>> import numpy as np
    >>> from streamgmm import MixtureParams, SufficientStatistics
    >>> params = MixtureParams.from_covariances(
    ...     np.array([0.5, 0.5]), np.array([[0.0, 0.0], [4.0, 4.0]]), np.array([1.0, 1.0]), "spherical"
    ... )
    >>> X = np.array([[-1.0, 0.0], [1.0, 0.0], [3.0, 4.0], [5.0, 4.0]])
    >>> log_likelihood, resp = params.e_step(X)
    >>> stats = SufficientStatistics.from_responsibilities(X, resp, X.mean(axis=0), "spherical")
    >>> stats.counts.round(3), stats.n_records
    (array([2., 2.]), 4.0)
    >>> stats.to_params(reg_covar=1e-6).means.round(3)
    array([[0., 0.],
           [4., 4.]])
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
        """Build the statistics of no records.

        Parameters
        ----------
        n_components : int
            The number of components K.

        n_features : int
            The number of features d.

        covariance_type : {'full', 'tied', 'diag', 'spherical'}
            The form of the covariances.

        shift : array-like of shape (n_features,)
            The point the sums will be taken about.

        Returns
        -------
        stats : SufficientStatistics
            Zero counts, sums and second moments, with ``n_records`` and ``log_likelihood`` 0.

        Examples
        --------
        >>> import numpy as np
        >>> from streamgmm import SufficientStatistics
        >>> stats = SufficientStatistics.zeros(2, 3, "full", np.zeros(3))
        >>> stats.counts, stats.second.shape, stats.n_records
        (array([0., 0.]), (2, 3, 3), 0.0)
        """
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
        weights: np.ndarray | None = None,
    ) -> SufficientStatistics:
        """Sum the statistics of records from their responsibilities.

        Parameters
        ----------
        X : ndarray of shape (n_records, n_features)
            The records.

        resp : ndarray of shape (n_records, n_components)
            The responsibilities of each component for each record. For 'tied' each row must
            sum to one: its second moment is computed without them.

        shift : ndarray of shape (n_features,)
            The point the sums are taken about.

        covariance_type : {'full', 'tied', 'diag', 'spherical'}
            The form of the covariances.

        log_likelihood : float, default=0.0
            The records' total log-likelihood, stored as given.

        weights : ndarray of shape (n_records,), default=None
            Record weights: each record counts its weight times (None: once).

        Returns
        -------
        stats : SufficientStatistics
            The statistics of the records, with ``n_records`` the number of rows of ``X`` (their
            total weight, with ``weights``).

        Examples
        --------
        >>> import numpy as np
        >>> from streamgmm import MixtureParams, SufficientStatistics
        >>> params = MixtureParams.from_covariances(
        ...     np.array([0.5, 0.5]), np.array([[0.0, 0.0], [4.0, 4.0]]), np.array([1.0, 1.0]), "spherical"
        ... )
        >>> X = np.array([[-1.0, 0.0], [1.0, 0.0], [3.0, 4.0], [5.0, 4.0]])
        >>> log_likelihood, resp = params.e_step(X)
        >>> stats = SufficientStatistics.from_responsibilities(
        ...     X, resp, X.mean(axis=0), "spherical", log_likelihood.sum()
        ... )
        >>> stats.sums.round(3)
        array([[-4., -4.],
               [ 4.,  4.]])
        """
        centred = X - shift
        if weights is None:
            return cls(
                covariance_type,
                shift,
                resp.sum(axis=0),
                resp.T @ centred,
                cov.second_moments(centred, resp, covariance_type),
                float(X.shape[0]),
                float(log_likelihood),
            )
        weighted = resp * weights[:, None]
        if covariance_type == "tied":
            # The tied moment sums u u' once per record, its responsibilities summing to one.
            second = (centred * weights[:, None]).T @ centred
        else:
            second = cov.second_moments(centred, weighted, covariance_type)
        counts, sums = weighted.sum(axis=0), weighted.T @ centred
        return cls(covariance_type, shift, counts, sums, second, float(weights.sum()), float(log_likelihood))

    @classmethod
    def from_params(cls, params: MixtureParams, shift: np.ndarray, n_records: float = 1.0) -> SufficientStatistics:
        """Build the statistics whose M-step (without regularisation) gives back ``params``.

        Used to start stepwise EM from parameters, as if they had been fitted to
        ``n_records`` records.

        Parameters
        ----------
        params : MixtureParams
            The parameters to turn back into statistics.

        shift : array-like of shape (n_features,)
            The point the sums are taken about.

        n_records : float, default=1.0
            The weight of records the statistics stand for.

        Returns
        -------
        stats : SufficientStatistics
            Statistics with ``counts`` the normalised weights times ``n_records``, and
            ``log_likelihood`` 0.

        Examples
        --------
        >>> import numpy as np
        >>> from streamgmm import MixtureParams, SufficientStatistics
        >>> params = MixtureParams.from_covariances(
        ...     np.array([0.5, 0.5]), np.array([[0.0, 0.0], [4.0, 4.0]]), np.array([1.0, 1.0]), "spherical"
        ... )
        >>> stats = SufficientStatistics.from_params(params, shift=np.array([1.0, 1.0]), n_records=100)
        >>> stats.counts
        array([50., 50.])
        >>> bool(np.allclose(stats.to_params(reg_covar=0.0).covariances, params.covariances))
        True
        """
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
        """The number of components K."""
        return self.counts.shape[0]

    @property
    def n_features(self) -> int:
        """The number of features d."""
        return self.sums.shape[1]

    def recentred(self, shift: np.ndarray) -> SufficientStatistics:
        """Express the same statistics about another shift.

        Exact algebra on the sums and second moments; no data are needed.

        Parameters
        ----------
        shift : array-like of shape (n_features,)
            The new point to take the sums about.

        Returns
        -------
        stats : SufficientStatistics
            The statistics about ``shift`` (``self`` when the shift is the same).
        """
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
        """Add the statistics of two sets of records, about this one's shift.

        Addition is associative, so partial statistics can be reduced in any grouping.

        Raises
        ------
        ValueError
            If the two differ in covariance type or number of components.
        """
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
        """Multiply the counts, sums, second moments, ``n_records`` and ``log_likelihood``.

        Parameters
        ----------
        factor : float
            The factor.

        Returns
        -------
        stats : SufficientStatistics
            The scaled statistics, about the same shift.
        """
        return replace(
            self,
            counts=self.counts * factor,
            sums=self.sums * factor,
            second=self.second * factor,
            n_records=self.n_records * factor,
            log_likelihood=self.log_likelihood * factor,
        )

    def per_record(self) -> SufficientStatistics:
        """Divide the statistics by ``n_records``: averages instead of sums.

        The scale at which stepwise EM blends.

        Returns
        -------
        stats : SufficientStatistics
            The statistics per record, with ``n_records`` 1.

        Raises
        ------
        ValueError
            If ``n_records`` is not positive.
        """
        if self.n_records <= 0:
            raise ValueError("statistics of zero records have no per-record form")
        return self.scaled(1.0 / self.n_records)

    def blend(self, batch: SufficientStatistics, step: float) -> SufficientStatistics:
        """Blend a mini-batch's statistics in, as stepwise EM does.

        ``s <- (1 - step) s + step s_batch``, both taken per record (see :meth:`per_record`),
        about this one's shift.

        Parameters
        ----------
        batch : SufficientStatistics
            The mini-batch's statistics.

        step : float
            The step size, between 0 and 1: the weight of ``batch``.

        Returns
        -------
        stats : SufficientStatistics
            The blended statistics, per record (``n_records`` 1).

        Examples
        --------
        >>> import numpy as np
        >>> from streamgmm import MixtureParams, SufficientStatistics
        >>> params = MixtureParams.from_covariances(
        ...     np.array([0.5, 0.5]), np.array([[0.0, 0.0], [4.0, 4.0]]), np.array([1.0, 1.0]), "spherical"
        ... )
        >>> X = np.array([[-1.0, 0.0], [1.0, 0.0], [3.0, 4.0], [5.0, 4.0]])
        >>> a = SufficientStatistics.from_responsibilities(X[:2], params.e_step(X[:2])[1], np.zeros(2), "spherical")
        >>> b = SufficientStatistics.from_responsibilities(X[2:], params.e_step(X[2:])[1], np.zeros(2), "spherical")
        >>> blended = a.blend(b, step=0.25)
        >>> blended.counts.round(3), blended.n_records
        (array([0.75, 0.25]), 1.0)
        """
        if batch.covariance_type != self.covariance_type or batch.counts.shape != self.counts.shape:
            raise ValueError("cannot blend statistics of different mixture shapes or covariance types")
        if self.n_records <= 0 or batch.n_records <= 0:
            raise ValueError("statistics of zero records have no per-record form")
        # per_record().scaled(1 - step) + batch.per_record().scaled(step) in one construction:
        # called once per mini-batch, the five intermediate values cost as much as the M-step.
        batch = batch.recentred(self.shift)
        a, b = (1.0 - step) / self.n_records, step / batch.n_records
        return SufficientStatistics(
            self.covariance_type,
            self.shift,
            a * self.counts + b * batch.counts,
            a * self.sums + b * batch.sums,
            a * self.second + b * batch.second,
            a * self.n_records + b * batch.n_records,
            a * self.log_likelihood + b * batch.log_likelihood,
        )

    # ------------------------------------------------------------------ M-step

    def to_params(self, reg_covar: float) -> MixtureParams:
        """Run the M-step: the parameters these statistics give.

        As scikit-learn's ``GaussianMixture``, a small epsilon is added to every count before
        dividing, and ``reg_covar`` to the covariance diagonals. With ``reg_covar > 0`` it
        never fails: a covariance that is not positive definite after adding ``reg_covar``
        (rounding on degenerate data) has its eigenvalues clipped up to a floor.

        Parameters
        ----------
        reg_covar : float
            Non-negative regularisation added to the covariance diagonals.

        Returns
        -------
        params : MixtureParams
            The weights, means and covariances.

        Raises
        ------
        ValueError
            With ``reg_covar=0``, if a covariance is not positive definite: scikit-learn's
            error, as ``GaussianMixture`` raises it, since no regularisation was asked for.

        Examples
        --------
        >>> import numpy as np
        >>> from streamgmm import MixtureParams, SufficientStatistics
        >>> params = MixtureParams.from_covariances(
        ...     np.array([0.5, 0.5]), np.array([[0.0, 0.0], [4.0, 4.0]]), np.array([1.0, 1.0]), "spherical"
        ... )
        >>> X = np.array([[-1.0, 0.0], [1.0, 0.0], [3.0, 4.0], [5.0, 4.0]])
        >>> stats = SufficientStatistics.from_responsibilities(X, params.e_step(X)[1], X.mean(axis=0), "spherical")
        >>> fitted = stats.to_params(reg_covar=1e-6)
        >>> fitted.weights.round(3), fitted.covariances.round(3)
        (array([0.5, 0.5]), array([0.5, 0.5]))
        """
        nk = self.counts + COUNT_EPSILON
        centred_means = self.sums / nk[:, None]
        covariances = cov.covariances_from_moments(nk, centred_means, self.second, reg_covar, self.covariance_type)
        weights = nk / nk.sum()
        means = centred_means + self.shift
        try:
            if not np.all(np.isfinite(covariances)):
                raise np.linalg.LinAlgError("non-finite covariance")
            return MixtureParams.from_covariances(weights, means, covariances, self.covariance_type)
        except (np.linalg.LinAlgError, ValueError):
            if reg_covar == 0:
                raise ValueError(ILL_DEFINED_COVARIANCE) from None
            floor = _variance_floor(covariances, self.covariance_type, reg_covar)
            repaired = cov.nearest_positive_definite(covariances, self.covariance_type, floor)
            return MixtureParams.from_covariances(weights, means, repaired, self.covariance_type)

    def arrays(self) -> dict[str, np.ndarray]:
        """The statistics' arrays by name: ``shift``, ``counts``, ``sums`` and ``second``."""
        return {"shift": self.shift, "counts": self.counts, "sums": self.sums, "second": self.second}


def _variance_floor(covariances: np.ndarray, covariance_type: str, reg_covar: float) -> float:
    if covariance_type in ("full", "tied"):
        scale = np.diagonal(covariances, axis1=-2, axis2=-1)
    else:
        scale = covariances
    finite = np.abs(scale[np.isfinite(scale)])
    typical = float(finite.mean()) if finite.size else 1.0
    return max(reg_covar, 1e-10 * typical, np.finfo(np.float64).tiny)
