"""``assign``'s responsibilities committed as a Delta table (``out_format="delta"``).

The scored record batches stream into ``deltalake.write_deltalake`` (the ``delta`` extra) and
become one commit: readers see the whole result or none of it, so no ``_SUCCESS`` marker is
needed; a run that fails leaves data files no commit names, which readers never see and Delta's
``VACUUM`` removes. The table's columns are those of the Parquet output (the kept columns,
``resp_*``, ``component``, ``log_likelihood``); the model's fingerprint is recorded in the
commit's metadata.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pyarrow as pa

from streamgmm.assignment.layout import Part, output_schema, overlapping_input
from streamgmm.assignment.pipeline import results_table
from streamgmm.io.columns import DataError, FeatureReader
from streamgmm.io.lake_paths import is_url
from streamgmm.io.table_formats import table_format
from streamgmm.mixture.params import MixtureParams

FINGERPRINT_KEY = "streamgmm.model_fingerprint"


def write_delta(
    parts: Sequence[Part],
    inputs: Sequence[str],
    out: str,
    params: MixtureParams,
    features: list[str],
    nan_policy: str,
    result_type: pa.DataType,
    batch_size: int,
    overwrite: bool,
    progress: Callable[[int], None] | None = None,
) -> tuple[list[dict[str, Any]], float]:
    """Score ``parts`` and commit them to the Delta table at ``out``; each part's entry (input,
    rows, skipped) and the seconds taken."""
    try:
        from deltalake import CommitProperties, write_deltalake
    except ImportError:
        raise DataError("--out-format delta needs the deltalake package: pip install 'streamgmm[delta]'") from None
    mode = _check_table_output(out, inputs, overwrite)
    schema = output_schema(parts[0].keep_fields if parts else (), params.n_components, result_type)
    entries: list[dict[str, Any]] = []
    started = time.perf_counter()
    failures: list[BaseException] = []
    batches = _scored(parts, params, features, nan_policy, schema, batch_size, entries, progress, failures)
    try:
        write_deltalake(
            out,
            pa.RecordBatchReader.from_batches(schema, batches),
            mode=mode,
            schema_mode="overwrite" if mode == "overwrite" else None,
            description="responsibilities written by streamgmm assign",
            commit_properties=CommitProperties(custom_metadata={FINGERPRINT_KEY: params.fingerprint()}),
        )
    except Exception:
        if failures:  # deltalake wraps the reader's error in its own, traceback and all
            raise failures[0] from None
        raise
    return entries, time.perf_counter() - started


def _check_table_output(out: str, inputs: Sequence[str], overwrite: bool) -> str:
    """The write mode: a new table, or (with ``overwrite``) a new version of an earlier one."""
    if not is_url(out):
        if (named := overlapping_input(out, inputs)) is not None:
            raise ValueError(f"output {out} and input {named} overlap")
        if os.path.exists(out) and not os.path.isdir(out):
            raise ValueError(f"output {out} exists and is not a directory")
        if os.path.isdir(out) and os.listdir(out):
            if table_format(out) != "delta":
                raise ValueError(f"output directory {out} holds files that are not a Delta table; choose a new one")
            if not overwrite:
                raise ValueError(f"{out} holds a Delta table; pass overwrite=True (--overwrite) to write a new version")
            return "overwrite"
        return "error"
    return "overwrite" if overwrite else "error"


def _scored(
    parts: Sequence[Part],
    params: MixtureParams,
    features: list[str],
    nan_policy: str,
    schema: pa.Schema,
    batch_size: int,
    entries: list[dict[str, Any]],
    progress: Callable[[int], None] | None,
    failures: list[BaseException],
) -> Iterator[pa.RecordBatch]:
    """Every part's rows with their results, ``batch_size`` at a time; fills ``entries``, and
    ``failures`` with the error that stopped it."""
    for part in parts:
        reader = FeatureReader(features, nan_policy)
        rows = 0
        try:
            for group in part.row_groups():
                for batch, where, first_row in group:
                    X, mask = reader.read(batch, where, first_row)
                    for start in range(0, batch.num_rows, batch_size):
                        stop = min(start + batch_size, batch.num_rows)
                        piece = None if mask is None else mask[start:stop]
                        table = results_table(batch.slice(start, stop - start), X[start:stop], piece, params, schema)
                        yield from table.to_batches()
                        rows += stop - start
                        if progress is not None:
                            progress(stop - start)
        except Exception as exc:
            if part.input not in str(exc):
                exc.add_note(f"while reading {part.input}")
            failures.append(exc)
            raise
        entries.append({"input": part.input, "output": "", "rows": rows, "skipped": reader.skipped})
