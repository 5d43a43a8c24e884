"""Dask sources: a ``dask.dataframe.DataFrame``, a ``dask.array.Array`` or a Parquet lake read
partition by partition on the workers of a Dask scheduler, never collected on the client.

A :class:`DaskSource` is a list of partitions (DataFrame partitions, row blocks of an array, or
the files of a lake) and the recipe that turns one partition into a chunk source *on the worker
that holds it*: DataFrame partitions are read by column name through the same
:class:`~streamgmm.io.records.columns.FeatureReader` (and ``nan_policy``) as local tables, array blocks are
checked as local arrays, and a lake's file is opened as a one-file
:class:`~streamgmm.io.sources.parquet.ParquetSource` (same filter, nan policy, hive keys), so every
partition yields exactly the records the local source would. The algorithms (``dask_em``) map a
function over the partitions and tree-reduce the small results; only those results and the
parameters travel.

``client=None`` computes on Dask's current scheduler: the local thread pool, or the
``distributed.Client`` made default in this process. The initialisation sample is drawn on the
workers: a reservoir per partition, merged pairwise up a tree (:func:`merge_samples`), so only
samples of at most ``size`` records travel.

Examples
--------
>>> import numpy as np, dask.array as da
>>> from streamgmm.dask.source import dask_source
>>> X = da.from_array(np.arange(20.0).reshape(10, 2), chunks=(4, 1))
>>> source = dask_source(X)
>>> source.n_features, len(source.partitions)
(2, 3)
>>> source.sample(4, np.random.default_rng(0)).features.shape
(4, 2)
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from streamgmm.io.lake.paths import is_path_like
from streamgmm.io.records.checks import as_float_matrix
from streamgmm.io.records.columns import (
    DataError,
    FeatureReader,
    check_nan_policy,
    check_weight_column,
    feature_columns,
)
from streamgmm.io.sources.arrow import frame_table
from streamgmm.io.sources.chunk_source import ArraySource, Batch, ChunkSource, is_dask_collection, reservoir_sample
from streamgmm.io.sources.parquet import READ_BATCH, ParquetSource

if TYPE_CHECKING:  # pyarrow.dataset imports pandas: loaded only where a dataset is used
    import pyarrow.dataset as ds

# Partial results merged per task of the reduction tree: few levels, small tasks.
FANOUT = 8


@dataclass(frozen=True)
class PartitionSpec:
    """How a worker reads a partition; small and picklable (it travels with every task)."""

    kind: str  # "frame", "array" or "lake"
    where: str  # for messages: "dask partition 3" or the file's path
    feature_names: tuple[str, ...] | None
    n_features: int
    nan_policy: str = "raise"
    filter: Any = None
    relative_path: str | None = None  # a lake file's path under the lake's base directory
    weight_column: str | None = None  # the record weights' column: batches carry them


@dataclass(frozen=True)
class Partition:
    data: Any  # a dask Delayed (a pandas DataFrame or numpy block on the worker), or a one-file dataset
    spec: PartitionSpec
    n_records: int | None = None  # when known before reading (a lake's footers, an array's chunks)


def open_partition(data: Any, spec: PartitionSpec, passthrough: Sequence[str] = ()) -> ChunkSource:
    """One partition as a chunk source, on the worker: the records the local source would give."""
    if spec.kind == "lake":
        return ParquetSource(
            data.dataset() if isinstance(data, LakeFileRef) else data,
            columns=list(spec.feature_names or ()),
            passthrough=passthrough,
            filter=spec.filter,
            nan_policy=spec.nan_policy,
            weight_column=spec.weight_column,
        )
    if spec.kind == "frame":
        table = frame_table(data)
        names = list(spec.feature_names or ())
        reader = FeatureReader(names, spec.nan_policy, weight_column=spec.weight_column)
        matrix = reader.features(table, spec.where)
        if spec.weight_column is None:
            source = ArraySource(matrix, feature_names=names)
        else:
            source = ArraySource.with_weight_column(matrix, names)
        source.skipped_records = reader.skipped
        return source
    allow_nan = spec.nan_policy == "marginalize"
    return ArraySource(
        as_float_matrix(data, where=spec.where, n_features=spec.n_features, min_records=0, allow_nan=allow_nan)
    )


class DaskSource:
    """The partitions of a Dask collection or Parquet lake, read on the workers.

    ``client`` is a ``distributed.Client`` or None (Dask's current scheduler). ``batches`` is not
    offered: partitions are never collected on the client; the algorithms in
    :mod:`streamgmm.dask.em` map over ``partitions`` instead. ``persist`` is
    :func:`dask_source`'s option; ``plan`` is how passes run on a cluster's workers, with the
    decoded partitions kept there (:class:`~streamgmm.dask.on_workers.WorkerPlan`), set by the
    first pass and released with this object. With a ``weight_column`` the source is weighted:
    every partition's batches and samples carry the record weights. ``inputs`` are a lake's
    inputs as named (its listing's ``inputs``), which an output must not overlap; none for a
    Dask collection.
    """

    reiterable = True
    shuffle_modes = ("partitions",)
    start_progress = None
    sampled_every_record = None

    def __init__(
        self,
        partitions: list[Partition],
        n_features: int,
        feature_names: list[str] | None,
        client: Any = None,
        persist: bool | str = "auto",
        weight_column: str | None = None,
        inputs: tuple[str, ...] = (),
    ):
        if not partitions:
            raise ValueError("the Dask collection has no partitions")
        if persist not in (True, False, "auto"):
            raise ValueError(f"Invalid value for 'persist': {persist!r}; expected True, False or 'auto'")
        self.partitions = partitions
        self.n_features = n_features
        self.feature_names = feature_names
        self.weight_column = weight_column
        self.weighted = weight_column is not None
        self.client = client
        self.persist = persist
        self.inputs = inputs
        self.plan: Any = None
        self.skipped_records = 0
        # Called with the records of each group of partitions a pass on a cluster has finished
        # (the CLI's progress bar); None: nothing is reported.
        self.progress: Callable[[int], None] | None = None

    @property
    def decoded_bytes(self) -> int | None:
        """The float64 size of every partition's records, when known before reading."""
        if any(p.n_records is None for p in self.partitions):
            return None
        return 8 * (self.n_features + self.weighted) * sum(int(p.n_records or 0) for p in self.partitions)

    def __len__(self) -> int:
        return len(self.partitions)

    def map(self, function: Callable[..., Any], *args: Any, each: Sequence[Any] | None = None) -> list[Any]:
        """Lazy ``function(chunk_source, [each[i],] *args)`` for every partition i (dask Delayed
        values). ``args`` are put in the graph once, so each worker fetches them once."""
        import dask

        shared = [arg if _is_plain(arg) else dask.delayed(arg, pure=True) for arg in args]
        extra = [()] * len(self.partitions) if each is None else [(value,) for value in each]
        return [
            dask.delayed(_on_partition, pure=True)(p.data, p.spec, function, *own, *shared)
            for p, own in zip(self.partitions, extra)
        ]

    def compute(self, value: Any) -> Any:
        """Compute a Delayed (or a list of them) on this source's scheduler."""
        if self.client is not None:
            return self.client.compute(value, sync=True)
        import dask

        return dask.compute(value)[0]

    def batches(self, batch_size: int, rng: np.random.Generator | None = None) -> Any:
        raise TypeError(
            "a Dask source is read on the workers, never streamed to the client; fit it with "
            "StreamingGaussianMixture.fit, or use .compute() to bring it into memory first"
        )

    def sample(self, size: int, rng: np.random.Generator) -> Batch:
        """Up to ``size`` records drawn uniformly from every partition, sampled on the workers."""
        import dask

        n = len(self.partitions)
        # Each partition draws with its own seed, each merge with its own: reproducible.
        seeds = np.random.SeedSequence(int(rng.integers(2**63))).spawn(2 * n)
        samples = self.map(_draw, size, each=seeds[:n])
        merge_seeds = iter(seeds[n:])
        total = tree_reduce(samples, lambda parts: dask.delayed(_merge_list, pure=True)(parts, size, next(merge_seeds)))
        records, _, skipped = self.compute(total)
        # Every partition was read whole: what the nan policy left out is known, as after a pass
        # (a fit whose sample is all the records makes no pass).
        self.skipped_records = skipped
        return Batch.of(records if records.shape[0] else np.empty((0, self.n_features + self.weighted)), self.weighted)


@contextlib.contextmanager
def connect(address: str | None = None, workers: int | None = None) -> Iterator[Any]:
    """A ``distributed.Client`` for the life of the block: to the scheduler at ``address``, or to
    a ``LocalCluster`` of ``workers`` single-threaded processes started (and stopped) here; None
    when neither is given (Dask's current scheduler)."""
    if address is not None and workers is not None:
        raise ValueError("give a scheduler address or a number of workers, not both")
    if address is None and workers is None:
        yield None
        return
    from distributed import Client, LocalCluster

    if address is not None:
        with Client(address) as client:
            yield client
        return
    # The dashboard needs bokeh; on loopback only, where a local user's browser can reach it.
    dashboard = "127.0.0.1:0" if importlib.util.find_spec("bokeh") is not None else None
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=dashboard) as cluster:
        with Client(cluster) as client:
            yield client


def tree_reduce(values: list[Any], combine: Callable[[list[Any]], Any]) -> Any:
    """Combine Delayed values ``FANOUT`` at a time up a tree; ``combine`` builds one Delayed
    from a list of them. The tree's shape depends only on the number of values, so a
    reduction is repeatable to the last bit, whichever workers run it."""
    while len(values) > 1:
        values = [combine(values[i : i + FANOUT]) for i in range(0, len(values), FANOUT)]
    return values[0]


def _is_plain(arg: Any) -> bool:
    return arg is None or isinstance(arg, (int, float, str, bool))


def _on_partition(data: Any, spec: PartitionSpec, function: Callable[..., Any], *args: Any) -> Any:
    return function(open_partition(data, spec), *args)


# ---------------------------------------------------------------------- sampling


def _draw(source: ChunkSource, seed: np.random.SeedSequence, size: int) -> tuple[np.ndarray, int, int]:
    """A uniform reservoir sample of one partition, the number of records it had, and the
    number its nan policy left out."""
    seen = 0

    def counted() -> Any:
        nonlocal seen
        for batch in source.batches(READ_BATCH):
            seen += batch.n_records
            yield batch.stacked()

    records = reservoir_sample(counted(), size, np.random.default_rng(seed))
    if records.shape[0] == 0:
        records = np.empty((0, (source.n_features or 0) + bool(source.weighted)))
    return records, seen, int(source.skipped_records)


def _merge_list(
    parts: list[tuple[np.ndarray, int, int]], size: int, seed: np.random.SeedSequence
) -> tuple[np.ndarray, int, int]:
    rng = np.random.default_rng(seed)
    records, seen = functools.reduce(lambda a, b: merge_samples(a, b, size, rng), [part[:2] for part in parts])
    return records, seen, sum(part[2] for part in parts)


def merge_samples(
    a: tuple[np.ndarray, int], b: tuple[np.ndarray, int], size: int, rng: np.random.Generator
) -> tuple[np.ndarray, int]:
    """Two uniform samples (of ``min(n, size)`` records from ``n`` each) as one uniform sample of
    the union: how many come from each side is hypergeometric, and a uniform subset of a uniform
    sample is a uniform sample."""
    (xa, na), (xb, nb) = a, b
    if xa.shape[0] == 0:
        return xb, na + nb
    if xb.shape[0] == 0:
        return xa, na + nb
    if na + nb <= size:
        return np.concatenate([xa, xb]), na + nb
    from_a = int(rng.hypergeometric(na, nb, size))
    pick_a = np.sort(rng.choice(xa.shape[0], from_a, replace=False))
    pick_b = np.sort(rng.choice(xb.shape[0], size - from_a, replace=False))
    return np.concatenate([xa[pick_a], xb[pick_b]]), na + nb


# ---------------------------------------------------------------------- building sources


def dask_source(
    data: Any,
    *,
    client: Any = None,
    feature_names: Sequence[str] | None = None,
    n_features: int | None = None,
    nan_policy: str | None = None,
    passthrough: Sequence[str] = (),
    persist: bool | str = "auto",
    weight_column: str | None = None,
) -> DaskSource:
    """A :class:`DaskSource` over a Dask DataFrame (features by column name: ``feature_names``,
    or every numeric column but ``passthrough``), a Dask Array (rows x features; columns are
    re-chunked into one block per row block), or a Parquet lake (a path, glob, list, dataset or
    :class:`~streamgmm.io.sources.parquet.ParquetSource`; one partition per file). A
    :class:`DaskSource` is returned as it is (on ``client``, when given).

    ``persist`` (on a ``distributed`` cluster): ``True`` keeps every partition's decoded records
    in the workers' memory from the first pass that reads it until the source is dropped, so
    batch EM's later iterations read no files; ``False`` reads the partitions again on every
    pass; ``"auto"`` persists when the records' size is known before reading (a lake, an array)
    and takes at most a quarter of the workers' memory limits
    (:data:`~streamgmm.dask.on_workers.PERSIST_MEMORY_SHARE`). ``weight_column`` names a
    DataFrame's or lake's column of record weights (the source is then weighted)."""
    names = list(feature_names) if feature_names is not None else None
    if isinstance(data, DaskSource):
        if names is not None and data.feature_names is not None and list(data.feature_names) != names:
            raise DataError(f"the model was fitted on columns {names}, but this source reads {data.feature_names}")
        if client is None or client is data.client:
            return data
        return DaskSource(
            data.partitions, data.n_features, data.feature_names, client, data.persist, data.weight_column, data.inputs
        )
    if isinstance(data, ParquetSource) or is_path_like(data):
        return _lake_source(data, client, names, nan_policy, passthrough, persist, weight_column)
    if not is_dask_collection(data):
        raise TypeError(f"expected a Dask DataFrame or Array, or Parquet paths, got {type(data).__name__}")
    policy = check_nan_policy(nan_policy or "raise")
    if hasattr(data, "_meta") and hasattr(data, "columns"):
        schema = pa.Schema.from_pandas(data._meta, preserve_index=False)
        weights = check_weight_column(schema, weight_column, names, "dask DataFrame")
        names = feature_columns(schema, names, passthrough, exclude=weights, where="dask DataFrame")
        partitions = [
            Partition(
                part,
                PartitionSpec(
                    "frame", f"dask partition {i}", tuple(names), len(names), policy, weight_column=weight_column
                ),
            )
            for i, part in enumerate(data.to_delayed())
        ]
        return DaskSource(partitions, len(names), names, client, persist, weight_column)
    if weight_column is not None:
        raise TypeError("weight_column names a column: give a Dask DataFrame or a lake, not a Dask array")
    if getattr(data, "ndim", None) != 2:
        raise ValueError(
            f"expected a 2-D Dask array of shape (n_records, n_features), got shape {getattr(data, 'shape', None)}"
        )
    d = data.shape[1]
    if not isinstance(d, (int, np.integer)) or np.isnan(d):
        raise ValueError("the Dask array's number of columns is unknown; call compute_chunk_sizes() first")
    if n_features is not None and d != n_features:
        raise ValueError(f"X has {d} features, but the model is expecting {n_features} features as input")
    if data.dtype.kind not in "biuf":
        raise ValueError(f"dask array of dtype {data.dtype}; expected numbers")
    data = data.rechunk({1: -1})
    rows = [None if np.isnan(n) else int(n) for n in data.chunks[0]]
    partitions = [
        Partition(block, PartitionSpec("array", f"dask array block {i}", None, int(d), policy), n)
        for i, (block, n) in enumerate(zip(data.to_delayed().ravel(), rows))
    ]
    return DaskSource(partitions, int(d), None, client, persist)


def _lake_source(
    data: Any,
    client: Any,
    names: list[str] | None,
    nan_policy: str | None,
    passthrough: Sequence[str],
    persist: bool | str,
    weight_column: str | None = None,
) -> DaskSource:
    if isinstance(data, ParquetSource):
        if weight_column is not None and weight_column != data.weight_column:
            raise ValueError(f"weight_column={weight_column!r}, but the ParquetSource reads {data.weight_column!r}")
        lake = data if names is None else data.with_features(names)
    else:
        lake = ParquetSource(
            data, columns=names, passthrough=passthrough, nan_policy=nan_policy or "raise", weight_column=weight_column
        )
    partitions = [
        Partition(
            one_file_dataset(lake, file.fragment),
            PartitionSpec(
                "lake",
                file.path,
                tuple(lake.feature_names),
                lake.n_features,
                lake.nan_policy,
                lake.filter,
                file.relative_path,
                lake.weight_column,
            ),
            file.num_rows,
        )
        for file in lake.files
    ]
    if not partitions:
        raise ValueError(f"no files to read in {lake.base_dir} (the filter selects none)")
    return DaskSource(
        partitions, lake.n_features, list(lake.feature_names), client, persist, lake.weight_column, lake.listing.inputs
    )


@dataclass(frozen=True)
class LakeFileRef:
    """One file of a lake as plain data for a task: its URL (or local path), the lake's base in
    the same form (for the file's hive keys) and the lake's schema. No filesystem object travels,
    so the scheduler, which unpickles tasks, needs no credentials and never opens a store; each
    worker opens the file with its own (from the standard variables, or a mounted disk)."""

    url: str
    base: str
    schema: pa.Schema

    def dataset(self) -> ds.FileSystemDataset:
        """The one-file dataset, opened where this runs (a worker)."""
        import pyarrow.dataset as ds
        import pyarrow.fs as pafs

        if "://" in self.url:
            filesystem, path = pafs.FileSystem.from_uri(self.url)
            base = pafs.FileSystem.from_uri(self.base)[1] if "://" in self.base else self.base
        else:
            filesystem, path, base = pafs.LocalFileSystem(), self.url, self.base
        return ds.dataset(
            [path],
            schema=self.schema,
            filesystem=filesystem,
            format="parquet",
            partitioning="hive",
            partition_base_dir=base,
        )


def one_file_dataset(lake: ParquetSource, fragment: Any) -> LakeFileRef | ds.FileSystemDataset:
    """What a task needs to read one file of the lake, and no more (a whole lake's file list
    would travel with every task): a :class:`LakeFileRef` for local disks and stores pyarrow
    opens by URL; for a filesystem object given by the user (fsspec's, say), which no URL
    names, a one-file dataset holding it."""
    import pyarrow.dataset as ds
    import pyarrow.fs as pafs

    listing = lake.listing
    filesystem = listing.filesystem
    if isinstance(filesystem, pafs.LocalFileSystem):
        return LakeFileRef(fragment.path, listing.base_dir, lake.schema)
    scheme = {"s3": "s3", "gcs": "gs", "abfs": "abfs", "hdfs": "hdfs"}.get(filesystem.type_name)
    if scheme is not None:
        return LakeFileRef(f"{scheme}://{fragment.path}", f"{scheme}://{listing.base_dir}", lake.schema)
    return ds.FileSystemDataset([fragment], schema=lake.schema, format=listing.format, filesystem=filesystem)
