"""Arrow and DataFrame inputs: a ``pyarrow.Table``, ``RecordBatch``, ``RecordBatchReader``, an
iterable of record batches, or a pandas DataFrame, as a source of float64 mini-batches whose
features are chosen by column name.

In-memory tables become an :class:`~streamgmm.io.sources.chunk_source.ArraySource` of their feature columns
(a float64 copy, as scikit-learn makes); readers and iterables of record batches stream one
batch at a time through an :class:`~streamgmm.io.sources.chunk_source.IterableSource`.

Examples
--------
>>> import pyarrow as pa
>>> from streamgmm.io.sources.arrow import arrow_source
>>> table = pa.table({"id": [7, 8, 9], "a": [1.0, 2.0, None], "b": [1, 2, 3]})
>>> source = arrow_source(table, passthrough=["id"], nan_policy="skip")
>>> source.feature_names, source.X.tolist(), source.skipped_records
(['a', 'b'], [[1.0, 1.0], [2.0, 2.0]], 1)

Data frames (pandas, polars, a DuckDB relation, anything exporting the Arrow C stream) are read
once into memory and can then be read again, sampled and shuffled like an array;
:class:`TableSource` gives them the options a lake has:

>>> from streamgmm.io.sources.arrow import TableSource
>>> source = TableSource(table, passthrough=["id"], nan_policy="skip")
>>> source.feature_names, len(source), source.passthrough_table().column("id").to_pylist()
(['a', 'b'], 2, [7, 8])
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from streamgmm.io.records.columns import FeatureReader, check_weight_column, feature_columns
from streamgmm.io.sources.chunk_source import ArraySource, IterableSource


def is_dataframe(data: Any) -> bool:
    """A pandas DataFrame whose column names are all strings (as scikit-learn, only then are
    they feature names)."""
    if type(data).__name__ != "DataFrame" or not hasattr(data, "iloc"):
        return False  # before .columns, which a polars LazyFrame computes at a cost
    columns = getattr(data, "columns", None)
    return columns is not None and len(columns) > 0 and all(isinstance(name, str) for name in columns)


def frame_table(frame: Any) -> pa.Table:
    """A pandas DataFrame (or partition) as an Arrow table: its index is not data."""
    return pa.Table.from_pandas(frame, preserve_index=False)


def is_polars_frame(data: Any) -> bool:
    """A polars DataFrame or LazyFrame (polars is not imported: the object's type says)."""
    return type(data).__module__.split(".")[0] == "polars" and type(data).__name__ in ("DataFrame", "LazyFrame")


def as_arrow_table(data: Any) -> pa.Table:
    """A table, record batch, pandas or polars frame, DuckDB relation or any object exporting the
    Arrow C stream, as one in-memory Arrow table (zero-copy where the frame allows, as polars)."""
    if isinstance(data, pa.Table):
        return data
    if isinstance(data, pa.RecordBatch):
        return pa.Table.from_batches([data])
    if isinstance(data, pa.RecordBatchReader):
        return data.read_all()
    if is_dataframe(data):
        return frame_table(data)
    if is_polars_frame(data):
        frame = data.collect() if type(data).__name__ == "LazyFrame" else data
        return frame.to_arrow()
    if is_arrow_stream(data):
        return pa.table(data)
    raise TypeError(
        f"cannot read a table from {type(data).__name__}; pass a pyarrow Table, a pandas or polars DataFrame, "
        "a DuckDB relation or an object exporting the Arrow C stream"
    )


class TableSource(ArraySource):
    """A table or data frame as a source that can be read many times, with a lake's options.

    The frame is read once into an Arrow table (zero-copy for polars and Arrow tables); the
    feature columns become one float64 matrix, so sampling, shuffling and repeated passes work as
    for an array. Pass-through columns are kept aside for :func:`~streamgmm.assign`.

    Parameters
    ----------
    data : pyarrow.Table, RecordBatch or RecordBatchReader, pandas or polars DataFrame, DuckDB relation
        The records; anything exporting the Arrow C stream interface (``__arrow_c_stream__``) too.
    columns : sequence of str, optional
        The feature columns, in order. Default: every numeric column but ``passthrough``.
    passthrough : sequence of str, default=()
        Columns that are not features (ids, keys), carried to ``assign``'s output.
    nan_policy : {'raise', 'skip', 'marginalize'}, default='raise'
        A row with a null, NaN or infinite feature is an error naming its row and column
        (``'raise'``), or left out and counted in ``skipped_records`` (``'skip'``);
        ``'marginalize'`` keeps missing features as NaN and leaves out only rows with nothing
        observed.
    weight_column : str, optional
        A numeric column of record weights (finite, >= 0): the batches and samples carry it
        (``weighted`` is True); it is never a feature.

    Attributes
    ----------
    table : pyarrow.Table
        The data as read.
    X : ndarray of shape (n_records, n_features)
        The usable rows' features.
    feature_names : list of str
        The feature columns.
    skipped_records : int
        Rows left out under ``nan_policy='skip'``.

    Examples
    --------
    >>> import numpy as np, pyarrow as pa
    >>> from streamgmm import StreamingGaussianMixture
    >>> from streamgmm.io.sources.arrow import TableSource
    >>> rng = np.random.default_rng(0)
    >>> x = np.concatenate([rng.normal(0, 1, 500), rng.normal(8, 1, 500)])
    >>> table = pa.table({"id": np.arange(1000), "x": x})
    >>> model = StreamingGaussianMixture(2, random_state=0).fit(TableSource(table, passthrough=["id"]))
    >>> np.sort(model.means_.ravel()).round(0).astype(int).tolist()
    [0, 8]
    """

    def __init__(
        self,
        data: Any,
        *,
        columns: Sequence[str] | None = None,
        passthrough: Sequence[str] = (),
        nan_policy: str = "raise",
        weight_column: str | None = None,
    ):
        self.table = as_arrow_table(data)
        self.passthrough = list(passthrough)
        self.nan_policy = nan_policy
        self.weight_column = weight_column
        weights = check_weight_column(self.table.schema, weight_column, columns, "table")
        names = feature_columns(self.table.schema, columns, self.passthrough, exclude=weights, where="table")
        reader = FeatureReader(
            names, nan_policy, skip_hint="TableSource(data, nan_policy='skip')", weight_column=weight_column
        )
        X, self._mask = reader.read(self.table, "table")
        matrix = X if self._mask is None else X[self._mask]
        super().__init__(matrix[:, : len(names)], feature_names=names)
        if weight_column is not None:
            # The weights stay the matrix's last column, as ArraySource.with_weight_column keeps them.
            self.data, self.weighted = matrix, True
        self.skipped_records = reader.skipped

    def passthrough_table(self) -> pa.Table:
        """The pass-through columns of the rows used, in order."""
        kept = self.table.select(self.passthrough)
        return kept if self._mask is None else kept.filter(pa.array(self._mask))

    def with_features(self, names: Sequence[str]) -> TableSource:
        """The same table read by other feature columns (a fitted model's)."""
        return TableSource(
            self.table,
            columns=names,
            passthrough=self.passthrough,
            nan_policy=self.nan_policy,
            weight_column=self.weight_column,
        )

    def __repr__(self) -> str:
        return f"TableSource({self.table.num_rows} rows, features={self.feature_names}, passthrough={self.passthrough})"


def arrow_source(
    data: Any,
    *,
    columns: Sequence[str] | None = None,
    passthrough: Sequence[str] = (),
    nan_policy: str = "raise",
    weight_column: str | None = None,
) -> ArraySource | IterableSource:
    """A source over Arrow data or a DataFrame, reading the feature ``columns`` (default: every
    numeric column but ``passthrough`` and ``weight_column``); with a ``weight_column`` the
    source is weighted (its batches carry the weights)."""
    if is_dataframe(data):
        data = frame_table(data)
    if isinstance(data, (pa.Table, pa.RecordBatch)):
        weights = check_weight_column(data.schema, weight_column, columns, "table")
        names = feature_columns(data.schema, columns, passthrough, exclude=weights, where="table")
        reader = FeatureReader(names, nan_policy, weight_column=weight_column)
        matrix = reader.features(data, "table")
        if weight_column is None:
            source = ArraySource(matrix, feature_names=names)
        else:
            source = ArraySource.with_weight_column(matrix, names)
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
    weights = check_weight_column(schema, weight_column, columns, "record batches")
    names = feature_columns(schema, columns, passthrough, exclude=weights, where="record batches")
    return _BatchStream(batches, FeatureReader(names, nan_policy, weight_column=weight_column))


class _BatchStream(IterableSource):
    """A one-shot stream of record batches, converted as they come."""

    def __init__(self, batches: Iterable[pa.RecordBatch], reader: FeatureReader):
        self._reader = reader
        super().__init__(
            self._matrices(batches),
            n_features=len(reader.names),
            feature_names=reader.names,
            weighted=reader.weight_column is not None,
            allow_nan=reader.nan_policy == "marginalize",
        )

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
