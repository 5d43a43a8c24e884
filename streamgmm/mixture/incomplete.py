"""EM for records with missing features (Ghahramani and Jordan, 1994): the exact E-step.

A missing feature is NaN. Under component k with mean mu and covariance S, a record's observed
features o have the marginal density N(x_o | mu_o, S_oo), which gives its log-likelihood and
responsibilities; its missing features m have the conditional mean
``mu_m + S_mo S_oo^-1 (x_o - mu_o)`` and covariance ``S_mm - S_mo S_oo^-1 S_om``. The
statistics add, for each record and component, its responsibility times the completed record
(the conditional mean in place of the missing features) and, in the second moments, the
conditional covariance on the missing block: the expectations the M-step needs.

Full and tied covariances group the records by missingness pattern, so that each (pattern,
component) costs one small Cholesky factorisation, not one per record: of the precision's
missing block P_mm, whose inverse is the conditional covariance (the same moments as above,
with |m| x |m| factorisations where S_oo would take |o| x |o|). A pattern shared by many
records is computed on its own with matrix products; rare ones are pooled by their number of
observed features, each record gathering its pattern's factors. For diag and spherical
covariances the features are independent given the component: the marginal is the product over
the observed features and the conditional is the component's own mean and variance, so no
grouping or solve is needed.

A record with no observed feature has no density: its log-likelihood and responsibilities are
NaN, and it adds nothing to the statistics (nor to their ``n_records``).

Examples
--------
>>> import numpy as np
>>> from streamgmm import MixtureParams
>>> params = MixtureParams.from_covariances(
...     np.array([1.0]), np.zeros((1, 2)), np.array([[[1.0, 0.5], [0.5, 1.0]]]), "full"
... )
>>> stats, log_norm = incomplete_statistics(np.array([[2.0, np.nan]]), params, np.zeros(2))
>>> stats.sums, stats.second[0, 1, 1].round(6), log_norm.round(4)
(array([[2., 1.]]), np.float64(1.75), array([-2.9189]))
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

import numpy as np

from streamgmm.mixture import covariance as cov
from streamgmm.mixture.params import MixtureParams
from streamgmm.mixture.statistics import SufficientStatistics

# A block of records' work arrays stay under this many floats (a few megabytes).
_BLOCK_ELEMENTS = 1 << 19
# A pattern of at least this many records is computed on its own, its factors shared by them all
# (matrix products); rarer ones are pooled (each record gathers its factors, a few kB each).
SHARED_PATTERN_ROWS = 64


def complete_rows(X: np.ndarray) -> np.ndarray:
    """Find the records with no missing (NaN) feature.

    Parameters
    ----------
    X : ndarray of shape (n_records, n_features)
        The records.

    Returns
    -------
    complete : ndarray of bool, shape (n_records,)
        True for a record whose features are all observed.

    Examples
    --------
    >>> import numpy as np
    >>> complete_rows(np.array([[1.0, 2.0], [np.nan, 0.0]]))
    array([ True, False])
    """
    # One sum first: NaN propagates, so a complete chunk costs a single pass and no mask.
    if X.dtype.kind != "f" or not np.isnan(X.sum()):
        return np.ones(X.shape[0], dtype=bool)
    return ~np.isnan(X).any(axis=1)


def missingness_patterns(observed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Group records by which of their features are observed.

    Parameters
    ----------
    observed : ndarray of bool, shape (n_records, n_features)
        True where a feature is observed.

    Returns
    -------
    patterns : ndarray of bool, shape (n_patterns, n_features)
        The distinct rows of ``observed``.

    inverse : ndarray of int, shape (n_records,)
        The pattern of each record: ``patterns[inverse]`` equals ``observed``.

    Examples
    --------
    >>> import numpy as np
    >>> patterns, inverse = missingness_patterns(np.array([[True, False], [True, True], [True, False]]))
    >>> patterns.astype(int).tolist(), inverse.tolist()
    ([[1, 0], [1, 1]], [0, 1, 0])
    """
    observed = np.asarray(observed, dtype=bool)
    if observed.shape[0] == 0:
        return np.empty((0, observed.shape[1]), dtype=bool), np.empty(0, dtype=np.intp)
    # 64 features a word: np.unique then sorts integers (one per record up to 64 features),
    # where sorting rows of booleans takes several times longer.
    n, d = observed.shape
    words = -(-d // 64)
    packed = np.zeros((n, 8 * words), dtype=np.uint8)
    packed[:, : -(-d // 8)] = np.packbits(observed, axis=1)
    keys = packed.view(np.uint64)
    if words == 1:
        _, first, inverse = np.unique(keys[:, 0], return_index=True, return_inverse=True)
    else:
        _, first, inverse = np.unique(keys, axis=0, return_index=True, return_inverse=True)
    return observed[first], inverse.reshape(-1)


class _Block(NamedTuple):
    """Records of one or more patterns with the same number of observed features: their rows,
    each record's pattern among ``obs`` and ``mis`` (the observed and missing feature indices, one row
    per pattern, ascending)."""

    rows: np.ndarray
    pattern: np.ndarray
    obs: np.ndarray
    mis: np.ndarray


def _blocks(observed: np.ndarray, k: int, factors: int) -> Iterator[_Block]:
    """Yield blocks of records: a pattern of ``SHARED_PATTERN_ROWS`` records or more on its own
    (its factors shared by every record), rarer patterns pooled by their number of observed
    features (each record gathering its pattern's factor, one of ``factors`` per pattern), so
    that a chunk of nearly unique patterns costs a few vectorised calls per block, not several
    per record."""
    patterns, inverse = missingness_patterns(observed)
    n_patterns, d = patterns.shape
    if n_patterns == 0:
        return
    sizes = np.bincount(inverse, minlength=n_patterns)
    common = sizes >= SHARED_PATTERN_ROWS
    group = np.where(common, np.arange(n_patterns), n_patterns + patterns.sum(axis=1))
    order = np.lexsort((inverse, group[inverse]))
    row_group = group[inverse[order]]
    cuts = np.flatnonzero(np.diff(row_group)) + 1
    for start, stop in zip(np.concatenate([[0], cuts]), np.concatenate([cuts, [order.size]])):
        # A record's work arrays: (K, d) completed; pooled, also its pattern's (|m|, |o|) factor.
        n_observed = row_group[start] - n_patterns
        gathered = 0 if n_observed < 0 else factors * n_observed * (d - n_observed)
        block = max(1, _BLOCK_ELEMENTS // max(1, k * d + gathered))
        for first in range(start, stop, block):
            rows = order[first : min(first + block, stop)]
            present, pattern = np.unique(inverse[rows], return_inverse=True)
            chosen = patterns[present]
            n_observed = int(chosen[0].sum())
            obs = np.nonzero(chosen)[1].reshape(present.size, n_observed)
            mis = np.nonzero(~chosen)[1].reshape(present.size, d - n_observed)
            yield _Block(rows, pattern.reshape(-1), obs, mis)


class _Precisions(NamedTuple):
    """The precisions P = U U' (K, d, d), their upper Cholesky factors U and the covariances'
    log-determinants (K,), as (1, d, d) and (1,) for tied: one factorisation serves every component."""

    P: np.ndarray
    U: np.ndarray
    log_det: np.ndarray


def _precisions(params: MixtureParams) -> _Precisions:
    U, P = params.precisions_cholesky, params.precisions
    if params.covariance_type == "tied":
        U, P = U[None], P[None]
    return _Precisions(P, U, -2.0 * np.log(np.diagonal(U, axis1=-2, axis2=-1)).sum(axis=-1))


def _log_weights(params: MixtureParams) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return np.log(params.weights)


def _pattern_terms(
    X: np.ndarray, block: _Block, params: MixtureParams, precisions: _Precisions
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """For a block of records (full or tied): the completed records minus each component's mean
    (K, n, d), the weighted log-densities of the observed features (n, K) and the patterns'
    conditional covariances of the missing ones (K or 1, n_patterns, |m|, |m|), None if none.

    From the precision P: the missing features' conditional covariance is P_mm^-1 and their
    conditional mean mu_m - P_mm^-1 P_mo (x_o - mu_o), one |m| x |m| factorisation per
    (pattern, component); the observed features' Mahalanobis distance is that of the completed
    record under P (the minimum over the missing values, so a sum of squares, without
    cancellation), and log det S_oo = log det S + log det P_mm."""
    rows, pattern, obs, mis = block
    k, d = params.n_components, params.n_features
    single = obs.shape[0] == 1  # one factor per component for the whole block: matrix products
    Xo = X[rows[:, None], obs[pattern]]
    where = np.arange(rows.size)[:, None]
    delta = np.empty((k, rows.size, d))
    delta_o = Xo[None] - (params.means[:, None, obs[0]] if single else params.means[:, obs[pattern]])
    delta[:, where, obs[pattern]] = delta_o
    log_det = precisions.log_det[:, None]
    conditional_covariances = None
    if mis.shape[1]:
        P = precisions.P
        R_inv = np.linalg.inv(np.linalg.cholesky(P[:, mis[:, :, None], mis[:, None, :]]))
        conditional_covariances = R_inv.transpose(0, 1, 3, 2) @ R_inv
        B = conditional_covariances @ P[:, mis[:, :, None], obs[:, None, :]]  # (K or 1, patterns, |m|, |o|)
        if single:
            delta_m = -(delta_o @ B[:, 0].transpose(0, 2, 1))
        else:
            delta_m = -(B[:, pattern] @ delta_o[..., None])[..., 0]
        delta[:, where, mis[pattern]] = delta_m
        log_det = log_det - 2.0 * np.log(np.diagonal(R_inv, axis1=-2, axis2=-1)).sum(axis=-1)
    z = delta @ precisions.U
    log_prob = (
        _log_weights(params)[:, None]
        - 0.5 * obs.shape[1] * cov.LOG_2PI
        - 0.5 * log_det[:, pattern]  # a block without missing features has one pattern
        - 0.5 * np.einsum("knd,knd->kn", z, z)
    )
    return delta, log_prob.T, conditional_covariances


def _diagonal_variances(params: MixtureParams) -> np.ndarray:
    c = params.covariances
    return np.repeat(c[:, None], params.n_features, axis=1) if params.covariance_type == "spherical" else c


def _diagonal_log_prob(X: np.ndarray, observed: np.ndarray, params: MixtureParams) -> np.ndarray:
    """Weighted log-densities of the observed features (n, K) for diag and spherical."""
    variances = _diagonal_variances(params)
    k, d = variances.shape
    filled = np.where(observed, X, 0.0)
    weight = observed.astype(np.float64)
    # The normalising terms of the observed features: one product; the distances in blocks of
    # (K, n, d), each unobserved entry's (finite) difference multiplied by a weight of 0.
    log_prob = _log_weights(params) - 0.5 * (weight @ (np.log(variances) + cov.LOG_2PI).T)
    factors = 1.0 / np.sqrt(variances)[:, None, :]
    block = max(1, _BLOCK_ELEMENTS // max(1, k * d))
    for start in range(0, X.shape[0], block):
        part = slice(start, start + block)
        scaled = (filled[None, part] - params.means[:, None, :]) * factors
        scaled *= weight[None, part]
        log_prob[part] -= 0.5 * np.einsum("knd,knd->nk", scaled, scaled)
    return log_prob


def _normalise(log_prob: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Log-sum-exp over components (max-shifted, as scipy's, without its per-call overhead,
    which exceeds a small pattern's work) and the responsibilities."""
    peak = log_prob.max(axis=1) if log_prob.shape[1] else np.full(log_prob.shape[0], -np.inf)
    peak = np.where(np.isfinite(peak), peak, 0.0)
    shares = np.exp(log_prob - peak[:, None])
    total = shares.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.log(total) + peak, shares / total[:, None]


def marginal_e_step(X: np.ndarray, params: MixtureParams) -> tuple[np.ndarray, np.ndarray]:
    """Run the E-step on records with missing features, from their observed features.

    Parameters
    ----------
    X : ndarray of shape (n_records, n_features)
        The records, NaN where a feature is missing.

    params : MixtureParams
        The mixture, of any covariance type.

    Returns
    -------
    log_norm : ndarray of shape (n_records,)
        The log marginal density of each record's observed features under the mixture; NaN
        for a record with nothing observed.

    resp : ndarray of shape (n_records, n_components)
        The posterior probability of each component given the observed features; NaN for a
        record with nothing observed.

    Examples
    --------
    >>> import numpy as np
    >>> from streamgmm import MixtureParams
    >>> params = MixtureParams.from_covariances(
    ...     np.array([0.5, 0.5]), np.array([[0.0, 0.0], [4.0, 4.0]]), np.array([1.0, 1.0]), "spherical"
    ... )
    >>> log_norm, resp = marginal_e_step(np.array([[0.0, np.nan], [np.nan, np.nan]]), params)
    >>> log_norm.round(4), resp[0].round(4).tolist(), bool(np.isnan(resp[1]).all())
    (array([-1.6118,     nan]), [0.9997, 0.0003], True)
    """
    X = np.asarray(X, dtype=np.float64)
    n, k = X.shape[0], params.n_components
    observed = ~np.isnan(X)
    log_prob = np.full((n, k), np.nan)
    some = observed.any(axis=1)
    if params.covariance_type in ("diag", "spherical"):
        log_prob[some] = _diagonal_log_prob(X[some], observed[some], params)
    else:
        rows_with = np.flatnonzero(some)
        precisions = _precisions(params)
        for block in _blocks(observed[rows_with], k, precisions.P.shape[0]):
            block = block._replace(rows=rows_with[block.rows])
            log_prob[block.rows] = _pattern_terms(X, block, params, precisions)[1]
    return _normalise(log_prob)


def incomplete_statistics(
    X: np.ndarray, params: MixtureParams, shift: np.ndarray, weights: np.ndarray | None = None
) -> tuple[SufficientStatistics, np.ndarray]:
    """Run the exact E-step on records with missing features: statistics and log-likelihoods.

    Each record's responsibilities come from the marginal density of its observed features;
    its missing features enter the sums as their conditional means given the observed ones
    and the component, and the second moments also take the conditional covariance on the
    missing block. Complete records are handled too (their conditional terms are empty), but
    :func:`streamgmm.kernels.chunk.chunk_statistics` sends them to the faster kernels.

    Parameters
    ----------
    X : ndarray of shape (n_records, n_features)
        The records, NaN where a feature is missing.

    params : MixtureParams
        The parameters whose responsibilities weigh the records.

    shift : ndarray of shape (n_features,)
        The point the sums are taken about.

    weights : ndarray of shape (n_records,), optional
        Non-negative record weights: each scales its record's responsibilities. None counts
        every record once.

    Returns
    -------
    stats : SufficientStatistics
        The statistics, in float64, with ``n_records`` the weight of the records that have an
        observed feature and ``log_likelihood`` the weighted sum of their log-likelihoods.

    log_norm : ndarray of shape (n_records,)
        The log marginal density of each record's observed features (unweighted); NaN for a
        record with nothing observed.

    Examples
    --------
    >>> import numpy as np
    >>> from streamgmm import MixtureParams
    >>> params = MixtureParams.from_covariances(
    ...     np.array([1.0]), np.zeros((1, 2)), np.array([[1.0, 4.0]]), "diag"
    ... )
    >>> X = np.array([[1.0, np.nan], [np.nan, 2.0]])
    >>> stats, log_norm = incomplete_statistics(X, params, np.zeros(2), weights=np.array([2.0, 1.0]))
    >>> stats.counts, stats.sums, stats.second, stats.n_records
    (array([3.]), array([[2., 2.]]), array([[ 3., 12.]]), 3.0)
    """
    X = np.asarray(X, dtype=np.float64)
    shift = np.asarray(shift, dtype=np.float64)
    covariance_type = params.covariance_type
    n, d = X.shape
    k = params.n_components
    observed = ~np.isnan(X)
    some = observed.any(axis=1) if d else np.zeros(n, dtype=bool)
    w = np.ones(n) if weights is None else np.asarray(weights, dtype=np.float64)
    log_norm = np.full(n, np.nan)
    stats = SufficientStatistics.zeros(k, d, covariance_type, shift)
    if not some.any():
        return stats, log_norm
    if covariance_type in ("diag", "spherical"):
        counts, sums, second = _diagonal_statistics(X[some], observed[some], w[some], params, shift, log_norm, some)
    else:
        counts, sums, second = _pattern_statistics(X, observed, w, params, shift, log_norm, some)
    present = w[some]
    # A record of weight zero adds nothing, even where its log-likelihood is -inf.
    total = float(np.where(present > 0, present * log_norm[some], 0.0).sum())
    return SufficientStatistics(covariance_type, shift, counts, sums, second, float(present.sum()), total), log_norm


def _diagonal_statistics(
    X: np.ndarray,
    observed: np.ndarray,
    w: np.ndarray,
    params: MixtureParams,
    shift: np.ndarray,
    log_norm: np.ndarray,
    some: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Diag and spherical: a missing feature's conditional mean and variance are the component's."""
    row_norm, resp = _normalise(_diagonal_log_prob(X, observed, params))
    log_norm[some] = row_norm
    rw = resp * w[:, None]
    u = np.where(observed, X - shift, 0.0)
    missing = rw.T @ (~observed).astype(np.float64)  # (K, d): the weight of records missing each feature
    centred_means = params.means - shift
    sums = rw.T @ u + missing * centred_means
    second = rw.T @ (u * u) + missing * (centred_means**2 + _diagonal_variances(params))
    return rw.sum(axis=0), sums, second


def _pattern_statistics(
    X: np.ndarray,
    observed: np.ndarray,
    w: np.ndarray,
    params: MixtureParams,
    shift: np.ndarray,
    log_norm: np.ndarray,
    some: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Full and tied: per block, the completed records (K, n, d) and conditional covariances."""
    k, d = params.n_components, params.n_features
    tied = params.covariance_type == "tied"
    counts, sums = np.zeros(k), np.zeros((k, d))
    second = np.zeros((d, d)) if tied else np.zeros((k, d, d))
    precisions = _precisions(params)
    rows_with = np.flatnonzero(some)
    for block in _blocks(observed[rows_with], k, precisions.P.shape[0]):
        rows = rows_with[block.rows]
        block = block._replace(rows=rows)
        delta, log_prob, conditional_covariances = _pattern_terms(X, block, params, precisions)
        row_norm, resp = _normalise(log_prob)
        log_norm[rows] = row_norm
        rw = (resp * w[rows, None]).T  # (K, n)
        U = delta + (params.means - shift)[:, None, :]  # the completed records about the shift
        counts += rw.sum(axis=1)
        sums += (rw[:, None, :] @ U)[:, 0, :]
        moments = (U * rw[:, :, None]).transpose(0, 2, 1) @ U
        second += moments.sum(axis=0) if tied else moments
        if conditional_covariances is not None:
            _add_conditional_covariances(second, rw, block, conditional_covariances)
    return counts, sums, second


def _add_conditional_covariances(second: np.ndarray, rw: np.ndarray, block: _Block, C: np.ndarray) -> None:
    """Add each pattern's conditional covariance (K or 1, patterns, |m|, |m|), times the weight
    of its records (rw, (K, n)), on its missing block of ``second``."""
    k, d = rw.shape[0], second.shape[-1]
    n_patterns = block.mis.shape[0]
    if n_patterns == 1:
        weight = rw.sum(axis=1)[:, None]
    else:
        weight = np.stack([np.bincount(block.pattern, rw[j], n_patterns) for j in range(k)])
    cells = (block.mis[:, :, None] * d + block.mis[:, None, :]).reshape(-1)
    if second.ndim == 2:  # tied: the conditional covariance is the same for every component
        added = weight.sum(axis=0)[:, None, None] * C[0]
        second += np.bincount(cells, added.reshape(-1), d * d).reshape(d, d)
        return
    added = (weight[:, :, None, None] * C).reshape(k, -1)
    for j in range(k):
        second[j] += np.bincount(cells, added[j], d * d).reshape(d, d)
