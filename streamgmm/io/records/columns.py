"""Columns: which columns of an Arrow schema are features, and Arrow record batches as float64
matrices under a policy for missing values.

Integer, floating-point and decimal columns are features; they are cast to float64. Anything
else (strings, booleans, nested, binary) is refused when asked for by name, and left out when
the features are chosen by default. Messages name the column and the place (file, row group,
row) the caller passes in as ``where``.

Examples
--------
>>> import pyarrow as pa
>>> from streamgmm.io.records.columns import FeatureReader, feature_columns
>>> batch = pa.record_batch({"id": [1, 2, 3], "name": ["a", "b", "c"], "x": [0.5, None, 2.0]})
>>> names = feature_columns(batch.schema, None, passthrough=["id"])
>>> names
['x']
>>> reader = FeatureReader(names, nan_policy="skip")
>>> reader.features(batch, "example").tolist(), reader.skipped
([[0.5], [2.0]], 1)
>>> FeatureReader(names).features(batch, "example.parquet: row group 0")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
streamgmm.io.records.columns.DataError: example.parquet: row group 0, row 1, column 'x': null or NaN ...)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from streamgmm.io.records.checks import MAX_MAGNITUDE, first_bad_weight, first_non_finite, in_range, too_large

NAN_POLICIES = ("raise", "skip", "marginalize")


class DataError(ValueError):
    """Exception raised when the input data cannot be used as asked.

    For example a column missing or of the wrong type, a non-finite value, or a corrupt file.
    The message names the file, column and place. A subclass of ``ValueError``.

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np, pyarrow as pa, pyarrow.parquet as pq
    >>> from streamgmm import DataError, ParquetSource
    >>> lake = tempfile.mkdtemp()
    >>> pq.write_table(pa.table({"a": np.arange(3.0)}), os.path.join(lake, "part-0.parquet"))
    >>> try:
    ...     ParquetSource(lake, columns=["b"])
    ... except DataError:
    ...     print("no column b")
    no column b
    """


def is_numeric(data_type: pa.DataType) -> bool:
    return pa.types.is_integer(data_type) or pa.types.is_floating(data_type) or pa.types.is_decimal(data_type)


def check_nan_policy(nan_policy: str) -> str:
    if nan_policy not in NAN_POLICIES:
        raise ValueError(f"Invalid value for 'nan_policy': {nan_policy!r}; expected one of {', '.join(NAN_POLICIES)}")
    return nan_policy


def feature_columns(
    schema: pa.Schema,
    columns: Sequence[str] | None,
    passthrough: Sequence[str] = (),
    *,
    exclude: Sequence[str] = (),
    where: str = "input",
) -> list[str]:
    """The feature columns of ``schema``: ``columns`` as given (each must exist and be numeric),
    or by default every numeric column that is neither ``passthrough`` (ids carried along) nor in
    ``exclude`` (e.g. hive partition keys, which describe where a record is stored)."""
    if isinstance(columns, str) or isinstance(passthrough, str):
        raise TypeError("columns and passthrough are lists of column names, not a single string")
    if columns is not None:
        names = list(columns)
        if not names:
            raise ValueError("columns must name at least one column")
        duplicated = sorted({name for name in names if names.count(name) > 1})
        if duplicated:
            raise ValueError(f"columns lists {', '.join(map(repr, duplicated))} more than once")
        for name in names:
            check_column(schema, name, where)
        return names
    skip = set(passthrough) | set(exclude)
    names = [field.name for field in schema if field.name not in skip and is_numeric(field.type)]
    if not names:
        raise DataError(f"{where}: no numeric columns to fit (schema: {schema_summary(schema)})")
    return names


def check_column(schema: pa.Schema, name: str, where: str) -> pa.DataType:
    """The type of column ``name``, which must exist and be numeric."""
    index = schema.get_field_index(name)
    if index < 0:
        raise DataError(f"{where}: no column {name!r} (columns: {', '.join(schema.names)})")
    data_type = schema.field(index).type
    if not is_numeric(data_type):
        raise DataError(f"{where}: column {name!r} is {data_type}, not numeric (integer, floating-point or decimal)")
    return data_type


def check_weight_column(
    schema: pa.Schema, weight_column: str | None, columns: Sequence[str] | None, where: str
) -> list[str]:
    """The weight column as a list (empty when there is none), checked: it must exist, be numeric
    and not be one of the feature ``columns``. The list is what :func:`feature_columns` excludes."""
    if weight_column is None:
        return []
    check_column(schema, weight_column, where)
    if columns is not None and weight_column in columns:
        raise ValueError(f"the weight column {weight_column!r} cannot also be a feature column")
    return [weight_column]


def schema_summary(schema: pa.Schema) -> str:
    return ", ".join(f"{field.name}: {field.type}" for field in schema) or "no columns"


def to_matrix(batch: pa.RecordBatch | pa.Table, names: Sequence[str]) -> np.ndarray:
    """The named columns as one float64 (rows, columns) matrix; nulls become NaN.

    Column-major (Fortran order): each column is copied into one contiguous run (a third less
    decoding time than strided writes into rows), and the E-step reads the records transposed,
    one feature per row, which is then a contiguous read too."""
    out = np.empty((batch.num_rows, len(names)), order="F")
    for j, name in enumerate(names):
        column = batch.column(name)
        if isinstance(column, pa.ChunkedArray):
            column = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
        if pa.types.is_decimal(column.type):
            out[:, j] = decimal_to_float64(column)
            continue
        if column.type != pa.float64():
            # safe=False: an integer beyond 2**53 rounds to the nearest double instead of failing.
            column = pc.cast(column, pa.float64(), safe=False)
        out[:, j] = column.to_numpy(zero_copy_only=False)
    return out


def decimal_to_float64(column: pa.Array) -> np.ndarray:
    """Decimals as the nearest doubles (nulls as NaN). Arrow's own cast multiplies by
    10**-scale and can be off by an ulp; an unscaled integer below 2**53 divided by an exact
    power of ten is one correctly rounded operation."""
    data_type = column.type
    if pa.types.is_decimal128(data_type) and data_type.precision <= 15 and 0 <= data_type.scale <= 22:
        # Each value is a 16-byte little-endian integer; with 15 digits it fits the low 8 bytes.
        words = np.frombuffer(column.buffers()[1], dtype="<i8")
        unscaled = words[2 * column.offset : 2 * (column.offset + len(column)) : 2]
        values = unscaled.astype(np.float64) / 10.0**data_type.scale
    else:
        # Wider decimals: through their exact text, which float() rounds correctly.
        text = pc.cast(column, pa.string()).fill_null("nan").to_numpy(zero_copy_only=False)
        values = np.array([float(item) for item in text])
    if column.null_count:
        values = np.where(column.is_null().to_numpy(zero_copy_only=False), np.nan, values)
    return values


def finite_rows(X: np.ndarray) -> np.ndarray | None:
    """Mask of rows whose values are all finite, or None when every row is (the common case,
    kept cheap: no mask is built)."""
    if np.isfinite(X).all():
        return None
    return np.isfinite(X).all(axis=1)


class FeatureReader:
    """Turns record batches into feature matrices under a ``nan_policy``, counting what it drops.

    ``"raise"``: a null, NaN or infinite feature is a :class:`DataError` naming the place, row
    and column. ``"skip"``: such rows are dropped from the features and counted in ``skipped``.
    ``"marginalize"``: a missing feature (null or NaN) stays NaN for the E-step to marginalize;
    only rows with no feature observed are dropped (and counted); an infinity is an error, as it
    is not missing.

    With a ``weight_column``, each matrix gets the record weights as its last column. A weight
    must be finite and >= 0 whatever the ``nan_policy`` (also on a row the policy drops, so that
    a bad weight column is found whichever rows happen to be complete).

    Examples
    --------
    >>> import pyarrow as pa
    >>> batch = pa.record_batch({"x": [1.0, None, None], "y": [2.0, 3.0, None], "w": [1, 2, 3]})
    >>> reader = FeatureReader(["x", "y"], "marginalize", weight_column="w")
    >>> reader.features(batch, "example").tolist(), reader.skipped
    ([[1.0, 2.0, 1.0], [nan, 3.0, 2.0]], 1)
    """

    def __init__(
        self,
        names: Sequence[str],
        nan_policy: str = "raise",
        skip_hint: str = "nan_policy='skip'",
        weight_column: str | None = None,
    ):
        self.names = list(names)
        self.nan_policy = check_nan_policy(nan_policy)
        self.skipped = 0
        # How the caller sets the policy where the rows come from (a lake's option, TableSource's, ...).
        self.skip_hint = skip_hint
        self.weight_column = weight_column
        if weight_column is not None and weight_column in self.names:
            raise ValueError(f"the weight column {weight_column!r} cannot also be a feature column")

    @property
    def columns(self) -> list[str]:
        """The columns read: the features, then the weight column if any."""
        return self.names if self.weight_column is None else [*self.names, self.weight_column]

    def read(
        self, batch: pa.RecordBatch | pa.Table, where: str, first_row: int = 0
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """All rows as a matrix (the weights last, with a weight column), and the mask of rows
        to use (None: all of them). ``first_row`` is the number of the batch's first row in
        ``where``, for messages."""
        X = to_matrix(batch, self.columns)
        if in_range(X) and (self.weight_column is None or X.shape[0] == 0 or X[:, -1].min() >= 0):
            return X, None  # the common case, checked in two reductions (three with weights)
        features = X if self.weight_column is None else X[:, : len(self.names)]
        if self.weight_column is not None:
            self._check_weights(X[:, -1], where, first_row)
        self._check_magnitude(features, where, first_row)
        mask = finite_rows(features)
        if mask is None:
            return X, None
        if self.nan_policy == "marginalize":
            return X, self._observed_rows(features, where, first_row)
        if self.nan_policy == "raise":
            row, column = first_non_finite(features)
            value = features[row, column]
            raise DataError(
                f"{where}, row {first_row + row}, column {self.names[column]!r}: "
                f"{'null or NaN' if np.isnan(value) else value} (nan_policy='raise'; "
                f"use {self.skip_hint} to leave such rows out)"
            )
        self.skipped += int(mask.size - np.count_nonzero(mask))
        return X, mask

    def _observed_rows(self, features: np.ndarray, where: str, first_row: int) -> np.ndarray | None:
        """Under marginalize: an infinity is an error; rows with no feature observed are left out."""
        infinite = np.isinf(features)
        if infinite.any():
            row, column = (int(i) for i in np.argwhere(infinite)[0])
            raise DataError(
                f"{where}, row {first_row + row}, column {self.names[column]!r}: {features[row, column]} "
                "(nan_policy='marginalize' takes null or NaN as missing; an infinity is not missing)"
            )
        observed = ~np.isnan(features).all(axis=1)
        empty = int(observed.size - np.count_nonzero(observed))
        self.skipped += empty
        return None if empty == 0 else observed

    def _check_weights(self, weights: np.ndarray, where: str, first_row: int) -> None:
        """A record weight must be finite and >= 0, whatever the nan_policy."""
        row = first_bad_weight(weights)
        if row is not None:
            value = weights[row]
            shown = "null or NaN" if np.isnan(value) else f"{value:g}"
            raise DataError(
                f"{where}, row {first_row + row}, column {self.weight_column!r}: weight {shown} "
                "(record weights must be finite and >= 0)"
            )

    def _check_magnitude(self, X: np.ndarray, where: str, first_row: int) -> None:
        """Huge finite values are an error whatever the nan_policy: they are not missing."""
        with np.errstate(invalid="ignore"):
            huge = np.isfinite(X) & (np.abs(X) > MAX_MAGNITUDE)
        if huge.any():
            row, column = (int(i) for i in np.argwhere(huge)[0])
            raise DataError(
                f"{where}, row {first_row + row}, column {self.names[column]!r}: {too_large(X[row, column])}"
            )

    def features(self, batch: pa.RecordBatch | pa.Table, where: str, first_row: int = 0) -> np.ndarray:
        """The usable rows only."""
        X, mask = self.read(batch, where, first_row)
        return X if mask is None else X[mask]
