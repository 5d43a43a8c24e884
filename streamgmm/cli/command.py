"""The ``streamgmm`` command: fit a mixture to a Parquet lake, write responsibilities, inspect.

    streamgmm fit SOURCE... -k K --model PATH [--covariance full] [--columns a,b] [--passthrough id]
                  [--filter 'day>=3'] [--algorithm auto|online|batch] [--batch-size N] [--passes P]
                  [--nan-policy raise|skip] [--seed S] [--scheduler ADDRESS | --workers N] [--json] [-q]
    streamgmm assign SOURCE... --model PATH --out DIR [--keep id,...] [--dtype float32]
                  [--nan-policy raise|skip] [--overwrite] [--scheduler ADDRESS | --workers N] [--json] [-q]
    streamgmm watch LANDING_DIR --state STATE_DIR [-k K --columns a,b --passthrough id --seed S | --model INIT_MODEL]
                  [--interval S] [--settle S] [--step-floor F] [--assign-out DIR [--keep id]] [--once] [--json] [-q]
    streamgmm select SOURCE... -k 2..12 [--covariance full,diag] [--held-out N] [--criterion bic|aic]
                  [--model BEST] [--columns a,b] [--passes P] [--seed S] [--json] [-q]
    streamgmm plot MODEL --out FILE.png [--data SOURCE...] [--pairs 0:1,2:3] [--sample N] [--json]
    streamgmm info PATH [--json]        (a model file, an output file or directory, a watcher's state
                                         directory, or any Parquet data)

Progress bars (records, records/s, ETA) go to stderr on a terminal; ``-q`` or a non-terminal
silences them. ``--json`` prints one machine-readable summary on stdout. Bad input exits with
status 1 and a one-line ``streamgmm: error: ...`` on stderr; bad usage with status 2.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import time
import warnings
import zipfile
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
from tqdm import tqdm

from streamgmm.assignment.layout import SUCCESS, is_output_file, read_output_metadata
from streamgmm.assignment.local import assign
from streamgmm.cli.checks import (
    CommandError,
    check_model_path,
    check_usage,
    describe_unfinished,
    explained_empty,
    input_paths,
    non_negative_float,
    parse_filter,
    positive_float,
    unfinished_output,
)
from streamgmm.dask.source import connect
from streamgmm.estimator import StreamingGaussianMixture
from streamgmm.io.columns import DataError
from streamgmm.io.model_file import ModelFileError
from streamgmm.io.parquet_source import ParquetSource
from streamgmm.io.validation import default_feature_names
from streamgmm.watch.checkpoint import StateDirectoryBusy, is_state_directory, state_summary

# ---------------------------------------------------------------------- arguments


def column_list(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise argparse.ArgumentTypeError("expected comma-separated column names")
    return names


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="streamgmm", description="Gaussian mixture models fitted by streaming EM over Parquet lakes."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    def common(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--json", action="store_true", help="print a machine-readable summary on stdout")
        sub.add_argument("-q", "--quiet", action="store_true", help="no progress bars")

    def reading(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("sources", nargs="+", metavar="SOURCE", help="Parquet file, directory, glob or URL")
        sub.add_argument(
            "--filter",
            action="append",
            type=parse_filter,
            default=[],
            metavar="EXPR",
            help="keep rows where EXPR holds, e.g. 'day >= 3' (repeat to combine with AND)",
        )
        sub.add_argument(
            "--nan-policy",
            choices=["raise", "skip"],
            default="raise",
            help="null/NaN/inf features: an error (default), or skip those rows",
        )
        sub.add_argument("--batch-size", type=positive_int, default=None, help="records per mini-batch")

    def features(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--columns", type=column_list, help="feature columns (default: every numeric column)")
        sub.add_argument(
            "--passthrough",
            type=column_list,
            default=[],
            metavar="COLUMNS",
            help="numeric columns that are not features, e.g. id",
        )

    def cluster(sub: argparse.ArgumentParser) -> None:
        where = sub.add_mutually_exclusive_group()
        where.add_argument(
            "--scheduler",
            metavar="ADDRESS",
            help="run on the Dask cluster at ADDRESS (e.g. tcp://host:8786); files must be shared",
        )
        where.add_argument(
            "--workers", type=positive_int, metavar="N", help="run on a local Dask cluster of N worker processes"
        )

    fit = commands.add_parser("fit", help="fit a mixture to Parquet data and save the model")
    reading(fit)
    cluster(fit)
    fit.add_argument("-k", "--components", type=positive_int, required=True, help="number of components K")
    fit.add_argument("--model", required=True, help="where to write the model file")
    fit.add_argument("--covariance", choices=["full", "tied", "diag", "spherical"], default="full")
    features(fit)
    fit.add_argument(
        "--algorithm",
        choices=["auto", "online", "batch"],
        default="auto",
        help="auto (default): converged start on a sample, one online pass, exact EM to tol; "
        "online: stepwise EM passes only; batch: exact EM only",
    )
    fit.add_argument("--passes", type=positive_int, default=1, help="online EM passes (default 1)")
    fit.add_argument(
        "--max-iter",
        type=positive_int,
        default=100,
        help="exact EM passes at most, and EM iterations on the sample (default 100)",
    )
    fit.add_argument(
        "--shuffle",
        choices=["row_groups", "none"],
        default="row_groups",
        help="online visit order: row groups shuffled (default) or the files' order",
    )
    fit.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    fit.add_argument(
        "--compute-dtype",
        choices=["float64", "float32"],
        default="float64",
        help="precision of the full-covariance E-step; float32 is about twice as fast "
        "(statistics still summed in float64; default float64)",
    )
    common(fit)

    assign_ = commands.add_parser("assign", help="write per-record responsibilities as Parquet")
    reading(assign_)
    cluster(assign_)
    assign_.add_argument("--model", required=True, help="a model file written by 'streamgmm fit'")
    assign_.add_argument("--out", required=True, help="output directory")
    assign_.add_argument(
        "--keep", type=column_list, default=[], metavar="COLUMNS", help="columns copied through unchanged, e.g. id"
    )
    assign_.add_argument(
        "--dtype", choices=["float64", "float32"], default="float64", help="type of the resp_* columns"
    )
    assign_.add_argument("--overwrite", action="store_true", help="replace an earlier output in --out")
    common(assign_)

    watch = commands.add_parser("watch", help="keep a model current as Parquet files arrive in a directory")
    watch.add_argument("landing", metavar="LANDING_DIR", help="directory new Parquet files arrive in")
    watch.add_argument("--state", required=True, metavar="STATE_DIR", help="checkpoint, ledger and history")
    watch.add_argument("-k", "--components", type=positive_int, help="number of components of a new model")
    watch.add_argument("--columns", type=column_list, help="feature columns of a new model (default: numeric)")
    watch.add_argument(
        "--passthrough", type=column_list, default=[], help="numeric columns that are not features of a new model (ids)"
    )
    watch.add_argument("--covariance", choices=["full", "tied", "diag", "spherical"], default="full")
    watch.add_argument("--seed", type=int, default=0, help="random seed of a new model (default 0)")
    watch.add_argument("--model", help="start from this saved model instead of -k")
    watch.add_argument("--step-floor", type=float, help="keep the step size above F to follow drift (e.g. 0.05)")
    watch.add_argument("--batch-size", type=positive_int, default=None, help="records per mini-batch")
    watch.add_argument(
        "--nan-policy",
        choices=["raise", "skip"],
        default="raise",
        help="null/NaN/inf features: quarantine the file (default), or skip those rows",
    )
    watch.add_argument("--interval", type=positive_float, default=1.0, help="seconds between looks (default 1)")
    watch.add_argument(
        "--settle", type=non_negative_float, default=1.0, help="seconds a file must be unmodified (default 1)"
    )
    watch.add_argument("--assign-out", metavar="DIR", help="also write each new file's responsibilities here")
    watch.add_argument("--keep", type=column_list, default=[], help="input columns copied into those outputs")
    watch.add_argument("--keep-models", type=positive_int, default=10, help="checkpoints kept in STATE_DIR/models")
    watch.add_argument("--once", action="store_true", help="consume the files there, then exit")
    common(watch)

    select = commands.add_parser("select", help="fit candidate K (and covariance types) in one stream, pick by BIC/AIC")
    reading(select)
    select.add_argument("-k", "--components", required=True, metavar="KS", help="candidates, e.g. 2..12 or 2,4,8")
    select.add_argument(
        "--covariance",
        type=column_list,
        default=["full"],
        metavar="TYPES",
        help="covariance types to try, e.g. full,diag (default full)",
    )
    features(select)
    select.add_argument(
        "--held-out",
        type=positive_int,
        metavar="N",
        help="score on a reservoir of N records kept out of training (no scoring pass)",
    )
    select.add_argument("--criterion", choices=["bic", "aic"], default="bic")
    select.add_argument("--model", help="where to write the best model")
    select.add_argument("--passes", type=positive_int, default=1, help="online EM passes (default 1)")
    select.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    common(select)

    plot = commands.add_parser("plot", help="draw a model (over a sample of data) and its fit history as PNG")
    plot.add_argument("model", metavar="MODEL")
    plot.add_argument("--out", required=True, metavar="FILE.png")
    plot.add_argument("--data", nargs="+", metavar="SOURCE", help="Parquet data to sample records from")
    plot.add_argument("--pairs", metavar="PAIRS", help="feature pairs, by index or name: 0:1,2:3 or x0:x2")
    plot.add_argument("--sample", type=positive_int, default=5000, help="records drawn (default 5000)")
    plot.add_argument("--seed", type=int, default=0, help="random seed of the sample (default 0)")
    plot.add_argument("--json", action="store_true", help="print a machine-readable summary on stdout")

    info = commands.add_parser("info", help="describe a model, an output, a watcher's state directory, or Parquet data")
    info.add_argument("path")
    info.add_argument("--json", action="store_true", help="print a machine-readable summary on stdout")
    return parser


# ---------------------------------------------------------------------- progress


class ProgressSource:
    """A source that shows a progress bar per pass over it (records, records/s, ETA)."""

    def __init__(self, source: ParquetSource, enabled: bool, label: str):
        self.source = source
        self.enabled = enabled
        self.label = label
        self.passes = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.source, name)

    def batches(self, batch_size: int, rng: np.random.Generator | None = None) -> Iterator[np.ndarray]:
        self.passes += 1
        with progress_bar(self.enabled, self.source.n_records, f"{self.label} pass {self.passes}") as bar:
            for batch in self.source.batches(batch_size, rng):
                bar.update(batch.shape[0])
                yield batch


def progress_bar(enabled: bool, total: int, description: str) -> tqdm:
    return tqdm(
        total=total,
        desc=description,
        unit=" records",
        unit_scale=True,
        disable=not enabled,
        file=sys.stderr,
        dynamic_ncols=True,
        leave=False,
    )


def show_progress(args: argparse.Namespace) -> bool:
    return not args.quiet and sys.stderr.isatty()


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
    )


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
        **({"batch_size": args.batch_size} if args.batch_size else {}),
    )
    started = time.perf_counter()
    with connect(args.scheduler, args.workers) as client, explained_empty(source):
        if client is None:
            model.fit(ProgressSource(source, show_progress(args), "fit"))
        else:
            # On the cluster the visit is shuffled by partition (file), not by row group; progress
            # is the dashboard's.
            model.set_params(shuffle=args.shuffle == "row_groups")
            model.fit(source, client=client)
    seconds = time.perf_counter() - started
    model.save(args.model)
    records = model.records_seen_ // max(model.n_iter_, 1) if args.algorithm == "online" else model.records_seen_
    return {
        "command": "fit",
        "model": args.model,
        "files": len(source.files),
        "empty_files": source.empty_files,
        "records": int(records),
        "skipped": model.n_skipped_,
        "seconds": round(seconds, 3),
        **model_summary(model),
    }


def run_assign(args: argparse.Namespace) -> dict[str, Any]:
    model = StreamingGaussianMixture.load(args.model)
    source = ParquetSource(
        _one_or_many(args.sources),
        columns=model._feature_names(),
        passthrough=args.keep,
        filter=combined_filter(args.filter),
        nan_policy=args.nan_policy,
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
            dtype=args.dtype,
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
        batch_size=args.batch_size,
        nan_policy=args.nan_policy,
        interval=args.interval,
        settle=args.settle,
        assign_out=args.assign_out,
        keep_models=args.keep_models,
        log=None if args.quiet else log,
    )
    model = os.path.join(summary.state, "current.model")
    return {"command": "watch", **vars(summary), "model": model if os.path.isfile(model) else None}


def run_select(args: argparse.Namespace) -> dict[str, Any]:
    from streamgmm.selection import parse_candidates, select

    ks = parse_candidates(args.components)
    source = training_source(args)
    if args.model:
        check_model_path(args.model, input_paths(args.sources, source))
    started = time.perf_counter()
    with explained_empty(source):
        result = select(
            ProgressSource(source, show_progress(args), "select"),
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

    model = StreamingGaussianMixture.load(args.model)
    data = None
    if args.data:
        data = ParquetSource(_one_or_many(args.data), columns=model._feature_names())
    path = plot_model(model, data, out=args.out, pairs=args.pairs, sample=args.sample, random_state=args.seed)
    width, height = png_size(path)
    return {"command": "plot", "out": path, "width": width, "height": height, "data": args.data}


def run_info(args: argparse.Namespace) -> dict[str, Any]:
    path = args.path
    if not os.path.exists(path) and not glob.has_magic(path) and "://" not in path:
        raise CommandError(f"{path}: no such file or directory")
    if is_state_directory(path):
        summary, model = state_summary(path)
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
        "feature_names": model._feature_names() or default_feature_names(model.n_features_in_),
        "weights": model.weights_.tolist(),
        "means": model.means_.tolist(),
        "lower_bound": model.lower_bound_,
        "converged": model.converged_,
        "n_iter": model.n_iter_,
    }


def fit_summary(model: StreamingGaussianMixture) -> dict[str, Any]:
    return {
        "records_seen": int(model.records_seen_),
        "skipped_per_pass": int(getattr(model, "n_skipped_", 0)),
        "online_steps": int(model.n_steps_),
        "history": list(model._history),
        "fit_history": model.fit_history_.to_dict(),
        "fit_history_summary": model.fit_history_.summary(),
    }


def describe(result: dict[str, Any]) -> str:
    """The human-readable form of a command's summary."""
    kind = result.get("command") or result.get("kind")
    if kind == "assign":
        return (
            f"wrote responsibilities of {result['records']:,} records to {result['files']} file(s) in {result['out']} "
            f"in {result['seconds']:.1f} s"
            + (
                f"; {result['skipped']:,} with null, NaN or infinite features written as nulls"
                if result["skipped"]
                else ""
            )
        )
    if kind == "watch":
        return (
            f"watch: {result['files_consumed']} file(s) consumed ({result['records_used']:,} records, "
            f"{result['records_skipped']:,} skipped), {result['files_quarantined']} quarantined, "
            f"{result['files_duplicate']} duplicate(s); model at {result['model'] or 'none yet'}"
            + (f"; stopped by {result['stopped_by']}" if result["stopped_by"] else "")
        )
    if kind == "watch state":
        return describe_state(result)
    if kind == "unfinished output":
        return describe_unfinished(result)
    if kind == "select":
        best = result["best"]
        return (
            f"{len(result['candidates'])} candidate(s) fitted in {result['n_passes']} shared pass(es) over "
            f"{result['records_per_pass']:,} records, scored on {result['scored_on']} (N = {result['n_scored']:,}) "
            f"in {result['seconds']:.1f} s\n{result['table']}\nbest by {result['criterion'].upper()}: "
            f"K = {best['n_components']}, {best['covariance_type']}"
            + (f"; model written to {result['model']}" if result["model"] else "")
        )
    if kind == "plot":
        return f"wrote {result['out']} ({result['width']}x{result['height']} PNG)"

    if kind == "parquet data":
        lines = [
            f"{result['path']}: Parquet data, {result['records']:,} records in {result['files']} file(s), "
            f"{result['row_groups']} row group(s)"
            + (f", {len(result['empty_files'])} empty file(s) skipped" if result["empty_files"] else ""),
            f"numeric columns (features by default): {', '.join(result['numeric_columns'])}",
        ]
        if result["other_columns"]:
            lines.append(f"other columns: {', '.join(result['other_columns'])}")
        if result["partitions"]:
            lines.append(f"hive partition keys: {', '.join(result['partitions'])}")
        if result["unfinished_output"]:
            lines.append(f"written by streamgmm assign but without {SUCCESS}: an unfinished output")
        return "\n".join(lines)
    components = f"{result['n_components']} {result['covariance_type']} components"
    if kind == "output directory":
        return (
            f"{result['path']}: streamgmm output, {result['rows']:,} records in {len(result['files'])} file(s), "
            f"{result['skipped']:,} skipped; model {result['model_fingerprint'][:12]}, "
            f"{components} over {', '.join(result['feature_names'])}"
        )
    if kind == "fit":
        lines = [
            f"fitted {components} on {result['records']:,} records ({result['skipped']:,} skipped) from "
            f"{result['files']} file(s) in {result['seconds']:.1f} s; {lower_bound_text(result)}; "
            f"model written to {result['model']}"
        ]
    else:  # a model file or an output file
        lines = [f"{result['path']}: {kind}, {components} over {', '.join(result['feature_names'])}"]
        if kind == "model":
            lines.append(
                f"fitted by {result['algorithm']} EM: {result['records_seen']:,} records seen, "
                f"{result['n_iter']} pass(es)/iteration(s), {lower_bound_text(result)}"
            )
            lines.append(result["fit_history_summary"])
    return "\n".join(lines + component_table(result["weights"], result["means"]))


