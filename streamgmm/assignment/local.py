"""The responsibilities pass: stream a source once through a fitted model's E-step and write
per-record results as Parquet.

Each output row holds, for the input row at the same place, the ``keep`` columns unchanged,
``resp_0 .. resp_{K-1}`` (the responsibilities, float64 or float32), ``component`` (int32, the
most responsible component) and ``log_likelihood`` (float64, the record's log density under the
model: low values are anomalies). Rows left out by ``nan_policy="skip"`` keep their place with
nulls; under ``nan_policy="marginalize"`` a row with missing features gets the results of its
observed ones, and only a row with no feature observed has nulls.

Layout: for a lake, one output file per input file at the same relative path (hive partition
folders preserved), each input row group written as one output row group (so row group i of an
output holds the results of row group i of its input); for a single file likewise; for an
array, table or DataFrame, a single file in row groups of 131072 records. Every file is
written under a hidden temporary name and renamed when complete; ``_SUCCESS`` (JSON: inputs,
row counts, model fingerprint) is written last, so a directory without it is not a finished
output. Each file's key-value metadata holds the model (``streamgmm.model``) and the format
version (``streamgmm.format_version``); covariances are left out of it beyond
``MAX_METADATA_COVARIANCES`` numbers, so footers stay small. :func:`assign` has an example.
"""

from __future__ import annotations

import datetime
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from streamgmm.assignment.layout import (
    FORMAT_NAME,
    FORMAT_VERSION,
    RESULT_DTYPES,
    SUCCESS,
    check_output_directory,
    checked_features,
    file_metadata,
    input_parts,
    remove_outputs,
    result_columns,
    tidied,
)
from streamgmm.assignment.pipeline import PartWriter, check_compression
from streamgmm.dask.source import DaskSource
from streamgmm.inputs import resolve_input
from streamgmm.io.lake.paths import is_url
from streamgmm.io.model.file import read_mixture
from streamgmm.io.output.atomic_write import write_bytes_atomically
from streamgmm.io.output.object_store import OutputStore, normal_url
from streamgmm.io.records.checks import default_feature_names
from streamgmm.io.records.columns import check_nan_policy
from streamgmm.io.sources.arrow import TableSource
from streamgmm.io.sources.parquet import ParquetSource
from streamgmm.mixture.params import MixtureParams

OUT_FORMATS = ("parquet", "delta")  # delta: one commit of a Delta table (the delta extra)


@dataclass
class AssignSummary:
    """What :func:`assign` wrote: per output file its input, rows and rows skipped.

    Parameters
    ----------
    out : str
        The absolute path of the output directory.

    fingerprint : str
        The model's :meth:`MixtureParams.fingerprint
        <streamgmm.mixture.params.MixtureParams.fingerprint>`, also written in ``_SUCCESS``.

    files : list of dict, default=[]
        One entry per output file, as in ``_SUCCESS``: ``input`` (the input file or
        partition it was written from; ``'table'`` for an in-memory array, table or DataFrame),
        ``output`` (its path relative to ``out``), ``rows``
        (rows written, those left out by ``nan_policy='skip'`` included) and ``skipped`` (rows
        left out).

    seconds : float, default=0.0
        The time spent writing the output files.

    Attributes
    ----------
    rows : int
        The rows written, over all files.

    skipped : int
        The rows left out by ``nan_policy='skip'``, over all files.

    outputs : list of str
        The full paths of the output files.

    Examples
    --------
    >>> import tempfile, numpy as np, pyarrow.parquet as pq
    >>> from streamgmm import StreamingGaussianMixture, assign
    >>> rng = np.random.default_rng(0)
    >>> X = np.concatenate([rng.normal(-5, 1, (500, 2)), rng.normal(5, 1, (500, 2))])
    >>> model = StreamingGaussianMixture(2, random_state=0).fit(X)
    >>> out = tempfile.mkdtemp() + "/scored"
    >>> summary = assign(model, X, out)
    >>> summary.rows, summary.skipped, [entry["output"] for entry in summary.files]
    (1000, 0, ['part-00000.parquet'])
    """

    out: str
    fingerprint: str
    files: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def rows(self) -> int:
        """The rows written, over all files."""
        return sum(entry["rows"] for entry in self.files)

    @property
    def skipped(self) -> int:
        """The rows left out by ``nan_policy='skip'``, over all files."""
        return sum(entry["skipped"] for entry in self.files)

    @property
    def outputs(self) -> list[str]:
        """The full paths of the output files."""
        return [os.path.join(self.out, entry["output"]) for entry in self.files]


