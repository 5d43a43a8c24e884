"""An Iceberg table's snapshot files, in a local folder or under an object-store prefix, through
pyiceberg (the ``iceberg`` extra); :func:`streamgmm.io.lake.table_formats.table_snapshot` calls it.

Without a catalog, the table's current metadata file is the one ``metadata/version-hint.text``
names (``v3.metadata.json`` or ``3.metadata.json`` for a hint of 3), else the highest-numbered
``metadata/*.metadata.json`` (the convention of catalog-less, "Hadoop" tables). A hint that is
not text is an error naming it; a hint naming no file is passed over.

In an object store pyiceberg reads no ``AWS_*`` variable: the settings streamgmm's other readers
take from them (and from ``--storage-option``, which sets them, or from the URL) are given to
pyiceberg as its FileIO properties (:func:`~streamgmm.io.lake.store_credentials.iceberg_properties`).
"""

from __future__ import annotations

import os
import re
from datetime import datetime

import pyarrow.fs as pafs

from streamgmm.io.lake.store_credentials import iceberg_properties, split_credentials
from streamgmm.io.lake.table_formats import TableSnapshot
from streamgmm.io.records.columns import DataError

# Iceberg's metadata files are named <version>-<uuid>.metadata.json (or v<version>.metadata.json).
METADATA_NAME = re.compile(r"^v?(\d+)(-.*)?\.metadata\.json$")
HINT = "version-hint.text"
# A hint is a version number: more bytes than this are no hint.
HINT_BYTES = 4096


def iceberg_snapshot(path: str, version: int | None, when: datetime | None) -> TableSnapshot:
    """The files of an Iceberg table's snapshot: the current one, snapshot id ``version``, or
    the last one at or before ``when``; a ``DataError`` naming the table or file otherwise."""
    from pyiceberg.table import StaticTable

    remote = "://" in path and not path.startswith("file://")
    path = path if remote else path.removeprefix("file://")
    metadata = path if not remote and os.path.isfile(path) else current_metadata(path)
    properties = iceberg_properties(path) if remote else {}
    try:
        table = StaticTable.from_metadata(metadata, properties)
    except Exception as error:  # pyiceberg and its FileIO raise their own errors, one class per cause
        raise DataError(f"{metadata}: cannot read the Iceberg metadata: {error}") from None
    shown = split_credentials(path)[0]
    snapshot_id = version
    if when is not None:
        snapshot = table.snapshot_as_of_timestamp(int(when.timestamp() * 1000))
        if snapshot is None:
            raise DataError(f"{shown}: the Iceberg table has no snapshot at or before {when.isoformat()}")
        snapshot_id = snapshot.snapshot_id
    elif version is not None and table.snapshot_by_id(version) is None:
        known = ", ".join(str(s.snapshot_id) for s in table.metadata.snapshots)
        raise DataError(f"{shown}: the Iceberg table has no snapshot {version} (it has {known})")
    if snapshot_id is None:
        snapshot_id = table.metadata.current_snapshot_id
    if snapshot_id is None:  # a table created and never written
        return TableSnapshot("iceberg", path, -1, [], 0)
    tasks = list(table.scan(snapshot_id=snapshot_id).plan_files())
    for task in tasks:
        if task.delete_files:
            raise DataError(
                f"{shown}: the Iceberg snapshot {snapshot_id} masks rows of {task.file.file_path} with delete files, "
                "which streamgmm does not apply; rewrite the data files (rewrite_data_files) to read it"
            )
    files = [task.file.file_path.removeprefix("file://") for task in tasks]
    return TableSnapshot("iceberg", path, int(snapshot_id), files, int(sum(t.file.record_count for t in tasks)))


def current_metadata(path: str) -> str:
    """The location of an Iceberg table's current metadata file (a local path, or a URL without
    query or credentials): the one ``version-hint.text`` names, else the highest-numbered."""
    if "://" in path and not path.startswith("file://"):
        filesystem, root = pafs.FileSystem.from_uri(path)
        location = split_credentials(path)[0].partition("?")[0].rstrip("/") + "/metadata"
    else:
        filesystem, root = pafs.LocalFileSystem(), os.path.abspath(path.removeprefix("file://"))
        location = os.path.join(path.removeprefix("file://"), "metadata")
    folder = f"{root.rstrip('/')}/metadata"
    selector = pafs.FileSelector(folder, allow_not_found=True)
    names = {info.base_name for info in filesystem.get_file_info(selector) if info.type == pafs.FileType.File}
    number = _hint(filesystem, f"{folder}/{HINT}", f"{location}/{HINT}")
    if number is not None:
        for name in (f"v{number}.metadata.json", f"{number}.metadata.json"):
            if name in names:
                return f"{location}/{name}"
    numbered = [(int(m.group(1)), name) for name in names if (m := METADATA_NAME.match(name))]
    if not numbered:
        raise DataError(f"{location}: no *.metadata.json file: not an Iceberg table, or its metadata is gone")
    return f"{location}/{max(numbered)[1]}"


def _hint(filesystem: pafs.FileSystem, key: str, shown: str) -> str | None:
    """The text of ``version-hint.text`` (None without one), read whole and closed; a hint that
    is not text is a ``DataError`` naming it."""
    try:
        with filesystem.open_input_stream(key) as stream:
            data = stream.read(HINT_BYTES)
    except FileNotFoundError:
        return None
    try:
        return data.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise DataError(
            f"{shown}: not an Iceberg version hint (its bytes are not text); write the current version's number "
            "into it, or delete it to read the highest-numbered metadata file"
        ) from None
