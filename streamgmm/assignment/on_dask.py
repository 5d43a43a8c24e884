"""The responsibilities pass on Dask: each partition's output file is written by the worker that
reads the partition, with the local pass's writer (:class:`~streamgmm.assignment.pipeline.PartWriter`:
same columns, metadata and atomic rename). The client only collects the per-file entries of the
``_SUCCESS`` manifest, which :func:`streamgmm.assignment.local.assign` writes last, as locally.

Layout: a Dask DataFrame or Array gives ``part-00000.parquet``, ``part-00001.parquet``, ... (one
per partition, in partition order); a Parquet lake one file per input file at the same relative
path. If any partition fails, the files the others wrote are removed and the first error (in
partition order) is raised: a directory holds a whole result or none.

Call it through ``assign(model, source, out, client=...)``; an example is in the README.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import pyarrow as pa

from streamgmm.assignment.layout import lake_parts, remove_outputs, table_part
from streamgmm.assignment.pipeline import PartWriter
from streamgmm.dask.source import DaskSource, PartitionSpec, open_partition
from streamgmm.io.sources.arrow import frame_table


def write_on_dask(
    source: DaskSource, keep: Sequence[str], writer: PartWriter, progress: Callable[[int], None] | None = None
) -> list[dict[str, Any]]:
    """Write every partition of ``source`` (with the ``keep`` columns) on the workers; the
    manifest entries in partition order."""
    import dask

    keep = list(keep)
    tasks = [
        dask.delayed(_write_partition, pure=False)(p.data, p.spec, writer, keep, index)
        for index, p in enumerate(source.partitions)
    ]
    outcomes: list[Any]
    if source.client is not None:
        from distributed import as_completed

        futures = source.client.compute(tasks)
        # Wait for every partition, failed or not, before cleaning up: a task still running
        # would otherwise write its file after the others were removed.
        for future in as_completed(futures, loop=source.client.loop):
            if progress is not None and future.status == "finished":
                outcome = future.result()
                if isinstance(outcome, dict):
                    progress(outcome["rows"])
        outcomes = [f.result() if f.status == "finished" else f.exception() for f in futures]
    else:
        try:
            outcomes = dask.compute(tasks)[0]
        except BaseException:
            # A partition failed before our task ran (e.g. in the collection's own graph).
            remove_outputs(writer.out, [_output_name(p.spec, i) for i, p in enumerate(source.partitions)])
            raise
        if progress is not None:
            for outcome in outcomes:
                if isinstance(outcome, dict):
                    progress(outcome["rows"])
    entries = [outcome for outcome in outcomes if isinstance(outcome, dict)]
    errors = [outcome for outcome in outcomes if not isinstance(outcome, dict)]
    if errors:
        remove_outputs(writer.out, [entry["output"] for entry in entries])
        raise errors[0]
    return entries


def _output_name(spec: PartitionSpec, index: int) -> str:
    return spec.relative_path if spec.relative_path is not None else f"part-{index:05d}.parquet"


def _write_partition(
    data: Any, spec: PartitionSpec, writer: PartWriter, keep: list[str], index: int
) -> dict[str, Any] | BaseException:
    """On the worker: one partition's output file. An error is returned, not raised, so that the
    client sees every partition finish before it cleans up."""
    try:
        output = _output_name(spec, index)
        if spec.kind == "lake":
            [part] = lake_parts(open_partition(data, spec, passthrough=keep), keep)
            part = replace(part, input=spec.where, output=output)
        elif spec.kind == "frame":
            names = list(spec.feature_names or ())
            part = table_part(frame_table(data), names, keep, where=spec.where, output=output)
        else:
            # As a local array: non-finite values are left to the writer's nan_policy.
            X = np.asarray(data, dtype=np.float64)
            table = pa.table({name: X[:, j] for j, name in enumerate(writer.features)})
            part = table_part(table, writer.features, keep, where=spec.where, output=output)
        return writer.write(part)
    except Exception as exc:  # noqa: BLE001 - handed to the client, which raises it
        return exc
