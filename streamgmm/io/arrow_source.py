"""Arrow and DataFrame inputs: a ``pyarrow.Table``, ``RecordBatch``, ``RecordBatchReader``, an
iterable of record batches, or a pandas DataFrame, as a source of float64 mini-batches whose
features are chosen by column name.

In-memory tables become an :class:`~streamgmm.io.sources.ArraySource` of their feature columns
(a float64 copy, as scikit-learn makes); readers and iterables of record batches stream one
batch at a time through an :class:`~streamgmm.io.sources.IterableSource`.

Examples
--------
>>> import pyarrow as pa
>>> from streamgmm.io.arrow_source import arrow_source
>>> table = pa.table({"id": [7, 8, 9], "a": [1.0, 2.0, None], "b": [1, 2, 3]})
>>> source = arrow_source(table, passthrough=["id"], nan_policy="skip")
>>> source.feature_names, source.X.tolist(), source.skipped_records
(['a', 'b'], [[1.0, 1.0], [2.0, 2.0]], 1)
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from streamgmm.io.columns import FeatureReader, feature_columns
from streamgmm.io.sources import ArraySource, IterableSource


def is_dataframe(data: Any) -> bool:
    """A pandas DataFrame whose column names are all strings (as scikit-learn, only then are
    they feature names)."""
    columns = getattr(data, "columns", None)
    return (
        type(data).__name__ == "DataFrame"
        and hasattr(data, "iloc")
        and columns is not None
        and len(columns) > 0
        and all(isinstance(name, str) for name in columns)
    )


def frame_table(frame: Any) -> pa.Table:
    """A pandas DataFrame (or partition) as an Arrow table: its index is not data."""
    return pa.Table.from_pandas(frame, preserve_index=False)


def arrow_source(
    data: Any,
    *,
    columns: Sequence[str] | None = None,
    passthrough: Sequence[str] = (),
    nan_policy: str = "raise",
) -> ArraySource | IterableSource:
    """A source over Arrow data or a DataFrame, reading the feature ``columns`` (default: every
    numeric column but ``passthrough``)."""
    if is_dataframe(data):
        data = frame_table(data)
    if isinstance(data, (pa.Table, pa.RecordBatch)):
        names = feature_columns(data.schema, columns, passthrough, where="table")
        reader = FeatureReader(names, nan_policy)
        source = ArraySource(reader.features(data, "table"), feature_names=names)
        source.skipped_records = reader.skipped
        return source
    if isinstance(data, pa.RecordBatchReader):
        batches: Iterator[pa.RecordBatch] = iter(data)
        schema = data.schema
    else:
        batches = iter(data)
        try:
            first = next(batches)
        except StopIteration:
            raise ValueError("no record batches given") from None
        if not isinstance(first, pa.RecordBatch):
            raise TypeError(f"expected record batches, got {type(first).__name__}")
        schema = first.schema
        batches = itertools.chain([first], batches)
    names = feature_columns(schema, columns, passthrough, where="record batches")
    return _BatchStream(batches, names, nan_policy)


class _BatchStream(IterableSource):
    """A one-shot stream of record batches, converted as they come."""

    def __init__(self, batches: Iterable[pa.RecordBatch], names: list[str], nan_policy: str):
        self._reader = FeatureReader(names, nan_policy)
        super().__init__(self._matrices(batches), n_features=len(names), feature_names=names)

    def _matrices(self, batches: Iterable[pa.RecordBatch]) -> Iterator[np.ndarray]:
        for i, batch in enumerate(batches):
            yield self._reader.features(batch, f"record batch {i}")

    @property
    def skipped_records(self) -> int:
        return self._reader.skipped


def is_arrow_stream(data: Any) -> bool:
    """An object exporting the Arrow C stream interface (a polars DataFrame, a DuckDB relation,
    ...), read batch by batch with its column names. pandas and numpy objects are left to their
    own paths (a DataFrame without string column names is an array, as for scikit-learn)."""
    module = type(data).__module__.split(".")[0]
    return hasattr(data, "__arrow_c_stream__") and module not in ("pandas", "numpy")
