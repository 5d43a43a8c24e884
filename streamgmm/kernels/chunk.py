"""One chunk's E-step: its sufficient statistics and each record's log-likelihood.

The dispatch by covariance type to the kernels: full covariances to
:func:`streamgmm.kernels.quadratic.chunk_statistics` (fused in C where it was built, else two
matrix products); diag, spherical and tied to the same fused C kernel over their own features
(:mod:`streamgmm.kernels.expansion`). Without the fused kernel (or for tied parameters that need
the direct form) they take the direct form, :meth:`MixtureParams.e_step` and
:meth:`SufficientStatistics.from_responsibilities`.

Examples
--------
>>> import numpy as np
>>> from streamgmm import MixtureParams
>>> params = MixtureParams.from_covariances(
...     np.array([0.5, 0.5]), np.array([[0.0, 0.0], [4.0, 4.0]]), np.array([1.0, 1.0]), "spherical"
... )
>>> X = np.array([[-1.0, 0.0], [1.0, 0.0], [3.0, 4.0], [5.0, 4.0]])
>>> stats, log_likelihood = chunk_statistics(X, params, shift=X.mean(axis=0))
>>> stats.counts.round(3), log_likelihood.round(3)
(array([2., 2.]), array([-3.031, -3.031, -3.031, -3.031]))
"""

from __future__ import annotations

import numpy as np

from streamgmm.kernels import quadratic
from streamgmm.kernels.expansion import expansion
from streamgmm.mixture.params import MixtureParams
from streamgmm.mixture.statistics import SufficientStatistics


def chunk_statistics(
    X: np.ndarray, params: MixtureParams, shift: np.ndarray, dtype: np.dtype | type = np.float64
) -> tuple[SufficientStatistics, np.ndarray]:
    """Run the E-step on a chunk: its statistics and each record's log-likelihood.

    Parameters
    ----------
    X : ndarray of shape (n_records, n_features)
        The records.

    params : MixtureParams
        The parameters whose responsibilities weigh the records.

    shift : ndarray of shape (n_features,)
        The point the sums are taken about.

    dtype : numpy dtype, default=np.float64
        The kernels' precision: ``np.float32`` computes in single precision, with the sums
        still in float64. The direct form (no fused kernel) always computes in float64.

    Returns
    -------
    stats : SufficientStatistics
        The chunk's statistics, with its total log-likelihood.

    log_likelihood : ndarray of shape (n_records,)
        The log density of each record under ``params``.

    Examples
    --------
    >>> import numpy as np
    >>> from streamgmm import MixtureParams
    >>> params = MixtureParams.from_covariances(np.array([1.0]), np.zeros((1, 1)), np.ones((1, 1)), "diag")
    >>> stats, log_likelihood = chunk_statistics(np.array([[1.0], [-1.0]]), params, np.zeros(1))
    >>> stats.counts, stats.second, log_likelihood.round(4)
    (array([2.]), array([[2.]]), array([-1.4189, -1.4189]))
    """
    covariance_type = params.covariance_type
    n, d = X.shape
    if covariance_type == "full":
        counts, sums, second, log_norm = quadratic.chunk_statistics(X, params, shift, dtype)
    else:
        fused = quadratic.fused_kernel_enabled() and n > 0
        inputs = expansion(params, shift, dtype) if fused else None
        if inputs is None:
            log_norm, resp = params.e_step(X)
            stats = SufficientStatistics.from_responsibilities(X, resp, shift, covariance_type, float(log_norm.sum()))
            return stats, log_norm
        S, log_norm, _, shared_second = inputs.run(X, shift)
        counts, sums = S[0], np.ascontiguousarray(S[1 : d + 1].T)
        if covariance_type == "tied":
            # Responsibilities of a record sum to one, so the components' moments add up to u'u.
            second = shared_second
        else:
            second = np.ascontiguousarray(S[d + 1 :].T)
    stats = SufficientStatistics(covariance_type, shift, counts, sums, second, float(n), float(log_norm.sum()))
    return stats, log_norm
