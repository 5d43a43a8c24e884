"""Batch variational EM out of core: one pass over the source per iteration.

The loop scikit-learn's ``BayesianGaussianMixture`` runs (``BaseMixture.fit_predict``), over a
stream: each iteration's E-step goes through every mini-batch under the current variational
posterior, adding up the statistics of the responsibilities (record weights respected) and
their entropy; one variational M-step on the total gives the next posterior, and the lower
bound is that posterior's with the E-step's entropy. It stops once the lower bound moves by less
than ``tol`` or after ``max_iter`` iterations. From the same start (a posterior, or the
statistics of starting responsibilities) it computes what scikit-learn computes, memory bounded
by the batch size.

Two E-steps, equal to rounding: ``route="fused"`` (the default) runs the EM E-step kernels
(:func:`streamgmm.kernels.chunk.chunk_statistics`) on the mixture whose E-step is the VB one
(:func:`streamgmm.mixture.variational.effective_params`) and takes the entropy from the
statistics (:func:`streamgmm.mixture.variational_bound.entropy_from_statistics`);
``route="exact"`` computes each mini-batch's responsibilities directly
(:func:`streamgmm.mixture.variational.log_responsibilities`), scikit-learn's arithmetic, 15 to
40 times slower (100,000 x 8 records, K = 8).

Examples
--------
>>> import numpy as np
>>> from streamgmm.io.sources.chunk_source import ArraySource
>>> from streamgmm.mixture.variational import default_priors, posterior_weights
>>> rng = np.random.default_rng(0)
>>> X = np.concatenate([rng.normal(0.0, 1.0, (200, 2)), rng.normal(8.0, 1.0, (200, 2))])
>>> source = ArraySource(X)
>>> moments = moment_statistics(source, batch_size=100)
>>> priors = default_priors(moments, 4, "full")
>>> start = statistics_of_responsibilities(source, rng.dirichlet(np.ones(4), 400), moments.shift, "full", 100)
>>> result = run_variational_em(
...     source, priors, start, shift=moments.shift, reg_covar=1e-6, tol=1e-3, max_iter=200, batch_size=100
... )
>>> result.converged, int((posterior_weights(result.posterior) > 0.01).sum())
(True, 2)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from streamgmm.io.sources.chunk_source import ChunkSource
from streamgmm.io.sources.read_ahead import batches_ahead
from streamgmm.kernels.chunk import chunk_statistics
from streamgmm.mixture.statistics import SufficientStatistics
from streamgmm.mixture.variational import (
    VariationalPosterior,
    VariationalPriors,
    effective_params,
    log_responsibilities,
    posterior_from_statistics,
)
from streamgmm.mixture.variational_bound import entropy_from_statistics, lower_bound, responsibility_entropy

ROUTES = ("exact", "fused")
MISSING_FEATURES = "variational EM takes complete records only: a record has a missing (NaN) feature"


@dataclass
class VariationalEMResult:
    """Variational EM's end: the posterior after the last M-step, the statistics of the last
    E-step (None when no iteration ran), the last lower bound (a sum over the records, -inf
    when no iteration ran) and every iteration's."""

    posterior: VariationalPosterior
    statistics: SufficientStatistics | None
    lower_bound: float
    n_iter: int
    converged: bool
    history: list[float] = field(default_factory=list)


def moment_statistics(source: ChunkSource, batch_size: int, shift: np.ndarray | None = None) -> SufficientStatistics:
    """One pass: the one-component 'full' statistics of every record, what the priors' defaults need.

    Parameters
    ----------
    source : ChunkSource
        The records (weighted or not).
    batch_size : int
        Records per mini-batch.
    shift : ndarray of shape (n_features,), optional
        The point to take the sums about; None takes the first mini-batch's mean, so that data
        far from the origin keep their precision.

    Returns
    -------
    stats : SufficientStatistics
        For :func:`streamgmm.mixture.variational.default_priors`.

    Raises
    ------
    ValueError
        If the source yields no records (or only records of weight zero).
    """
    total = None
    for X, weights in batches_ahead(source, batch_size):
        if X.shape[0] == 0:
            continue
        if total is None:
            centre = X.mean(axis=0) if shift is None else np.asarray(shift, dtype=np.float64)
            total = SufficientStatistics.zeros(1, X.shape[1], "full", centre)
        ones = np.ones((X.shape[0], 1))
        total = total + SufficientStatistics.from_responsibilities(X, ones, total.shift, "full", weights=weights)
    if total is None or total.n_records <= 0:
        raise ValueError("the source yielded no records (or only records of weight zero)")
    return total


def statistics_of_responsibilities(
    source: ChunkSource, resp: np.ndarray, shift: np.ndarray, covariance_type: str, batch_size: int
) -> SufficientStatistics:
    """The statistics of starting responsibilities given for every record, in the source's order.

    What scikit-learn's ``_initialize`` makes its first posterior from (``resp`` as its
    ``init_params`` draws them); pass the result to :func:`run_variational_em` as ``start``.

    Parameters
    ----------
    source : ChunkSource
        The records, read in order.
    resp : ndarray of shape (n_records, n_components)
        One row per record of the source.
    shift : ndarray of shape (n_features,)
        The point the sums are taken about.
    covariance_type : {'full', 'tied', 'diag', 'spherical'}
        The form of the covariances.
    batch_size : int
        Records per mini-batch.

    Returns
    -------
    stats : SufficientStatistics

    Raises
    ------
    ValueError
        If ``resp`` has not one row per record.
    """
    total = SufficientStatistics.zeros(resp.shape[1], len(shift), covariance_type, shift)
    start = 0
    for X, weights in batches_ahead(source, batch_size):
        rows = resp[start : start + X.shape[0]]
        if rows.shape[0] != X.shape[0]:
            raise ValueError(f"resp has {resp.shape[0]} rows, fewer than the source's records")
        total = total + SufficientStatistics.from_responsibilities(X, rows, shift, covariance_type, weights=weights)
        start += X.shape[0]
    if start != resp.shape[0]:
        raise ValueError(f"resp has {resp.shape[0]} rows but the source has {start} records")
    return total


