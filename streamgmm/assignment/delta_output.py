"""``assign``'s responsibilities committed as a Delta table (``out_format="delta"``).

The data files are written as the Parquet output writes them (one per input file, through
:class:`~streamgmm.assignment.pipeline.PartWriter`, so memory stays at a few row groups however
many records there are), under names no earlier version uses, and then named in one commit of
the table through ``deltalake`` (the ``delta`` extra): readers see the whole result or none of
it, so no ``_SUCCESS`` marker is needed. The model's fingerprint is recorded in the commit's
metadata.

The commit is made at the version the run checked, or not at all: a new table must still be
absent, and an overwrite must find the version it read still the last one (whose commit carries
a streamgmm fingerprint: a table another program wrote is never replaced). Another writer that
commits in between (a retried job, a second run into the same ``--out``) wins; this run removes
its files and fails, naming the version that won. The table's columns are those of the Parquet
output (the kept columns, ``resp_*``, ``component``, ``log_likelihood``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs

from streamgmm.assignment.layout import (
    Part,
    check_output_directory,
    output_schema,
    overlapping_input,
    remove_outputs,
)
from streamgmm.assignment.pipeline import PartWriter
from streamgmm.io.lake.paths import is_url
from streamgmm.io.lake.table_formats import delta_storage_options, table_format
from streamgmm.io.records.columns import DataError

FINGERPRINT_KEY = "streamgmm.model_fingerprint"
DESCRIPTION = "responsibilities written by streamgmm assign"


def write_delta(
    parts: Sequence[Part],
    inputs: Sequence[str],
    writer: PartWriter,
    overwrite: bool,
    progress: Callable[[int], None] | None = None,
) -> list[dict[str, Any]]:
    """Score ``parts`` into data files under ``writer.out`` and commit them as one version of the
    Delta table there; each file's entry (input, output, rows, skipped).

    Raises ``ValueError`` naming the table when it may not be written (a folder of other files,
    a table without ``overwrite``, a table streamgmm did not write) or when another writer
    committed to it while this run scored; nothing of this run stays then."""
    try:
        from deltalake import CommitProperties
    except ImportError:
        raise DataError("--out-format delta needs the deltalake package: pip install 'streamgmm[delta]'") from None
    out = writer.out
    table = _check_table_output(out, inputs, overwrite)
    created = not is_url(out) and not os.path.exists(out)
    run = uuid.uuid4().hex
    # Names of this run alone: an overwrite keeps the files earlier versions name (time travel).
    named = [dataclasses.replace(part, output=f"part-{i:05d}-{run}.parquet") for i, part in enumerate(parts)]
    try:
        entries = writer.write_all(named, progress) if named else []
    except BaseException:
        _remove_if_empty(out, created)  # the writer has removed its files
        raise
    schema = output_schema(parts[0].keep_fields if parts else (), writer.params.n_components, writer.result_type)
    # No retries: a commit another writer made meanwhile is a conflict, never a version to append to.
    properties = CommitProperties(custom_metadata={FINGERPRINT_KEY: writer.params.fingerprint()}, max_commit_retries=0)
    try:
        _commit(out, table, schema, _add_actions(out, entries), properties)
    except Exception as error:
        remove_outputs(out, [entry["output"] for entry in entries])
        _remove_if_empty(out, created)
        winner = _last_version(out)
        if winner is not None and winner != (None if table is None else table.version()):
            raise ValueError(
                f"{out}: another writer committed version {winner} of the Delta table while assign ran; "
                "nothing was committed (run again, with overwrite to replace that version)"
            ) from None
        raise DataError(f"{out}: cannot commit to the Delta table: {' '.join(str(error).split())[:300]}") from None
    return entries


def _remove_if_empty(out: str, created: bool) -> None:
    """Remove the local folder this run created, if nothing else was put there meanwhile."""
    if created and os.path.isdir(out) and not os.listdir(out):
        os.rmdir(out)


def _commit(out: str, table: Any, schema: pa.Schema, adds: list[Any], properties: Any) -> None:
    """One commit of ``adds``: a new table, or the version after the one ``table`` loaded."""
    from deltalake import Schema
    from deltalake.transaction import create_table_with_add_actions

    if table is None:
        create_table_with_add_actions(
            out,
            Schema.from_arrow(schema),
            adds,
            mode="error",
            description=DESCRIPTION,
            storage_options=delta_storage_options(out),
            commit_properties=properties,
        )
    else:
        table.create_write_transaction(adds, mode="overwrite", schema=schema, commit_properties=properties)


def _add_actions(out: str, entries: list[dict[str, Any]]) -> list[Any]:
    """The Delta ``add`` action of each written file: its size, time and record count."""
    from deltalake.transaction import AddAction

    if is_url(out):
        filesystem, root = pafs.FileSystem.from_uri(out)
    else:
        filesystem, root = pafs.LocalFileSystem(), out
    actions = []
    for entry in entries:
        info = filesystem.get_file_info(f"{root.rstrip('/')}/{entry['output']}")
        modified = int(info.mtime.timestamp() * 1000) if info.mtime is not None else 0
        stats = json.dumps({"numRecords": entry["rows"]})
        actions.append(AddAction(entry["output"], info.size, {}, modified, True, stats))
    return actions


def _check_table_output(out: str, inputs: Sequence[str], overwrite: bool) -> Any:
    """None for a new table; with ``overwrite``, the loaded table this run is to replace."""
    if not is_url(out):
        if (named := overlapping_input(out, inputs)) is not None:
            raise ValueError(f"output {out} and input {named} overlap")
        if os.path.exists(out) and not os.path.isdir(out):
            raise ValueError(f"output {out} exists and is not a directory")
        if not (os.path.isdir(out) and os.listdir(out)):
            return None
        if table_format(out) != "delta":
            raise ValueError(
                f"output directory {out} holds files that are not a Delta table (other data, or the uncommitted "
                "files of a run writing there now); choose a new one"
            )
    elif table_format(out) != "delta":
        # The prefix's checks of the Parquet output (overlap with an input, objects of others);
        # anything already there means it is not a new table's.
        if check_output_directory(out, inputs, overwrite):
            raise ValueError(f"output {out} holds objects that are not a Delta table; choose an empty or new prefix")
        return None
    if not overwrite:
        raise ValueError(f"{out} holds a Delta table; pass overwrite=True (--overwrite) to write a new version")
    return _own_table(out)


def _own_table(out: str) -> Any:
    """The Delta table at ``out``, if its last commit is streamgmm's (carries a fingerprint)."""
    from deltalake import DeltaTable

    try:
        table = DeltaTable(out, storage_options=delta_storage_options(out))
        last = table.history(1)
    except Exception as error:  # deltalake raises its own errors, one class per cause
        reason = " ".join(str(error).split())[:300]
        raise ValueError(f"{out}: cannot load the Delta table to overwrite it: {reason}") from None
    if not last or FINGERPRINT_KEY not in last[0]:
        raise ValueError(
            f"{out}: the Delta table's last commit (version {table.version()}) was not written by streamgmm assign; "
            "overwrite replaces only streamgmm's own tables, so choose another --out"
        )
    return table


def _last_version(out: str) -> int | None:
    """The table's last version now (None where there is no table)."""
    from deltalake import DeltaTable

    try:
        return int(DeltaTable(out, storage_options=delta_storage_options(out)).version())
    except Exception:  # noqa: BLE001 - no table, or none readable: no winner to name
        return None
