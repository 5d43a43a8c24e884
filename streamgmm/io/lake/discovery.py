"""Finding a lake's files: paths, directories, globs, URLs or a ``pyarrow.dataset`` dataset listed
once into a :class:`LakeListing`, which keeps per file only its path and its hive partition.

A ``pyarrow.dataset`` over every file is built while listing (to learn the schema and the
partition keys, and to let a ``filter`` prune partitions), then dropped: its fragments keep
each footer they ever read, tens of kilobytes per file. Paths whose name starts with ``.`` or
``_`` (``_SUCCESS``, ``.crc`` files) are not data, as for Spark and pyarrow; zero-byte files are
set aside.

:func:`open_lake` has an example.
"""

from __future__ import annotations

import collections
import glob
import os
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs

from streamgmm.io.lake.paths import describe_non_file, glob_files, real, walk_files
from streamgmm.io.lake.table_formats import TableSnapshot, table_format, table_snapshot
from streamgmm.io.records.columns import DataError

if TYPE_CHECKING:  # pyarrow.dataset imports pandas: loaded only where a dataset is used
    import pyarrow.dataset as ds


@dataclass(frozen=True)
class LakeListing:
    """The selected files of a lake: what reading any of them needs, and per file no more than
    its path and the number of its partition (files of one directory share one expression)."""

    filesystem: pafs.FileSystem
    format: Any  # pyarrow.dataset.ParquetFileFormat, with the reading options of a dataset given
    schema: pa.Schema  # the lake's columns: the first file's, plus hive partition keys
    base_dir: str
    paths: list[str]
    partitions: list[Any]  # distinct partition expressions (pyarrow.compute.Expression)
    partition_of: np.ndarray  # int32, each path's index into partitions
    partition_names: list[str]
    empty_files: list[str]
    # Where the inputs were named: each directory, glob's folder or table given, and each file
    # given by name (what an output must neither lie in nor hold; base_dir may be wider).
    inputs: tuple[str, ...] = ()
    # Columns a file may lack, its rows then holding nulls there: those a Delta table's schema
    # declares (a column added by schema evolution is absent from the files written before).
    may_lack: frozenset[str] = frozenset()

    def __len__(self) -> int:
        return len(self.paths)

    def relative_path(self, number: int) -> str:
        """File ``number``'s path under the base directory (the layout outputs mirror)."""
        return os.path.relpath(self.paths[number], self.base_dir)

    def relative_paths(self) -> list[str]:
        return [self.relative_path(number) for number in range(len(self.paths))]

    def fragment(self, number: int) -> Any:
        """A new ``pyarrow.dataset`` fragment of file ``number``, its footer not read yet."""
        expression = self.partitions[self.partition_of[number]]
        return self.format.make_fragment(self.paths[number], self.filesystem, partition_expression=expression)

    def dataset(self) -> ds.FileSystemDataset:
        """A ``pyarrow.dataset`` of every listed file (one fragment each, built now)."""
        import pyarrow.dataset as ds

        fragments = [self.fragment(number) for number in range(len(self.paths))]
        return ds.FileSystemDataset(fragments, schema=self.schema, format=self.format, filesystem=self.filesystem)


