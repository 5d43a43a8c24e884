"""ParquetSource: a Parquet lake (files, directories, globs, lists of paths, URLs or a
``pyarrow.dataset`` dataset) streamed as float64 mini-batches, one row group at a time.

Memory is bounded by one row group's selected columns plus one mini-batch, whatever the size of
the lake: only the feature columns are read (projection pushdown), and a ``filter`` prunes hive
partitions and row groups before any data is read. Every file's footer is read up front, so a
missing column, a column whose type differs between files (schema drift) or a corrupt file is
an error naming the files before any model state changes. Zero-byte files and zero-row row
groups are skipped. Paths whose name starts with ``.`` or ``_`` (``_SUCCESS``, ``.crc`` files)
are not data, as for Spark and pyarrow.

Online EM over a lake sorted by time or key sees one kind of record after another; with
``rng`` given, :meth:`ParquetSource.batches` visits the row groups of all files in a random
order (and records within a row group in random order), which is what ``shuffle="row_groups"``
means for the estimator. :class:`ParquetSource` has an example.
"""

from __future__ import annotations

import collections
import glob
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from streamgmm.io.columns import DataError, FeatureReader, check_nan_policy, feature_columns
from streamgmm.io.lake_paths import describe_non_file, glob_files, real, walk_files
from streamgmm.io.sources import prefetched, rebatch, reservoir_sample_counted

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


@dataclass(frozen=True)
class RowGroup:
    """One row group of one file: the unit of reading and of shuffling."""

    file: str
    fragment: Any
    index: int
    num_rows: int
    first_row: int  # its first row's number within the file, for messages


@dataclass(frozen=True)
class LakeFile:
    """One input file, with its path relative to the lake's base directory (the layout the
    responsibilities pass mirrors)."""

    path: str
    relative_path: str
    fragment: Any
    row_groups: tuple[RowGroup, ...]

    @property
    def num_rows(self) -> int:
        return sum(group.num_rows for group in self.row_groups)


