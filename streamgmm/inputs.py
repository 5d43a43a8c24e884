"""Inputs: whatever a user passes to ``fit``, ``predict`` or ``assign``, as a chunk source.

Arrays and lists of rows, iterables of array chunks, Arrow tables, record batches and readers,
objects exporting the Arrow C stream interface (polars, DuckDB), pandas DataFrames, Parquet
paths, globs, URLs, lists of paths and ``pyarrow.dataset`` datasets are all accepted; objects
that already are sources pass through. Given the feature names a model was fitted on, tabular
inputs are read by those names, whatever else they hold.

Examples
--------
>>> import numpy as np, pyarrow as pa
>>> from streamgmm.inputs import as_source
>>> type(as_source(np.zeros((4, 2)))).__name__
'ArraySource'
>>> table = pa.table({"b": [1.0, 2.0], "id": [7, 8], "a": [3.0, 4.0]})
>>> source = as_source(table, feature_names=["a", "b"])
>>> source.feature_names, source.X.tolist()
(['a', 'b'], [[3.0, 1.0], [4.0, 2.0]])
"""

from __future__ import annotations

import itertools
import numbers
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from streamgmm.io.lake.paths import is_path_like
from streamgmm.io.records.checks import as_float_matrix, as_sample_weight, default_feature_names
from streamgmm.io.records.columns import DataError, FeatureReader, feature_columns
from streamgmm.io.sources.arrow import (
    TableSource,
    arrow_source,
    as_arrow_table,
    is_arrow_stream,
    is_dataframe,
    is_polars_frame,
)
from streamgmm.io.sources.chunk_source import (
    ArraySource,
    ChunkSource,
    IterableSource,
    check_source,
    drop_missing,
    is_dask_collection,
)
from streamgmm.io.sources.parquet import ParquetSource


def resolve_input(
    data: Any,
    *,
    client: Any = None,
    engine: str | None = None,
    n_features: int | None = None,
    feature_names: Sequence[str] | None = None,
    local: bool = False,
    persist: bool | str = "auto",
    nan_policy: str = "raise",
    sample_weight: Any = None,
    fitting: bool = True,
    passthrough: Sequence[str] = (),
    in_place: bool = False,
) -> ChunkSource | InMemoryRows:
    """The one place a user's input becomes a source; engines and sinks take the result.

    A Dask collection, or any input with a ``client`` or ``engine="dask"``, becomes a
    :class:`~streamgmm.dask.source.DaskSource` (fitted on the workers); anything else goes to
    :func:`as_source`. ``local=True`` (scoring in this process) refuses a Dask collection rather
    than collect it here. ``n_features`` and ``feature_names`` are a fitted model's. ``persist``
    (True, False or ``"auto"``) says whether a Dask source keeps its decoded partitions in the
    workers' memory between passes; see :func:`~streamgmm.dask.source.dask_source`.
    ``nan_policy``, ``sample_weight`` and ``fitting``: see :func:`as_source` (a Dask input gets
    the policy too, unless it is ``"raise"``, so that a lake source keeps its own).
    ``passthrough`` names the columns read beside the features of the lakes and frames made
    here (``assign``'s ``keep``).

    ``in_place`` is for a sink that writes one output row per input row (``assign``): an
    in-memory table, data frame or array then becomes :class:`InMemoryRows` (every row, nothing
    decoded; see :func:`rows_in_place`), and a Dask collection's columns are read by
    ``feature_names``, or by ``x0``, ``x1``, ... when there are none, as the rows in memory."""
    if engine not in (None, "dask"):
        raise ValueError(f"Invalid value for 'engine': {engine!r}; expected None or 'dask'")
    on_dask = client is not None or engine == "dask" or is_dask_collection(data)
    if on_dask and local:
        raise TypeError(
            "predict, score and friends run in this process and would collect the Dask collection here; "
            "use assign(model, X, out, client=...) to score it on the workers, or X.map_partitions(model.predict)"
        )
    if on_dask:
        if sample_weight is not None:
            raise ValueError(_NO_SAMPLE_WEIGHT.format(kind="a Dask input"))
        if is_lake(data):
            # The lake is opened here, as for a local fit, then split into one partition per file.
            data = as_source(data, n_features, feature_names, nan_policy=nan_policy, passthrough=passthrough)
        elif in_place and feature_names is None and n_features is not None:
            feature_names = default_feature_names(n_features)
        return on_dask_source(data, client, feature_names, n_features, persist, nan_policy, passthrough)
    if in_place and is_rows(data):
        return rows_in_place(data, n_features, feature_names)
    return as_source(
        data,
        n_features=n_features,
        feature_names=feature_names,
        nan_policy=nan_policy,
        sample_weight=sample_weight,
        fitting=fitting,
        passthrough=passthrough,
    )