def open_lake(
    source: Any,
    filesystem: pafs.FileSystem | None = None,
    filter: Any = None,
    version: int | None = None,
    as_of: Any = None,
) -> LakeListing:
    """List any accepted source, keeping the files whose partition keys ``filter`` selects.

    Parameters
    ----------
    source : str, os.PathLike, list of those, or pyarrow.dataset.FileSystemDataset
        As :class:`~streamgmm.io.sources.parquet.ParquetSource` accepts.

    filesystem : pyarrow.fs.FileSystem or fsspec filesystem, default=None
        The filesystem of plain paths.

    filter : pyarrow.compute.Expression, default=None
        Files whose hive partition keys cannot match it are left out.

    version, as_of : int, datetime or str, default=None
        A Delta or Iceberg table's snapshot (see :func:`~streamgmm.io.lake.table_formats.table_snapshot`);
        a table folder is otherwise read at its current snapshot.

    Returns
    -------
    listing : LakeListing
        The selected files.

    Examples
    --------
    >>> import os, tempfile, numpy as np, pyarrow as pa, pyarrow.parquet as pq
    >>> from streamgmm.io.lake.discovery import open_lake
    >>> lake = tempfile.mkdtemp()
    >>> for day in (1, 2):
    ...     os.makedirs(f"{lake}/day={day}")
    ...     pq.write_table(pa.table({"a": np.arange(3.0)}), f"{lake}/day={day}/part-0.parquet")
    >>> listing = open_lake(lake)
    >>> listing.relative_paths(), listing.partition_names
    (['day=1/part-0.parquet', 'day=2/part-0.parquet'], ['day'])
    >>> listing.fragment(1).partition_expression
    <pyarrow.compute.Expression (day == 2)>
    >>> open_lake(lake, filter=pa.compute.field("day") > 1).relative_paths()
    ['day=2/part-0.parquet']
    """
    dataset, base, empty, inputs, may_lack = _open_dataset(source, filesystem, version, as_of)
    names: dict[str, None] = {}
    for fragment in dataset.get_fragments():
        names.update(dict.fromkeys(_partition_keys(fragment.partition_expression)))
    partition_names = [name for name in names if name in dataset.schema.names]
    paths, partition_of = [], []
    distinct: dict[str, int] = {}
    partitions: list[Any] = []
    for fragment in _selected(dataset, filter):
        expression = fragment.partition_expression
        key = str(expression)
        if key not in distinct:
            distinct[key] = len(partitions)
            partitions.append(expression)
        paths.append(fragment.path)
        partition_of.append(distinct[key])
    return LakeListing(
        filesystem=dataset.filesystem,
        format=dataset.format,
        schema=dataset.schema,
        base_dir=base,
        paths=paths,
        partitions=partitions,
        partition_of=np.array(partition_of, dtype=np.int32),
        partition_names=partition_names,
        empty_files=empty,
        inputs=inputs,
        may_lack=may_lack,
    )


def _partition_keys(expression: Any) -> list[str]:
    import pyarrow.dataset as ds

    return list(ds.get_partition_keys(expression))


def _selected(dataset: ds.FileSystemDataset, filter: Any) -> Any:
    """The fragments the filter's partition keys select (all without a filter)."""
    try:
        return list(dataset.get_fragments(filter=filter))
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
        missing = re.search(r"FieldRef\.Name\((.*?)\)", str(exc))
        first = dataset.files[0] if dataset.files else "dataset"
        if missing:
            raise DataError(
                f"filter {filter}: no column {missing.group(1)!r} in {first} "
                f"(columns: {', '.join(dataset.schema.names)})"
            ) from None
        raise DataError(f"filter {filter}: {exc}") from None


def _open_dataset(
    source: Any, filesystem: pafs.FileSystem | None, version: int | None = None, as_of: Any = None
) -> tuple[ds.FileSystemDataset, str, list[str], tuple[str, ...], frozenset[str]]:
    """``(dataset, base directory, zero-byte files left out, inputs as named, columns a file
    may lack)`` for any accepted source (see :class:`LakeListing`)."""
    import pyarrow.dataset as ds

    table = _table_folder(source, filesystem)
    if table is None and (version is not None or as_of is not None):
        raise ValueError(f"version and as_of apply to a Delta or Iceberg table, not to {source}")
    if table is not None:
        return _open_table(table, version, as_of)
    if isinstance(source, ds.Dataset):
        if not isinstance(source, ds.FileSystemDataset):
            raise TypeError("a pyarrow dataset of files is needed; pass an in-memory table directly instead")
        files = source.files
        base = os.path.commonpath([os.path.dirname(f) for f in files]) if files else "."
        # Up out of shared partition directories (all files under year=2024/), so the output
        # layout keeps them.
        while "=" in os.path.basename(base):
            base = os.path.dirname(base)
        return source, base, [], (base,), frozenset()
    return _open_paths(source, filesystem)


def _open_table(
    table: str, version: int | None, as_of: Any
) -> tuple[ds.FileSystemDataset, str, list[str], tuple[str, ...], frozenset[str]]:
    """:func:`_open_dataset` of a Delta or Iceberg table: its snapshot's files only (the folder
    also holds files the table no longer has)."""
    snapshot = table_snapshot(table, version=version, as_of=as_of)
    if not snapshot.files:
        raise DataError(f"{table}: the {snapshot.format} table's snapshot {snapshot.version} has no data files")
    if "://" in table:  # an object store: the files are URIs in it
        store, base = pafs.FileSystem.from_uri(table)
        base = base.rstrip("/")
        files = [_without_scheme(f) for f in snapshot.files]
    else:
        store, base, files = pafs.LocalFileSystem(), os.path.abspath(table), snapshot.files
    return _table_dataset(snapshot, files, store, base), base, [], (base,), _names(snapshot.schema)


