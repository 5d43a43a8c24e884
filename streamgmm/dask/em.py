"""EM on a Dask cluster: the E-step maps over partitions on the workers, the statistics are
tree-reduced, the M-step runs on the client. Only parameters and K x d x d-sized statistics
travel; records stay where the partitions are.

Batch EM (:func:`run_dask_batch_em`) is the single-process algorithm of
:mod:`streamgmm.em.batch`, iteration for iteration: the same statistics (summed in another
order, so equal to rounding), the same M-step, the same re-seeding from the pass's worst
records (each partition keeps its K worst, merged up the tree). Given the same start it gives
the same model.

Online EM (:func:`run_dask_online_em`) runs in waves: ``partitions_per_step`` (W) partitions
are processed in parallel under the same parameters, their statistics summed and blended into
the running statistics with one step, as one larger mini-batch. The step is the weight the
wave's records would have had as mini-batches of ``batch_size`` blended one after another:
with m such batches starting at step t, ``eta = 1 - prod_{j=t+1}^{t+m} (1 - eta_j)`` (a short
last batch scaled as :func:`~streamgmm.em.online.online_update` scales it), and the step
counter advances by m. For the default exponent 1 that is exactly the running average the
single-process recursion would compute, except that the parameters only move once per wave.
The trade-off: W partitions per step buy W-fold parallelism but fewer, larger steps per pass,
each E-step using parameters up to a wave old; with a good start (EM on the sample) and W
partitions much smaller than the data this costs little quality, while W partitions as large
as the data would make one pass a single batch-EM iteration.

With moves (the state carries :class:`~streamgmm.em.moves.MoveState`), each partition of a wave
also returns its novel records (:func:`~streamgmm.em.novelty.novel_rows` under the wave's
parameters): all of them when they are at most the moves' reservoir capacity, otherwise a
sample drawn in proportion to record weight, without replacement, by a generator seeded from
the moves' seed, the step before the wave and the partition's index, its weights scaled to the
partition's total novel weight. Their statistics are those of every novel record, summed over
the wave like the others. The wave's novel records are tracked and births proposed as for one
mini-batch, except that a birth does not learn the wave again under its newborns (its records
stay on the workers): the waves after it do.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from streamgmm.dask.on_workers import cluster_client, map_on_workers
from streamgmm.dask.source import DaskSource, tree_reduce
from streamgmm.em.batch import BatchEMResult, em_iterations, full_pass_statistics
from streamgmm.em.moves import NovelBatch, novel_batch
from streamgmm.em.novelty import Reservoir, novel_rows
from streamgmm.em.online import BatchUpdate, OnlineEMResult, OnlineState, StepSchedule, blend_step, online_passes
from streamgmm.io.sources.chunk_source import ChunkSource
from streamgmm.io.sources.read_ahead import batches_ahead
from streamgmm.kernels.chunk import chunk_statistics
from streamgmm.mixture.params import MixtureParams
from streamgmm.mixture.reseeding import WorstRecords
from streamgmm.mixture.statistics import SufficientStatistics

# The purpose in a partition's subsample seed, apart from those of MoveState.rng (0 to 2).
SUBSAMPLE_PURPOSE = 3


@dataclass
class PartitionStatistics:
    """One partition's (or a merged group's) E-step: statistics, its worst-explained records
    (for re-seeding), the records its nan policy skipped and, with moves, its novel records
    (None without moves). Associative under ``+``."""

    statistics: SufficientStatistics
    worst_records: np.ndarray
    worst_scores: np.ndarray
    skipped: int = 0
    novel: NovelBatch | None = None

    def __add__(self, other: PartitionStatistics) -> PartitionStatistics:
        worst = WorstRecords(self.statistics.n_components, self.statistics.n_features)
        worst.offer(self.worst_records, self.worst_scores)
        worst.offer(other.worst_records, other.worst_scores)
        return PartitionStatistics(
            self.statistics + other.statistics,
            worst.records,
            worst.scores,
            self.skipped + other.skipped,
            _joined(self.novel, other.novel),
        )


def _joined(a: NovelBatch | None, b: NovelBatch | None) -> NovelBatch | None:
    """Two groups' novel records, one after the other, and their summed statistics."""
    if a is None or b is None:
        return a if b is None else b
    return NovelBatch(
        np.concatenate([a.records, b.records]), np.concatenate([a.weights, b.weights]), a.statistics + b.statistics
    )


