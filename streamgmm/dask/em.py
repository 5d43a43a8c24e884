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
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from streamgmm.dask.on_workers import cluster_client, map_on_workers
from streamgmm.dask.source import DaskSource, tree_reduce
from streamgmm.em.batch import BatchEMResult, em_iterations, full_pass_statistics
from streamgmm.em.online import BatchUpdate, OnlineEMResult, OnlineState, StepSchedule, blend_step, online_passes
from streamgmm.io.sources import ChunkSource
from streamgmm.mixture.params import MixtureParams
from streamgmm.mixture.reseeding import WorstRecords
from streamgmm.mixture.statistics import SufficientStatistics


@dataclass
class PartitionStatistics:
    """One partition's (or a merged group's) E-step: statistics, its worst-explained records
    (for re-seeding) and the records its nan policy skipped. Associative under ``+``."""

    statistics: SufficientStatistics
    worst_records: np.ndarray
    worst_scores: np.ndarray
    skipped: int = 0

    def __add__(self, other: PartitionStatistics) -> PartitionStatistics:
        worst = WorstRecords(self.statistics.n_components, self.statistics.n_features)
        worst.offer(self.worst_records, self.worst_scores)
        worst.offer(other.worst_records, other.worst_scores)
        return PartitionStatistics(
            self.statistics + other.statistics, worst.records, worst.scores, self.skipped + other.skipped
        )


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
    return PartitionStatistics(stats, worst.records, worst.scores, int(getattr(source, "skipped_records", 0)))


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
) -> PartitionStatistics:
    """Map the E-step over the partitions (all, or ``indices``) and sum the results: on a
    ``distributed`` cluster through :func:`~streamgmm.dask.on_workers.map_on_workers` (parameters
    scattered once, one task per worker), elsewhere as a task per partition, tree-reduced."""
    import dask

    client = cluster_client(source)
    if client is not None:
        args = (params, shift, batch_size, np.dtype(dtype))
        return _sum(map_on_workers(source, client, partition_statistics, args, _sum, indices))
    tasks = source.map(partition_statistics, params, shift, batch_size, np.dtype(dtype))
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
    """One stepwise-EM step on a wave's merged statistics (computed under ``state.params``)."""
    eta, steps = wave_step_size(schedule, state.step, wave.statistics.n_records, batch_size)
    return blend_step(state, wave.statistics, wave.worst_records, eta, steps, burn_in, reg_covar)


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
            wave = statistics_of(
                source,
                state.params,
                state.statistics.shift,
                batch_size,
                order[start : start + partitions_per_step],
                dtype,
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
