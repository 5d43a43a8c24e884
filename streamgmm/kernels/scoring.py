"""Scoring a chunk: each record's log-likelihood and responsibilities under fixed parameters.

The read-only half of the E-step, for ``predict_proba``, ``score_samples``, ``score`` and
assignment: no statistics are summed. Every covariance type goes through the fused C kernel
(:mod:`streamgmm.kernels.expansion`), which writes the responsibilities instead of summing
statistics, with the records centred about the centroid of the means; without the kernel (or
for tied parameters that need the direct form), through :meth:`MixtureParams.e_step`. Records
with missing (NaN) features are scored from their observed features
(:func:`streamgmm.mixture.incomplete.marginal_e_step`).

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
from streamgmm.mixture.incomplete import complete_rows, marginal_e_step
from streamgmm.mixture.params import MixtureParams


def score_chunk(
    X: np.ndarray, params: MixtureParams, dtype: np.dtype | type = np.float64
) -> tuple[np.ndarray, np.ndarray]:
    """Compute each record's log-likelihood and responsibilities under ``params``.

    Parameters
    ----------
    X : ndarray of shape (n_records, n_features)
        The records, NaN where a feature is missing.

    params : MixtureParams
        The mixture, of any covariance type.

    dtype : numpy dtype, default=np.float64
        The precision of the computation; ``np.float32`` returns float32 responsibilities.

    Returns
    -------
    log_norm : ndarray of shape (n_records,)
        The log density of each record (of its observed features) under the mixture, in
        float64; NaN for a record with nothing observed.

    resp : ndarray of shape (n_records, n_components)
        The posterior probability of each component given each record (its observed
        features), in ``dtype``; NaN for a record with nothing observed.

    Examples
    --------
    >>> import numpy as np
    >>> from streamgmm.mixture.params import MixtureParams
    >>> params = MixtureParams.from_covariances(np.array([1.0]), np.zeros((1, 1)), np.array([1.0]), "spherical")
    >>> log_norm, resp = score_chunk(np.array([[0.0]]), params)
    >>> log_norm.round(4), resp
    (array([-0.9189]), array([[1.]]))
    >>> score_chunk(np.array([[np.nan]]), params)
    (array([nan]), array([[nan]]))
    """
    X = np.asarray(X)
    dtype = np.dtype(dtype)
    log_norm, resp = _score_complete(X, params, dtype)
    # A record with a NaN feature comes out of every kernel with a NaN log-likelihood: only
    # then is X searched for missing features, and the records without any keep their scores.
    if np.isnan(log_norm.sum()):
        incomplete = ~complete_rows(X)
        if incomplete.any():
            log_norm[incomplete], resp[incomplete] = marginal_e_step(X[incomplete], params)
    return log_norm, resp


def _score_complete(X: np.ndarray, params: MixtureParams, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    inputs = None
    if quadratic.fused_kernel_enabled() and X.shape[0] > 0:
        # About the means' centroid: each component's expansion is then exact near its records.
        shift = params.means.mean(axis=0)
        inputs = expansion(params, shift, dtype)
    if inputs is None:
        log_norm, resp = params.e_step(np.asarray(X, dtype=np.float64))
        return np.asarray(log_norm, dtype=np.float64), np.asarray(resp, dtype=dtype)
    result = inputs.run(X, shift, scoring=True)
    return result.log_norm, result.resp
