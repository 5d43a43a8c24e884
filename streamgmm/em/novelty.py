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
>>> reservoir.records, reservoir.offered_weight
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

from streamgmm.kernels.quadratic import one_blas_thread
from streamgmm.mixture import covariance as cov
from streamgmm.mixture.params import MixtureParams

NOVELTY_QUANTILE = 0.999
LOG_2PI = float(np.log(2 * np.pi))


@functools.lru_cache(maxsize=64)
def novelty_threshold(n_features: int) -> float:
    """The squared Mahalanobis distance beyond which a record is outside a component."""
    # scipy is imported here, when a stream first needs it: ``import streamgmm`` stays light.
    from scipy.stats import chi2

    return float(chi2.ppf(NOVELTY_QUANTILE, n_features))


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
        # Small products: a second BLAS thread only waits on the first (or on other work).
        with one_blas_thread():
            distances = cov.MAHALANOBIS[params.covariance_type](rows, params.means, params.precisions_cholesky)
        novel[candidates[(distances > q).all(axis=1)]] = True
    return novel


@dataclass(frozen=True)
class Reservoir:
    """A weighted sample of novel records (see the module docstring).

    ``records`` (r, d), their ``weights`` (r,) in the running statistics relative to a record
    of weight 1 offered last (``log_reference`` is that record's log weight), and race
    ``keys`` (r,); ``sampled`` is True once some offered record was left out. ``offered_weight``
    is the total record weight ever offered, and ``tried_at`` its value when a birth was last
    proposed from this reservoir and refused (0 if none was)."""

    records: np.ndarray
    weights: np.ndarray
    keys: np.ndarray
    offered_weight: float = 0.0
    tried_at: float = 0.0
    log_reference: float = 0.0
    sampled: bool = False

    @classmethod
    def empty(cls, n_features: int) -> Reservoir:
        return cls(np.empty((0, n_features)), np.empty(0), np.empty(0))

    def __len__(self) -> int:
        return self.records.shape[0]

    def estimation_weights(self) -> np.ndarray:
        """The weights under which the records stand for every novel record offered: their own
        while all are kept; equal once the race has sampled (it drew them in proportion to
        their weights already)."""
        return np.ones(len(self)) if self.sampled else self.weights

    def effective_size(self) -> float:
        """Kish's effective sample size of the estimation weights, (sum w)^2 / sum w^2."""
        if not len(self):
            return 0.0
        w = self.estimation_weights()
        return float(w.sum() ** 2 / np.square(w).sum())

    def offered(
        self, X: np.ndarray, weights: np.ndarray, log_weight: float, rng: np.random.Generator, capacity: int
    ) -> Reservoir:
        """The reservoir after offering records ``X`` of record ``weights``, each of which
        weighs ``exp(log_weight)`` per unit of record weight in the running statistics."""
        positive = weights > 0
        X, weights = X[positive], weights[positive]
        if not X.shape[0]:
            return self
        offered = self.offered_weight + float(weights.sum())
        draws = np.maximum(rng.standard_exponential(X.shape[0]), np.finfo(np.float64).tiny)
        keys = np.log(draws) - np.log(weights) - log_weight
        sampled = self.sampled
        if len(self) >= capacity:
            # Full: only a record that beats the largest key kept can enter, so most of a batch
            # is decided by one comparison.
            entering = keys < self.keys.max()
            sampled = sampled or not entering.all()
            X, weights, keys = X[entering], weights[entering], keys[entering]
            if not X.shape[0]:
                return replace(self, offered_weight=offered, sampled=sampled)
        records = np.concatenate([self.records, X])
        # Relative to the newest records, older weights shrink (or vanish) rather than overflow.
        with np.errstate(under="ignore", over="ignore"):
            rescaled = self.weights * np.exp(self.log_reference - log_weight)
        all_weights = np.concatenate([rescaled, weights])
        all_keys = np.concatenate([self.keys, keys])
        if not all_weights.all():  # records whose weight has vanished are gone from the statistics too
            kept = all_weights > 0
            records, all_weights, all_keys = records[kept], all_weights[kept], all_keys[kept]
        if records.shape[0] > capacity:
            keep = np.sort(np.argpartition(all_keys, capacity - 1)[:capacity])
            records, all_weights, all_keys = records[keep], all_weights[keep], all_keys[keep]
            sampled = True
        return Reservoir(records, all_weights, all_keys, offered, self.tried_at, float(log_weight), sampled)
