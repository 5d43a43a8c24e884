"""One pass of a function over a Dask source's partitions on a ``distributed`` cluster, with
little Python overhead per partition: the shared arguments (the parameters) are scattered to
every worker once per pass, a worker's partitions are handled by one task that combines their
results where they were computed, and decoded partitions can be kept in the workers' memory
between passes (``persist``) instead of being read again.

Which partitions a task handles: cached partitions go with the worker that holds them (so
nothing but the small results travel); a lake's files, which any worker can read, are spread
over the workers by record count; Dask DataFrame and Array partitions that are not cached stay
one task each, because a grouped task would hold all of its partitions in memory at once.

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

import uuid
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from streamgmm.dask.source import DaskSource, Partition, PartitionSpec, open_partition
from streamgmm.io.columns import DataError
from streamgmm.io.parquet_source import READ_BATCH
from streamgmm.io.sources import ArraySource, ChunkSource

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


def should_persist(source: DaskSource, client: Any) -> bool:
    """Whether to keep ``source``'s decoded partitions on the workers: its ``persist`` option, and
    for ``"auto"``, whether their known size fits :data:`PERSIST_MEMORY_SHARE` of the workers'
    memory limits (never when the size is unknown, as for a DataFrame's partitions)."""
    if source.persist != "auto":
        return bool(source.persist)
    if source.decoded_bytes is None:
        return False
    limits = [info.get("memory_limit") or 0 for info in client.scheduler_info()["workers"].values()]
    return 0 < source.decoded_bytes <= PERSIST_MEMORY_SHARE * sum(limits)


def map_on_workers(
    source: DaskSource,
    client: Any,
    function: Callable[..., Any],
    args: Sequence[Any],
    combine: Callable[[list[Any]], Any],
    indices: Sequence[int] | None = None,
) -> list[Any]:
    """``combine([function(partition_source, *args) for each partition of a group])`` for every
    group of the partitions (all, or ``indices``), computed on the workers; ``args`` are
    scattered once. The groups' results come back in a fixed order (by their first partition)."""
    import dask

    chosen = list(range(len(source))) if indices is None else list(indices)
    shared = client.scatter({f"streamgmm-shared-{uuid.uuid4().hex}": tuple(args)}, broadcast=True, hash=False)
    shared = next(iter(shared.values()))
    cache = source.cache if source.cache is not None and source.cache.client is client else None
    if cache is None and should_persist(source, client):
        cache = source.cache = WorkerCache(source, client)
    if cache is not None:
        groups = _by_holder(client, cache.ready(chosen), chosen)
        futures = [
            client.submit(
                _run_group,
                function,
                combine,
                shared,
                [(source.partitions[i].spec, cache.future(i), True) for i in members],
                workers=[worker] if worker else None,
                allow_other_workers=True,
                pure=False,
            )
            for worker, members in groups
        ]
    elif all(_is_plain_partition(source.partitions[i]) for i in chosen):
        groups = _balanced(client, [source.partitions[i].n_records for i in chosen], chosen)
        futures = [
            client.submit(
                _run_group,
                function,
                combine,
                shared,
                [(source.partitions[i].spec, source.partitions[i].data, False) for i in members],
                workers=[worker],
                allow_other_workers=True,
                pure=False,
            )
            for worker, members in groups
        ]
    else:
        tasks = [
            dask.delayed(_run_group, pure=False)(
                function, combine, shared, [(source.partitions[i].spec, source.partitions[i].data, False)]
            )
            for i in chosen
        ]
        futures = client.compute(tasks)
    return client.gather(futures)


class WorkerCache:
    """Futures of a source's decoded partitions (a float matrix and the records the nan policy
    skipped), made on first use and held on the workers until this object is dropped."""

    def __init__(self, source: DaskSource, client: Any):
        self.source = source
        self.client = client
        self.futures: dict[int, Any] = {}
        groups = _balanced(client, [p.n_records for p in source.partitions], range(len(source)))
        # Where each lake file is first decoded (the scheduler places the other kinds).
        self.placement = {index: worker for worker, members in groups for index in members}

    def future(self, index: int) -> Any:
        """The future of partition ``index``'s decoded records, submitted on first use."""
        if index not in self.futures:
            import dask

            partition = self.source.partitions[index]
            if _is_plain_partition(partition):
                self.futures[index] = self.client.submit(
                    decode_partition,
                    partition.data,
                    partition.spec,
                    workers=[self.placement[index]],
                    allow_other_workers=True,
                    pure=False,
                )
            else:
                decode = dask.delayed(decode_partition, pure=False)
                self.futures[index] = self.client.compute(decode(partition.data, partition.spec))
        return self.futures[index]

    def ready(self, indices: Sequence[int]) -> list[Any]:
        """The futures of ``indices``, once decoded (in parallel, the first time), so that they
        can be grouped by the worker that holds them; a decoding error is raised here."""
        from distributed import wait

        futures = [self.future(i) for i in indices]
        with self.client.as_current():  # wait() uses the current client, not necessarily this one
            wait(futures)
        for future in futures:
            if future.status == "error":
                future.result()  # raises the worker's exception, naming the partition
        return futures


def decode_partition(data: Any, spec: PartitionSpec) -> tuple[np.ndarray, int]:
    """A partition's records as one float matrix, and the records its nan policy skipped."""
    try:
        source = open_partition(data, spec)
        batches = list(source.batches(READ_BATCH))
    except Exception as error:
        raise _named(error, spec.where) from error
    matrix = np.concatenate(batches) if batches else np.empty((0, spec.n_features))
    return matrix, int(getattr(source, "skipped_records", 0))


def _run_group(
    function: Callable[..., Any],
    combine: Callable[[list[Any]], Any],
    shared: tuple[Any, ...],
    items: list[tuple[PartitionSpec, Any, bool]],
) -> Any:
    results = []
    for spec, data, decoded in items:
        try:
            results.append(function(_cached_source(*data) if decoded else open_partition(data, spec), *shared))
        except Exception as error:
            raise _named(error, spec.where) from error
    return combine(results)


def _cached_source(matrix: np.ndarray, skipped: int) -> ChunkSource:
    source = ArraySource(matrix)
    source.skipped_records = skipped
    return source


def _named(error: Exception, where: str) -> Exception:
    """The error as raised on the worker, or a DataError naming the partition when its message
    does not already (an OSError from the file system, a MemoryError, ...)."""
    if where in str(error):
        return error
    return DataError(f"{where}: {type(error).__name__}: {error}")


def _is_plain_partition(partition: Partition) -> bool:
    """A lake's file: read by whichever worker is given it (no Dask dependency to compute)."""
    return partition.spec.kind == "lake"


def _workers(client: Any) -> list[str]:
    return sorted(client.scheduler_info()["workers"])


def _balanced(client: Any, sizes: Sequence[int | None], members: Sequence[int]) -> list[tuple[str, list[int]]]:
    """``members`` spread over the workers, largest first onto the least loaded (by records):
    one group per worker that gets any, each in partition order."""
    workers = _workers(client)
    load = [0] * len(workers)
    groups: list[list[int]] = [[] for _ in workers]
    for size, index in sorted(zip(sizes, members), key=lambda pair: (-(pair[0] or 0), pair[1])):
        target = min(range(len(workers)), key=lambda w: (load[w], w))
        load[target] += max(int(size or 0), 1)
        groups[target].append(index)
    return [(worker, sorted(group)) for worker, group in zip(workers, groups) if group]


def _by_holder(client: Any, futures: list[Any], members: list[int]) -> list[tuple[str | None, list[int]]]:
    """``members`` grouped by the worker holding their cached partition; partitions not (or no
    longer) in memory go in a group of their own, computed wherever the scheduler decides."""
    holders = client.who_has(futures)
    groups: dict[str | None, list[int]] = {}
    for future, index in zip(futures, members):
        where = holders.get(future.key) or [None]
        groups.setdefault(sorted(where)[0], []).append(index)
    return sorted(groups.items(), key=lambda pair: pair[1][0])
