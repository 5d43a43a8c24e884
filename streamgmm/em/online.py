"""Online (stepwise) EM: one blend of the running statistics per mini-batch.

For mini-batch t the E-step runs under the current parameters; the batch's per-record
statistics are blended into the running ones, s <- (1 - eta_t) s + eta_t s_batch, with
eta_t = max((t + step_offset) ** -step_exponent, step_floor), and the M-step turns s into new
parameters (Cappe & Moulines 2009; Liang & Klein 2009). An exponent in (0.5, 1] makes the steps
sum to infinity while their squares do not, which is what lets the recursion converge; a floor
keeps it forgetting old data, for tracking drift. During the first ``burn_in`` batches the
statistics are blended but the parameters are not yet moved.

A short batch's step is scaled by its share of ``batch_size``; with record weights that share
counts weight, not rows, so a batch with integer weights steps as the batch with its rows
repeated, and a batch of weight zero makes no step.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace

import numpy as np

from streamgmm.em.moves import BatchRedo, Move, MoveState, NovelBatch, novel_batch, proposed_birth, tracked
from streamgmm.em.novelty import novel_rows
from streamgmm.em.reallocation import changed_course, refit_due, refitted, watched
from streamgmm.io.sources.chunk_source import ChunkSource
from streamgmm.io.sources.read_ahead import batches_ahead
from streamgmm.kernels.chunk import chunk_statistics
from streamgmm.mixture.params import MixtureParams
from streamgmm.mixture.reseeding import reseed, worst_rows
from streamgmm.mixture.statistics import SufficientStatistics

# With a step floor, a mini-batch mostly outside every component restarts the step schedule.
CHANGE_SHARE = 0.5


@dataclass(frozen=True)
class StepSchedule:
    exponent: float = 1.0
    offset: float = 2.0
    floor: float = 0.0

    def __post_init__(self) -> None:
        if not 0.5 < self.exponent <= 1.0:
            raise ValueError(f"step_exponent must be in (0.5, 1], got {self.exponent}")
        if self.offset < 0:
            raise ValueError(f"step_offset must be >= 0, got {self.offset}")
        if not 0.0 <= self.floor <= 1.0:
            raise ValueError(f"step_floor must be in [0, 1], got {self.floor}")

    def step(self, t: int) -> float:
        """The step size of mini-batch t (t = 1, 2, ...)."""
        return max(min((t + self.offset) ** -self.exponent, 1.0), self.floor)


@dataclass(frozen=True)
class OnlineState:
    """Everything the recursion needs to continue: persisted with a model to resume a stream."""

    params: MixtureParams
    statistics: SufficientStatistics
    step: int = 0
    records_seen: int | float = 0  # the records' total weight, for a weighted source
    moves: MoveState | None = None  # None: no births or merges (``moves="off"``)

    @classmethod
    def start(cls, params: MixtureParams, shift: np.ndarray) -> OnlineState:
        """The state before the first mini-batch, without moves (the estimator adds them)."""
        # The running statistics start as those the initial parameters imply, so a step size
        # below one on the first batch blends with the initialisation rather than with zeros.
        return cls(params, SufficientStatistics.from_params(params, shift))


@dataclass
class BatchUpdate:
    mean_log_likelihood: float
    n_records: int | float  # total weight, for a weighted source
    step_size: float
    reseeded: list[int]
    moves: list[Move] = field(default_factory=list)


def online_update(
    state: OnlineState,
    batch: np.ndarray,
    schedule: StepSchedule,
    burn_in: int,
    reg_covar: float,
    batch_size: int,
    dtype: np.dtype | type = np.float64,
    weights: np.ndarray | None = None,
) -> tuple[OnlineState, BatchUpdate]:
    """One stepwise-EM step on one mini-batch of (nominally) ``batch_size`` records; ``dtype``
    is the E-step's compute precision (see :func:`streamgmm.kernels.chunk.chunk_statistics`).

    With record ``weights`` the batch counts as its total weight of records, so a batch whose
    rows are duplicated takes the same step; a batch of total weight 0 changes nothing (the
    state is returned as it was, and the update reports no records)."""
    size = batch.shape[0] if weights is None else float(weights.sum())
    if size <= 0:
        return state, BatchUpdate(0.0, 0, 0.0, [])
    # A short batch (the tail of a pass or of a chunk) gets a proportionally shorter step:
    # on a sorted stream a full step would over-weight the last component seen.
    share = min(1.0, size / batch_size)
    if state.moves is None:
        eta = schedule.step(state.step + 1) * share
    else:
        # With moves the step counter advances by the batch's share too, so that in a stream of
        # uneven chunks every record weighs the same: a sorted stream's late components then
        # get their true weights (with whole batches the two counters agree).
        eta = schedule.step(state.moves.clock + share) * share
    batch_stats, log_norm = chunk_statistics(batch, state.params, state.statistics.shift, dtype, weights=weights)
    # A record of weight zero is as good as absent: no place to re-seed a component.
    rows, scores = batch, log_norm
    if weights is not None and not weights.all():
        rows, scores = batch[weights > 0], log_norm[weights > 0]
    worst = rows[worst_rows(rows, scores, state.params.n_components)]
    novel = rescore = None
    if state.moves is not None:
        shift = state.statistics.shift
        is_novel = novel_rows(batch, log_norm, state.params)
        novel = novel_batch(batch, is_novel, weights, state.params, shift, dtype)
        state = replace(state, moves=watched(state.moves, log_norm, weights, eta))

        def rescore(params: MixtureParams) -> SufficientStatistics:
            return chunk_statistics(batch, params, shift, dtype, weights=weights)[0]

    state, update = blend_step(
        state, batch_stats, worst, eta, 1, burn_in, reg_covar, novel, rescore, share, (batch, weights)
    )
    if (
        state.moves is not None
        and schedule.floor > 0
        and novel is not None
        and novel.weights.sum() >= CHANGE_SHARE * size
    ):
        # A stream that forgets, meeting a mini-batch mostly outside every component: a change of regime.
        state = replace(state, moves=changed_course(state.moves, 1.0 / schedule.floor))
        update.moves.append(Move(state.step, [], [], 0.0, float(novel.weights.sum()), kind="change"))
    return state, update


def blend_step(
    state: OnlineState,
    batch_stats: SufficientStatistics,
    worst_records: np.ndarray,
    eta: float,
    n_steps: int,
    burn_in: int,
    reg_covar: float,
    novel: NovelBatch | None = None,
    rescore: Callable[[MixtureParams], SufficientStatistics] | None = None,
    clock: float | None = None,
    records: tuple[np.ndarray, np.ndarray | None] | None = None,
) -> tuple[OnlineState, BatchUpdate]:
    """Blend the summed statistics of new records, computed under ``state.params``, with step
    ``eta``, standing for ``n_steps`` mini-batches; then the M-step (after burn-in), the
    re-seeding of collapsed components from ``worst_records``, and, when the state carries
    moves, the tracking of the ``novel`` records and a birth where they call for one (with
    ``rescore``, the batch's E-step under other parameters, a birth learns the batch again under
    its newborns; ``clock``, how far the moves' step counter advances, default ``n_steps``;
    ``records``, the batch's rows and weights for the moves' sample, and a refit when one is
    due). Shared by the single-process recursion and the Dask waves."""
    n = batch_stats.n_records
    t = state.step + n_steps
    stats = state.statistics.blend(batch_stats, eta)
    params = state.params
    moved: list[int] = []
    if t > burn_in:
        params = stats.to_params(reg_covar)
        params, stats, moved = reseed(params, stats, worst_records, reg_covar)
    moves, taken = state.moves, []
    if moves is not None:
        moves = tracked(moves, novel, eta, state.statistics.n_records, n, t, moved, records)
        moves = replace(moves, clock=moves.clock + (n_steps if clock is None else clock))
        if t > burn_in:
            redo = None
            if rescore is not None:
                redo = BatchRedo(state.statistics, state.moves.novel, eta, n, rescore)
            result = proposed_birth(params, stats, moves, reg_covar, t, redo)
            params, stats, moves, taken = result.params, result.statistics, result.state, result.moves
            if refit_due(moves):
                result = refitted(params, stats, moves, reg_covar, t)
                params, stats, moves, taken = result.params, result.statistics, result.state, taken + result.moves
    update = BatchUpdate(batch_stats.log_likelihood / n, record_count(n), eta, moved, taken)
    return OnlineState(params, stats, t, record_count(state.records_seen + n), moves), update


def refit_at_end(state: OnlineState, reg_covar: float) -> tuple[OnlineState, list[Move]]:
    """A last refit on the moves' sample (:mod:`streamgmm.em.reallocation`) at the end of a
    one-pass fit, where the last stretch of a sorted stream has had no refit yet."""
    if state.moves is None or state.moves.sample is None:
        return state, []
    result = refitted(state.params, state.statistics, state.moves, reg_covar, state.step)
    return replace(state, params=result.params, statistics=result.statistics, moves=result.state), result.moves


def record_count(n: float) -> int | float:
    """A count of records: an int, unless fractional record weights made it a fraction.

    >>> record_count(3.0), record_count(2.5)
    (3, 2.5)
    """
    return int(n) if float(n).is_integer() else float(n)


@dataclass
class OnlineEMResult:
    state: OnlineState
    n_passes: int
    converged: bool
    pass_log_likelihoods: list[float] = field(default_factory=list)
    reseeded: list[tuple[int, list[int]]] = field(default_factory=list)


def run_online_em(
    source: ChunkSource,
    state: OnlineState,
    *,
    schedule: StepSchedule,
    burn_in: int,
    reg_covar: float,
    batch_size: int,
    max_passes: int = 1,
    tol: float = 0.0,
    rng: np.random.Generator | None = None,
    on_batch: Callable[[OnlineState, BatchUpdate], None] | None = None,
    dtype: np.dtype | type = np.float64,
) -> OnlineEMResult:
    """Stream ``max_passes`` passes (stopping early once a pass's mean log-likelihood moves by
    less than ``tol``). ``rng`` shuffles the batches where the source supports it; ``dtype`` is
    the E-step's compute precision."""
    if max_passes > 1 and not source.reiterable:
        raise ValueError("several passes need a source that can be read again (an array, a list, a callable)")

    def one_pass(state: OnlineState) -> Iterator[tuple[OnlineState, BatchUpdate]]:
        # The next mini-batches are decoded while this one is computed.
        for X, weights in batches_ahead(source, batch_size, rng):
            state, update = online_update(state, X, schedule, burn_in, reg_covar, batch_size, dtype, weights)
            if update.n_records:
                yield state, update

    return online_passes(one_pass, state, max_passes=max_passes, tol=tol, on_batch=on_batch)


