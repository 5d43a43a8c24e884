"""The ``streamgmm`` command: fit a mixture to a Parquet lake, write responsibilities, inspect.

    streamgmm fit SOURCE... -k K --model PATH [--covariance full] [--columns a,b] [--passthrough id]
                  [--weight-column count] [--filter 'day>=3'] [--algorithm auto|online|batch] [--batch-size N]
                  [--passes P] [--nan-policy raise|skip|marginalize] [--seed S] [--moves auto|off]
                  [--scheduler ADDRESS | --workers N] [--json] [-q]
    streamgmm assign SOURCE... --model PATH --out DIR [--keep id,...] [--result-dtype float32] [--compression zstd]
                  [--nan-policy raise|skip|marginalize] [--overwrite] [--scheduler ADDRESS | --workers N] [--json] [-q]
    streamgmm watch LANDING_DIR --state STATE_DIR [-k K --columns a,b --passthrough id --seed S | --model INIT_MODEL]
                  [--weight-column count] [--nan-policy raise|skip|marginalize] [--interval S] [--settle S]
                  [--step-floor F] [--moves auto|off] [--assign-out DIR [--keep id]] [--once] [--json] [-q]
    streamgmm select SOURCE... -k 2..12 [--covariance full,diag] [--held-out N] [--criterion bic|aic]
                  [--model BEST] [--columns a,b] [--weight-column count] [--passes P] [--seed S] [--json] [-q]
    streamgmm plot MODEL|STATE_DIR --out FILE.png [--data SOURCE...] [--pairs 0:1,2:3] [--sample N] [--json]
    streamgmm info PATH [--json]        (a model file, an output file or directory, a watcher's state
                                         directory, or any Parquet data)

Progress bars (records, records/s, ETA) go to stderr on a terminal; ``-q`` or a non-terminal
silences them. ``--json`` prints one machine-readable summary on stdout. Bad input exits with
status 1 and a one-line ``streamgmm: error: ...`` on stderr; bad usage with status 2.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import json
import os
import sys
import time
import warnings
import zipfile
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from streamgmm.assignment.layout import SUCCESS, is_output_file, read_output_metadata
from streamgmm.assignment.local import assign
from streamgmm.cli.checks import (
    CommandError,
    check_model_path,
    check_output_file,
    check_usage,
    explained_empty,
    input_paths,
    unfinished_output,
)
from streamgmm.cli.messages import in_cli_words
from streamgmm.cli.parser import build_parser
from streamgmm.cli.progress import ProgressSource, progress_bar, show_progress
from streamgmm.cli.report import describe
from streamgmm.dask.source import connect
from streamgmm.estimator import StreamingGaussianMixture
from streamgmm.inputs import resolve_input
from streamgmm.io.lake.paths import is_url
from streamgmm.io.lake.storage_options import storage_environment
from streamgmm.io.model.file import ModelFileError
from streamgmm.io.records.checks import default_feature_names
from streamgmm.io.records.columns import DataError
from streamgmm.io.sources.parquet import ParquetSource
from streamgmm.watch.checkpoint import StateDirectory, StateDirectoryBusy, is_state_directory, state_summary

if TYPE_CHECKING:  # pyarrow.dataset imports pandas: loaded only where a dataset is used
    import pyarrow.dataset as ds

# ---------------------------------------------------------------------- commands


def combined_filter(filters: Sequence[ds.Expression]) -> ds.Expression | None:
    combined = None
    for expression in filters:
        combined = expression if combined is None else combined & expression
    return combined


def training_source(args: argparse.Namespace) -> ParquetSource:
    """The lake ``fit`` and ``select`` learn from: sources, columns, filters, nan policy."""
    return ParquetSource(
        _one_or_many(args.sources),
        columns=args.columns,
        passthrough=args.passthrough,
        filter=combined_filter(args.filter),
        nan_policy=args.nan_policy,
        version=args.version,
        as_of=args.as_of,
        weight_column=args.weight_column,
    )


def records_fitted(model: StreamingGaussianMixture) -> int | float:
    """The records a fit learnt from: online EM counts every pass's records, the other plans end
    in exact EM over the n records. With record weights, their total weight (a fraction stays
    one, so that tiny weights do not read as no records)."""
    if model.algorithm == "online":
        return records_total(model.records_seen_, max(model.n_iter_, 1))
    return records_total(model.records_seen_)


def records_total(records: float, passes: int = 1) -> int | float:
    """A count of records over ``passes`` passes: an int, or a float for a fractional total weight.

    >>> records_total(3000, 2), records_total(2.5e-296)
    (1500, 2.5e-296)
    """
    if isinstance(records, float) and (not records.is_integer() or records >= 2.0**53):
        return records / passes
    return int(records) // passes


def run_fit(args: argparse.Namespace) -> dict[str, Any]:
    source = training_source(args)
    check_model_path(args.model, input_paths(args.sources, source))
    model = StreamingGaussianMixture(
        args.components,
        covariance_type=args.covariance,
        algorithm=args.algorithm,
        max_passes=args.passes,
        max_iter=args.max_iter,
        random_state=args.seed,
        shuffle="row_groups" if args.shuffle == "row_groups" else False,
        compute_dtype=args.compute_dtype,
        moves=args.moves,
        **({"batch_size": args.batch_size} if args.batch_size else {}),
    )
    started = time.perf_counter()
    with connect(args.scheduler, args.workers) as client, explained_empty(source):
        if client is None:
            with contextlib.closing(ProgressSource(source, show_progress(args), "fit")) as shown:
                model.fit(shown)
        else:
            # On the cluster the visit is shuffled by partition (file), not by row group; progress
            # is the dashboard's.
            model.set_params(shuffle=args.shuffle == "row_groups")
            if not args.quiet and getattr(client, "dashboard_link", None):
                print(f"streamgmm: fit: Dask dashboard at {client.dashboard_link}", file=sys.stderr, flush=True)
            persist = {"yes": True, "no": False}.get(args.persist, "auto")
            on_cluster = resolve_input(source, client=client, persist=persist)
            # Records as the workers finish their share of each pass (the sample is not counted).
            with progress_bar(show_progress(args), None, "fit on the cluster") as bar:
                on_cluster.progress = bar.update
                model.fit(on_cluster)
    seconds = time.perf_counter() - started
    model.save(args.model)
    records = records_fitted(model)
    return {
        "command": "fit",
        "model": args.model,
        "files": len(source.files),
        "empty_files": source.empty_files,
        "records": records,
        "skipped": model.n_skipped_,
        "weight_column": args.weight_column,
        "nan_policy": args.nan_policy,
        "seconds": round(seconds, 3),
        **model_summary(model),
    }


def run_assign(args: argparse.Namespace) -> dict[str, Any]:
    model = StreamingGaussianMixture.load(args.model)
    source = ParquetSource(
        _one_or_many(args.sources),
        columns=model.fitted_state_.feature_names,
        passthrough=args.keep,
        filter=combined_filter(args.filter),
        nan_policy=args.nan_policy,
        version=args.version,
        as_of=args.as_of,
    )
    with (
        progress_bar(show_progress(args), source.n_records, "assign") as bar,
        connect(args.scheduler, args.workers) as client,
    ):
        summary = assign(
            model,
            source,
            args.out,
            keep=args.keep,
            dtype=args.result_dtype,
            compression=args.compression,
            out_format=args.out_format,
            overwrite=args.overwrite,
            progress=bar.update,
            client=client,
            **({"batch_size": args.batch_size} if args.batch_size else {}),
        )
    return {
        "command": "assign",
        "out": summary.out,
        "files": len(summary.files),
        "records": summary.rows,
        "skipped": summary.skipped,
        "nan_policy": args.nan_policy,
        "seconds": round(summary.seconds, 3),
        "model_fingerprint": summary.fingerprint,
    }


def run_watch(args: argparse.Namespace) -> dict[str, Any]:
    from streamgmm.watch.watcher import watch  # the daemon's imports only for the daemon

    def log(line: str) -> None:
        print(f"streamgmm: watch: {line}", file=sys.stderr, flush=True)

    summary = watch(
        args.landing,
        args.state,
        once=args.once,
        n_components=args.components,
        columns=args.columns,
        passthrough=args.passthrough,
        keep=args.keep,
        covariance_type=args.covariance,
        seed=args.seed,
        init_model=args.model,
        step_floor=args.step_floor,
        moves=args.moves,
        batch_size=args.batch_size,
        nan_policy=args.nan_policy,
        weight_column=args.weight_column,
        interval=args.interval,
        settle=args.settle,
        assign_out=args.assign_out,
        keep_models=args.keep_models,
        lease_seconds=args.lease_seconds,
        log=None if args.quiet else log,
    )
    if is_url(args.state):
        from streamgmm.watch.store_state import StoreState

        state = StoreState(args.state)
        model = state.store.name_url(state.pointer_name) if state.load() is not None and state.pointer_name else None
        return {"command": "watch", **vars(summary), "model": model}
    model = os.path.join(summary.state, "current.model")
    return {"command": "watch", **vars(summary), "model": model if os.path.isfile(model) else None}


def run_select(args: argparse.Namespace) -> dict[str, Any]:
    from streamgmm.selection import parse_candidates, select

    ks = parse_candidates(args.components)
    source = training_source(args)
    if args.model:
        check_model_path(args.model, input_paths(args.sources, source))
    started = time.perf_counter()
    with explained_empty(source), contextlib.closing(ProgressSource(source, show_progress(args), "select")) as shown:
        result = select(
            shown,
            ks,
            args.covariance,
            criterion=args.criterion,
            held_out=args.held_out,
            random_state=args.seed,
            max_passes=args.passes,
            shuffle="row_groups",
            **({"batch_size": args.batch_size} if args.batch_size else {}),
        )
    if args.model:
        result.best_model_.save(args.model)
    return {
        "command": "select",
        "model": args.model,
        "seconds": round(time.perf_counter() - started, 3),
        **result.to_dict(),
        "table": result.table(),
    }


def run_plot(args: argparse.Namespace) -> dict[str, Any]:
    from streamgmm.plotting import plot_model, png_size

    check_output_file(args.out, "--out")
    model, ledger = plotted_model(args.model)
    data = None
    if args.data:
        data = ParquetSource(_one_or_many(args.data), columns=model.fitted_state_.feature_names)
    path = plot_model(
        model, data, out=args.out, pairs=args.pairs, sample=args.sample, random_state=args.seed, ledger=ledger
    )
    width, height = png_size(path)
    return {"command": "plot", "out": path, "width": width, "height": height, "data": args.data}


def plotted_model(path: str) -> tuple[StreamingGaussianMixture, list[dict[str, Any]] | None]:
    """What ``plot`` draws: a model file's model; a watcher state's current model with its ledger
    (for the drift panel)."""
    if is_state_directory(path):
        checkpoint = StateDirectory(path).load()
    elif is_url(path) and _is_store_state(path):
        from streamgmm.watch.store_state import StoreState

        checkpoint = StoreState(path).load()
    else:
        return StreamingGaussianMixture.load(path), None
    if checkpoint is None or checkpoint.model is None:
        raise CommandError(f"{path}: the watcher has made no model yet: nothing to plot")
    return checkpoint.model, checkpoint.ledger


def _is_store_state(url: str) -> bool:
    from streamgmm.watch.store_state import is_store_state

    return is_store_state(url)


def run_info(args: argparse.Namespace) -> dict[str, Any]:
    path = args.path
    if not os.path.exists(path) and not glob.has_magic(path) and "://" not in path:
        raise CommandError(f"{path}: no such file or directory")
    if is_state_directory(path):
        summary, model = state_summary(path)
        return {**summary, **(model_summary(model) if model is not None else {})}
    if is_url(path):
        from streamgmm.watch.store_state import is_store_state, store_state_summary

        if is_store_state(path):
            summary, model = store_state_summary(path)
            return {**summary, **(model_summary(model) if model is not None else {})}
    if (unfinished := unfinished_output(path)) is not None:
        return unfinished
    if os.path.isdir(path) and os.path.exists(os.path.join(path, SUCCESS)):
        with open(os.path.join(path, SUCCESS)) as handle:
            return {"kind": "output directory", "path": path, **json.load(handle)}
    if os.path.isfile(path) and zipfile.is_zipfile(path):
        model = StreamingGaussianMixture.load(path)
        return {"kind": "model", "path": path, **model_summary(model), **fit_summary(model)}
    if os.path.isfile(path):
        try:
            return {"kind": "output file", "path": path, **read_output_metadata(path)}
        except pa.ArrowInvalid as exc:
            raise CommandError(f"{path}: neither a streamgmm model nor a Parquet file ({exc})") from None
        except DataError:
            pass  # Parquet, but not written by assign: described as data below
    return lake_summary(path)


def lake_summary(path: str) -> dict[str, Any]:
    """What a Parquet file, directory or glob holds, as fit would read it."""
    source = ParquetSource(path)
    schema = source.dataset.schema
    unfinished = (
        bool(source.files)
        and not os.path.exists(os.path.join(source.base_dir, SUCCESS))
        and is_output_file(source.files[0].path)
    )
    return {
        "kind": "parquet data",
        "path": path,
        "files": len(source.files),
        "empty_files": source.empty_files,
        "records": source.n_records,
        "row_groups": source.n_row_groups,
        "numeric_columns": source.feature_names,
        "other_columns": [
            f"{field.name}: {field.type}"
            for field in schema
            if field.name not in source.feature_names and field.name not in source.partition_names
        ],
        "partitions": source.partition_names,
        "unfinished_output": unfinished,
    }


def model_summary(model: StreamingGaussianMixture) -> dict[str, Any]:
    return {
        "n_components": int(model.n_components),
        "covariance_type": model.covariance_type,
        "algorithm": model.algorithm,
        "feature_names": model.fitted_state_.feature_names or default_feature_names(model.n_features_in_),
        "weights": model.weights_.tolist(),
        "means": model.means_.tolist(),
        "lower_bound": model.lower_bound_,
        "converged": model.converged_,
        "n_iter": model.n_iter_,
    }


def fit_summary(model: StreamingGaussianMixture) -> dict[str, Any]:
    return {
        "records_seen": records_total(model.records_seen_),
        "skipped_per_pass": int(getattr(model, "n_skipped_", 0)),
        "online_steps": int(model.n_steps_),
        "history": list(model.lower_bounds_),
        "fit_history": model.fit_history_.to_dict(),
        "fit_history_summary": model.fit_history_.summary(),
    }


def _one_or_many(sources: list[str]) -> str | list[str]:
    return sources[0] if len(sources) == 1 else sources


COMMANDS = {
    "fit": run_fit,
    "assign": run_assign,
    "watch": run_watch,
    "info": run_info,
    "select": run_select,
    "plot": run_plot,
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    check_usage(parser, args)
    try:
        storage = storage_environment(args.storage_option)
    except ValueError as exc:
        parser.error(str(exc))
    try:
        # Before any filesystem or cluster is opened, so that every client (and worker) sees them.
        os.environ.update(storage)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                result = COMMANDS[args.command](args)
            finally:
                # Warnings (e.g. batch EM stopping at --max-iter) as one line each, not as
                # Python's two-line source-location format.
                for message in dict.fromkeys(in_cli_words(" ".join(str(w.message).split())) for w in caught):
                    print(f"streamgmm: warning: {message}", file=sys.stderr)
    except (
        CommandError,
        DataError,
        ModelFileError,
        StateDirectoryBusy,
        ValueError,
        TypeError,
        OSError,
        ImportError,
    ) as exc:
        message = in_cli_words(" ".join(str(exc).split()))  # one line, in the command's words
        print(f"streamgmm: error: {message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("streamgmm: interrupted", file=sys.stderr)
        return 130
    try:
        print(json.dumps(result, default=_json_default) if args.json else describe(result), flush=True)
    except BrokenPipeError:
        # The reader went away (`streamgmm info m | head`): not an error of ours. Point stdout at
        # /dev/null so the interpreter's final flush does not complain either.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


if __name__ == "__main__":
    sys.exit(main())