def _open_paths(
    source: Any, filesystem: pafs.FileSystem | None
) -> tuple[ds.FileSystemDataset, str, list[str], tuple[str, ...], frozenset[str]]:
    """:func:`_open_dataset` of paths, globs and directories (one or a list)."""
    import pyarrow.dataset as ds

    paths = [source] if isinstance(source, (str, os.PathLike)) else list(source)
    if filesystem is not None and not isinstance(filesystem, pafs.FileSystem):
        # An fsspec filesystem (s3fs, gcsfs, adlfs, ...): pyarrow reads through it. It lists keys
        # without the scheme ("s3://b/lake/" is "b/lake" to it), so relative paths from the URL
        # would all start with "..", as if hidden.
        filesystem = pafs.PyFileSystem(pafs.FSSpecHandler(filesystem))
        paths = [_without_scheme(os.fspath(p)) if isinstance(p, (str, os.PathLike)) else p for p in paths]
    if not paths:
        raise ValueError("no input paths given")
    found: list[str] = []
    bases: list[str] = []
    named: list[str] = []
    empty: list[str] = []
    fs = filesystem
    for path in paths:
        path_fs, files, base, zero, where = _discover(os.fspath(path), filesystem)
        if fs is None:
            fs = path_fs
        elif type(path_fs) is not type(fs):
            raise ValueError("all inputs must be on the same filesystem")
        found += files
        bases.append(base)
        named.append(where)
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
    return dataset, base, empty, tuple(named), frozenset()


def _table_dataset(snapshot: TableSnapshot, files: list[str], store: pafs.FileSystem, base: str) -> Any:
    """The dataset of a table snapshot's files, with every column the table declares:
    the first file's, then those it lacks (added to the table after it was written)."""
    import pyarrow.dataset as ds

    def dataset(schema: pa.Schema | None) -> ds.FileSystemDataset:
        try:
            return ds.dataset(
                files, schema=schema, filesystem=store, format="parquet", partitioning="hive", partition_base_dir=base
            )
        except FileNotFoundError as exc:
            raise DataError(snapshot.missing_file(str(exc))) from None

    found = dataset(None)
    declared = snapshot.schema if snapshot.schema is not None else found.schema
    later = [field.with_nullable(True) for field in declared if found.schema.get_field_index(field.name) < 0]
    return dataset(pa.schema([*found.schema, *later])) if later else found


def _names(schema: pa.Schema | None) -> frozenset[str]:
    return frozenset(schema.names) if schema is not None else frozenset()


def _table_folder(source: Any, filesystem: pafs.FileSystem | None) -> str | None:
    """The local Delta or Iceberg table folder ``source`` names, if it names one."""
    if filesystem is not None or not isinstance(source, (str, os.PathLike)):
        return None
    path = os.fspath(source)
    path = path[len("file://") :] if path.startswith("file://") else path
    if glob.has_magic(path) or ("://" not in path and not os.path.exists(path)):
        return None
    return path if table_format(path) is not None else None


def _discover(path: str, filesystem: pafs.FileSystem | None) -> tuple[pafs.FileSystem, list[str], str, list[str], str]:
    """Files under one input: ``(filesystem, data files, base directory, zero-byte files,
    the input as named)``; the last is the file itself for a file, else the base directory."""
    if filesystem is None:
        if "://" in path:
            filesystem, path = pafs.FileSystem.from_uri(path)
        else:
            filesystem, path = pafs.LocalFileSystem(), os.path.abspath(path)
    local = isinstance(filesystem, pafs.LocalFileSystem)
    if local:
        files, base, zero = _discover_local(path)
        return filesystem, files, base, zero, base if base == path or glob.has_magic(path) else path
    info = filesystem.get_file_info(path)
    if info.type == pafs.FileType.NotFound:
        raise FileNotFoundError(f"no such file or directory: {path}")
    if info.type == pafs.FileType.Directory:
        base = path
        infos = filesystem.get_file_info(pafs.FileSelector(path, recursive=True))
        found = sorted((i.path, i.size) for i in infos if i.type == pafs.FileType.File)
    else:
        base, found = os.path.dirname(path), [(info.path, info.size)]
    return (filesystem, *_data_files(found, base, named=path), base if base == path else path)


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


def _without_scheme(path: str) -> str:
    return path.split("://", 1)[1].rstrip("/") if "://" in path else path