@dataclass(frozen=True)
class NoveltyDraw:
    """What a wave's partitions need to return their novel records: the moves' ``seed``, the
    ``step`` before the wave and the most records a partition returns (``capacity``)."""

    seed: int
    step: int
    capacity: int

    def rng(self, index: int) -> np.random.Generator:
        """The generator that subsamples partition ``index``'s novel records."""
        return np.random.default_rng([self.seed, self.step, SUBSAMPLE_PURPOSE, index])


def partition_statistics(
    source: ChunkSource,
    params: MixtureParams,
    shift: np.ndarray,
    batch_size: int,
    dtype: np.dtype | type = np.float64,
) -> PartitionStatistics:
    """The E-step of one partition, on the worker, in mini-batches of ``batch_size``."""
    worst = WorstRecords(params.n_components, params.n_features)
    stats = full_pass_statistics(source, params, shift, batch_size, worst, dtype)
    return PartitionStatistics(stats, worst.records, worst.scores, int(source.skipped_records))


def partition_statistics_with_novelty(
    source: ChunkSource,
    index: int,
    params: MixtureParams,
    shift: np.ndarray,
    batch_size: int,
    dtype: np.dtype | type,
    draw: NoveltyDraw,
) -> PartitionStatistics:
    """:func:`partition_statistics` of partition ``index``, with its novel records: each
    mini-batch's records outside every component's ellipsoid, at most ``draw.capacity`` of them
    (a sample in proportion to record weight when there are more, its weights scaled to the
    partition's total novel weight), and the statistics of all of them."""
    k, d = params.n_components, params.n_features
    worst = WorstRecords(k, d)
    stats = SufficientStatistics.zeros(k, d, params.covariance_type, shift)
    novel_stats = SufficientStatistics.zeros(k, d, params.covariance_type, shift)
    # The exponential race of the moves' reservoir, run on this partition alone.
    kept = Reservoir.empty(d)
    # Every novel record, while they are no more than the capacity: then they come back as they are.
    every: list[NovelBatch] | None = []
    rng = draw.rng(index)
    for X, weights in batches_ahead(source, batch_size):
        # As full_pass_statistics: the same statistics, summed in the same order.
        batch_stats, log_norm = chunk_statistics(X, params, shift, dtype, weights=weights)
        stats = stats + batch_stats
        present = None if weights is None or weights.all() else weights > 0
        worst.offer(*((X, log_norm) if present is None else (X[present], log_norm[present])))
        novel = novel_batch(X, novel_rows(X, log_norm, params), weights, params, shift, dtype)
        if novel is not None:
            novel_stats = novel_stats + novel.statistics
            kept = kept.offered(novel.records, novel.weights, 0.0, rng, draw.capacity)
            if every is not None:
                every.append(novel)
                if sum(b.records.shape[0] for b in every) > draw.capacity:
                    every = None
    if every is not None:
        records = np.concatenate([b.records for b in every]) if every else np.empty((0, d))
        weights = np.concatenate([b.weights for b in every]) if every else np.empty(0)
    else:
        # A sample drawn in proportion to weight: each stands for an equal share of the total.
        kept = kept.merged()
        records, weights = kept.records, np.full(len(kept), kept.offered_weight / len(kept))
    novel = NovelBatch(records, weights, novel_stats)
    return PartitionStatistics(stats, worst.records, worst.scores, int(source.skipped_records), novel)


def _sum(parts: list[PartitionStatistics]) -> PartitionStatistics:
    total = parts[0]
    for part in parts[1:]:
        total = total + part
    return total


def statistics_of(
    source: DaskSource,
    params: MixtureParams,
    shift: np.ndarray,
    batch_size: int,
    indices: list[int] | None = None,
    dtype: np.dtype | type = np.float64,
    novelty: NoveltyDraw | None = None,
) -> PartitionStatistics:
    """Map the E-step over the partitions (all, or ``indices``) and sum the results: on a
    ``distributed`` cluster through :func:`~streamgmm.dask.on_workers.map_on_workers` (parameters
    scattered once, one task per worker), elsewhere as a task per partition, tree-reduced. With
    ``novelty``, each partition also returns its novel records
    (:func:`partition_statistics_with_novelty`)."""
    import dask

    client = cluster_client(source)
    args: tuple[object, ...] = (params, shift, batch_size, np.dtype(dtype))
    function: Callable[..., PartitionStatistics] = partition_statistics
    each = None
    if novelty is not None:  # the partition's index goes first: it seeds the partition's draw
        function, each, args = partition_statistics_with_novelty, range(len(source)), (*args, novelty)
    if client is not None:
        return _sum(map_on_workers(source, client, function, args, _sum, indices, indexed=each is not None))
    tasks = source.map(function, *args, each=each)
    if indices is not None:
        tasks = [tasks[i] for i in indices]
    total = tree_reduce(tasks, lambda parts: dask.delayed(_sum, pure=True)(parts))
    return source.compute(total)