def on_dask_source(
    data: Any,
    client: Any,
    feature_names: Sequence[str] | None,
    n_features: int | None,
    persist: bool | str,
    nan_policy: str,
    passthrough: Sequence[str],
) -> ChunkSource:
    """A Dask collection, :class:`~streamgmm.dask.source.DaskSource` or lake source as a
    :class:`~streamgmm.dask.source.DaskSource` read on the workers (see :func:`resolve_input`)."""
    from streamgmm.dask.source import dask_source  # the Dask extra, imported only when used

    return dask_source(
        data,
        client=client,
        feature_names=feature_names,
        n_features=n_features,
        persist=persist,
        nan_policy=None if nan_policy == "raise" else nan_policy,
        passthrough=passthrough,
    )


_NO_SAMPLE_WEIGHT = (
    "sample_weight is for an array or in-memory table X; {kind} brings its own weights: give the "
    "source a weight_column (ParquetSource, TableSource, dask_source(..., weight_column=...))"
)


def as_source(
    data: Any,
    n_features: int | None = None,
    feature_names: Sequence[str] | None = None,
    *,
    nan_policy: str = "raise",
    sample_weight: Any = None,
    fitting: bool = True,
    passthrough: Sequence[str] = (),
) -> ChunkSource:
    """A chunk source over ``data``. With ``feature_names``, tabular input is read by those
    names; arrays must then have as many columns. A lake made here reads the ``passthrough``
    columns beside its features.

    ``nan_policy`` applies to the sources made here (a source object keeps its own): for an
    array, NaN is an error (``"raise"``) or a missing value. When ``fitting``, an array's rows
    with a missing value (``"skip"``) or with nothing observed (``"marginalize"``) are left out
    and counted in ``skipped_records``; for scoring every row stays, and under ``"skip"`` the
    incomplete ones become rows with nothing observed (their results are NaN).
    ``sample_weight`` (one weight per record, for an array or in-memory table) makes a weighted
    source."""
    names = list(feature_names) if feature_names is not None else None
    if hasattr(data, "batches") and hasattr(data, "sample"):
        if sample_weight is not None:
            raise ValueError(_NO_SAMPLE_WEIGHT.format(kind=f"a {type(data).__name__}"))
        return _select(data, names)
    if is_path_like(data):
        if sample_weight is not None:
            raise ValueError(_NO_SAMPLE_WEIGHT.format(kind="a Parquet lake"))
        return ParquetSource(data, columns=names, passthrough=passthrough, nan_policy=nan_policy)
    in_memory = isinstance(data, (pa.Table, pa.RecordBatch)) or is_dataframe(data) or is_polars_frame(data)
    if in_memory and not fitting and nan_policy != "raise":
        return scored_table(data, names, nan_policy, sample_weight)
    if isinstance(data, (pa.Table, pa.RecordBatch, pa.RecordBatchReader)) or is_dataframe(data):
        return _weighed(arrow_source(data, columns=names, nan_policy=nan_policy), sample_weight)
    if is_arrow_stream(data) or is_polars_frame(data):
        # Read once into memory so that sampling, shuffling and repeated passes work as for arrays.
        return _weighed(TableSource(data, columns=names, nan_policy=nan_policy), sample_weight)
    # Sparse matrices are iterable (rows, or a dict's keys): reject them before that is tried.
    if is_array_like(data):
        return array_source(data, n_features, nan_policy, sample_weight, fitting)
    if sample_weight is not None:
        raise ValueError(_NO_SAMPLE_WEIGHT.format(kind="a stream of chunks"))
    if isinstance(data, Sequence) and data and isinstance(data[0], pa.RecordBatch):
        return arrow_source(pa.Table.from_batches(data), columns=names, nan_policy=nan_policy)
    if isinstance(data, Iterator):
        # Look at the first chunk to tell a stream of record batches from one of arrays; a
        # one-shot stream is buffered from its head anyway, so nothing is lost.
        try:
            first = next(data)
        except StopIteration:
            return IterableSource(iter(()), n_features=n_features, nan_policy=nan_policy)
        data = itertools.chain([first], data)
        if isinstance(first, pa.RecordBatch):
            return arrow_source(data, columns=names, nan_policy=nan_policy)
    if callable(data) or isinstance(data, Iterable):
        return IterableSource(data, n_features=n_features, nan_policy=nan_policy)
    raise TypeError(f"cannot stream records from {type(data).__name__}; pass an array or an iterable of arrays")


