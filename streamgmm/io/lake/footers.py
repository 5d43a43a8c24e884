"""Footers of a lake's files: read once when the lake is opened, kept as a few numbers per row group,
and read again (through a small cache) when a file's row groups are visited.

Opening a lake reads every footer to count its records and row groups and to check that the
needed columns exist with the same types in every file (schema drift is an error naming both
files before any model state changes); the footers themselves are dropped, so memory grows by
a few dozen bytes per row group, not by the tens of kilobytes a parsed footer takes. Reading a
row group takes its file's footer from a :class:`FooterCache` of the last few files, reading
it again on a miss and checking it against what was listed: a file removed, rewritten with
other row groups or other column types since is an error naming it.

:func:`read_row_groups` has an example.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, overload

import numpy as np
import pyarrow as pa

from streamgmm.io.lake.discovery import LakeListing
from streamgmm.io.records.columns import DataError

# Files whose parsed footers are kept for reading: one is all a pass in file order needs; a few
# more cover interleaved readers (the initialisation sample during a pass), at tens of kB each.
FOOTER_CACHE_FILES = 8


@dataclass(frozen=True)
class RowGroup:
    """One row group of one file: the unit of reading and of shuffling."""

    file: str
    index: int
    num_rows: int
    first_row: int  # its first row's number within the file, for messages
    file_number: int  # its file's position in the lake's listing


class RowGroups(Sequence[RowGroup]):
    """The non-empty row groups of every file, in file order, as four arrays (24 bytes a row
    group); :class:`RowGroup` objects are made when asked for."""

    def __init__(self, listing: LakeListing, file_number, index, num_rows, first_row):  # type: ignore[no-untyped-def]
        self.listing = listing
        self.file_number = np.asarray(file_number, dtype=np.int32)
        self.index = np.asarray(index, dtype=np.int32)
        self.num_rows = np.asarray(num_rows, dtype=np.int64)
        self.first_row = np.asarray(first_row, dtype=np.int64)
        # Where each file's row groups start; file k's are [starts[k], starts[k + 1]).
        self.starts = np.searchsorted(self.file_number, np.arange(len(listing) + 1))

    def __len__(self) -> int:
        return len(self.index)

    @overload
    def __getitem__(self, i: int) -> RowGroup: ...
    @overload
    def __getitem__(self, i: slice) -> list[RowGroup]: ...
    def __getitem__(self, i: int | slice) -> RowGroup | list[RowGroup]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        number = int(self.file_number[i])
        return RowGroup(
            self.listing.paths[number], int(self.index[i]), int(self.num_rows[i]), int(self.first_row[i]), number
        )

    def of_file(self, number: int) -> tuple[RowGroup, ...]:
        return tuple(self[i] for i in range(self.starts[number], self.starts[number + 1]))


@dataclass(frozen=True)
class LakeFile:
    """One input file, with its path relative to the lake's base directory (the layout the
    responsibilities pass mirrors) and its non-empty row groups."""

    path: str
    relative_path: str
    row_groups: tuple[RowGroup, ...]
    number: int  # its position in the listing
    listing: LakeListing = field(repr=False, compare=False)

    @property
    def num_rows(self) -> int:
        return sum(group.num_rows for group in self.row_groups)

    @property
    def fragment(self) -> Any:
        """A new ``pyarrow.dataset`` fragment of the file (with its hive keys)."""
        return self.listing.fragment(self.number)


class LakeFiles(Sequence[LakeFile]):
    """The files of a lake, each :class:`LakeFile` made when asked for (none is held)."""

    def __init__(self, row_groups: RowGroups):
        self.row_groups = row_groups

    def __len__(self) -> int:
        return len(self.row_groups.listing)

    @overload
    def __getitem__(self, i: int) -> LakeFile: ...
    @overload
    def __getitem__(self, i: slice) -> list[LakeFile]: ...
    def __getitem__(self, i: int | slice) -> LakeFile | list[LakeFile]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        listing = self.row_groups.listing
        number = range(len(listing))[i]
        return LakeFile(
            listing.paths[number], listing.relative_path(number), self.row_groups.of_file(number), number, listing
        )


def read_row_groups(listing: LakeListing, needed: Sequence[str]) -> tuple[RowGroups, dict[str, pa.DataType]]:
    """Every listed file's footer, read once: its non-empty row groups, and the ``needed``
    columns' types checked against the first file's.

    Parameters
    ----------
    listing : LakeListing
        The files.

    needed : sequence of str
        The columns every file must have, with the same types (hive partition keys excepted:
        they come from the directories).

    Returns
    -------
    row_groups : RowGroups
        The non-empty row groups, in file order.

    column_types : dict
        The needed columns' types in the first file: what every file was checked against.

    Raises
    ------
    DataError
        If a file is not Parquet, lacks a needed column or has one of another type.

    Examples
    --------
    >>> import tempfile, numpy as np, pyarrow as pa, pyarrow.parquet as pq
    >>> from streamgmm.io.lake.discovery import open_lake
    >>> from streamgmm.io.lake.footers import FooterCache, read_row_groups, row_group_batches
    >>> lake = tempfile.mkdtemp()
    >>> pq.write_table(pa.table({"a": np.arange(6.0)}), f"{lake}/part-0.parquet", row_group_size=4)
    >>> listing = open_lake(lake)
    >>> groups, column_types = read_row_groups(listing, ["a"])
    >>> [(group.index, group.num_rows, group.first_row) for group in groups], column_types
    ([(0, 4, 0), (1, 2, 4)], {'a': DataType(double)})
    >>> fragment = FooterCache(listing, groups, column_types).fragment(0)
    >>> [(batch.num_rows, first_row) for batch, first_row in row_group_batches(
    ...     fragment, groups[1], listing.schema, ["a"], None, batch_size=10, readahead=1)]
    [(2, 4)]
    """
    columns = [name for name in needed if name not in set(listing.partition_names)]
    reference: dict[str, tuple[pa.DataType, str]] = {}
    file_number, index, num_rows, first_row = [], [], [], []
    for number in range(len(listing)):
        metadata, schema = _footer(listing, number, listing.fragment(number))
        check_types(schema, columns, reference, listing.paths[number], may_lack=listing.may_lack)
        row = 0
        for i in range(metadata.num_row_groups):
            rows = metadata.row_group(i).num_rows
            if rows:
                file_number.append(number)
                index.append(i)
                num_rows.append(rows)
                first_row.append(row)
            row += rows
        del metadata, schema  # not held while the next footer is read
    groups = RowGroups(listing, file_number, index, num_rows, first_row)
    return groups, {name: data_type for name, (data_type, _) in reference.items()}


def check_types(
    schema: pa.Schema,
    columns: Sequence[str],
    reference: dict[str, tuple[pa.DataType, str]],
    path: str,
    may_lack: Collection[str] = (),
) -> None:
    """Check that ``schema`` (of file ``path``) has ``columns`` with the types in ``reference``
    (``{name: (type, first file)}``); a column not in ``reference`` yet is added to it. A file
    may lack the columns in ``may_lack`` (a table's columns added after it was written: nulls).

    Examples
    --------
    >>> import pyarrow as pa
    >>> from streamgmm.io.lake.footers import check_types
    >>> reference = {}
    >>> check_types(pa.schema({"a": pa.float64()}), ["a"], reference, "one.parquet")
    >>> check_types(pa.schema({"a": pa.int64()}), ["a"], reference, "two.parquet")
    Traceback (most recent call last):
    ...
    streamgmm.io.records.columns.DataError: schema drift: column 'a' is int64 in two.parquet but double in one.parquet
    """
    for name in columns:
        field_index = schema.get_field_index(name)
        data_type = schema.field(field_index).type if field_index >= 0 else None
        if data_type is None and name in may_lack:
            continue
        if name not in reference:
            if data_type is None:
                raise DataError(f"{path}: no column {name!r} (columns: {', '.join(schema.names)})")
            reference[name] = (data_type, path)
            continue
        expected, first = reference[name]
        if data_type is None:
            raise DataError(f"schema drift: column {name!r} is missing from {path} (it is {expected} in {first})")
        if data_type != expected:
            raise DataError(f"schema drift: column {name!r} is {data_type} in {path} but {expected} in {first}")


def _footer(listing: LakeListing, number: int, fragment: Any) -> tuple[Any, pa.Schema]:
    path = listing.paths[number]
    try:
        return fragment.metadata, fragment.physical_schema
    except FileNotFoundError:
        raise DataError(f"{path}: the file is gone (removed or renamed since the lake was listed)") from None
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataError(f"{path}: not a Parquet file, or truncated ({exc})") from None


class FooterCache:
    """Fragments of the last ``size`` files read, each holding its parsed footer, so that a
    file's row groups read one after the other parse it once. A footer read again is checked
    against the listing: same non-empty row groups, same column types.

    Safe to use from several threads (a pass's reading thread and a sample).
    """

    def __init__(
        self,
        listing: LakeListing,
        row_groups: RowGroups,
        column_types: dict[str, pa.DataType],
        size: int = FOOTER_CACHE_FILES,
    ):
        self.listing, self.row_groups, self.size = listing, row_groups, size
        self.column_types = column_types
        self.first_path = listing.paths[0] if listing.paths else ""
        self.files: collections.OrderedDict[int, Any] = collections.OrderedDict()
        self.lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        # Pickled (e.g. to a Dask worker) without the parsed footers and the lock.
        return {key: value for key, value in self.__dict__.items() if key not in ("files", "lock")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, files=collections.OrderedDict(), lock=threading.Lock())

    def fragment(self, number: int) -> Any:
        """File ``number``'s fragment with its footer read and checked."""
        with self.lock:
            fragment = self.files.get(number)
            if fragment is not None:
                self.files.move_to_end(number)
                return fragment
        fragment = self.listing.fragment(number)
        metadata, schema = _footer(self.listing, number, fragment)
        self._check(number, metadata, schema)
        with self.lock:
            self.files[number] = fragment
            while len(self.files) > self.size:
                self.files.popitem(last=False)
        return fragment

    def _check(self, number: int, metadata: Any, schema: pa.Schema) -> None:
        path = self.listing.paths[number]
        reference = {name: (data_type, self.first_path) for name, data_type in self.column_types.items()}
        try:
            check_types(schema, list(self.column_types), reference, path, may_lack=self.listing.may_lack)
        except DataError as exc:
            raise DataError(f"{exc} (the file changed since the lake was listed)") from None
        groups = self.row_groups
        listed = [
            (int(groups.index[i]), int(groups.num_rows[i]))
            for i in range(groups.starts[number], groups.starts[number + 1])
        ]
        now = [(i, metadata.row_group(i).num_rows) for i in range(metadata.num_row_groups)]
        if [group for group in now if group[1]] != listed:
            raise DataError(
                f"{path}: the file changed since the lake was listed ({metadata.num_rows} records in "
                f"{metadata.num_row_groups} row groups now, {sum(rows for _, rows in listed)} in {len(listed)} "
                "non-empty ones then)"
            )


def row_group_batches(
    fragment: Any,
    group: RowGroup,
    schema: pa.Schema,
    columns: Sequence[str],
    filter: Any,
    batch_size: int,
    readahead: int,
) -> Iterator[tuple[pa.RecordBatch, int]]:
    """Read one row group of a fragment (footer read) as non-empty record batches and the
    file row number of each one's first row (counted among the rows ``filter`` keeps);
    :func:`read_row_groups` has an example."""
    row = group.first_row
    try:
        scan = fragment.subset(row_group_ids=[group.index]).to_batches(
            schema=schema,
            columns=list(columns),
            filter=filter,
            batch_size=batch_size,
            batch_readahead=readahead,
            fragment_readahead=1,
        )
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError) as exc:
        raise DataError(f"{group.file}: row group {group.index}: cannot read ({exc})") from None
    while True:
        try:
            batch = next(scan)
        except StopIteration:
            return
        except FileNotFoundError:
            raise DataError(f"{group.file}: the file is gone (removed or renamed since the lake was listed)") from None
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError) as exc:
            raise DataError(f"{group.file}: row group {group.index}: cannot read ({exc})") from None
        if batch.num_rows:
            yield batch, row
            row += batch.num_rows
