"""One chunk's E-step: its sufficient statistics and each record's log-likelihood.

The dispatch by covariance type to the kernels: full covariances to
:func:`streamgmm.kernels.quadratic.full_statistics` (fused in C where it was built, else two
matrix products); diag, spherical and tied to the same fused C kernel over their own features
(:mod:`streamgmm.kernels.expansion`). Without the fused kernel (or for tied parameters that need
the direct form) they take the direct form, :meth:`MixtureParams.e_step` and
:meth:`SufficientStatistics.from_responsibilities`.

Records with missing (NaN) features take the exact E-step of :mod:`streamgmm.mixture.incomplete`
and the complete ones the kernels above. Record weights are an input of the fused kernel, which
scales each record's responsibilities by its weight before summing them. Where it does not run
(no fused kernel, tied parameters that need the direct form, float32 with weights beyond
``FLOAT32_WEIGHT_RANGE``), weights of a few distinct values (counts) take the unweighted path once per value,
the statistics scaled by the value, and others are scored
(:func:`streamgmm.kernels.scoring.score_chunk`) and their weighted sums taken here.

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
from streamgmm.kernels.scoring import score_chunk
from streamgmm.mixture.incomplete import complete_rows, incomplete_statistics
from streamgmm.mixture.params import MixtureParams
from streamgmm.mixture.statistics import SufficientStatistics

# Without the fused kernel's weight input, record weights of at most this many distinct values
# (counts, typically) take the unweighted path once per value; more are scored and summed with numpy.
MAX_WEIGHT_GROUPS = 32
# The float32 kernel takes weights within this factor of one (the weights a fit hands it are in
# its unit, near one): r w u u' of a block then stays far inside float32's range.
FLOAT32_WEIGHT_RANGE = 2.0**40


def chunk_statistics(
    X: np.ndarray,
    params: MixtureParams,
    shift: np.ndarray,
    dtype: np.dtype | type = np.float64,
    weights: np.ndarray | None = None,
) -> tuple[SufficientStatistics, np.ndarray]:
    """Run the E-step on a chunk: its statistics and each record's log-likelihood.

    Parameters
    ----------
    X : ndarray of shape (n_records, n_features)
        The records, NaN where a feature is missing: such a record's responsibilities come
        from its observed features and its statistics from the conditional expectations of
        the missing ones (:mod:`streamgmm.mixture.incomplete`, computed in float64).

    params : MixtureParams
        The parameters whose responsibilities weigh the records.

    shift : ndarray of shape (n_features,)
        The point the sums are taken about.

    dtype : numpy dtype, default=np.float64
        The kernels' precision: ``np.float32`` computes in single precision, with the sums
        still in float64. The direct form (no fused kernel) always computes in float64.

    weights : ndarray of shape (n_records,), optional
        Non-negative record weights, each scaling its record's responsibilities: a record of
        weight w counts as w records. None counts each record once.

    Returns
    -------
    stats : SufficientStatistics
        The chunk's statistics, with ``n_records`` the records' total weight and
        ``log_likelihood`` their weighted total log-likelihood. A record with nothing
        observed adds nothing to either.

    log_likelihood : ndarray of shape (n_records,)
        The log density of each record (of its observed features) under ``params``,
        unweighted; NaN for a record with nothing observed.

    Examples
    --------
    >>> import numpy as np
    >>> from streamgmm import MixtureParams
    >>> params = MixtureParams.from_covariances(np.array([1.0]), np.zeros((1, 1)), np.ones((1, 1)), "diag")
    >>> stats, log_likelihood = chunk_statistics(np.array([[1.0], [-1.0]]), params, np.zeros(1))
    >>> stats.counts, stats.second, log_likelihood.round(4)
    (array([2.]), array([[2.]]), array([-1.4189, -1.4189]))
    >>> stats, _ = chunk_statistics(np.array([[1.0], [-1.0]]), params, np.zeros(1), weights=np.array([3.0, 0.0]))
    >>> stats.counts, stats.sums, stats.n_records
    (array([3.]), array([[3.]]), 3.0)
    """
    w = None if weights is None else np.asarray(weights, dtype=np.float64)
    if w is None:
        stats, log_norm = _complete_statistics(X, params, shift, dtype)
    else:
        stats, log_norm = _weighted_statistics(X, params, shift, dtype, w)
    # Every path turns a record with a NaN feature into a NaN log-likelihood or NaN sums (whatever
    # its weight): checking those costs n additions where checking X costs a pass over the chunk.
    if not np.isnan(log_norm.sum() + stats.sums.sum()):
        return stats, log_norm
    complete = complete_rows(X)
    if complete.all():
        return stats, log_norm
    stats, log_norm = incomplete_statistics(X[~complete], params, shift, None if w is None else w[~complete])
    if complete.any():
        rows = X[complete]
        if w is None:
            complete_stats, complete_norm = _complete_statistics(rows, params, shift, dtype)
        else:
            complete_stats, complete_norm = _weighted_statistics(rows, params, shift, dtype, w[complete])
        stats = complete_stats + stats
    every = np.empty(X.shape[0])
    every[~complete] = log_norm
    if complete.any():
        every[complete] = complete_norm
    return stats, every


def _weighted_statistics(
    X: np.ndarray, params: MixtureParams, shift: np.ndarray, dtype: np.dtype | type, w: np.ndarray
) -> tuple[SufficientStatistics, np.ndarray]:
    """Complete records with weights: the unweighted statistics scaled when every record has the
    same weight, else the fused kernel's weighted pass where it runs; without it, the unweighted
    path once per distinct weight when there are few (counts, typically), else the records scored
    and the weighted sums taken here."""
    if w.size == 0 or (w == w[0]).all():
        return _grouped_statistics(X, params, shift, dtype, [(float(w[0]) if w.size else 1.0, None)])
    fused = _fused_weighted_statistics(X, params, shift, dtype, w)
    if fused is not None:
        return fused
    groups = _weight_groups(w)
    if groups is not None:
        return _grouped_statistics(X, params, shift, dtype, groups)
    log_norm, resp = score_chunk(X, params, dtype)
    # A record of weight zero adds nothing, even where its log-likelihood is -inf.
    total = float(np.where(w > 0, w * log_norm, 0.0).sum())
    resp = np.asarray(resp, dtype=np.float64)
    stats = SufficientStatistics.from_responsibilities(X, resp, shift, params.covariance_type, total, weights=w)
    return stats, log_norm


def _fused_weighted_statistics(
    X: np.ndarray, params: MixtureParams, shift: np.ndarray, dtype: np.dtype | type, w: np.ndarray
) -> tuple[SufficientStatistics, np.ndarray] | None:
    """The fused kernel's pass with the record weights as its input; None where it does not run."""
    if not quadratic.fused_kernel_enabled() or X.shape[0] == 0:
        return None
    if np.dtype(dtype) == np.float32:
        largest, smallest = w.max(), np.min(w, where=w > 0, initial=np.inf)
        if not (largest <= FLOAT32_WEIGHT_RANGE and smallest >= 1.0 / FLOAT32_WEIGHT_RANGE):
            return None
    inputs = expansion(params, shift, dtype)
    if inputs is None:
        return None
    result = inputs.run(X, shift, weights=w)
    counts, sums, second = _moments(result.S, result.second, params)
    stats = SufficientStatistics(
        params.covariance_type, shift, counts, sums, second, float(w.sum()), result.weighted_log
    )
    return stats, result.log_norm