def is_lake(data: Any) -> bool:
    """Whether ``data`` is a lake: a :class:`~streamgmm.io.sources.parquet.ParquetSource`, or
    paths, a glob, a URL or a ``pyarrow.dataset`` to open as one."""
    return isinstance(data, ParquetSource) or is_path_like(data)


def is_array_like(data: Any) -> bool:
    """Whether ``data`` is read as one array: an ndarray, anything with ``__array__`` or
    ``toarray`` (refused as sparse later), or a plain list of rows."""
    return (
        isinstance(data, np.ndarray)
        or hasattr(data, "toarray")
        or hasattr(data, "__array__")
        or _is_nested_sequence_of_numbers(data)
    )


def is_table_like(data: Any) -> bool:
    """Whether ``data`` is an Arrow table, record batch or reader, a pandas or polars frame, or
    exports the Arrow C stream (a DuckDB relation): records with named columns."""
    arrow = isinstance(data, (pa.Table, pa.RecordBatch, pa.RecordBatchReader)) or is_arrow_stream(data)
    return arrow or is_dataframe(data) or is_polars_frame(data)


def is_rows(data: Any) -> bool:
    """Whether ``data`` is rows held in memory (a :class:`TableSource`, table, frame or array),
    which :func:`rows_in_place` takes; a list of paths is a lake, not rows."""
    if is_lake(data):
        return False
    return isinstance(data, TableSource) or is_table_like(data) or is_array_like(data)


@dataclass(frozen=True)
class InMemoryRows:
    """Records in memory whose every row is to be scored in place: ``table`` as given (an
    array's columns named ``feature_names``), read by ``feature_names``; nothing is decoded
    until a sink reads it.

    >>> rows = rows_in_place(np.arange(6.0).reshape(3, 2), 2, None)
    >>> rows.feature_names, rows.table.column_names, rows.table.num_rows
    (['x0', 'x1'], ['x0', 'x1'], 3)
    """

    table: pa.Table
    feature_names: list[str]


def rows_in_place(data: Any, n_features: int | None, feature_names: Sequence[str] | None) -> InMemoryRows:
    """A :class:`TableSource` (its table, every row: the pass keeps the place of the rows its
    ``nan_policy`` leaves out), a table, data frame or array as :class:`InMemoryRows`, read by
    ``feature_names``, else by ``x0``, ``x1``, ...; an array must have ``n_features`` columns."""
    names = list(feature_names) if feature_names is not None else default_feature_names(n_features or 0)
    if isinstance(data, TableSource):
        return InMemoryRows(data.table, names)
    if is_table_like(data):
        return InMemoryRows(as_arrow_table(data), names)
    X = np.asarray(data, dtype=np.float64)
    if X.ndim != 2 or X.shape[1] != n_features:
        raise ValueError(f"expected an array of shape (n_records, {n_features}), got shape {X.shape}")
    return InMemoryRows(pa.table({name: X[:, j] for j, name in enumerate(names)}), names)


