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

from streamgmm.io.sources.chunk_source import ChunkSource
from streamgmm.io.sources.read_ahead import batches_ahead
from streamgmm.kernels.chunk import chunk_statistics
from streamgmm.mixture.params import MixtureParams
from streamgmm.mixture.reseeding import WorstRecords, reseed
from streamgmm.mixture.statistics import SufficientStatistics


@dataclass
class BatchEMResult:
    """EM's end: the parameters after the last M-step, the statistics of the last E-step (None
    when no iteration ran, ``max_iter=0``) and the mean log-likelihood that E-step measured."""

    params: MixtureParams
    statistics: SufficientStatistics | None
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
    return shared_pass_statistics(source, [params], [shift], batch_size, [worst], dtype)[0]


def exact_e_step(
    source: ChunkSource,
    params: MixtureParams,
    shift: np.ndarray,
    batch_size: int,
    dtype: np.dtype | type = np.float64,
) -> tuple[SufficientStatistics, np.ndarray]:
    """One iteration's E-step over ``source``: the summed statistics and the worst-explained
    records (which re-seed collapsed components), what :meth:`EMIterations.step` takes."""
    worst = WorstRecords(params.n_components, params.n_features)
    stats = full_pass_statistics(source, params, shift, batch_size, worst, dtype)
    return stats, worst.records


def shared_pass_statistics(
    source: ChunkSource,
    models: list[MixtureParams],
    shifts: list[np.ndarray],
    batch_size: int,
    worst: list[WorstRecords | None],
    dtype: np.dtype | type = np.float64,
) -> list[SufficientStatistics]:
    """:func:`full_pass_statistics` of several models in one read of the source."""
    totals = [
        SufficientStatistics.zeros(p.n_components, p.n_features, p.covariance_type, shift)
        for p, shift in zip(models, shifts)
    ]
    for X, weights in batches_ahead(source, batch_size):  # the next batches decoded during this E-step
        # A record of weight zero is as good as absent: no place to re-seed a component.
        present = None if weights is None or weights.all() else weights > 0
        for i, (params, shift) in enumerate(zip(models, shifts)):
            stats, log_norm = chunk_statistics(X, params, shift, dtype, weights=weights)
            totals[i] = totals[i] + stats
            if worst[i] is not None:
                worst[i].offer(*((X, log_norm) if present is None else (X[present], log_norm[present])))
    return totals


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
    lower_bound: float = -np.inf,
) -> BatchEMResult:
    """Exact EM over ``source`` from ``params``: at most ``max_iter`` passes, stopping once the
    mean log-likelihood moves by less than ``tol``; ``lower_bound`` is the one a previous fit
    reached (a warm start), the first iteration's reference."""
    if not source.reiterable:
        raise ValueError(
            "batch EM makes one pass per iteration and needs a source it can read again: "
            "pass an array, a list of chunks or a callable returning a fresh iterator"
        )

    def e_step(params: MixtureParams) -> tuple[SufficientStatistics, np.ndarray]:
        return exact_e_step(source, params, shift, batch_size, dtype)

    return em_iterations(
        e_step,
        params,
        reg_covar=reg_covar,
        tol=tol,
        max_iter=max_iter,
        on_iteration=on_iteration,
        lower_bound=lower_bound,
    )


def em_iterations(
    e_step: Callable[[MixtureParams], tuple[SufficientStatistics, np.ndarray]],
    params: MixtureParams,
    *,
    reg_covar: float,
    tol: float,
    max_iter: int,
    on_iteration: Callable[[int, float], None] | None = None,
    lower_bound: float = -np.inf,
) -> BatchEMResult:
    """EM's outer loop over any full-pass E-step (local or on a cluster): ``e_step(params)``
    returns the summed statistics of every record and the pass's worst-explained records, which
    re-seed collapsed components after each M-step."""
    run = EMIterations(params, reg_covar=reg_covar, tol=tol, max_iter=max_iter, lower_bound=lower_bound)
    while not run.done:
        run.step(*e_step(run.params))
        if on_iteration is not None:
            on_iteration(run.n_iter, run.history[-1])
    return run.result()


class EMIterations:
    """EM's outer loop one iteration at a time: :meth:`step` takes the full-pass statistics of
    :attr:`params` and makes the M-step. Drivers that compute several models' E-steps in one
    pass over the data (:func:`~streamgmm.selection.select`) step each model this way.

    The reported lower bound is that of the last E-step, as scikit-learn's, but never below
    ``lower_bound`` (a warm start's): EM never lowers it, and at a fixed point an E-step can come
    out an ulp lower only by rounding."""

    def __init__(self, params: MixtureParams, *, reg_covar: float, tol: float, max_iter: int, lower_bound: float):
        self.params = params
        self.reg_covar, self.tol, self.max_iter = reg_covar, tol, max_iter
        self.floor = self.lower_bound = lower_bound
        self.statistics: SufficientStatistics | None = None
        self.history: list[float] = []
        self.reseeded: list[tuple[int, list[int]]] = []
        self.n_iter = 0
        self.converged = False
        self.done = max_iter == 0

    def step(self, stats: SufficientStatistics, worst_records: np.ndarray) -> None:
        if stats.n_records == 0:
            raise ValueError("the source yielded no records (or only records of weight zero)")
        self.n_iter += 1
        previous, self.lower_bound = self.lower_bound, stats.log_likelihood / stats.n_records
        self.history.append(self.lower_bound)
        params, self.statistics, moved = reseed(stats.to_params(self.reg_covar), stats, worst_records, self.reg_covar)
        self.params = params
        if moved:
            self.reseeded.append((self.n_iter, moved))
        self.converged = abs(self.lower_bound - previous) < self.tol
        self.done = self.converged or self.n_iter >= self.max_iter

    def result(self) -> BatchEMResult:
        return BatchEMResult(
            self.params,
            self.statistics,
            float(max(self.lower_bound, self.floor)),
            self.n_iter,
            self.converged,
            self.history,
            self.reseeded,
        )
