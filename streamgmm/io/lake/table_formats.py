"""Table formats: the Parquet files of a Delta or Iceberg table's snapshot.

A Delta or Iceberg table folder holds, besides the files of its current snapshot, files that
appends, deletes and compactions have replaced; reading the folder as a plain lake would read
them too. :func:`table_snapshot` asks the table's log (through the ``deltalake`` or ``pyiceberg``
package, the ``delta`` and ``iceberg`` extras) which files make the snapshot: the current one, a
``version`` (a Delta version number, an Iceberg snapshot id) or the last one ``as_of`` a time.
Without the package, reading such a folder is an error naming the extra, never a silent read of
stale files.

streamgmm reads whole Parquet files, so a snapshot whose rows are also masked by other files
(Delta deletion vectors, Iceberg delete files) or whose columns are renamed by a mapping (Delta
column mapping) is refused with the reason; rewriting the table (Delta ``OPTIMIZE`` with
deletion vectors purged, Iceberg ``rewrite_data_files``) makes it readable.

Examples
--------
>>> import tempfile, pyarrow as pa
>>> from deltalake import DeltaTable, write_deltalake
>>> from streamgmm.io.lake.table_formats import table_snapshot
>>> folder = tempfile.mkdtemp()
>>> write_deltalake(folder, pa.table({"x": [1.0, 2.0, 3.0]}))
>>> write_deltalake(folder, pa.table({"x": [4.0]}), mode="append")
>>> DeltaTable(folder).delete("x < 2.5")  # doctest: +ELLIPSIS
{...}
>>> snapshot = table_snapshot(folder)
>>> snapshot.format, snapshot.version, len(snapshot.files), snapshot.n_records
('delta', 2, 2, 2)
>>> table_snapshot(folder, version=1).n_records
4
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from streamgmm.io.records.columns import DataError

FORMATS = ("delta", "iceberg")
EXTRAS = {"delta": ("deltalake", "delta"), "iceberg": ("pyiceberg", "iceberg")}
# Iceberg's metadata files are named <version>-<uuid>.metadata.json (or v<version>.metadata.json).
_ICEBERG_METADATA = re.compile(r"^v?(\d+)(-.*)?\.metadata\.json$")


@dataclass(frozen=True)
class TableSnapshot:
    """The Parquet files of one snapshot of a table.

    Attributes
    ----------
    format : {'delta', 'iceberg'}
        The table format.
    path : str
        The table's folder.
    version : int
        The snapshot read: a Delta version, or an Iceberg snapshot id.
    files : list of str
        The snapshot's data files, as local paths or URIs.
    n_records : int
        Their rows, as the table's log counts them (None where it does not).
    schema : pyarrow.Schema or None
        The table's columns as its log declares them (Delta; None where not taken from the
        log). A file written before a column was added lacks it: its rows hold nulls there.
    """

    format: str
    path: str
    version: int
    files: list[str]
    n_records: int | None
    schema: Any = None

    def missing_file(self, detail: str) -> str:
        """The message for a data file of this snapshot that is not there (``detail``: the
        reader's error, which names the file)."""
        named = [name for name in self.files if name.removeprefix("file://") in detail or name in detail]
        file = named[0].removeprefix("file://") if named else detail
        where = f"version {self.version}" if self.format == "delta" else f"snapshot {self.version}"
        cleanup = "VACUUM" if self.format == "delta" else "expire_snapshots"
        return (
            f"{self.path}: the {self.format.capitalize()} table's {where} names data file {file}, which is missing "
            f"(removed by {cleanup} or never copied); that {where.split()[0]} can no longer be read"
        )


def table_format(path: str) -> str | None:
    """``'delta'`` for a folder with ``_delta_log/``, ``'iceberg'`` for one with
    ``metadata/*.metadata.json`` (or an Iceberg metadata file itself); None otherwise."""
    path = os.fspath(path)
    if "://" in path and not path.startswith("file://"):
        return _store_table_format(path)
    path = path[len("file://") :] if path.startswith("file://") else path
    if os.path.isfile(path):
        return "iceberg" if _ICEBERG_METADATA.match(os.path.basename(path)) else None
    if os.path.isdir(os.path.join(path, "_delta_log")):
        return "delta"
    metadata = os.path.join(path, "metadata")
    if os.path.isdir(metadata) and any(_ICEBERG_METADATA.match(name) for name in os.listdir(metadata)):
        return "iceberg"
    return None


def _store_table_format(url: str) -> str | None:
    """:func:`table_format` for an object-store prefix (a prefix with objects under it is a
    directory there)."""
    import pyarrow.fs as pafs

    filesystem, root = pafs.FileSystem.from_uri(url)
    root = root.rstrip("/")
    if filesystem.get_file_info(f"{root}/_delta_log").type == pafs.FileType.Directory:
        return "delta"
    selector = pafs.FileSelector(f"{root}/metadata", allow_not_found=True)
    if any(_ICEBERG_METADATA.match(info.base_name) for info in filesystem.get_file_info(selector)):
        return "iceberg"
    return None


def table_snapshot(path: str, *, version: int | None = None, as_of: datetime | str | None = None) -> TableSnapshot:
    """The files of a Delta or Iceberg table's snapshot: the current one, ``version``, or the
    last one committed at or before ``as_of`` (a datetime, or ISO 8601 text; naive means UTC).

    Raises ``DataError`` naming the table for a folder that is no table, a missing extra, an
    unknown version, or a snapshot streamgmm cannot read file by file."""
    path = os.fspath(path)
    kind = table_format(path)
    if kind is None:
        raise DataError(f"{path}: not a Delta or Iceberg table (no _delta_log/ nor metadata/*.metadata.json)")
    if version is not None and as_of is not None:
        raise ValueError("give version or as_of, not both")
    when = _as_datetime(as_of) if as_of is not None else None
    module, extra = EXTRAS[kind]
    try:
        __import__(module)
    except ImportError:
        raise DataError(
            f"{path} is {'a Delta' if kind == 'delta' else 'an Iceberg'} table; reading its current snapshot needs "
            f"the {module} package: pip install 'streamgmm[{extra}]' (reading the folder as plain Parquet would "
            "include files the table no longer holds)"
        ) from None
    if kind == "delta":
        return _delta(path, version, when)
    from streamgmm.io.lake.iceberg_snapshot import iceberg_snapshot  # it builds on TableSnapshot, defined here

    return iceberg_snapshot(path, version, when)


def _as_datetime(value: datetime | str) -> datetime:
    when = datetime.fromisoformat(value) if isinstance(value, str) else value
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def delta_storage_options(path: str) -> dict[str, str] | None:
    """The storage options ``deltalake`` needs beside the environment for the table at ``path``.

    delta-rs reads the standard ``AWS_*`` variables itself; a plain-http endpoint (a local S3
    server) must also be allowed by name."""
    return {"AWS_ALLOW_HTTP": "true"} if os.environ.get("AWS_ENDPOINT_URL", "").startswith("http://") else None


def _delta(path: str, version: int | None, when: datetime | None) -> TableSnapshot:
    from deltalake import DeltaTable

    try:
        table = DeltaTable(path, version=version, storage_options=delta_storage_options(path))
        if when is not None:
            # load_as_version(datetime) falls back to version 0 for a time before the first commit.
            times = {entry["version"]: entry["timestamp"] for entry in table.history() if "timestamp" in entry}
            before = [v for v, ms in times.items() if ms <= when.timestamp() * 1000]
            if not before:
                raise DataError(f"{path}: the Delta table has no version committed at or before {when.isoformat()}")
            table.load_as_version(max(before))
    except DataError:
        raise
    except Exception as error:  # deltalake raises its own errors, one class per cause
        from streamgmm.io.lake.delta_errors import delta_load_problem

        problem = delta_load_problem(path, error)
        raise DataError(f"{path}: cannot load the Delta table{_at(version, when)}: {problem}") from None
    features = set(table.protocol().reader_features or ())
    if "deletionVectors" in features and _has_deletion_vectors(table):
        raise DataError(
            f"{path}: this Delta snapshot masks rows with deletion vectors, which streamgmm does not apply; "
            "rewrite the files (OPTIMIZE, then REORG TABLE ... APPLY (PURGE)) to read it"
        )
    mapping = table.metadata().configuration.get("delta.columnMapping.mode", "none")
    if mapping not in ("none", None):
        raise DataError(
            f"{path}: Delta column mapping ({mapping!r}) renames the files' columns; streamgmm reads them by name"
        )
    adds = table.get_add_actions(flatten=True)
    counts = adds.column("num_records").to_pylist() if "num_records" in adds.schema.names else []
    n_records = int(sum(counts)) if counts and None not in counts else None
    return TableSnapshot("delta", path, int(table.version()), list(table.file_uris()), n_records, _arrow(table))


def _arrow(table: Any) -> Any:
    """The Delta table's schema as a ``pyarrow.Schema`` (None for a type Arrow cannot take)."""
    import pyarrow as pa

    try:
        return pa.schema(table.schema().to_arrow())
    except Exception:  # noqa: BLE001 - the files' own schemas are read then, as before
        return None


def _has_deletion_vectors(table: object) -> bool:
    adds = table.get_add_actions(flatten=True)  # type: ignore[attr-defined]
    names = [name for name in adds.schema.names if name.startswith("deletionVector")]
    return any(value is not None for name in names for value in adds.column(name).to_pylist())


def _at(version: int | None, when: datetime | None) -> str:
    if version is not None:
        return f" at version {version}"
    return f" as of {when.isoformat()}" if when is not None else ""
