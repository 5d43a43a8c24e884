"""The layout of ``assign``'s output, shared by the local pass and the Dask sink: which input
becomes which output file (:func:`input_parts`, :func:`table_part`), the output schema and
metadata, the output directory's checks, and the removal of what a failed run wrote. The
writer of the files is :class:`streamgmm.assignment.pipeline.PartWriter`.
"""

from __future__ import annotations

import json
import os
import posixpath
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from streamgmm.inputs import InMemoryRows
from streamgmm.io.lake.paths import is_url, overlap
from streamgmm.io.lake.store_credentials import split_credentials
from streamgmm.io.output.object_store import OutputStore, normal_url
from streamgmm.io.records.columns import DataError, check_column
from streamgmm.io.sources.parquet import READ_BATCH, LakeFile, ParquetSource
from streamgmm.mixture.params import MixtureParams

FORMAT_NAME = "streamgmm.assign"
FORMAT_VERSION = 1
SUCCESS = "_SUCCESS"
MODEL_KEY = b"streamgmm.model"  # Parquet key-value metadata of every output file
VERSION_KEY = b"streamgmm.format_version"
SINGLE_OUTPUT = "part-00000.parquet"
TABLE_ROW_GROUP = 131072  # output row group size for in-memory input (lakes keep their own)
# Covariance entries written into each output file's metadata at most (about 0.5 MB of JSON).
MAX_METADATA_COVARIANCES = 25_000
Batches = Iterator[tuple[pa.RecordBatch, str, int]]  # (record batch, place for messages, its first row there)
RESULT_DTYPES = {"float64": pa.float64(), "float32": pa.float32()}


@dataclass(frozen=True)
class Part:
    """One output file's worth of input: where it came from, and its row groups, each read as
    record batches. Each input row group becomes one output row group."""

    input: str
    output: str
    row_groups: Callable[[], Iterator[Batches]]
    keep_fields: tuple[pa.Field, ...]  # types of the kept columns, for an input without rows


def result_columns(n_components: int) -> list[str]:
    return [f"resp_{k}" for k in range(n_components)] + ["component", "log_likelihood"]


def output_schema(keep_fields: Sequence[pa.Field], n_components: int, result_type: pa.DataType) -> pa.Schema:
    """Kept columns (nullable, so every output file of a run has one schema, whatever the inputs
    declared), then the results."""
    fields = [field.with_nullable(True) for field in keep_fields]
    fields += [pa.field(f"resp_{k}", result_type) for k in range(n_components)]
    return pa.schema(fields + [pa.field("component", pa.int32()), pa.field("log_likelihood", pa.float64())])


def file_metadata(
    params: MixtureParams, features: list[str], keep: list[str], fingerprint: str, dtype: str
) -> dict[bytes, bytes]:
    model = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "fingerprint": fingerprint,
        "covariance_type": params.covariance_type,
        "n_components": params.n_components,
        "feature_names": features,
        "keep": keep,
        "dtype": dtype,
        "weights": params.weights.tolist(),
        "means": params.means.tolist(),
        "covariances": params.covariances.tolist(),
    }
    if params.covariances.size > MAX_METADATA_COVARIANCES:
        # Every output file carries this in its footer: K=50 full covariances over 100 features
        # would be ~10 MB of JSON per file. The fingerprint still names the model exactly.
        model["covariances"] = None
        model["covariances_omitted"] = f"{params.covariances.size} numbers; see the model file"
    return {
        VERSION_KEY: str(FORMAT_VERSION).encode(),
        MODEL_KEY: json.dumps(model).encode(),
    }


