"""Scoring a chunk: each record's log-likelihood and responsibilities under fixed parameters.

The read-only half of the E-step, for ``predict_proba``, ``score_samples``, ``score`` and
assignment: no statistics are summed. Every covariance type goes through the fused C kernel
(:mod:`streamgmm.kernels.expansion`), which writes the responsibilities instead of summing
statistics, with the records centred about the centroid of the means; without the kernel (or
for tied parameters that need the direct form), through :meth:`MixtureParams.e_step`.

Examples
--------
>>> import numpy as np
>>> from streamgmm.mixture.params import MixtureParams
>>> from streamgmm.kernels.scoring import score_chunk
>>> params = MixtureParams.from_covariances(
...     np.array([0.5, 0.5]), np.array([[0.0, 0.0], [4.0, 4.0]]), np.array([1.0, 1.0]), "spherical")
>>> log_norm, resp = score_chunk(np.array([[0.0, 0.0], [2.0, 2.0]]), params)
>>> log_norm.round(3), resp.round(3)
(array([-2.531, -5.838]), array([[1. , 0. ],
       [0.5, 0.5]]))
"""

from __future__ import annotations

import numpy as np

from streamgmm.kernels import quadratic
from streamgmm.kernels.expansion import expansion
from streamgmm.mixture.params import MixtureParams


def score_chunk(
    X: np.ndarray, params: MixtureParams, dtype: np.dtype | type = np.float64
) -> tuple[np.ndarray, np.ndarray]:
    """Compute each record's log-likelihood and responsibilities under ``params``.

    Parameters
    ----------
    X : ndarray of shape (n_records, n_features)
        The records.

    params : MixtureParams
        The mixture, of any covariance type.

    dtype : numpy dtype, default=np.float64
        The precision of the computation; ``np.float32`` returns float32 responsibilities.

    Returns
    -------
    log_norm : ndarray of shape (n_records,)
        The log density of each record under the mixture, in float64.

    resp : ndarray of shape (n_records, n_components)
        The posterior probability of each component given each record, in ``dtype``.

    Examples
    --------
    >>> import numpy as np
    >>> from streamgmm.mixture.params import MixtureParams
    >>> params = MixtureParams.from_covariances(np.array([1.0]), np.zeros((1, 1)), np.array([1.0]), "spherical")
    >>> log_norm, resp = score_chunk(np.array([[0.0]]), params)
    >>> log_norm.round(4), resp
    (array([-0.9189]), array([[1.]]))
    """
    X = np.asarray(X)
    dtype = np.dtype(dtype)
    inputs = None
    if quadratic.fused_kernel_enabled() and X.shape[0] > 0:
        # About the means' centroid: each component's expansion is then exact near its records.
        shift = params.means.mean(axis=0)
        inputs = expansion(params, shift, dtype)
    if inputs is None:
        log_norm, resp = params.e_step(np.asarray(X, dtype=np.float64))
        return np.asarray(log_norm, dtype=np.float64), np.asarray(resp, dtype=dtype)
    _, log_norm, resp, _ = inputs.run(X, shift, scoring=True)
    return log_norm, resp