def _moments(
    S: np.ndarray, shared_second: np.ndarray | None, params: MixtureParams
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(counts, sums, second)`` of the fused kernel's sums ``S`` (p, K) over the features of the
    covariance type's layout (the tied second moment being the kernel's ``shared_second``)."""
    d = params.n_features
    counts, sums = S[0], np.ascontiguousarray(S[1 : d + 1].T)
    if params.covariance_type == "tied":
        # Responsibilities of a record sum to one, so the components' moments add up to u'u.
        return counts, sums, shared_second
    if params.covariance_type != "full":
        return counts, sums, np.ascontiguousarray(S[d + 1 :].T)
    rows, cols = quadratic.upper_triangle(d)
    second = np.empty((params.n_components, d, d))
    second[:, rows, cols] = S[d + 1 :].T
    second[:, cols, rows] = S[d + 1 :].T
    return counts, sums, second


def _weight_groups(w: np.ndarray) -> list[tuple[float, np.ndarray | None]] | None:
    """``(weight, rows)`` for each distinct weight (rows None: every row), or None when there are
    more than ``MAX_WEIGHT_GROUPS``."""
    if w.size == 0 or (w == w[0]).all():
        return [(float(w[0]) if w.size else 1.0, None)]
    values = np.unique(w)
    if values.size > MAX_WEIGHT_GROUPS:
        return None
    return [(float(v), np.flatnonzero(w == v)) for v in values]


def _grouped_statistics(
    X: np.ndarray,
    params: MixtureParams,
    shift: np.ndarray,
    dtype: np.dtype | type,
    groups: list[tuple[float, np.ndarray | None]],
) -> tuple[SufficientStatistics, np.ndarray]:
    """The weighted statistics as the sum over distinct weights of weight times the kernel's."""
    log_norm = np.empty(X.shape[0])
    total = SufficientStatistics.zeros(params.n_components, params.n_features, params.covariance_type, shift)
    for value, rows in groups:
        stats, group_norm = _complete_statistics(X if rows is None else X[rows], params, shift, dtype)
        if rows is None:
            log_norm = group_norm
        else:
            log_norm[rows] = group_norm
        if value > 0:  # a record of weight zero adds nothing, even where its log-likelihood is -inf
            total = total + (stats if value == 1.0 else stats.scaled(value))
    return total, log_norm


def _complete_statistics(
    X: np.ndarray, params: MixtureParams, shift: np.ndarray, dtype: np.dtype | type
) -> tuple[SufficientStatistics, np.ndarray]:
    covariance_type = params.covariance_type
    n, d = X.shape
    if covariance_type == "full":
        counts, sums, second, log_norm = quadratic.full_statistics(X, params, shift, dtype)
    else:
        fused = quadratic.fused_kernel_enabled() and n > 0
        inputs = expansion(params, shift, dtype) if fused else None
        if inputs is None:
            log_norm, resp = params.e_step(X)
            stats = SufficientStatistics.from_responsibilities(X, resp, shift, covariance_type, float(log_norm.sum()))
            return stats, log_norm
        result = inputs.run(X, shift)
        counts, sums, second = _moments(result.S, result.second, params)
        log_norm = result.log_norm
    stats = SufficientStatistics(covariance_type, shift, counts, sums, second, float(n), float(log_norm.sum()))
    return stats, log_norm
