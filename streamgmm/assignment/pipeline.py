"""The responsibilities pass's three overlapping stages: a read-ahead thread decodes the input's
record batches into feature matrices, the calling thread scores them
(:func:`~streamgmm.kernels.scoring.score_chunk`), and a write-behind thread encodes and writes
the result row groups (:mod:`streamgmm.io.sources.read_ahead`). Each output file is written under a
temporary name and renamed when complete; if any stage fails, the file being written and every
file this call renamed into place are removed, and the first error is raised, naming its file.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from streamgmm.assignment.layout import Part, output_schema, remove_outputs
from streamgmm.io.background import WriteBehind, read_ahead
from streamgmm.io.lake.paths import is_url
from streamgmm.io.output.atomic_write import atomic_path
from streamgmm.io.output.object_store import OutputStore
from streamgmm.io.records.columns import DataError, FeatureReader
from streamgmm.kernels.quadratic import one_blas_thread
from streamgmm.kernels.scoring import score_chunk
from streamgmm.mixture.params import MixtureParams

# Output codecs a user can choose (pyarrow's names); snappy is Parquet's usual default.
COMPRESSIONS = ("snappy", "zstd", "lz4", "gzip", "none")
# Decoded record batches waiting to be scored, and result row groups waiting to be written: two
# of each keep both threads busy, and memory at a few row groups.
READ_AHEAD = 2
WRITE_BEHIND = 2


def check_compression(compression: str) -> str:
    if compression not in COMPRESSIONS:
        raise ValueError(f"Invalid value for 'compression': {compression!r}; expected one of {', '.join(COMPRESSIONS)}")
    return compression


@dataclass(frozen=True)
class PartWriter:
    """Writes parts' output files (atomically) with the run's schema, metadata and codec. Small
    and picklable: on Dask it travels to the workers that write the partitions."""

    out: str
    params: MixtureParams
    features: list[str]
    nan_policy: str
    metadata: dict[bytes, bytes]
    result_type: pa.DataType
    batch_size: int
    compression: str = "snappy"

    def write(self, part: Part, progress: Callable[[int], None] | None = None) -> dict[str, Any]:
        """Write ``part`` to its output file; its ``_SUCCESS`` entry."""
        return self.write_all([part], progress)[0]

    def write_all(self, parts: Sequence[Part], progress: Callable[[int], None] | None = None) -> list[dict[str, Any]]:
        """Write every part's output file, reading the next part while this one is written;
        their ``_SUCCESS`` entries. On failure, none of the files stays."""
        renamed: list[str] = []
        sink = _Sink(self, renamed)
        try:
            with WriteBehind(WRITE_BEHIND, "streamgmm-assign-write") as behind:
                entries = self._stream(parts, sink, behind, progress)
        except BaseException:
            # The writing thread has ended (WriteBehind aborts on the way out): remove its open
            # file and every file this call renamed into place.
            sink.abort_open()
            remove_outputs(self.out, renamed)
            raise
        return entries

    def _stream(
        self, parts: Sequence[Part], sink: _Sink, behind: WriteBehind, progress: Callable[[int], None] | None
    ) -> list[dict[str, Any]]:
        entries: list[dict[str, Any]] = []
        with one_blas_thread():  # a second BLAS thread would only compete with the reader and the writer
            for event in read_ahead(
                _decoded(parts, self.features, self.nan_policy), READ_AHEAD, "streamgmm-assign-read"
            ):
                kind, index = event[0], event[1]
                part = parts[index]
                if kind == "open":
                    schema = self._schema(part.keep_fields)
                    behind.submit(sink.open, part.output, schema)
                    tables: list[pa.Table] = []
                elif kind == "batch":
                    _, _, batch, X, mask, where, first_row = event
                    tables.extend(self._score(batch, X, mask, schema, progress, where, first_row))
                elif kind == "group":
                    if tables:
                        behind.submit(sink.write, pa.concat_tables(tables))
                    tables = []
                else:  # "close": the part's rows are all read
                    skipped = event[2]
                    entry = {"input": part.input, "output": part.output, "rows": 0, "skipped": skipped}
                    behind.submit(sink.close, entry)
                    entries.append(entry)
        behind.close()
        return entries

    def _schema(self, keep_fields: tuple[pa.Field, ...]) -> pa.Schema:
        schema = output_schema(keep_fields, self.params.n_components, self.result_type)
        return schema.with_metadata(self.metadata)

    def _score(
        self,
        batch: pa.RecordBatch,
        X: np.ndarray,
        mask: np.ndarray | None,
        schema: pa.Schema,
        progress: Callable[[int], None] | None,
        where: str,
        first_row: int,
    ) -> Iterator[pa.Table]:
        """The result tables of one decoded record batch (its first row ``first_row`` of
        ``where``), ``batch_size`` records at a time."""
        for start in range(0, batch.num_rows, self.batch_size):
            stop = min(start + self.batch_size, batch.num_rows)
            piece_mask = None if mask is None else mask[start:stop]
            piece = batch.slice(start, stop - start)
            yield results_table(
                piece, X[start:stop], piece_mask, self.params, schema, where=where, first_row=first_row + start
            )
            if progress is not None:
                progress(stop - start)


def _decoded(parts: Sequence[Part], features: list[str], nan_policy: str) -> Iterator[tuple[Any, ...]]:
    """The read-ahead thread's events: each part opened, its record batches decoded into
    feature matrices (and masks of the usable rows), the end of each row group, and each
    part's end with the rows it skipped. An error names the part's input."""
    for index, part in enumerate(parts):
        reader = FeatureReader(features, nan_policy)
        yield ("open", index)
        try:
            for group in part.row_groups():
                for batch, where, first_row in group:
                    X, mask = reader.read(batch, where, first_row)
                    yield ("batch", index, batch, X, mask, where, first_row)
                yield ("group", index)
        except Exception as exc:
            if part.input not in str(exc):
                exc.add_note(f"while reading {part.input}")
            raise
        yield ("close", index, reader.skipped)


class _Sink:
    """The write-behind thread's side: one output file open at a time, written under a temporary
    name and renamed when closed. ``renamed`` lists the files in place, for the cleanup."""

    def __init__(self, writer: PartWriter, renamed: list[str]):
        self.writer = writer
        self.renamed = renamed
        self.stack: ExitStack | None = None
        self.file: pq.ParquetWriter | None = None
        self.output = ""
        self.rows = 0

    def open(self, output: str, schema: pa.Schema) -> None:
        self.output, self.rows = output, 0
        self.stack = ExitStack()
        try:
            if is_url(self.writer.out):
                # An object store: written to a hidden key, moved to its final key when closed.
                tmp = self.stack.enter_context(OutputStore(self.writer.out).atomic_output(output))
            else:
                target = Path(self.writer.out, output)
                target.parent.mkdir(parents=True, exist_ok=True)
                tmp = self.stack.enter_context(atomic_path(target))
            self.file = pq.ParquetWriter(tmp, schema, compression=self.writer.compression)
        except BaseException:
            self.abort_open()
            raise

    def write(self, table: pa.Table) -> None:
        try:
            self.file.write_table(table, row_group_size=table.num_rows)
        except Exception as exc:
            exc.add_note(f"while writing {self.writer.out}/{self.output}")
            raise
        self.rows += table.num_rows

    def close(self, entry: dict[str, Any]) -> None:
        """Finish the file and rename it into place; ``entry`` gets its row count."""
        file, stack, self.file, self.stack = self.file, self.stack, None, None
        try:
            file.close()
        except BaseException as exc:
            stack.__exit__(type(exc), exc, exc.__traceback__)  # atomic_path removes its temporary file
            raise
        stack.close()  # synced and renamed
        self.renamed.append(self.output)
        entry["rows"] = self.rows

    def abort_open(self) -> None:
        """Remove the file being written, if any (called once the writing thread has ended)."""
        file, stack, self.file, self.stack = self.file, self.stack, None, None
        if file is not None:
            try:
                file.close()
            except Exception:  # noqa: BLE001, S110 - the file is removed anyway
                pass
        if stack is not None:
            error = RuntimeError("the pass failed")
            stack.__exit__(RuntimeError, error, None)  # atomic_path removes its temporary file


def _refuse_non_finite(
    log_likelihood: np.ndarray, resp: np.ndarray, mask: np.ndarray | None, where: str, first_row: int
) -> None:
    """Raise for the first scored record with a non-finite log-likelihood or responsibility."""
    bad = ~np.isfinite(log_likelihood) | ~np.isfinite(resp).all(axis=1)
    if not bad.any():
        return  # a sum of finite log-likelihoods below -1.8e308: every one of them is usable
    i = int(np.flatnonzero(bad)[0])
    row = first_row + (i if mask is None else int(np.flatnonzero(mask)[i]))
    worst = resp[i][~np.isfinite(resp[i])]
    shown = f"responsibilities {worst[0]}" if worst.size else "finite responsibilities"
    raise DataError(
        f"{where}, row {row}: the model gives this record a non-finite score (log-likelihood "
        f"{log_likelihood[i]}, {shown}): its parameters overflow on it; nothing is written"
    )


def results_table(
    batch: pa.RecordBatch,
    X: np.ndarray,
    mask: np.ndarray | None,
    params: MixtureParams,
    schema: pa.Schema,
    *,
    where: str = "the input",
    first_row: int = 0,
) -> pa.Table:
    """One piece's output rows: the kept columns of ``batch``, then its results (rows left out by
    ``mask`` keep their place, with nulls). A record the model scores non-finitely (parameters
    that overflow on it) is a :class:`~streamgmm.io.records.columns.DataError` naming ``where`` and the
    row (``first_row`` is the piece's first): no NaN or infinity is ever published."""
    n_results = params.n_components + 2
    result_fields = list(schema)[-n_results:]
    with np.errstate(all="ignore"):  # an overflow shows as a non-finite score, refused below
        log_likelihood, resp = score_chunk(X if mask is None else X[mask], params)
    # Two reductions in the common case: responsibilities lie in [0, 1], so their sum is finite.
    if not (np.isfinite(log_likelihood.sum()) and np.isfinite(resp.sum())):
        _refuse_non_finite(log_likelihood, resp, mask, where, first_row)
    component = resp.argmax(axis=1).astype(np.int32)
    # One transposing copy (in the result type) makes each component's column contiguous, so
    # pyarrow takes it without another copy.
    columns = np.ascontiguousarray(resp.T, dtype=result_fields[0].type.to_pandas_dtype())

    def column(values: np.ndarray, data_type: pa.DataType) -> pa.Array:
        if mask is None:
            return pa.array(values, type=data_type)
        full = np.zeros(mask.shape[0], dtype=values.dtype)
        full[mask] = values
        return pa.array(full, type=data_type, mask=~mask)

    kept = [batch.column(field.name) for field in list(schema)[:-n_results]]
    results = [*columns, component, log_likelihood]
    return pa.Table.from_arrays(
        kept + [column(values, field.type) for values, field in zip(results, result_fields)], schema=schema
    )