def assign(
    model: Any,
    source: Any,
    out: str | os.PathLike[str],
    *,
    keep: Sequence[str] = (),
    dtype: str = "float64",
    compression: str = "snappy",
    nan_policy: str | None = None,
    overwrite: bool = False,
    batch_size: int = 16384,
    progress: Callable[[int], None] | None = None,
    client: Any = None,
    out_format: str = "parquet",
) -> AssignSummary:
    """Write the responsibilities of every record of ``source`` under the directory ``out``.

    Streams ``source`` once through the model's E-step. Each output row holds, for the input
    row at the same place, the ``keep`` columns, ``resp_0 .. resp_{K-1}``, ``component`` (the
    most responsible one) and ``log_likelihood``. A lake is written one output file per input
    file at the same relative path, an array, table or DataFrame as one file. Files are
    renamed into place when complete, and ``_SUCCESS`` is written last.

    Parameters
    ----------
    model : StreamingGaussianMixture or path-like
        A fitted model, or the path of a saved one. Features are read by its
        ``feature_names_in_`` when it has them.

    source : path, glob, list of paths, dataset, ParquetSource, table, DataFrame or array-like
        Anything ``fit`` accepts that has rows in a fixed order: Parquet paths, globs,
        ``pyarrow.dataset`` datasets or a :class:`~streamgmm.ParquetSource`, Arrow tables and
        readers, DataFrames, arrays of shape (n_records, n_features); or a
        ``dask.dataframe.DataFrame`` or ``dask.array.Array``.

    out : str or os.PathLike
        The output directory, on a local (or shared) filesystem, not a URL. It must be new,
        empty or an earlier output of this function, and must not overlap the input
        directory.

    keep : sequence of str, default=()
        Input columns copied unchanged into each output row (ids); none may be named as a
        result column.

    dtype : {'float64', 'float32'}, default='float64'
        The type of the responsibility columns (computed in float64 either way):
        ``'float32'`` makes them half the size on disk, with about 7 significant digits.

    compression : {'snappy', 'zstd', 'lz4', 'gzip', 'none'}, default='snappy'
        The output files' Parquet codec; ``docs/cli.md`` lists each one's size and time.

    nan_policy : {'raise', 'skip', 'marginalize'}, default=None
        ``'raise'``: a null, NaN or infinite feature is an error; ``'skip'``: its row keeps
        its place with null results; ``'marginalize'``: its row is scored on its observed
        features (nulls only when none is). None means the source's own, else ``'raise'``.

    overwrite : bool, default=False
        If True, a finished earlier output of this function in ``out`` is replaced; never
        another directory's files.

    batch_size : int, default=16384
        Records that go through the E-step at a time, small enough that its intermediates
        stay in cache (see ``docs/performance.md``, "Tuning constants").

    progress : callable, default=None
        Called with the number of records of each batch done (on Dask: of each partition
        written).

    client : distributed.Client, default=None
        Write on Dask: a Parquet lake given with a ``client`` is written one file per input
        file, each by the worker that reads it. A Dask collection is written one file per
        partition (``part-00000.parquet``, ...) with this client or, by default, Dask's
        current scheduler. The workers must see ``out`` (a shared filesystem or an object store).

    out_format : {'parquet', 'delta'}, default='parquet'
        ``'delta'`` commits every row as one version of a Delta table at ``out`` (the
        ``delta`` extra; a new table, or with ``overwrite`` a new version of one), written from
        this process: readers see all of it or none, with no ``_SUCCESS``. ``files`` then
        lists each data file the commit added (one per input) with its input and rows.

    Returns
    -------
    summary : AssignSummary
        The output directory, the model's fingerprint, and per output file its input, rows
        and rows skipped.

    Raises
    ------
    ValueError
        If ``dtype``, ``compression`` or ``nan_policy`` is invalid, a ``keep`` column is listed twice or named
        as a result column, or ``out`` cannot be written (it overlaps the input, holds files
        this function did not write, or holds a finished output and ``overwrite`` is False).

    TypeError
        If ``keep`` is a single string.

    Examples
    --------
    >>> import tempfile, numpy as np, pyarrow.parquet as pq
    >>> from streamgmm import StreamingGaussianMixture, assign
    >>> rng = np.random.default_rng(0)
    >>> X = np.concatenate([rng.normal(-5, 1, (500, 2)), rng.normal(5, 1, (500, 2))])
    >>> model = StreamingGaussianMixture(2, random_state=0).fit(X)
    >>> out = tempfile.mkdtemp() + "/scored"
    >>> summary = assign(model, X, out)
    >>> table = pq.read_table(summary.outputs[0])
    >>> table.column_names
    ['resp_0', 'resp_1', 'component', 'log_likelihood']
    >>> bool(np.allclose(table["log_likelihood"].to_numpy(), model.score_samples(X)))
    True
    """
    if isinstance(model, (str, os.PathLike)):
        params, names = read_mixture(model)
    else:
        params, names = model.params_, model.fitted_state_.feature_names
    keep = _checked_options(params.n_components, keep, dtype, compression, out_format)
    resolved, nan_policy = _resolved(source, client, params, names, keep, nan_policy)
    on_dask = isinstance(resolved, DaskSource)
    if out_format == "delta":
        if on_dask:
            raise ValueError("out_format='delta' writes from this process; on Dask, write Parquet and commit it")
        return _assign_to_delta(
            resolved, out, params, names, keep, nan_policy, dtype, compression, overwrite, batch_size, progress
        )
    if on_dask:
        checked_features(resolved, params.n_features)
        inputs = resolved.inputs
    else:
        parts, inputs = input_parts(resolved, params.n_features, keep)
    features = names if names is not None else default_feature_names(params.n_features)

    # A local directory, or an object-store prefix (s3://, gs://, abfs://) with the same promises.
    out = normal_url(str(out)).rstrip("/") if is_url(out) else os.path.abspath(os.fspath(out))
    # A failed run leaves no folder (or object-store directory marker) it made either.
    with tidied(out):
        earlier = check_output_directory(out, inputs, overwrite)
        # The old marker goes first: from here until the new one is written, the directory is not
        # a finished output.
        remove_outputs(out, [SUCCESS])

        summary = AssignSummary(out, params.fingerprint())
        writer = PartWriter(
            out,
            params,
            features,
            nan_policy,
            file_metadata(params, features, keep, summary.fingerprint, dtype),
            RESULT_DTYPES[dtype],
            batch_size,
            compression,
        )
        start = time.perf_counter()
        if on_dask:
            from streamgmm.assignment.on_dask import write_on_dask  # the Dask sink, only when asked for

            # Every partition written on the workers, or (on any failure) none of them.
            summary.files = write_on_dask(resolved, keep, writer, progress)
        else:
            # Decoding, scoring and writing overlap; a run that fails leaves none of its files (a
            # half set would look like a whole one).
            summary.files = writer.write_all(parts, progress)
        summary.seconds = time.perf_counter() - start
        remove_outputs(out, earlier - {entry["output"] for entry in summary.files} - {SUCCESS})
        manifest = _manifest(summary, params, features, keep, dtype, nan_policy)
        manifest["compression"] = compression
        document = json.dumps(manifest, indent=1).encode()
        if is_url(out):
            OutputStore(out).write_bytes(SUCCESS, document)
        else:
            write_bytes_atomically(Path(out, SUCCESS), document)
    return summary


