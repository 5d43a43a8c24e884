"""Exact EM out of core: one full pass over the source per iteration.

Each iteration streams every mini-batch through the E-step, adds up the batches' sufficient
statistics and runs one M-step on the total, so the result equals in-memory EM (scikit-learn's
``GaussianMixture`` given the same start) while memory stays bounded by the batch size. The
log-likelihood never decreases (unless a collapsed component is re-seeded).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from .params import MixtureParams
from .reseeding import WorstRecords, reseed
from .sources import ChunkSource
from .statistics import SufficientStatistics


@dataclass
class BatchEMResult:
    params: MixtureParams
    statistics: SufficientStatistics
    lower_bound: float
    n_iter: int
    converged: bool
    history: list[float] = field(default_factory=list)
    reseeded: list[tuple[int, list[int]]] = field(default_factory=list)


def full_pass_statistics(
    source: ChunkSource,
    params: MixtureParams,
    shift: np.ndarray,
    batch_size: int,
    worst: WorstRecords | None = None,
    dtype: np.dtype | type = np.float64,
) -> SufficientStatistics:
    """The summed statistics of every record under ``params`` (the E-step of one iteration),
    computed in ``dtype`` precision and summed in float64."""
    total = SufficientStatistics.zeros(params.n_components, params.n_features, params.covariance_type, shift)
    for batch in source.batches(batch_size):
        stats, log_norm = SufficientStatistics.of_chunk(batch, params, shift, dtype)
        total = total + stats
        if worst is not None:
            worst.offer(batch, log_norm)
    return total


def run_batch_em(
    source: ChunkSource,
    params: MixtureParams,
    *,
    shift: np.ndarray,
    reg_covar: float,
    tol: float,
    max_iter: int,
    batch_size: int,
    on_iteration: Callable[[int, float], None] | None = None,
    dtype: np.dtype | type = np.float64,
) -> BatchEMResult:
    if not source.reiterable:
        raise ValueError(
            "batch EM makes one pass per iteration and needs a source it can read again: "
            "pass an array, a list of chunks or a callable returning a fresh iterator"
        )

    def e_step(params: MixtureParams) -> tuple[SufficientStatistics, np.ndarray]:
        worst = WorstRecords(params.n_components, params.n_features)
        stats = full_pass_statistics(source, params, shift, batch_size, worst, dtype)
        return stats, worst.records

    return em_iterations(e_step, params, reg_covar=reg_covar, tol=tol, max_iter=max_iter, on_iteration=on_iteration)


def em_iterations(
    e_step: Callable[[MixtureParams], tuple[SufficientStatistics, np.ndarray]],
    params: MixtureParams,
    *,
    reg_covar: float,
    tol: float,
    max_iter: int,
    on_iteration: Callable[[int, float], None] | None = None,
) -> BatchEMResult:
    """EM's outer loop over any full-pass E-step (local or on a cluster): ``e_step(params)``
    returns the summed statistics of every record and the pass's worst-explained records, which
    re-seed collapsed components after each M-step."""
    lower_bound = -np.inf
    history: list[float] = []
    reseeded: list[tuple[int, list[int]]] = []
    stats = None
    converged = False
    n_iter = 0
    for n_iter in range(1, max_iter + 1):
        stats, worst_records = e_step(params)
        if stats.n_records == 0:
            raise ValueError("the source yielded no records")
        previous, lower_bound = lower_bound, stats.log_likelihood / stats.n_records
        history.append(lower_bound)
        params = stats.to_params(reg_covar)
        params, stats, moved = reseed(params, stats, worst_records, reg_covar)
        if moved:
            reseeded.append((n_iter, moved))
        if on_iteration is not None:
            on_iteration(n_iter, lower_bound)
        if abs(lower_bound - previous) < tol:
            converged = True
            break
    assert stats is not None
    return BatchEMResult(params, stats, float(lower_bound), n_iter, converged, history, reseeded)