class ParquetSource:
    """Stream the feature columns of a Parquet lake as float64 mini-batches.

    Memory is bounded by one row group's selected columns plus one mini-batch: only the
    feature columns are read, and ``filter`` prunes hive partitions and row groups before any
    data is read. Every file's footer is read when the source is made, so a missing column, a
    column whose type differs between files or a corrupt file is an error before any model
    state changes. Zero-byte files and zero-row row groups are skipped; paths whose name starts
    with ``.`` or ``_`` (``_SUCCESS``, ``.crc`` files) are not data.

    Parameters
    ----------
    source : str, os.PathLike, list of those, or pyarrow.dataset.Dataset
        A path, ``file://`` or other URL pyarrow understands, a glob (``lake/**/*.parquet``),
        a list of those, or a ``pyarrow.dataset`` dataset of files. Directories are read
        recursively with hive partitioning (``day=3/part-0.parquet``).

    columns : sequence of str, default=None
        The feature columns, in this order. None means every integer, floating-point or
        decimal column of the first file, except ``passthrough`` columns and hive partition
        keys.

    passthrough : sequence of str, default=()
        Columns that are not features (ids), carried along by the responsibilities pass.

    filter : pyarrow.compute.Expression or list of tuples, default=None
        Only matching rows are read; a list is a DNF filter as ``pyarrow.parquet``'s
        ``filters``.

    nan_policy : {'raise', 'skip'}, default='raise'
        ``'raise'``: a null, NaN or infinite feature is an error naming file, row group and
        row; ``'skip'``: such rows are left out and counted in ``skipped_records``.

    filesystem : pyarrow.fs.FileSystem or fsspec filesystem, default=None
        The filesystem of plain paths. None means local, or the one a URL names.

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

    files : list of LakeFile
        The selected files, each with its path relative to the lake's base directory and its
        row groups.

    skipped_records : int
        Records left out by ``nan_policy='skip'`` in the last complete :meth:`batches` pass.

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
    >>> [batch.tolist() for batch in source.batches(4)]
    [[[0.0, 1.0], [1.0, 1.0], [2.0, 1.0], [3.0, 1.0]], [[4.0, 1.0], [5.0, 1.0]]]
    """

    reiterable = True
    shuffle_modes = ("row_groups",)

    def __init__(
        self,
        source: Any,
        *,
        columns: Sequence[str] | None = None,
        passthrough: Sequence[str] = (),
        filter: Any = None,
        nan_policy: str = "raise",
        filesystem: pafs.FileSystem | None = None,
    ):
        self.nan_policy = check_nan_policy(nan_policy)
        self.passthrough = list(passthrough)
        self._explicit_columns = columns is not None
        self.filter = pq.filters_to_expression(filter) if isinstance(filter, list) else filter
        self.dataset, self.base_dir, self.empty_files = open_dataset(source, filesystem)
        self.partition_names = partition_names(self.dataset)
        self.feature_names = feature_columns(
            self.dataset.schema,
            columns,
            self.passthrough,
            exclude=self.partition_names,
            where=self._first_file(),
        )
        self.n_features = len(self.feature_names)
        self.files = self._read_footers(self.feature_names + self.passthrough)
        self.row_groups = [group for file in self.files for group in file.row_groups]
        self.skipped_records = 0

    def _first_file(self) -> str:
        return self.dataset.files[0] if self.dataset.files else "dataset"

    # ------------------------------------------------------------------ layout

    @property
    def n_records(self) -> int:
        """Records in the selected files before ``filter`` (from the footers)."""
        return sum(group.num_rows for group in self.row_groups)

    @property
    def n_row_groups(self) -> int:
        """Non-empty row groups in the selected files."""
        return len(self.row_groups)

    def _fragments(self) -> list[Any]:
        """The files the filter's partition keys select (all without a filter)."""
        try:
            return list(self.dataset.get_fragments(filter=self.filter))
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
            missing = re.search(r"FieldRef\.Name\((.*?)\)", str(exc))
            if missing:
                raise DataError(
                    f"filter {self.filter}: no column {missing.group(1)!r} in {self._first_file()} "
                    f"(columns: {', '.join(self.dataset.schema.names)})"
                ) from None
            raise DataError(f"filter {self.filter}: {exc}") from None

    def _read_footers(self, needed: Sequence[str]) -> list[LakeFile]:
        """Every selected file's footer: row groups, and the needed columns' types checked
        against the first file's, so drift is found before any record is used."""
        reference: dict[str, tuple[pa.DataType, str]] = {}
        partitions = set(self.partition_names)
        files = []
        for fragment in self._fragments():
            path = fragment.path
            try:
                metadata = fragment.metadata
                schema = fragment.physical_schema
            except (pa.ArrowInvalid, OSError) as exc:
                raise DataError(f"{path}: not a Parquet file, or truncated ({exc})") from None
            for name in needed:
                if name in partitions:
                    continue
                index = schema.get_field_index(name)
                data_type = schema.field(index).type if index >= 0 else None
                if name not in reference:
                    if data_type is None:
                        raise DataError(f"{path}: no column {name!r} (columns: {', '.join(schema.names)})")
                    reference[name] = (data_type, path)
                    continue
                expected, first = reference[name]
                if data_type is None:
                    raise DataError(
                        f"schema drift: column {name!r} is missing from {path} (it is {expected} in {first})"
                    )
                if data_type != expected:
                    raise DataError(f"schema drift: column {name!r} is {data_type} in {path} but {expected} in {first}")
            groups, first_row = [], 0
            for index in range(metadata.num_row_groups):
                num_rows = metadata.row_group(index).num_rows
                if num_rows:
                    groups.append(RowGroup(path, fragment, index, num_rows, first_row))
                first_row += num_rows
            files.append(LakeFile(path, os.path.relpath(path, self.base_dir), fragment, tuple(groups)))
        return files

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
        row = group.first_row
        scan = group.fragment.subset(row_group_ids=[group.index]).to_batches(
            schema=self.dataset.schema,
            columns=list(columns),
            filter=self.filter,
            batch_size=batch_size,
            batch_readahead=BATCH_READAHEAD,
            fragment_readahead=1,
        )
        while True:
            try:
                batch = next(scan)
            except StopIteration:
                return
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError) as exc:
                raise DataError(f"{group.file}: row group {group.index}: cannot read ({exc})") from None
            if batch.num_rows:
                yield batch, row
                row += batch.num_rows

    def _group_matrices(self, group: RowGroup, reader: FeatureReader, batch_size: int) -> Iterator[np.ndarray]:
        where = f"{group.file}: row group {group.index}"
        for batch, first_row in self.record_batches(group, reader.names, batch_size):
            X = reader.features(batch, where, first_row)
            if X.shape[0]:
                yield X
            del X  # not held while the next batch is decoded

    def batches(self, batch_size: int, rng: np.random.Generator | None = None) -> Iterator[np.ndarray]:
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
        batches : iterator of ndarray of shape (batch_size, n_features)
            The mini-batches, as float64.

        Examples
        --------
        >>> import tempfile, numpy as np, pyarrow as pa, pyarrow.parquet as pq
        >>> from streamgmm import ParquetSource
        >>> lake = tempfile.mkdtemp()
        >>> table = pa.table({"id": np.arange(6), "a": np.arange(6.0), "b": np.ones(6, dtype=np.int32)})
        >>> pq.write_table(table, f"{lake}/part-0.parquet", row_group_size=4)
        >>> source = ParquetSource(lake, passthrough=["id"])
        >>> batches = list(source.batches(4, np.random.default_rng(0)))
        >>> sorted(row[0] for batch in batches for row in batch.tolist())
        [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
        """
        reader = FeatureReader(self.feature_names, self.nan_policy)
        groups = self.row_groups if rng is None else [self.row_groups[i] for i in rng.permutation(len(self.row_groups))]

        def chunks() -> Iterator[np.ndarray]:
            for group in groups:
                if rng is None:
                    yield from self._group_matrices(group, reader, max(batch_size, READ_BATCH))
                    continue
                rows = self._group_rows(group, reader)
                order = rng.permutation(rows.shape[0])
                # Gathered copies, not views of a permuted group: a view held by the consumer
                # would keep the whole group alive while the next one is read.
                for start in range(0, rows.shape[0], batch_size):
                    yield rows[order[start : start + batch_size]]
                del rows
            self.skipped_records = reader.skipped

        # Cut into mini-batches in the reading thread too: the caller only computes.
        return prefetched(rebatch(chunks(), batch_size), depth=max(2, PREFETCH_RECORDS // batch_size))

    def _group_rows(self, group: RowGroup, reader: FeatureReader) -> np.ndarray:
        """A row group's usable records, decoded straight into one array."""
        rows = np.empty((group.num_rows, self.n_features))
        filled = 0
        for X in self._group_matrices(group, reader, READ_BATCH):
            rows[filled : filled + X.shape[0]] = X
            filled += X.shape[0]
            del X  # else it stays alive while the next part is decoded
        return rows[:filled]

    def sample(self, size: int, rng: np.random.Generator) -> np.ndarray:
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
        sample : ndarray of shape (n_sampled, n_features)
            The records drawn, at most ``size``.

        Examples
        --------
        >>> import tempfile, numpy as np, pyarrow as pa, pyarrow.parquet as pq
        >>> from streamgmm import ParquetSource
        >>> lake = tempfile.mkdtemp()
        >>> table = pa.table({"id": np.arange(6), "a": np.arange(6.0), "b": np.ones(6, dtype=np.int32)})
        >>> pq.write_table(table, f"{lake}/part-0.parquet", row_group_size=4)
        >>> source = ParquetSource(lake, passthrough=["id"])
        >>> source.sample(10, np.random.default_rng(0)).shape, source.sampled_every_record
        ((6, 2), True)
        """
        groups = self.row_groups
        self.sampled_every_record = False
        if len(groups) > SAMPLE_ROW_GROUPS:
            sizes = np.array([group.num_rows for group in groups], dtype=float)
            picked = np.sort(rng.choice(len(groups), SAMPLE_ROW_GROUPS, replace=False, p=sizes / sizes.sum()))
            groups = [groups[i] for i in picked]
        reader = FeatureReader(self.feature_names, self.nan_policy)
        chunks = (X for group in groups for X in self._group_matrices(group, reader, READ_BATCH))
        sample, seen = reservoir_sample_counted(chunks, size, rng)
        # Whether the sample is the whole lake: every row group read, and no more records than asked.
        self.sampled_every_record = len(groups) == len(self.row_groups) and seen <= size
        return sample if sample.shape[0] else np.empty((0, self.n_features))

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
        """Read this lake (same files, filter and ``nan_policy``) with other columns.

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
            self.dataset,
            columns=columns,
            passthrough=passthrough,
            filter=self.filter,
            nan_policy=self.nan_policy,
        )._with_layout(self.base_dir, self.empty_files)

    def _with_layout(self, base_dir: str, empty_files: list[str]) -> ParquetSource:
        self.base_dir, self.empty_files = base_dir, empty_files
        self.files = [LakeFile(f.path, os.path.relpath(f.path, base_dir), f.fragment, f.row_groups) for f in self.files]
        return self

    def __repr__(self) -> str:
        return (
            f"ParquetSource({self.base_dir!r}, files={len(self.files)}, records={self.n_records}, "
            f"columns={self.feature_names})"
        )


