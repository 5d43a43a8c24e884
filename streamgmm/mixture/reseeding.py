"""Re-seeding components whose weight has collapsed.

The rule, applied after every M-step by both algorithms: a component whose weight falls below
``MIN_WEIGHT`` (or whose parameters are not finite) is moved onto the worst-explained record
seen in the current mini-batch (online EM) or pass (batch EM), given the pooled covariance of the
healthy components and a weight of 1/K; its running statistics are replaced by the ones these
parameters imply, so the next M-step keeps it there. The rule is deterministic: no random draw.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from streamgmm.mixture import covariance as cov
from streamgmm.mixture.incomplete import complete_rows
from streamgmm.mixture.params import MixtureParams
from streamgmm.mixture.statistics import SufficientStatistics

MIN_WEIGHT = 1e-6


def collapsed_components(params: MixtureParams) -> np.ndarray:
    k = params.n_components
    bad = params.weights < MIN_WEIGHT
    bad |= ~np.isfinite(params.means).all(axis=1)
    if params.covariance_type != "tied":
        bad |= ~np.isfinite(params.covariances.reshape(k, -1)).all(axis=1)
    return np.flatnonzero(bad)


def _pooled_covariance(params: MixtureParams, healthy: np.ndarray) -> np.ndarray:
    if params.covariance_type == "tied":
        return params.covariances
    w = params.weights[healthy]
    if w.sum() <= 0:
        w = np.ones_like(w)
    w = w / w.sum()
    return np.tensordot(w, params.covariances[healthy], axes=1)


def _lowest(values: np.ndarray, count: int) -> np.ndarray:
    """Indices of the ``count`` smallest values, smallest first, ties in index order: the head
    of a stable argsort, at the cost of a partition (a full sort of every batch is slow)."""
    if count <= 0:
        return np.empty(0, dtype=np.intp)
    if count >= values.shape[0]:
        return np.argsort(values, kind="stable")
    threshold = np.partition(values, count - 1)[count - 1]
    if np.isnan(threshold):  # fewer than count numbers: NaN compares false, the sort puts it last
        return np.argsort(values, kind="stable")[:count]
    candidates = np.flatnonzero(values <= threshold)
    return candidates[np.argsort(values[candidates], kind="stable")[:count]]


def worst_rows(X: np.ndarray, log_norm: np.ndarray, count: int) -> np.ndarray:
    """Find the complete records with the lowest log-likelihood: the candidates for re-seeding.

    A record with a missing feature is never a candidate: a component is moved onto a point.

    Parameters
    ----------
    X : ndarray of shape (n_records, n_features)
        The records, NaN where a feature is missing.

    log_norm : ndarray of shape (n_records,)
        Each record's log-likelihood.

    count : int
        How many records to return at most.

    Returns
    -------
    indices : ndarray of int, shape (min(count, n_complete),)
        The rows of the ``count`` lowest log-likelihoods among the complete records, lowest
        first, ties in row order.

    Examples
    --------
    >>> import numpy as np
    >>> X = np.array([[0.0], [np.nan], [1.0], [2.0]])
    >>> worst_rows(X, np.array([-3.0, -9.0, -5.0, -3.0]), 2)
    array([2, 0])
    """
    worst = _lowest(log_norm, count)
    # When the lowest rows are complete they are the answer: only they need looking at.
    if not np.isnan(X[worst]).any():
        return worst
    rows = np.flatnonzero(complete_rows(X))
    return rows[_lowest(log_norm[rows], count)]


class WorstRecords:
    """Keeps the ``size`` records with the lowest log-likelihood seen so far, worst first."""

    def __init__(self, size: int, n_features: int):
        self.size = size
        self.records = np.empty((0, n_features))
        self.scores = np.empty(0)

    def offer(self, X: np.ndarray, log_likelihood: np.ndarray) -> None:
        """Keep the worst of ``X``'s complete records (an incomplete one is no place for a mean)."""
        take = min(self.size, X.shape[0])
        idx = np.argpartition(log_likelihood, take - 1)[:take] if take < X.shape[0] else np.arange(X.shape[0])
        if np.isnan(X[idx]).any():
            complete = complete_rows(X)
            X, log_likelihood = X[complete], log_likelihood[complete]
            take = min(self.size, X.shape[0])
            idx = np.argpartition(log_likelihood, take - 1)[:take] if take < X.shape[0] else np.arange(X.shape[0])
        scores = np.concatenate([self.scores, log_likelihood[idx]])
        records = np.concatenate([self.records, X[idx]])
        order = np.argsort(scores, kind="stable")[: self.size]
        self.scores, self.records = scores[order], records[order]


def reseed(
    params: MixtureParams,
    stats: SufficientStatistics,
    worst_records: np.ndarray,
    reg_covar: float,
) -> tuple[MixtureParams, SufficientStatistics, list[int]]:
    """Apply the re-seeding rule. Returns the (possibly) new parameters and statistics and the
    indices of the re-seeded components."""
    bad = collapsed_components(params)
    if bad.size == 0 or worst_records.shape[0] == 0:
        return params, stats, []
    bad = bad[: worst_records.shape[0]]
    k = params.n_components
    healthy = np.setdiff1d(np.arange(k), bad)
    if healthy.size == 0:
        healthy = np.arange(k)
    pooled = _pooled_covariance(params, healthy)
    weight = 1.0 / k
    total = max(stats.counts.sum(), np.finfo(np.float64).tiny)

    counts = stats.counts.copy()
    sums = stats.sums.copy()
    second = stats.second.copy()
    for j, comp in enumerate(bad):
        centred = worst_records[j] - stats.shift
        n_new = weight * total
        counts[comp] = n_new
        sums[comp] = n_new * centred
        if params.covariance_type == "tied":
            # The tied second moment is a total over components: add the new one's share.
            second = second + n_new * (np.outer(centred, centred) + pooled)
        else:
            implied = cov.moments_of_parameters(np.ones(1), centred[None], pooled[None], params.covariance_type)
            second[comp] = n_new * implied[0]
    new_stats = replace(stats, counts=counts, sums=sums, second=second)
    return new_stats.to_params(reg_covar), new_stats, [int(c) for c in bad]