def _checked_options(
    n_components: int, keep: Sequence[str], dtype: str, compression: str, out_format: str
) -> list[str]:
    """The ``keep`` columns as a list, once they and the output's options are usable."""
    if dtype not in RESULT_DTYPES:
        raise ValueError(f"Invalid value for 'dtype': {dtype!r}; expected one of {', '.join(RESULT_DTYPES)}")
    check_compression(compression)
    if out_format not in OUT_FORMATS:
        raise ValueError(f"Invalid value for 'out_format': {out_format!r}; expected one of {', '.join(OUT_FORMATS)}")
    if isinstance(keep, str):
        raise TypeError("keep is a list of column names, not a single string")
    keep = list(keep)
    results = result_columns(n_components)
    clashing = [name for name in keep if name in results]
    if clashing:
        raise ValueError(f"cannot keep {', '.join(map(repr, clashing))}: the output has result columns of that name")
    if len(set(keep)) != len(keep):
        raise ValueError(f"keep lists a column more than once: {keep}")
    return keep


def _resolved(
    source: Any, client: Any, params: MixtureParams, names: list[str] | None, keep: list[str], nan_policy: str | None
) -> tuple[Any, str]:
    """``source`` resolved for a pass that keeps every row in place (a lake, a Dask source or the
    rows in memory, with the ``keep`` columns), and the ``nan_policy``: the one given, else the
    source object's own, else ``'raise'``."""
    if nan_policy is None:
        nan_policy = source.nan_policy if isinstance(source, (ParquetSource, TableSource)) else "raise"
    check_nan_policy(nan_policy)
    resolved = resolve_input(
        source,
        client=client,
        n_features=params.n_features,
        feature_names=names,
        nan_policy=nan_policy,
        passthrough=keep,
        in_place=True,
    )
    return resolved, nan_policy