def run_dask_batch_em(
    source: DaskSource,
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
    """Exact EM over the partitions: one map and tree-reduce per iteration (the single-process
    :func:`~streamgmm.em.batch.run_batch_em`, distributed)."""

    def e_step(params: MixtureParams) -> tuple[SufficientStatistics, np.ndarray]:
        result = statistics_of(source, params, shift, batch_size, dtype=dtype)
        source.skipped_records = result.skipped
        return result.statistics, result.worst_records

    return em_iterations(
        e_step,
        params,
        reg_covar=reg_covar,
        tol=tol,
        max_iter=max_iter,
        on_iteration=on_iteration,
        lower_bound=lower_bound,
    )


def wave_step_size(schedule: StepSchedule, step: int, n_records: float, batch_size: int) -> tuple[float, int]:
    """The step for a wave of ``n_records`` after ``step`` mini-batches, and the mini-batches it
    stands for: the total weight those records would get as successive mini-batches."""
    full, rest = divmod(int(round(n_records)), batch_size)
    keep = 1.0
    t = step
    for _ in range(full):
        t += 1
        keep *= 1.0 - schedule.step(t)
    if rest:
        t += 1
        keep *= 1.0 - schedule.step(t) * rest / batch_size
    return 1.0 - keep, t - step


def wave_update(
    state: OnlineState,
    wave: PartitionStatistics,
    schedule: StepSchedule,
    burn_in: int,
    reg_covar: float,
    batch_size: int,
) -> tuple[OnlineState, BatchUpdate]:
    """One stepwise-EM step on a wave's merged statistics (computed under ``state.params``),
    with its novel records when it has any."""
    eta, steps = wave_step_size(schedule, state.step, wave.statistics.n_records, batch_size)
    novel = wave.novel if wave.novel is not None and wave.novel.records.shape[0] else None
    return blend_step(state, wave.statistics, wave.worst_records, eta, steps, burn_in, reg_covar, novel)


def run_dask_online_em(
    source: DaskSource,
    state: OnlineState,
    *,
    schedule: StepSchedule,
    burn_in: int,
    reg_covar: float,
    batch_size: int,
    partitions_per_step: int,
    max_passes: int = 1,
    tol: float = 0.0,
    rng: np.random.Generator | None = None,
    on_wave: Callable[[OnlineState, BatchUpdate], None] | None = None,
    dtype: np.dtype | type = np.float64,
) -> OnlineEMResult:
    """Online EM in waves of ``partitions_per_step`` partitions; ``rng`` shuffles the order in
    which partitions are visited (within a wave order does not matter: one set of parameters)."""
    if partitions_per_step < 1:
        raise ValueError(f"partitions_per_step must be >= 1, got {partitions_per_step}")

    def one_pass(state: OnlineState) -> Iterator[tuple[OnlineState, BatchUpdate]]:
        order = list(range(len(source))) if rng is None else [int(i) for i in rng.permutation(len(source))]
        skipped = 0
        for start in range(0, len(order), partitions_per_step):
            moves = state.moves
            novelty = None if moves is None else NoveltyDraw(moves.seed, state.step, moves.capacity())
            wave = statistics_of(
                source,
                state.params,
                state.statistics.shift,
                batch_size,
                order[start : start + partitions_per_step],
                dtype,
                novelty,
            )
            skipped += wave.skipped
            if wave.statistics.n_records == 0:
                continue  # empty partitions: nothing to learn from
            state, update = wave_update(state, wave, schedule, burn_in, reg_covar, batch_size)
            yield state, update
        source.skipped_records = skipped

    return online_passes(one_pass, state, max_passes=max_passes, tol=tol, on_batch=on_wave)


def default_partitions_per_step(source: DaskSource) -> int:
    """W by default: one partition per worker thread, so a wave keeps the cluster busy."""
    client = source.client
    if client is None:
        try:
            from distributed import default_client

            client = default_client()
        except (ImportError, ValueError):
            client = None
    if client is not None:
        threads = sum(client.nthreads().values())
    else:
        threads = os.cpu_count() or 1
    return max(1, min(int(threads), len(source)))
