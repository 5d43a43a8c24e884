"""Novelty: the records no component explains, and a bounded weighted reservoir of them.

A complete record is novel when its squared Mahalanobis distance to every component exceeds the
chi-square quantile ``NOVELTY_QUANTILE`` with d degrees of freedom: it lies outside every
component's 99.9% ellipsoid. The mixture log-density the E-step computed anyway screens the
records first: a record inside component k's ellipsoid has log p(x) >= log pi_k + c_k, so only
records below the log-sum-exp of those bounds need their distances computed. A record with a
missing feature is never novel (its distances are over fewer features and not comparable).

The reservoir keeps a sample of the novel records drawn in proportion to the weight each has in
the running statistics (a record's weight, times its mini-batch's step, times the shrinking of
every later step), by the exponential race of Efraimidis and Spirakis: record i draws
key_i = log E_i - log w_i with E_i ~ Exp(1), and the ``capacity`` smallest keys are kept. The
logs keep the race exact however far the step products fall.

Examples
--------
>>> import numpy as np
>>> from streamgmm import MixtureParams
>>> params = MixtureParams.from_covariances(np.array([1.0]), np.zeros((1, 2)), np.ones(1), "spherical")
>>> X = np.array([[0.0, 0.5], [6.0, 0.0], [np.nan, 9.0]])
>>> novel_rows(X, params.log_likelihood(X), params)
array([False,  True, False])
>>> reservoir = Reservoir.empty(2)
>>> reservoir = reservoir.offered(X[[1]], np.ones(1), log_weight=0.0, rng=np.random.default_rng(0), capacity=10)
>>> reservoir.merged().records, reservoir.offered_weight
(array([[6., 0.]]), 1.0)

References
----------
Efraimidis, P. S. and Spirakis, P. G. (2006). Weighted random sampling with a reservoir.
Information Processing Letters, 97(5), 181-185.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace

import numpy as np

from streamgmm.mixture import covariance as cov
from streamgmm.mixture.params import MixtureParams

NOVELTY_QUANTILE = 0.999
LOG_2PI = float(np.log(2 * np.pi))


@functools.lru_cache(maxsize=64)
def novelty_threshold(n_features: int) -> float:
    """The squared Mahalanobis distance beyond which a record is outside a component."""
    # scipy is imported here, when a stream first needs it: ``import streamgmm`` stays light
    # (and scipy.special is a third of scipy.stats in memory).
    from scipy.special import chdtri

    return float(chdtri(n_features, 1.0 - NOVELTY_QUANTILE))


def novel_rows(X: np.ndarray, log_norm: np.ndarray, params: MixtureParams) -> np.ndarray:
    """Which records are outside every component's ``NOVELTY_QUANTILE`` ellipsoid.

    Parameters
    ----------
    X : ndarray of shape (n_records, n_features)
        The records, NaN where a feature is missing.

    log_norm : ndarray of shape (n_records,)
        Each record's log-density under ``params`` (what the E-step returned).

    params : MixtureParams
        The mixture.

    Returns
    -------
    novel : ndarray of bool, shape (n_records,)
    """
    d = params.n_features
    q = novelty_threshold(d)
    log_det = np.broadcast_to(
        cov.log_det_cholesky(params.precisions_cholesky, params.covariance_type, d), (params.n_components,)
    )
    with np.errstate(divide="ignore"):
        inside = np.log(params.weights) + log_det - 0.5 * (d * LOG_2PI + q)
    screen = np.logaddexp.reduce(inside)
    with np.errstate(invalid="ignore"):
        candidates = np.flatnonzero(log_norm < screen)
    novel = np.zeros(X.shape[0], dtype=bool)
    if candidates.size == 0:
        return novel
    rows = X[candidates]
    complete = ~np.isnan(rows).any(axis=1)
    candidates, rows = candidates[complete], rows[complete]
    if candidates.size:
        distances = cov.MAHALANOBIS[params.covariance_type](rows, params.means, params.precisions_cholesky)
        novel[candidates[(distances > q).all(axis=1)]] = True
    return novel


@dataclass(frozen=True)
class Reservoir:
    """A weighted sample of records (see the module docstring).

    ``records`` (r, d), the log of the weight each has in the running statistics
    (``log_weights``, (r,)) and race ``keys`` (r,), in the order of their keys; ``sampled`` is
    True once some offered record was left out. ``offered_weight`` is the total record weight
    ever offered, and ``tried_at`` its value when a birth was last proposed from this reservoir
    and refused (0 if none was). Records that won a place since the last merge wait in
    ``pending`` (chunks of records, log weights and keys), so that a batch in which a few win
    does not copy the whole sample; :meth:`merged` folds them in, keeping the ``capacity``
    smallest keys."""

    records: np.ndarray
    log_weights: np.ndarray
    keys: np.ndarray
    offered_weight: float = 0.0
    tried_at: float = 0.0
    sampled: bool = False
    pending: tuple[tuple[np.ndarray, np.ndarray, np.ndarray], ...] = ()
    capacity: int = 0  # the capacity it was last offered records with (0: not yet)

    @classmethod
    def empty(cls, n_features: int) -> Reservoir:
        return cls(np.empty((0, n_features)), np.empty(0), np.empty(0))

    def __len__(self) -> int:
        """The records held once merged (at most the capacity it was offered with)."""
        held = self.records.shape[0] + sum(chunk[2].shape[0] for chunk in self.pending)
        return min(held, self.capacity) if self.capacity else held

    def merged(self) -> Reservoir:
        """The same sample with its pending records folded in: the ``capacity`` smallest keys,
        ordered by key."""
        if not self.pending:
            return self
        capacity = self.capacity or None
        records = np.concatenate([self.records, *(c[0] for c in self.pending)])
        log_weights = np.concatenate([self.log_weights, *(c[1] for c in self.pending)])
        keys = np.concatenate([self.keys, *(c[2] for c in self.pending)])
        sampled = self.sampled
        if capacity is not None and keys.shape[0] > capacity:
            keep = np.argpartition(keys, capacity - 1)[:capacity]
            records, log_weights, keys = records[keep], log_weights[keep], keys[keep]
            sampled = True
        # Ordered by key, the merged sample does not depend on when merges happened.
        order = np.argsort(keys, kind="stable")
        return replace(
            self, records=records[order], log_weights=log_weights[order], keys=keys[order], sampled=sampled, pending=()
        )

    def estimation_weights(self) -> np.ndarray:
        """The weights under which the (merged) records stand for every record offered: their
        own, relative to the largest, while all are kept; equal once the race has sampled (it
        drew them in proportion to their weights already)."""
        merged = self.merged()
        if merged.sampled:
            return np.ones(merged.records.shape[0])
        if not merged.records.shape[0]:
            return np.empty(0)
        return np.exp(merged.log_weights - merged.log_weights.max())

    def effective_size(self) -> float:
        """Kish's effective sample size of the estimation weights, (sum w)^2 / sum w^2."""
        w = self.estimation_weights()
        if not w.shape[0]:
            return 0.0
        return float(w.sum() ** 2 / np.square(w).sum())

    def threshold(self, capacity: int) -> float:
        """The key a new record must beat: the largest of the ``capacity`` smallest held (inf
        while fewer are held), the same whether or not pending records were merged."""
        held = self.keys.shape[0] + sum(c[2].shape[0] for c in self.pending)
        if held < capacity:
            return np.inf
        if self.keys.shape[0] == capacity and np.all(self.keys[:-1] <= self.keys[1:]):
            # Merged records are in key order: with p pending, the capacity-th smallest of all is
            # the (p+1)-th smallest of the last p+1 merged and the pending, a partition of 2p+1.
            pending = [c[2] for c in self.pending]
            p = sum(k.shape[0] for k in pending)
            if p == 0:
                return float(self.keys[-1])
            below = max(capacity - p - 1, 0)
            candidates = np.concatenate([self.keys[below:], *pending])
            return float(np.partition(candidates, capacity - below - 1)[capacity - below - 1])
        keys = np.concatenate([self.keys, *(c[2] for c in self.pending)])
        return float(np.partition(keys, capacity - 1)[capacity - 1])

    def offered(
        self, X: np.ndarray, weights: np.ndarray, log_weight: float, rng: np.random.Generator, capacity: int
    ) -> Reservoir:
        """The reservoir after offering records ``X`` of record ``weights``, each of which
        weighs ``exp(log_weight)`` per unit of record weight in the running statistics."""
        positive = weights > 0
        if not positive.all():
            X, weights = X[positive], weights[positive]
        n = X.shape[0]
        if not n:
            return self
        offered = self.offered_weight + float(weights.sum())
        threshold = self.threshold(capacity)
        if np.isfinite(threshold) and np.all(weights == weights[0]):
            # Equal weights: each record enters with the same chance, so draw how many enter
            # and which, and only their keys (from the exponential below the threshold).
            limit = float(np.exp(threshold + np.log(weights[0]) + log_weight))
            chance = -np.expm1(-limit)
            m = int(rng.binomial(n, chance))
            rows = np.sort(rng.choice(n, m, replace=False)) if m < n else np.arange(n)
            draws = -np.log1p(-rng.random(m) * chance)
            X, weights = X[rows], weights[rows]
            keys = _keys(draws, weights, log_weight)
        else:
            keys = _keys(rng.standard_exponential(n), weights, log_weight)
            entering = keys < threshold
            X, weights, keys = X[entering], weights[entering], keys[entering]
        sampled = self.sampled or X.shape[0] < n
        if not X.shape[0]:
            return replace(self, offered_weight=offered, sampled=sampled, capacity=capacity)
        log_weights = np.log(weights) + log_weight
        pending = (*self.pending, (np.array(X, dtype=np.float64, order="C"), log_weights, keys))
        grown = replace(self, offered_weight=offered, sampled=sampled, pending=pending, capacity=capacity)
        if sum(c[2].shape[0] for c in pending) < max(capacity // 4, 1) and np.isfinite(threshold):
            return grown
        return grown.merged()


def _keys(draws: np.ndarray, weights: np.ndarray, log_weight: float) -> np.ndarray:
    """The race's keys, log E - log w: smaller for heavier records (a draw of exactly 0 kept finite)."""
    return np.log(np.maximum(draws, np.finfo(np.float64).tiny)) - np.log(weights) - log_weight