# ---------------------------------------------------------------------- finding the files


def open_dataset(source: Any, filesystem: pafs.FileSystem | None = None) -> tuple[ds.FileSystemDataset, str, list[str]]:
    """``(dataset, base directory, zero-byte files left out)`` for any accepted source."""
    import pyarrow.dataset as ds

    if isinstance(source, ds.Dataset):
        if not isinstance(source, ds.FileSystemDataset):
            raise TypeError("a pyarrow dataset of files is needed; pass an in-memory table directly instead")
        files = source.files
        base = os.path.commonpath([os.path.dirname(f) for f in files]) if files else "."
        # Up out of shared partition directories (all files under year=2024/), so the output
        # layout keeps them.
        while "=" in os.path.basename(base):
            base = os.path.dirname(base)
        return source, base, []
    if filesystem is not None and not isinstance(filesystem, pafs.FileSystem):
        # An fsspec filesystem (s3fs, gcsfs, adlfs, ...): pyarrow reads through it.
        filesystem = pafs.PyFileSystem(pafs.FSSpecHandler(filesystem))
    paths = [source] if isinstance(source, (str, os.PathLike)) else list(source)
    if not paths:
        raise ValueError("no input paths given")
    found: list[str] = []
    bases: list[str] = []
    empty: list[str] = []
    fs = filesystem
    for path in paths:
        path_fs, files, base, zero = _discover(os.fspath(path), filesystem)
        if fs is None:
            fs = path_fs
        elif type(path_fs) is not type(fs):
            raise ValueError("all inputs must be on the same filesystem")
        found += files
        bases.append(base)
        empty += zero
    if not found:
        if empty:
            raise DataError(f"no data: every input file is empty ({', '.join(empty[:3])})")
        raise DataError(f"no Parquet files found in {', '.join(map(str, paths))}")
    base = os.path.commonpath(bases) if len(bases) > 1 else bases[0]
    # By real path on a local disk: a lake and a link to it are the same files.
    keys = [real(f) for f in found] if isinstance(fs, pafs.LocalFileSystem) else found
    counts = collections.Counter(keys)
    duplicated = sorted({f for f, key in zip(found, keys) if counts[key] > 1})
    if duplicated:
        raise ValueError(f"input file given more than once: {duplicated[0]}")
    try:
        dataset = ds.dataset(found, filesystem=fs, format="parquet", partitioning="hive", partition_base_dir=base)
    except (pa.ArrowInvalid, OSError) as exc:
        # Discovery reads the first file's footer to learn the schema.
        raise DataError(f"{found[0]}: not a Parquet file, or truncated ({exc})") from None
    return dataset, base, empty


