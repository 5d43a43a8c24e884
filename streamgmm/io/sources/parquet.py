"""ParquetSource: a Parquet lake (files, directories, globs, lists of paths, URLs or a
``pyarrow.dataset`` dataset) streamed as float64 mini-batches, one row group at a time.

Memory is bounded by one row group's selected columns plus one mini-batch (two row groups in a
shuffled pass, which decodes the next one while it cuts one into mini-batches), whatever the size
of the lake: only the feature columns are read (projection pushdown), and a ``filter`` prunes hive
partitions and row groups before any data is read. Every file's footer is read up front, so a
missing column, a column whose type differs between files (schema drift) or a corrupt file is
an error naming the files before any model state changes; then only each row group's size is
kept (:mod:`streamgmm.io.lake.footers`), so memory does not grow with the number of files by
more than their paths. Zero-byte files and zero-row row groups are skipped. Paths whose name
starts with ``.`` or ``_`` (``_SUCCESS``, ``.crc`` files) are not data, as for Spark and pyarrow
(:mod:`streamgmm.io.lake.discovery` finds the files).

Online EM over a lake sorted by time or key sees one kind of record after another; with
``rng`` given, :meth:`ParquetSource.batches` visits the row groups of all files in a random
order (and records within a row group in random order), which is what ``shuffle="row_groups"``
means for the estimator. :class:`ParquetSource` has an example.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from streamgmm.io.background import read_ahead
from streamgmm.io.lake.discovery import LakeListing, is_hidden, open_lake
from streamgmm.io.lake.footers import FooterCache, LakeFile, LakeFiles, RowGroup, read_row_groups, row_group_batches
from streamgmm.io.records.columns import (
    DataError,
    FeatureReader,
    check_nan_policy,
    check_weight_column,
    feature_columns,
)
from streamgmm.io.sources.chunk_source import Batch, rebatch, reservoir_sample_counted
from streamgmm.io.sources.row_group_shuffle import shuffled_batches

if TYPE_CHECKING:  # pyarrow.dataset imports pandas: loaded only where a dataset is used
    import pyarrow.dataset as ds

# Row groups read for the initialisation sample of a large lake: enough to see every kind of
# record even in a lake sorted by key, few enough that starting costs little against a pass.
SAMPLE_ROW_GROUPS = 64
# Record batches pyarrow decodes ahead of the one being used: a little overlap, little memory.
BATCH_READAHEAD = 2
# Records per decoded batch at least, because pyarrow's cost per batch makes small ones slow (see
# docs/performance.md, "Tuning constants"); mini-batches are cut from them.
READ_BATCH = 65536
# Records of mini-batches read ahead by a background thread while the current one is used:
# two decoded batches, so reading never waits on the consumer and memory stays a few MB.
PREFETCH_RECORDS = 2 * READ_BATCH

# Where they were defined before the lake's listing and footers had modules of their own.
__all__ = ["LakeFile", "ParquetSource", "RowGroup", "is_hidden"]


class ParquetSource:
    """Stream the feature columns of a Parquet lake as float64 mini-batches.

    Memory is bounded by one row group's selected columns plus one mini-batch (two row groups
    when shuffled: the next one is decoded while one is cut): only the feature columns are
    read, and ``filter`` prunes hive partitions and row groups before any data is read. Every
    file's footer is read when the source is made, so a missing column, a column whose type
    differs between files or a corrupt file is an error before any model state changes; only
    the row groups' sizes are kept, and a footer is read again (or taken from a cache of the
    last few files) when its file's row groups are read. Zero-byte files and zero-row row
    groups are skipped; paths whose name starts with ``.`` or ``_``
    (``_SUCCESS``, ``.crc`` files) are not data.

    Parameters
    ----------
    source : str, os.PathLike, list of those, pyarrow.dataset.Dataset or LakeListing
        A path, ``file://`` or other URL pyarrow understands, a glob (``lake/**/*.parquet``),
        a list of those, or a ``pyarrow.dataset`` dataset of files. Directories are read
        recursively with hive partitioning (``day=3/part-0.parquet``). A
        :class:`~streamgmm.io.lake.discovery.LakeListing` is a lake listed before with the
        same ``filter`` (another source's ``listing``).

    columns : sequence of str, default=None
        The feature columns, in this order. None means every integer, floating-point or
        decimal column of the first file, except ``passthrough`` columns and hive partition
        keys.

    passthrough : sequence of str, default=()
        Columns that are not features (ids), carried along by the responsibilities pass.

    filter : pyarrow.compute.Expression or list of tuples, default=None
        Only matching rows are read; a list is a DNF filter as ``pyarrow.parquet``'s
        ``filters``.

    nan_policy : {'raise', 'skip', 'marginalize'}, default='raise'
        ``'raise'``: a null, NaN or infinite feature is an error naming file, row group and
        row; ``'skip'``: such rows are left out and counted in ``skipped_records``;
        ``'marginalize'``: missing features (null or NaN) are NaN in the batches, for the
        E-step to marginalize, and only rows with no feature observed are left out and counted.

    filesystem : pyarrow.fs.FileSystem or fsspec filesystem, default=None
        The filesystem of plain paths. None means local, or the one a URL names.

    version : int, default=None
        A Delta or Iceberg table folder is read at its current snapshot (never with the stale
        files its folder also holds); ``version`` reads a Delta version or Iceberg snapshot id.

    as_of : datetime or str, default=None
        Or the table's last snapshot committed at or before this time (ISO 8601 text; naive
        means UTC). Both need the ``delta`` or ``iceberg`` extra.

    weight_column : str, default=None
        A numeric column of record weights (a count per aggregated row): a record of weight w
        counts as w records. Each batch and sample then ends with the weights as one more
        column (``weighted`` is True); ``feature_names`` stay the features only. A null, NaN,
        negative or infinite weight is an error naming file, row group and row.

    Attributes
    ----------
    feature_names : list of str
        The feature columns, in the order of the mini-batches' columns.

    n_features : int
        The number of feature columns.

    n_records : int
        Records in the selected files before ``filter``, from the footers.

    n_row_groups : int
        Non-empty row groups in the selected files.

    files : sequence of LakeFile
        The selected files, each with its path relative to the lake's base directory and its
        row groups (made when asked for).

    row_groups : sequence of RowGroup
        The non-empty row groups of the selected files, in file order.

    schema : pyarrow.Schema
        The lake's columns (the first file's, and hive partition keys).

    partition_names : list of str
        The hive partition keys.

    listing : LakeListing
        The selected files' paths and partitions.

    footers : FooterCache
        The parsed footers of the last few files read.

    skipped_records : int
        Records left out by ``nan_policy='skip'`` in the last complete :meth:`batches` pass.

    weighted : bool
        Whether the batches end with a column of record weights (``weight_column`` given).

    Raises
    ------
    DataError
        If no data file is found, a column is missing or of a type that differs between files,
        a file is not Parquet, or ``filter`` names no column.

    FileNotFoundError
        If a path does not exist.

    See Also
    --------
    StreamingGaussianMixture.fit : Fits on a ParquetSource, or on a path that it opens as one.

    Examples
    --------
    >>> import tempfile, numpy as np, pyarrow as pa, pyarrow.parquet as pq
    >>> from streamgmm import ParquetSource
    >>> lake = tempfile.mkdtemp()
    >>> table = pa.table({"id": np.arange(6), "a": np.arange(6.0), "b": np.ones(6, dtype=np.int32)})
    >>> pq.write_table(table, f"{lake}/part-0.parquet", row_group_size=4)
    >>> source = ParquetSource(lake, passthrough=["id"])
    >>> source.feature_names, source.n_records, source.n_row_groups
    (['a', 'b'], 6, 2)
    >>> [batch.features.tolist() for batch in source.batches(4)]
    [[[0.0, 1.0], [1.0, 1.0], [2.0, 1.0], [3.0, 1.0]], [[4.0, 1.0], [5.0, 1.0]]]
    """

    reiterable = True
    shuffle_modes = ("row_groups",)
    start_progress = None
    sampled_every_record: bool | None = None

    def __init__(
        self,
        source: Any,
        *,
        columns: Sequence[str] | None = None,
        passthrough: Sequence[str] = (),
        filter: Any = None,
        nan_policy: str = "raise",
        filesystem: pafs.FileSystem | None = None,
        version: int | None = None,
        as_of: Any = None,
        weight_column: str | None = None,
    ):
        self.nan_policy = check_nan_policy(nan_policy)
        self.passthrough = list(passthrough)
        self.weight_column = weight_column
        self.weighted = weight_column is not None
        self._explicit_columns = columns is not None
        self.filter = pq.filters_to_expression(filter) if isinstance(filter, list) else filter
        # A listing made with this filter (by reselect) is reused: the files are not listed again.
        self.listing = (
            source if isinstance(source, LakeListing) else open_lake(source, filesystem, self.filter, version, as_of)
        )
        self.schema = self.listing.schema
        self.base_dir, self.empty_files = self.listing.base_dir, self.listing.empty_files
        self.partition_names = self.listing.partition_names
        where = self.listing.paths[0] if self.listing.paths else "dataset"
        weights = check_weight_column(self.schema, weight_column, columns, where)
        self.feature_names = feature_columns(
            self.schema, columns, self.passthrough, exclude=[*self.partition_names, *weights], where=where
        )
        self.n_features = len(self.feature_names)
        self.row_groups, column_types = read_row_groups(self.listing, self.feature_names + weights + self.passthrough)
        self.files = LakeFiles(self.row_groups)
        self.footers = FooterCache(self.listing, self.row_groups, column_types)
        self.skipped_records = 0

    # ------------------------------------------------------------------ layout

    @property
    def n_records(self) -> int:
        """Records in the selected files before ``filter`` (from the footers)."""
        return int(self.row_groups.num_rows.sum())

    @property
    def n_row_groups(self) -> int:
        """Non-empty row groups in the selected files."""
        return len(self.row_groups)

    @property
    def dataset(self) -> ds.FileSystemDataset:
        """A ``pyarrow.dataset`` of the selected files, built anew at each use (its fragments
        would keep every footer they read); ``schema`` is its schema, at no cost."""
        return self.listing.dataset()

    # ------------------------------------------------------------------ reading

    def record_batches(
        self, group: RowGroup, columns: Sequence[str], batch_size: int
    ) -> Iterator[tuple[pa.RecordBatch, int]]:
        """Read one row group's columns as Arrow record batches.

        Parameters
        ----------
        group : RowGroup
            The row group, one of ``row_groups``.

        columns : sequence of str
            The columns to read.

        batch_size : int
            The most rows per record batch.

        Yields
        ------
        batch : pyarrow.RecordBatch
            A non-empty record batch of the rows ``filter`` keeps.

        first_row : int
            The batch's first row's number in the file (counted among the rows ``filter``
            keeps, when there is one).
        """
        fragment = self.footers.fragment(group.file_number)
        yield from row_group_batches(fragment, group, self.schema, columns, self.filter, batch_size, BATCH_READAHEAD)

    def _group_matrices(self, group: RowGroup, reader: FeatureReader, batch_size: int) -> Iterator[np.ndarray]:
        where = f"{group.file}: row group {group.index}"
        for batch, first_row in self.record_batches(group, reader.columns, batch_size):
            X = reader.features(batch, where, first_row)
            if X.shape[0]:
                yield X
            del X  # not held while the next batch is decoded

    def batches(self, batch_size: int, rng: np.random.Generator | None = None) -> Iterator[Batch]:
        """Read the lake as mini-batches of feature values.

        The batches are read ahead by a background thread while the caller uses them.

        Parameters
        ----------
        batch_size : int
            Records per mini-batch; the last may be shorter.

        rng : numpy.random.Generator, default=None
            If given, the row groups of all files are visited in a random order and each one's
            records permuted; if None, files and row groups in order.

        Returns
        -------
        batches : iterator of Batch
            The mini-batches: float64 features of shape (batch_size, n_features), and the
            records' weights for a source with a ``weight_column``.

        Examples
        --------
        >>> import tempfile, numpy as np, pyarrow as pa, pyarrow.parquet as pq
        >>> from streamgmm import ParquetSource
        >>> lake = tempfile.mkdtemp()
        >>> table = pa.table({"id": np.arange(6), "a": np.arange(6.0), "b": np.ones(6, dtype=np.int32)})
        >>> pq.write_table(table, f"{lake}/part-0.parquet", row_group_size=4)
        >>> source = ParquetSource(lake, passthrough=["id"])
        >>> batches = list(source.batches(4, np.random.default_rng(0)))
        >>> sorted(row[0] for batch in batches for row in batch.features.tolist())
        [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
        """
        reader = self.reader()
        depth = max(2, PREFETCH_RECORDS // batch_size)
        if rng is not None:
            visits = rng.permutation(len(self.row_groups))
            # Decoding the next row group (its own thread) overlaps cutting this one.
            return read_ahead(self._as_batches(self._shuffled(visits, reader, batch_size, rng)), depth=depth)

        def chunks() -> Iterator[np.ndarray]:
            for group in self.row_groups:
                yield from self._group_matrices(group, reader, max(batch_size, READ_BATCH))
            self.skipped_records = reader.skipped

        # Cut into mini-batches in the reading thread too: the caller only computes.
        return read_ahead(self._as_batches(rebatch(chunks(), batch_size)), depth=depth)

    def _as_batches(self, matrices: Iterator[np.ndarray]) -> Iterator[Batch]:
        return (Batch.of(matrix, self.weighted) for matrix in matrices)

    def _shuffled(
        self, visits: np.ndarray, reader: FeatureReader, batch_size: int, rng: np.random.Generator
    ) -> Iterator[np.ndarray]:
        """A shuffled pass (:mod:`streamgmm.io.sources.row_group_shuffle`); sets ``skipped_records`` at its end."""
        largest = int(self.row_groups.num_rows.max()) if len(self.row_groups) else 0

        def decode(i: int, out: np.ndarray) -> np.ndarray:
            return self._group_rows(self.row_groups[i], reader, out)

        yield from shuffled_batches(decode, visits, (largest, self.n_columns), batch_size, rng)
        self.skipped_records = reader.skipped

    def reader(self) -> FeatureReader:
        """A reader of this lake's feature columns (and weight column) under its ``nan_policy``."""
        return FeatureReader(self.feature_names, self.nan_policy, weight_column=self.weight_column)

    @property
    def n_columns(self) -> int:
        """Columns of the batches: the features, and the weights of a weighted source."""
        return self.n_features + self.weighted

    def _group_rows(self, group: RowGroup, reader: FeatureReader, out: np.ndarray) -> np.ndarray:
        """A row group's usable records, decoded into the first rows of ``out`` (row-major, at
        least the group's rows); the filled part of ``out``."""
        filled = 0
        for X in self._group_matrices(group, reader, READ_BATCH):
            out[filled : filled + X.shape[0]] = X
            filled += X.shape[0]
            del X  # else it stays alive while the next part is decoded
        return out[:filled]

    def sample(self, size: int, rng: np.random.Generator) -> Batch:
        """Draw up to ``size`` records at random, for the initialisation sample.

        Uniformly from the whole lake when it has at most ``SAMPLE_ROW_GROUPS`` row groups,
        else from that many row groups picked at random (in proportion to their sizes), so
        starting costs a bounded read. Afterwards ``sampled_every_record`` says whether the
        sample is the whole lake.

        Parameters
        ----------
        size : int
            The most records to draw.

        rng : numpy.random.Generator
            The random generator.

        Returns
        -------
        sample : Batch
            The records drawn, at most ``size`` (features of shape (n_sampled, n_features)).

        Examples
        --------
        >>> import tempfile, numpy as np, pyarrow as pa, pyarrow.parquet as pq
        >>> from streamgmm import ParquetSource
        >>> lake = tempfile.mkdtemp()
        >>> table = pa.table({"id": np.arange(6), "a": np.arange(6.0), "b": np.ones(6, dtype=np.int32)})
        >>> pq.write_table(table, f"{lake}/part-0.parquet", row_group_size=4)
        >>> source = ParquetSource(lake, passthrough=["id"])
        >>> source.sample(10, np.random.default_rng(0)).features.shape, source.sampled_every_record
        ((6, 2), True)
        """
        self.sampled_every_record = False
        picked: Sequence[int] = range(len(self.row_groups))
        if len(self.row_groups) > SAMPLE_ROW_GROUPS:
            sizes = self.row_groups.num_rows.astype(float)
            picked = np.sort(rng.choice(len(sizes), SAMPLE_ROW_GROUPS, replace=False, p=sizes / sizes.sum()))
        groups = [self.row_groups[i] for i in picked]
        reader = self.reader()
        chunks = (X for group in groups for X in self._group_matrices(group, reader, READ_BATCH))
        sample, seen = reservoir_sample_counted(chunks, size, rng)
        # Whether the sample is the whole lake: every row group read, and no more records than asked.
        self.sampled_every_record = len(groups) == len(self.row_groups) and seen <= size
        if len(groups) == len(self.row_groups):
            # Every record was read: what the policy left out is known, as after a pass (a fit
            # whose sample is the whole lake makes no pass).
            self.skipped_records = reader.skipped
        return Batch.of(sample if sample.shape[0] else np.empty((0, self.n_columns)), self.weighted)

    def with_features(self, names: Sequence[str]) -> ParquetSource:
        """Read this lake with other feature columns, keeping the pass-through columns.

        Parameters
        ----------
        names : sequence of str
            The feature columns, e.g. a fitted model's ``feature_names_in_``.

        Returns
        -------
        source : ParquetSource
            This source when the columns are the same, else a new one (see :meth:`reselect`).
        """
        return self.reselect(names, self.passthrough)

    def reselect(self, columns: Sequence[str], passthrough: Sequence[str]) -> ParquetSource:
        """Read this lake (same files, filter, ``nan_policy`` and weights) with other columns.

        The presence and types of the columns are checked in every file.

        Parameters
        ----------
        columns : sequence of str
            The feature columns.

        passthrough : sequence of str
            The pass-through columns.

        Returns
        -------
        source : ParquetSource
            This source when both lists are the same, else a new one.

        Raises
        ------
        DataError
            If this source was given explicit ``columns`` and other feature columns are asked
            for, or a column is missing from a file.
        """
        columns, passthrough = list(columns), list(passthrough)
        if columns == self.feature_names and passthrough == self.passthrough:
            return self
        if self._explicit_columns and columns != self.feature_names:
            raise DataError(f"the model was fitted on columns {columns}, but this source selects {self.feature_names}")
        return ParquetSource(
            self.listing,
            columns=columns,
            passthrough=passthrough,
            filter=self.filter,
            nan_policy=self.nan_policy,
            weight_column=self.weight_column,
        )

    def __repr__(self) -> str:
        return (
            f"ParquetSource({self.base_dir!r}, files={len(self.files)}, records={self.n_records}, "
            f"columns={self.feature_names})"
        )