def is_output_file(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a Parquet file written by assign (unreadable files are not)."""
    try:
        return MODEL_KEY in (pq.read_schema(path).metadata or {})
    except (OSError, pa.ArrowException):
        return False


def read_output_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The model document an output file carries in its key-value metadata."""
    metadata = pq.read_schema(path).metadata or {}
    if MODEL_KEY not in metadata:
        raise DataError(f"{path}: not a streamgmm output file (no streamgmm.model metadata)")
    return json.loads(metadata[MODEL_KEY])


# ---------------------------------------------------------------------- inputs and layout


def checked_features(source: Any, n_features: int) -> None:
    """Refuse a resolved lake or Dask source that does not select the model's ``n_features``."""
    if source.n_features != n_features:
        raise DataError(f"the model has {n_features} features, but the source selects {source.feature_names}")


def input_parts(resolved: Any, n_features: int, keep: list[str]) -> tuple[list[Part], tuple[str, ...]]:
    """The output files to write for an input resolved in place
    (:func:`~streamgmm.inputs.resolve_input`), and the inputs as named (each directory, glob's
    folder or table given, each file given by name; none for in-memory data), which the output
    must not overlap."""
    if isinstance(resolved, InMemoryRows):
        return [table_part(resolved.table, resolved.feature_names, keep)], ()
    if not isinstance(resolved, ParquetSource):
        raise TypeError(
            "assign needs rows in a fixed order: give it a lake, a table, a data frame or an array "
            f"(this input reads as {type(resolved).__name__})"
        )
    lake = resolved.reselect(resolved.feature_names, keep)
    checked_features(lake, n_features)
    return lake_parts(lake, keep), lake.listing.inputs


def lake_parts(lake: ParquetSource, keep: list[str]) -> list[Part]:
    """One output file per file of ``lake``, at the same relative path, with ``keep``."""
    columns = list(dict.fromkeys(lake.feature_names + keep))
    keep_fields = tuple(lake.dataset.schema.field(name) for name in keep)
    parts = []
    for file in lake.files:

        def row_groups(file: LakeFile = file) -> Iterator[Batches]:
            for group in file.row_groups:
                where = f"{file.path}: row group {group.index}"
                yield (
                    (batch, where, first_row) for batch, first_row in lake.record_batches(group, columns, READ_BATCH)
                )

        parts.append(Part(file.path, file.relative_path, row_groups, keep_fields))
    return parts


def table_part(
    table: pa.Table,
    names: list[str],
    keep: list[str],
    where: str = "table",
    output: str = SINGLE_OUTPUT,
) -> Part:
    """An in-memory table as one output file, in row groups of ``TABLE_ROW_GROUP`` records."""
    for name in keep:
        if table.schema.get_field_index(name) < 0:
            raise DataError(f"{where}: no column {name!r} to keep (columns: {', '.join(table.schema.names)})")
    for name in names:
        check_column(table.schema, name, where)

    def row_groups() -> Iterator[Batches]:
        for start in range(0, table.num_rows, TABLE_ROW_GROUP):
            group = table.slice(start, TABLE_ROW_GROUP)
            yield ((batch, where, start + offset) for batch, offset in _with_offsets(group.to_batches()))

    return Part(where, output, row_groups, tuple(table.schema.field(name) for name in keep))


def _with_offsets(batches: list[pa.RecordBatch]) -> Iterator[tuple[pa.RecordBatch, int]]:
    offset = 0
    for batch in batches:
        yield batch, offset
        offset += batch.num_rows


def overlapping_input(out: str, inputs: Sequence[str]) -> str | None:
    """The first of the local ``inputs`` (see :func:`input_parts`) that lies in ``out`` or holds
    it, by real paths (so that links cannot hide it), or None.

    Each input is compared, not the folder they share: files from two folders may be scored into
    a third beside them.
    """
    return next((path for path in inputs if os.path.isabs(path) and overlap(out, path)), None)


def check_output_directory(out: str, inputs: Sequence[str], overwrite: bool) -> set[str]:
    """Check that ``out`` may be written, and return the files of earlier runs found there
    (relative paths), which this run replaces or removes.

    An empty or new directory is fine. One holding only what assign writes (outputs, hidden
    temporary files of a killed run, a manifest) is an earlier run's: a finished one (with
    ``_SUCCESS``) is replaced only with ``overwrite``; an unfinished one is simply replaced,
    as nothing finished is lost. Any other file means the directory is someone else's.
    """
    if is_url(out):
        return _check_output_store(OutputStore(out), inputs, overwrite)
    if (named := overlapping_input(out, inputs)) is not None:
        raise ValueError(
            f"output directory {out} and input {named} overlap; the outputs would be read as "
            "input next time, or the inputs replaced"
        )
    if os.path.exists(out) and not os.path.isdir(out):
        raise ValueError(f"output {out} exists and is not a directory")
    os.makedirs(out, exist_ok=True)
    earlier: set[str] = set()
    foreign: list[str] = []
    for directory, _, names in os.walk(out):
        for name in names:
            relative = os.path.relpath(os.path.join(directory, name), out)
            if _written_by_assign(out, relative):
                earlier.add(relative)
            else:
                foreign.append(relative)
    if foreign:
        raise ValueError(
            f"output directory {out} holds files assign did not write ({', '.join(sorted(foreign)[:3])}); "
            "choose an empty or new directory"
        )
    if SUCCESS in earlier and not overwrite:
        raise ValueError(
            f"output directory {out} holds an earlier result; pass overwrite=True (--overwrite) to replace it"
        )
    return earlier


def _check_output_store(store: OutputStore, inputs: Sequence[str], overwrite: bool) -> set[str]:
    """:func:`check_output_directory` for a URL: the same rules, by listing the prefix."""
    if store.kind() == "file":
        raise ValueError(f"output {store.url} exists and is not a directory")
    where = store.path("").rstrip("/")
    for named in (path for path in inputs if not os.path.isabs(path)):
        # A store's input as a path in the store: no credentials, query, '.' or '..' in the way.
        base = normal_url(split_credentials(named)[0]).partition("?")[0].split("://", 1)[-1].rstrip("/")
        if base == where or base.startswith(where + "/") or where.startswith(base + "/"):
            raise ValueError(
                f"output {store.url} and input {named} overlap; the outputs would be read as input next "
                "time, or the inputs replaced"
            )
    earlier, foreign = set(), []
    for relative in store.list_files():
        (earlier.add(relative) if _store_written_by_assign(store, relative) else foreign.append(relative))
    if foreign:
        raise ValueError(
            f"output {store.url} holds objects assign did not write ({', '.join(sorted(foreign)[:3])}); "
            "choose an empty or new prefix"
        )
    if SUCCESS in earlier and not overwrite:
        raise ValueError(f"output {store.url} holds an earlier result; pass overwrite=True (--overwrite) to replace it")
    return earlier


def _store_written_by_assign(store: OutputStore, relative: str) -> bool:
    name = posixpath.basename(relative)
    if TEMPORARY.match(name):
        return True
    try:
        if relative == SUCCESS:
            return json.loads(store.read_bytes(relative)).get("format") == FORMAT_NAME
        if name.endswith(".parquet"):
            with store.open_input_file(relative) as handle:
                return MODEL_KEY in (pq.read_schema(handle).metadata or {})
    except (OSError, ValueError, AttributeError, pa.ArrowException):
        return False
    return False


TEMPORARY = re.compile(r"^\..+\.[0-9a-f]{16}\.tmp$")  # atomic_write's names


def _written_by_assign(out: str, relative: str) -> bool:
    path = os.path.join(out, relative)
    name = os.path.basename(relative)
    if TEMPORARY.match(name):
        return True
    try:
        if relative == SUCCESS:
            with open(path) as handle:
                return json.load(handle).get("format") == FORMAT_NAME
    except (OSError, ValueError, AttributeError):
        return False
    return name.endswith(".parquet") and is_output_file(path)


@contextmanager
def tidied(out: str) -> Iterator[None]:
    """Around a run into ``out``: if it fails, the local directories it created (``out``, its
    missing parents, and folders under ``out``) are removed once empty; on an object store, the
    directory markers the run's deletes left (pyarrow marks a folder whose object it deletes) are
    removed either way."""
    if is_url(out):
        store = OutputStore(out)
        before = store.markers()
        try:
            yield
        finally:
            store.remove_markers(before)
        return
    created, path = [], os.path.abspath(out)
    while not os.path.lexists(path):
        created.append(path)
        path = os.path.dirname(path)
    existing = {directory for directory, _, _ in os.walk(out)}
    try:
        yield
    except BaseException:
        made = [d for d, _, _ in os.walk(out) if d not in existing] + [d for d in created if os.path.isdir(d)]
        for directory in sorted(set(made), key=len, reverse=True):
            with suppress(OSError):  # not empty: something else is there now
                os.rmdir(directory)
        raise


def remove_outputs(out: str, relatives: set[str] | list[str]) -> None:
    """Remove files under ``out``, then the directories that left empty."""
    if is_url(out):
        OutputStore(out).remove(relatives)
        return
    for relative in relatives:
        Path(out, relative).unlink(missing_ok=True)
    for directory, _, _ in sorted(os.walk(out), key=lambda entry: -len(entry[0])):
        if directory != out and not os.listdir(directory):
            os.rmdir(directory)