def online_passes(
    one_pass: Callable[[OnlineState], Iterator[tuple[OnlineState, BatchUpdate]]],
    state: OnlineState,
    *,
    max_passes: int,
    tol: float,
    on_batch: Callable[[OnlineState, BatchUpdate], None] | None = None,
) -> OnlineEMResult:
    """The passes of online EM over any stepper (mini-batches here, waves of partitions on
    Dask): ``one_pass(state)`` yields the state after each step of one pass. Stops after
    ``max_passes``, or once a pass's mean log-likelihood (of each step's records before its
    update) moves by less than ``tol``."""
    pass_means: list[float] = []
    reseeded: list[tuple[int, list[int]]] = []
    converged = False
    n_passes = 0
    for n_passes in range(1, max_passes + 1):  # noqa: B007 - the count is the result
        total_ll = 0.0
        total_n = 0
        # Each step's state replaces the one the pass started from, by design.
        for state, update in one_pass(state):  # noqa: B020
            total_ll += update.mean_log_likelihood * update.n_records
            total_n += update.n_records
            if update.reseeded:
                reseeded.append((state.step, update.reseeded))
            if on_batch is not None:
                on_batch(state, update)
        if total_n == 0:
            raise ValueError("the source yielded no records (or only records of weight zero)")
        pass_means.append(total_ll / total_n)
        if len(pass_means) > 1 and abs(pass_means[-1] - pass_means[-2]) < tol:
            converged = True
            break
    return OnlineEMResult(state, n_passes, converged, pass_means, reseeded)