def _discover(path: str, filesystem: pafs.FileSystem | None) -> tuple[pafs.FileSystem, list[str], str, list[str]]:
    """Files under one input: ``(filesystem, data files, base directory, zero-byte files)``."""
    if filesystem is None:
        if "://" in path:
            filesystem, path = pafs.FileSystem.from_uri(path)
        else:
            filesystem, path = pafs.LocalFileSystem(), os.path.abspath(path)
    local = isinstance(filesystem, pafs.LocalFileSystem)
    if local:
        return (filesystem, *_discover_local(path))
    info = filesystem.get_file_info(path)
    if info.type == pafs.FileType.NotFound:
        raise FileNotFoundError(f"no such file or directory: {path}")
    if info.type == pafs.FileType.Directory:
        base = path
        infos = filesystem.get_file_info(pafs.FileSelector(path, recursive=True))
        found = sorted((i.path, i.size) for i in infos if i.type == pafs.FileType.File)
    else:
        base, found = os.path.dirname(path), [(info.path, info.size)]
    return (filesystem, *_data_files(found, base, named=path))


def _discover_local(path: str) -> tuple[list[str], str, list[str]]:
    """A local file, directory or glob, listed each real file once (links cannot loop)."""
    if glob.has_magic(path):
        base, listing = glob_files(path, skip=is_hidden)
        if not listing.files and not listing.problems:
            raise DataError(f"no files match {path}")
    elif os.path.isdir(path):
        base, listing = path, walk_files(path, skip=is_hidden)
    else:
        problem = describe_non_file(path)
        if problem == "no such file":
            raise FileNotFoundError(f"no such file or directory: {path}")
        if problem is not None:
            raise DataError(f"{path}: {problem}")
        return _data_files([(path, os.path.getsize(path))], os.path.dirname(path), named=path)
    if listing.problems:
        more = f" (and {len(listing.problems) - 1} more)" if len(listing.problems) > 1 else ""
        raise DataError(f"{listing.problems[0]}{more}")
    return _data_files([(path, info.st_size) for path, info in listing.files], base, named=None)


def _data_files(found: list[tuple[str, int]], base: str, named: str | None) -> tuple[list[str], str, list[str]]:
    """``(data files, base, zero-byte files)``: hidden names left out unless named directly."""
    files, zero = [], []
    for path, size in found:
        relative = os.path.relpath(path, base) if base else path
        if path != named and any(is_hidden(part) for part in relative.split(os.sep)):
            continue
        (zero if size == 0 else files).append(path)
    return files, base, zero


def is_hidden(name: str) -> bool:
    """Names starting with ``.`` or ``_`` are not data (``_SUCCESS``, ``.crc``, files being
    written under a temporary name), by the convention of Spark, Hive and pyarrow."""
    return name.startswith((".", "_"))


def partition_names(dataset: ds.FileSystemDataset) -> list[str]:
    """Names of the hive partition keys: fields whose values come from the files' directories
    (pyarrow's own partitioning schema lists every field when there is no partition)."""
    import pyarrow.dataset as ds

    names: dict[str, None] = {}
    for fragment in dataset.get_fragments():
        names.update(dict.fromkeys(ds.get_partition_keys(fragment.partition_expression)))
    return [name for name in names if name in dataset.schema.names]