def variational_e_step(
    source: ChunkSource, posterior: VariationalPosterior, shift: np.ndarray, batch_size: int, route: str = "fused"
) -> tuple[SufficientStatistics, float]:
    """One pass of the VB E-step: the summed statistics of the responsibilities and their entropy.

    Parameters
    ----------
    source : ChunkSource
        The records (weighted or not), complete.
    posterior : VariationalPosterior
        The posterior whose responsibilities weigh the records.
    shift : ndarray of shape (n_features,)
        The point the sums are taken about.
    batch_size : int
        Records per mini-batch.
    route : {'exact', 'fused'}, default='fused'
        Responsibilities computed directly, or by the EM E-step kernels (see the module).

    Returns
    -------
    stats : SufficientStatistics
        With ``log_likelihood`` the records' summed (weighted) log-normalisers.
    entropy : float
        -sum_i w_i sum_k r_ik log r_ik.

    Raises
    ------
    ValueError
        If a record has a missing feature.
    """
    if route not in ROUTES:
        raise ValueError(f"Invalid value for 'route': {route!r}; expected one of {', '.join(ROUTES)}")
    k = posterior.means.shape[0]
    total = SufficientStatistics.zeros(k, posterior.n_features, posterior.covariance_type, shift)
    if route == "fused":
        params, offset = effective_params(posterior)
    entropy = 0.0
    for X, weights in batches_ahead(source, batch_size):
        if route == "fused":
            # The kernels would marginalise a missing feature, which the VB E-step does not.
            if np.isnan(X.sum()):
                raise ValueError(MISSING_FEATURES)
            stats, _ = chunk_statistics(X, params, shift, weights=weights)
        else:
            log_norm, log_resp = log_responsibilities(X, posterior)
            if np.isnan(log_norm.sum()):
                raise ValueError(MISSING_FEATURES)
            norm_sum = float(log_norm.sum() if weights is None else log_norm @ weights)
            stats = SufficientStatistics.from_responsibilities(
                X, np.exp(log_resp), shift, posterior.covariance_type, norm_sum, weights=weights
            )
            entropy += responsibility_entropy(log_resp, weights)
        total = total + stats
    if route == "fused":
        # The kernels' log-normalisers are the effective mixture's, offset from the VB ones.
        total = replace(total, log_likelihood=total.log_likelihood + offset * total.n_records)
        entropy = entropy_from_statistics(total, posterior, total.log_likelihood)
    return total, entropy


def run_variational_em(
    source: ChunkSource,
    priors: VariationalPriors,
    start: VariationalPosterior | SufficientStatistics,
    *,
    shift: np.ndarray,
    reg_covar: float,
    tol: float,
    max_iter: int,
    batch_size: int,
    route: str = "fused",
    on_iteration: Callable[[int, float], None] | None = None,
) -> VariationalEMResult:
    """Batch variational EM over ``source``: at most ``max_iter`` passes, as scikit-learn's loop.

    Each iteration: the E-step under the current posterior (one pass), the M-step on its
    statistics, then the lower bound of the new posterior with the E-step's entropy; it stops
    once the lower bound moves by less than ``tol``.

    Parameters
    ----------
    source : ChunkSource
        The records (weighted or not); read once per iteration, so it must be re-readable.
    priors : VariationalPriors
        The priors (:func:`streamgmm.mixture.variational.default_priors`).
    start : VariationalPosterior or SufficientStatistics
        The starting posterior, or the statistics of starting responsibilities
        (:func:`statistics_of_responsibilities`), whose M-step gives it (scikit-learn's
        ``_initialize``).
    shift : ndarray of shape (n_features,)
        The point the sums are taken about (near the data: the mean of a first batch).
    reg_covar : float
        Non-negative regularisation added to the diagonals of the covariances S_k.
    tol : float
        The change of the lower bound (a sum over the records) below which it stops.
    max_iter : int
        The most iterations; 0 returns the start.
    batch_size : int
        Records per mini-batch.
    route : {'exact', 'fused'}, default='fused'
        The E-step (see the module).
    on_iteration : callable, optional
        Called with the iteration's number and lower bound after each.

    Returns
    -------
    result : VariationalEMResult

    Raises
    ------
    ValueError
        If the source cannot be read again, yields no records, or has a record with a missing
        feature.
    """
    if not source.reiterable:
        raise ValueError(
            "variational EM makes one pass per iteration and needs a source it can read again: "
            "pass an array, a list of chunks or a callable returning a fresh iterator"
        )
    posterior = (
        start if isinstance(start, VariationalPosterior) else posterior_from_statistics(start, priors, reg_covar)
    )
    bound, history, stats, converged = -np.inf, [], None, False
    for n_iter in range(1, max_iter + 1):
        stats, entropy = variational_e_step(source, posterior, shift, batch_size, route)
        if stats.n_records <= 0:
            raise ValueError("the source yielded no records (or only records of weight zero)")
        posterior = posterior_from_statistics(stats, priors, reg_covar)
        previous, bound = bound, lower_bound(posterior, entropy)
        history.append(bound)
        if on_iteration is not None:
            on_iteration(n_iter, bound)
        if abs(bound - previous) < tol:
            converged = True
            break
    return VariationalEMResult(posterior, stats, float(bound), len(history), converged, history)