def describe_state(result: dict[str, Any]) -> str:
    lines = [
        f"{result['path']}: watcher state, {result['files_consumed']} file(s) consumed, "
        f"{result['files_quarantined']} quarantined, {result['files_duplicate']} duplicate(s); "
        f"{result['records_used']:,} records used, {result['records_skipped']:,} skipped; "
        f"last update {result['last_update'] or 'never'}"
    ]
    if result["model"] is None:
        return lines[0] + " (no model yet)"
    lines.append(
        f"{result['n_components']} {result['covariance_type']} components over "
        f"{', '.join(result['feature_names'])}, {result['n_steps']:,} online steps, step floor {result['step_floor']}"
    )
    lines += component_table(result["weights"], result["means"])
    lines.append("recent files (largest move of a mean, of a weight):")
    for entry in result["recent"]:
        moved = "" if entry["mean_shift"] is None else f"  {entry['mean_shift']:.4g}, {entry['weight_shift']:.4g}"
        lines.append(
            f"  {entry['sequence']:>6}  {entry['status']:<11} {entry['records_used']:>10,}  {entry['path']}{moved}"
        )
    if result["mean_displacement_since_oldest_kept"] is not None:
        shown = ", ".join(f"{v:.4g}" for v in result["mean_displacement_since_oldest_kept"])
        lines.append(f"means moved since {result['models'][0]} (oldest kept): [{shown}]")
    for entry in result["quarantined"][-5:]:
        lines.append(f"quarantined {entry['path']}: {entry['reason']}")
    return "\n".join(lines)


def lower_bound_text(result: dict[str, Any]) -> str:
    if result["algorithm"] != "online":  # the last stage was exact EM
        return f"mean log-likelihood {result['lower_bound']:.4f}"
    # Online EM scores each mini-batch before the update that learns from it: an average over
    # the pass, lower than the final model would score.
    return f"mean log-likelihood {result['lower_bound']:.4f} over the last pass (each batch before its update)"


def component_table(weights: Sequence[float], means: Sequence[Sequence[float]]) -> list[str]:
    lines = ["component  weight   mean"]
    for k, (weight, mean) in enumerate(zip(weights, means)):
        shown = ", ".join(f"{v:.4g}" for v in mean[:8]) + (", ..." if len(mean) > 8 else "")
        lines.append(f"{k:>9}  {weight:.4f}   [{shown}]")
    return lines


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
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                result = COMMANDS[args.command](args)
            finally:
                # Warnings (e.g. batch EM stopping at --max-iter) as one line each, not as
                # Python's two-line source-location format.
                for message in dict.fromkeys(" ".join(str(w.message).split()) for w in caught):
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
        message = " ".join(str(exc).split())  # one line, whatever the exception carried
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
