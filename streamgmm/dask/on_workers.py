"""One pass of a function over a Dask source's partitions on a ``distributed`` cluster, with
little Python overhead per partition: the shared arguments (the parameters) are scattered to
every worker once per pass, a worker's partitions are handled by one task that combines their
results where they were computed, and decoded partitions can be kept in the workers' memory
between passes (``persist``) instead of being read again.

Which partitions a task handles: cached partitions go with the worker that holds them (so
nothing but the small results travel); a lake's files, which any worker can read, are spread
over the workers by record count; Dask DataFrame and Array partitions that are not cached stay
one task each, because a grouped task would hold all of its partitions in memory at once. The
plan (workers, persist or not, where cached partitions live) is made at a source's first pass
and kept, so a pass costs two round trips to the scheduler: the scatter, and the tasks.

Examples
--------
>>> import numpy as np, dask.array as da
>>> from distributed import Client, LocalCluster
>>> from streamgmm.dask.source import dask_source
>>> from streamgmm.dask.on_workers import map_on_workers
>>> X = da.from_array(np.arange(20.0).reshape(10, 2), chunks=(4, 2))
>>> def scaled_sums(part, scale):
...     return scale * part.X.sum(axis=0)
>>> with LocalCluster(n_workers=1, processes=False, dashboard_address=":0") as cluster, Client(cluster) as client:
...     source = dask_source(X, client=client, persist=True)
...     sums = map_on_workers(source, client, scaled_sums, (2.0,), sum)
>>> np.sum(sums, axis=0).tolist()
[180.0, 200.0]
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from streamgmm.dask.source import DaskSource, Partition, PartitionSpec, open_partition
from streamgmm.io.records.columns import DataError
from streamgmm.io.sources.chunk_source import ArraySource, ChunkSource
from streamgmm.io.sources.parquet import READ_BATCH

# "auto" persists when the decoded partitions take at most this share of the workers' memory
# limits: the rest is left for the E-step's working arrays and Dask's own bookkeeping.
PERSIST_MEMORY_SHARE = 0.25


def cluster_client(source: DaskSource) -> Any:
    """The ``distributed.Client`` the source computes on: its own, or the default one of this
    process; None on Dask's local schedulers."""
    if source.client is not None:
        return source.client
    try:
        from distributed import default_client

        return default_client()
    except (ImportError, ValueError):
        return None


def map_on_workers(
    source: DaskSource,
    client: Any,
    function: Callable[..., Any],
    args: Sequence[Any],
    combine: Callable[[list[Any]], Any],
    indices: Sequence[int] | None = None,
    indexed: bool = False,
) -> list[Any]:
    """``combine([function(partition_source, *args) for each partition of a group])`` for every
    group of the partitions (all, or ``indices``), computed on the workers; ``args`` are
    scattered once. With ``indexed``, ``function`` is given the partition's index after its
    source: ``function(partition_source, i, *args)``. The groups, and the order of their
    results, depend only on the source's plan (its workers and where its cached partitions
    live), so repeated passes sum alike."""
    import dask

    chosen = list(range(len(source))) if indices is None else list(indices)
    if source.plan is None or source.plan.client is not client:
        source.plan = WorkerPlan(source, client)
    plan = source.plan
    shared = client.scatter({f"streamgmm-shared-{uuid.uuid4().hex}": tuple(args)}, broadcast=True, hash=False)
    shared = next(iter(shared.values()))

    def group(members: list[int], cached: bool, **where: Any) -> Any:
        parts = source.partitions
        items = [(i, parts[i].spec, plan.cached(i) if cached else parts[i].data, cached) for i in members]
        return client.submit(_run_group, function, combine, shared, items, indexed, pure=False, **where)

    if plan.persist:
        # No restriction: the scheduler runs each group where its cached partitions are. A wave
        # of online EM (a few partitions) goes one task per partition, which the scheduler can
        # spread even when they are cached on one worker.
        groups = plan.cached_groups(chosen) if indices is None else [[i] for i in chosen]
        futures = [group(members, True) for members in groups]
    elif all(_is_plain_partition(source.partitions[i]) for i in chosen):
        sizes = [source.partitions[i].n_records for i in chosen]
        spread = _balanced(plan.workers, sizes, chosen)
        groups = [members for _, members in spread]
        futures = [group(members, False, workers=[worker], allow_other_workers=True) for worker, members in spread]
    else:
        # A DataFrame's or Array's partitions are Dask tasks: one each, so that a worker holds
        # one at a time.
        run = dask.delayed(_run_group, pure=False)
        p = source.partitions
        futures = client.compute(
            [run(function, combine, shared, [(i, p[i].spec, p[i].data, False)], indexed) for i in chosen]
        )
        groups = [[i] for i in chosen]
    if source.progress is not None:
        _report(futures, groups, source)
    return client.gather(futures)


def _report(futures: list[Any], groups: list[list[int]], source: DaskSource) -> None:
    """Call ``source.progress`` with each group's records once its task has finished (in the
    tasks' order; an error is left for the gather that follows)."""
    parts = source.partitions
    for future, members in zip(futures, groups):
        if future.exception() is not None:
            return
        source.progress(sum(parts[i].n_records or 0 for i in members))


