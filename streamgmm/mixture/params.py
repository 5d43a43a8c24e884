"""The parameters of a Gaussian mixture, and the E-step that uses them."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from streamgmm.mixture import covariance as cov


@dataclass(frozen=True)
class MixtureParams:
    """The parameters of a Gaussian mixture, and the E-step that uses them.

    An immutable value: the weights, means and covariances of K components over d features,
    with the Cholesky factors of the precisions (inverse covariances) that the log densities
    are computed from. Build one with :meth:`from_covariances` or :meth:`from_precisions`,
    which compute the factors; the constructor takes them as given and checks nothing.

    Parameters
    ----------
    weights : ndarray of shape (n_components,)
        The weight of each component.

    means : ndarray of shape (n_components, n_features)
        The mean of each component.

    covariances : ndarray
        The covariance of each component. Its shape depends on ``covariance_type``:
        (n_components, n_features, n_features) for 'full', (n_features, n_features) for
        'tied', (n_components, n_features) for 'diag', (n_components,) for 'spherical'.

    precisions_cholesky : ndarray
        The Cholesky factors of the precisions, of the same shape as ``covariances``: upper
        triangular U with precision ``U @ U.T`` for 'full' and 'tied', ``1 / sqrt(variance)``
        for 'diag' and 'spherical' (see :mod:`streamgmm.mixture.covariance`).

    covariance_type : {'full', 'tied', 'diag', 'spherical'}
        The form of the covariances, as scikit-learn's.

    Attributes
    ----------
    n_components : int
        The number of components K.

    n_features : int
        The number of features d.

    precisions : ndarray
        The precisions, computed from ``precisions_cholesky``; of the same shape as
        ``covariances``.

    Examples
    --------
    >>> import numpy as np
    >>> from streamgmm import MixtureParams
    >>> params = MixtureParams.from_covariances(
    ...     np.array([0.5, 0.5]), np.array([[0.0, 0.0], [4.0, 4.0]]), np.array([1.0, 1.0]), "spherical"
    ... )
    >>> params.n_components, params.n_features, params.n_parameters()
    (2, 2, 7)
    >>> params.log_likelihood(np.array([[0.0, 0.0], [2.0, 2.0]])).round(3)
    array([-2.531, -5.838])
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
        """Build the parameters from covariances, computing their precision Cholesky factors.

        Parameters
        ----------
        weights : ndarray of shape (n_components,)
            The weight of each component.

        means : ndarray of shape (n_components, n_features)
            The mean of each component.

        covariances : ndarray
            The covariances, of the shape ``covariance_type`` gives them (see the class).

        covariance_type : {'full', 'tied', 'diag', 'spherical'}
            The form of the covariances.

        Returns
        -------
        params : MixtureParams
            The parameters, with ``precisions_cholesky`` computed from ``covariances``.

        Raises
        ------
        numpy.linalg.LinAlgError
            If a covariance is not positive definite (a variance is not positive).

        Examples
        --------
        >>> import numpy as np
        >>> from streamgmm import MixtureParams
        >>> params = MixtureParams.from_covariances(
        ...     np.array([1.0]), np.zeros((1, 2)), np.array([[[2.0, 0.0], [0.0, 0.5]]]), "full"
        ... )
        >>> params.precisions
        array([[[0.5, 0. ],
                [0. , 2. ]]])
        """
        prec_chol = cov.precisions_cholesky(covariances, covariance_type)
        return cls(weights, means, covariances, prec_chol, covariance_type)

    @classmethod
    def from_precisions(
        cls, weights: np.ndarray, means: np.ndarray, precisions: np.ndarray, covariance_type: str
    ) -> MixtureParams:
        """Build the parameters from precisions (inverse covariances).

        The covariances are the precisions' pseudo-inverses, and the precision Cholesky factors
        are computed from the precisions directly.

        Parameters
        ----------
        weights : ndarray of shape (n_components,)
            The weight of each component.

        means : ndarray of shape (n_components, n_features)
            The mean of each component.

        precisions : ndarray
            The precisions, of the shape ``covariance_type`` gives the covariances (see the
            class).

        covariance_type : {'full', 'tied', 'diag', 'spherical'}
            The form of the precisions.

        Returns
        -------
        params : MixtureParams
            The parameters, with ``covariances`` and ``precisions_cholesky`` computed from
            ``precisions``.

        Examples
        --------
        >>> import numpy as np
        >>> from streamgmm import MixtureParams
        >>> params = MixtureParams.from_precisions(
        ...     np.array([1.0]), np.zeros((1, 2)), np.array([[[0.5, 0.0], [0.0, 2.0]]]), "full"
        ... )
        >>> params.covariances
        array([[[2. , 0. ],
                [0. , 0.5]]])
        """
        prec_chol = cov.precisions_cholesky_from_precisions(precisions, covariance_type)
        covariances = cov.covariances_from_precisions(precisions, covariance_type)
        return cls(weights, means, covariances, prec_chol, covariance_type)

    @property
    def n_components(self) -> int:
        """The number of components K."""
        return self.means.shape[0]

    @property
    def n_features(self) -> int:
        """The number of features d."""
        return self.means.shape[1]

    @property
    def precisions(self) -> np.ndarray:
        """The precisions (inverse covariances), of the same shape as ``covariances``."""
        return cov.precisions_from_cholesky(self.precisions_cholesky, self.covariance_type)

    def n_parameters(self) -> int:
        """Count the free parameters of the mixture, as scikit-learn's ``GaussianMixture``.

        The covariance parameters, K * d means and K - 1 weights: the number p in
        ``BIC = -2 log L + p log N``.

        Returns
        -------
        n_parameters : int
            The number of free parameters.

        Examples
        --------
        >>> import numpy as np
        >>> from streamgmm import MixtureParams
        >>> covariances = np.stack([np.eye(3)] * 2)
        >>> MixtureParams.from_covariances(np.full(2, 0.5), np.zeros((2, 3)), covariances, "full").n_parameters()
        19
        """
        k, d = self.means.shape
        return cov.n_covariance_parameters(k, d, self.covariance_type) + k * d + k - 1

    def weighted_log_prob(self, X: np.ndarray) -> np.ndarray:
        """Compute the weighted log density of each record under each component.

        ``log pi_k + log N(x_i | mu_k, Sigma_k)``; a component of weight zero gives ``-inf``.

        Parameters
        ----------
        X : ndarray of shape (n_records, n_features)
            The records.

        Returns
        -------
        weighted_log_prob : ndarray of shape (n_records, n_components)
            The log of each component's weight times its density at each record.

        Examples
        --------
        >>> import numpy as np
        >>> from streamgmm import MixtureParams
        >>> params = MixtureParams.from_covariances(
        ...     np.array([0.5, 0.5]), np.array([[0.0, 0.0], [4.0, 4.0]]), np.array([1.0, 1.0]), "spherical"
        ... )
        >>> params.weighted_log_prob(np.array([[0.0, 0.0], [2.0, 2.0]])).round(3)
        array([[ -2.531, -18.531],
               [ -6.531,  -6.531]])
        """
        with np.errstate(divide="ignore"):
            log_weights = np.log(self.weights)
        return cov.log_gaussian_prob(X, self.means, self.precisions_cholesky, self.covariance_type) + log_weights

    def e_step(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Run the E-step: each record's log-likelihood and responsibilities.

        Both come from :meth:`weighted_log_prob` by log-sum-exp; each row of responsibilities
        is renormalised to sum to one.

        Parameters
        ----------
        X : ndarray of shape (n_records, n_features)
            The records.

        Returns
        -------
        log_likelihood : ndarray of shape (n_records,)
            The log density of each record under the mixture.

        resp : ndarray of shape (n_records, n_components)
            The posterior probability of each component given each record.

        Examples
        --------
        >>> import numpy as np
        >>> from streamgmm import MixtureParams
        >>> params = MixtureParams.from_covariances(
        ...     np.array([0.5, 0.5]), np.array([[0.0, 0.0], [4.0, 4.0]]), np.array([1.0, 1.0]), "spherical"
        ... )
        >>> log_likelihood, resp = params.e_step(np.array([[0.0, 0.0], [2.0, 2.0]]))
        >>> resp.round(3)
        array([[1. , 0. ],
               [0.5, 0.5]])
        """
        weighted = self.weighted_log_prob(X)
        if weighted.size == 0:
            return _logsumexp_rows(weighted), weighted
        # One exponentiation serves both: exp(w - peak) per record, its total gives the
        # log-likelihood and its share each responsibility (rows sum to one to rounding, however
        # far the record is from every component).
        shares, peak, total = _shifted_exp(weighted)
        with np.errstate(divide="ignore"):
            log_norm = np.log(total) + peak
        shares /= total
        return log_norm, shares.T

    def log_likelihood(self, X: np.ndarray) -> np.ndarray:
        """Compute the log density of each record under the mixture.

        The first result of :meth:`e_step`, without the responsibilities.

        Parameters
        ----------
        X : ndarray of shape (n_records, n_features)
            The records.

        Returns
        -------
        log_likelihood : ndarray of shape (n_records,)
            The log density of each record.

        Examples
        --------
        >>> import numpy as np
        >>> from streamgmm import MixtureParams
        >>> params = MixtureParams.from_covariances(np.array([1.0]), np.zeros((1, 1)), np.array([1.0]), "spherical")
        >>> params.log_likelihood(np.array([[0.0]])).round(4)
        array([-0.9189])
        """
        return _logsumexp_rows(self.weighted_log_prob(X))

    def fingerprint(self) -> str:
        """Compute a SHA-256 digest of the parameters.

        The digest covers the covariance type and the bytes of the weights, means and
        covariances (as little-endian float64), so it is equal for the same model whatever
        file it came from.

        Returns
        -------
        fingerprint : str
            The digest, as 64 hexadecimal digits.

        Examples
        --------
        >>> import numpy as np
        >>> from streamgmm import MixtureParams
        >>> params = MixtureParams.from_covariances(np.array([1.0]), np.zeros((1, 1)), np.array([1.0]), "spherical")
        >>> same = MixtureParams.from_precisions(np.array([1.0]), np.zeros((1, 1)), np.array([1.0]), "spherical")
        >>> len(params.fingerprint()), params.fingerprint() == same.fingerprint()
        (64, True)
        """
        digest = hashlib.sha256(self.covariance_type.encode())
        for array in (self.weights, self.means, self.covariances):
            digest.update(np.ascontiguousarray(array, dtype="<f8").tobytes())
        return digest.hexdigest()

    def is_finite(self) -> bool:
        """Whether every weight, mean, covariance and precision Cholesky factor is finite.

        Returns
        -------
        finite : bool
            True if no parameter is NaN or infinite.
        """
        return all(
            np.all(np.isfinite(a)) for a in (self.weights, self.means, self.covariances, self.precisions_cholesky)
        )


def _logsumexp_rows(a: np.ndarray) -> np.ndarray:
    """log sum_k exp(a_ik) per row, as scipy's ``logsumexp(a, axis=1)`` computes it (the same
    max-shifted formula) without its generic-array overhead, which costs more than the sum."""
    if a.shape[0] == 0 or a.shape[1] == 0:
        from scipy.special import logsumexp

        return logsumexp(a, axis=1)
    _, peak, total = _shifted_exp(a)
    with np.errstate(divide="ignore"):
        return np.log(total) + peak


def _shifted_exp(a: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``exp(a - peak)`` as a (K, n) array, each record's (finite) peak, and the totals over
    components. Transposed, so that the max and sum over a few components are vector operations
    across records (reducing along short rows costs several times more)."""
    t = np.array(a.T, order="C")  # a copy: the caller's array is not to be changed
    peak = t.max(axis=0)
    # A row of -inf (every weight zero) keeps -inf; a +inf entry makes the row +inf (nan below).
    finite_peak = np.where(np.isfinite(peak), peak, 0.0)
    t -= finite_peak
    with np.errstate(under="ignore"):
        np.exp(t, out=t)
    return t, finite_peak, t.sum(axis=0)