def _assign_to_delta(
    resolved: Any,
    out: Any,
    params: MixtureParams,
    names: list[str] | None,
    keep: list[str],
    nan_policy: str,
    dtype: str,
    compression: str,
    overwrite: bool,
    batch_size: int,
    progress: Callable[[int], None] | None,
) -> AssignSummary:
    """The responsibilities as one commit of a Delta table (see :mod:`streamgmm.assignment.delta_output`)."""
    from streamgmm.assignment.delta_output import write_delta  # the delta extra, only when asked for

    parts, inputs = input_parts(resolved, params.n_features, keep)
    features = names if names is not None else default_feature_names(params.n_features)
    out = str(out).rstrip("/") if is_url(out) else os.path.abspath(os.fspath(out))
    summary = AssignSummary(out, params.fingerprint())
    # Plain Parquet data files: the table's log, not a _SUCCESS, says the result is whole, and its
    # commit names the model.
    writer = PartWriter(out, params, features, nan_policy, {}, RESULT_DTYPES[dtype], batch_size, compression)
    start = time.perf_counter()
    summary.files = write_delta(parts, inputs, writer, overwrite, progress)
    summary.seconds = time.perf_counter() - start
    return summary


def _manifest(
    summary: AssignSummary, params: MixtureParams, features: list[str], keep: list[str], dtype: str, nan_policy: str
) -> dict[str, Any]:
    """The ``_SUCCESS`` document: what was read, what was written, by which model."""
    return {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "model_fingerprint": summary.fingerprint,
        "n_components": params.n_components,
        "covariance_type": params.covariance_type,
        "feature_names": features,
        "keep": keep,
        "dtype": dtype,
        "nan_policy": nan_policy,
        "rows": summary.rows,
        "skipped": summary.skipped,
        "files": summary.files,
    }