class WorkerPlan:
    """How a source's passes run on one client's workers, decided at its first pass and kept
    for the next (no more questions to the scheduler per pass): whether to persist (the
    source's ``persist`` option; ``"auto"`` persists when the records' known size fits
    :data:`PERSIST_MEMORY_SHARE` of the workers' memory limits, never when it is unknown, as for
    a DataFrame), and with persist, the futures of the decoded partitions, held on the workers
    until this plan (or its source) is dropped."""

    def __init__(self, source: DaskSource, client: Any):
        # The partitions, not the source: the source holds this plan, and without a cycle the
        # cached partitions are released as soon as the source is dropped.
        self.partitions = source.partitions
        self.client = client
        workers = client.scheduler_info()["workers"]
        self.workers = sorted(workers)
        self.persist = bool(source.persist)
        if source.persist == "auto":
            limit = sum(info.get("memory_limit") or 0 for info in workers.values())
            size = source.decoded_bytes
            self.persist = size is not None and 0 < size <= PERSIST_MEMORY_SHARE * limit
        self.futures: dict[int, Any] = {}
        # Where each cached partition lives: a lake's file where it is first decoded (spread by
        # record count), other partitions where the scheduler put them (learned once ready).
        lake = [i for i, p in enumerate(source.partitions) if _is_plain_partition(p)]
        sizes = [source.partitions[i].n_records for i in lake]
        self.home: dict[int, str] = {i: w for w, members in _balanced(self.workers, sizes, lake) for i in members}

    def cached(self, index: int) -> Any:
        """The future of partition ``index``'s decoded records, submitted on first use."""
        if index not in self.futures:
            import dask

            partition = self.partitions[index]
            if index in self.home:
                self.futures[index] = self.client.submit(
                    decode_partition,
                    partition.data,
                    partition.spec,
                    workers=[self.home[index]],
                    allow_other_workers=True,
                    pure=False,
                )
            else:
                decode = dask.delayed(decode_partition, pure=False)
                self.futures[index] = self.client.compute(decode(partition.data, partition.spec))
        return self.futures[index]

    def cached_groups(self, indices: list[int]) -> list[list[int]]:
        """``indices`` grouped by the worker that holds (or will hold) their decoded records."""
        unknown = [i for i in indices if i not in self.home]
        if unknown:
            from distributed import wait

            futures = [self.cached(i) for i in unknown]
            with self.client.as_current():  # wait() uses the current client, not necessarily this one
                wait(futures)
            holders = self.client.who_has(futures)
            for i, future in zip(unknown, futures):
                self.home[i] = min(holders.get(future.key) or ("",))
        groups: dict[str, list[int]] = {}
        for i in indices:
            groups.setdefault(self.home[i], []).append(i)
        return sorted(groups.values())


def decode_partition(data: Any, spec: PartitionSpec) -> tuple[np.ndarray, int, bool]:
    """A partition's records as one float matrix, the records its nan policy skipped, and
    whether the matrix ends with a column of record weights."""
    with naming(spec.where):
        source = open_partition(data, spec)
        batches = [batch.stacked() for batch in source.batches(READ_BATCH)]
    weighted = source.weighted
    matrix = np.concatenate(batches) if batches else np.empty((0, spec.n_features + weighted))
    return matrix, int(source.skipped_records), weighted


def _run_group(
    function: Callable[..., Any],
    combine: Callable[[list[Any]], Any],
    shared: tuple[Any, ...],
    items: list[tuple[int, PartitionSpec, Any, bool]],
    indexed: bool = False,
) -> Any:
    results = []
    for index, spec, data, decoded in items:
        with naming(spec.where):
            source = _cached_source(*data) if decoded else open_partition(data, spec)
            results.append(function(source, index, *shared) if indexed else function(source, *shared))
    return combine(results)


def _cached_source(matrix: np.ndarray, skipped: int, weighted: bool = False) -> ChunkSource:
    source = ArraySource.with_weight_column(matrix) if weighted else ArraySource(matrix)
    source.skipped_records = skipped
    return source


@contextlib.contextmanager
def naming(where: str) -> Iterator[None]:
    """Errors raised in the block name the partition ``where`` (a worker's traceback reaches the
    client without the task that raised it): as they are when their message does already, as
    a DataError for a file system's error, otherwise with a note."""
    try:
        yield
    except Exception as error:
        if where in str(error):
            raise
        if isinstance(error, OSError):
            raise DataError(f"{where}: cannot read ({type(error).__name__}: {error})") from error
        error.add_note(f"while reading {where} on a Dask worker")
        raise


def _is_plain_partition(partition: Partition) -> bool:
    """A lake's file: read by whichever worker is given it (no Dask dependency to compute)."""
    return partition.spec.kind == "lake"


def _balanced(workers: list[str], sizes: Sequence[int | None], members: Sequence[int]) -> list[tuple[str, list[int]]]:
    """``members`` spread over the workers, largest first onto the least loaded (by records):
    one group per worker that gets any, each in partition order."""
    load = [0] * len(workers)
    groups: list[list[int]] = [[] for _ in workers]
    for size, index in sorted(zip(sizes, members), key=lambda pair: (-(pair[0] or 0), pair[1])):
        target = min(range(len(workers)), key=lambda w: (load[w], w))
        load[target] += max(int(size or 0), 1)
        groups[target].append(index)
    return [(worker, sorted(group)) for worker, group in zip(workers, groups) if group]