def array_source(data: Any, n_features: int | None, nan_policy: str, sample_weight: Any, fitting: bool) -> ArraySource:
    """An array (or list of rows) as a source under ``nan_policy``, weighted by ``sample_weight``
    (see :func:`as_source`).

    >>> X = np.array([[1.0, np.nan], [np.nan, np.nan], [3.0, 4.0]])
    >>> source = array_source(X, None, "marginalize", [1, 2, 3], fitting=True)
    >>> source.X.shape, source.weights.tolist(), source.skipped_records
    ((2, 2), [1.0, 3.0], 1)
    >>> array_source(X, None, "skip", None, fitting=False).X[0].tolist()
    [nan, nan]
    """
    X = as_float_matrix(data, n_features=n_features, allow_nan=nan_policy != "raise")
    weights = None if sample_weight is None else as_sample_weight(sample_weight, X.shape[0])
    if not fitting:
        if nan_policy == "skip":
            incomplete = np.isnan(X).any(axis=1)
            if incomplete.any():
                X = X.copy()
                X[incomplete] = np.nan
        return ArraySource(X, weights=weights)
    source = ArraySource(X, weights=weights)
    matrix, skipped = drop_missing(source.data, nan_policy, source.weighted)
    if skipped:
        source = ArraySource.with_weight_column(matrix) if source.weighted else ArraySource(matrix)
    source.skipped_records = skipped
    return source


def scored_table(data: Any, names: list[str] | None, nan_policy: str, sample_weight: Any) -> ArraySource:
    """An in-memory table to score under ``nan_policy`` ``"skip"`` or ``"marginalize"``: every
    row, so that results line up with the table's rows (a reader for fitting leaves rows out);
    a row with a missing value (``"skip"``) or with nothing observed has NaN results.

    >>> table = pa.table({"a": [1.0, None, None], "b": [2.0, 3.0, None]})
    >>> scored_table(table, None, "marginalize", None).X.tolist()
    [[1.0, 2.0], [nan, 3.0], [nan, nan]]
    >>> scored_table(table, ["b", "a"], "skip", None).X.tolist()
    [[2.0, 1.0], [nan, nan], [nan, nan]]
    """
    table = as_arrow_table(data)
    columns = feature_columns(table.schema, names, where="table")
    X, _ = FeatureReader(columns, "marginalize").read(table, "table")
    if nan_policy == "skip":
        X = X.copy() if not X.flags.writeable else X
        X[np.isnan(X).any(axis=1)] = np.nan
    weights = None if sample_weight is None else as_sample_weight(sample_weight, X.shape[0])
    return ArraySource(X, feature_names=columns, weights=weights)


def _weighed(source: ChunkSource, sample_weight: Any) -> ChunkSource:
    """An in-memory table's source with the user's ``sample_weight`` (one per row)."""
    if sample_weight is None:
        return source
    if source.weighted or not isinstance(source, ArraySource):
        raise ValueError("sample_weight and a weight_column both give record weights; give only one")
    if source.skipped_records:
        raise ValueError(
            f"sample_weight cannot be matched to the table's rows: nan_policy left {source.skipped_records} "
            "of them out; give the weights as a column of the table (weight_column=...) instead"
        )
    weights = as_sample_weight(sample_weight, len(source))
    weighted = ArraySource(source.X, source.feature_names, weights=weights)
    return weighted


def _select(source: ChunkSource, names: list[str] | None) -> ChunkSource:
    """A source object read by the model's feature names."""
    check_source(source)
    have = source.feature_names
    if names is None or have is None or list(have) == names:
        return source
    if hasattr(source, "with_features"):
        return source.with_features(names)
    raise DataError(f"the model was fitted on columns {names}, but this source has columns {list(have)}")


def _is_nested_sequence_of_numbers(data: Any) -> bool:
    """A plain list of rows ([[1, 2], [3, 4]]) is one array, not a list of chunks."""
    if not isinstance(data, (list, tuple)) or not data:
        return False
    first = data[0]
    if isinstance(first, (numbers.Number, str)):
        return True
    if isinstance(first, np.ndarray):
        return first.ndim == 1
    return isinstance(first, (list, tuple)) and (not first or not isinstance(first[0], (list, tuple, np.ndarray)))
